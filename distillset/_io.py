"""Crash-safe file writes: a temporary file beside the target, fsync, then one atomic rename.

Whatever instant the process dies at, a reader (or a resumed run) finds either the complete old file
or the complete new one, never a mix. An error or Ctrl-C removes the temporary ``.<name>.tmp``; only a
kill or a power cut can leave it, and the next write replaces it. Files get the mode the user's umask
allows (0644 under the usual 022): ``os.open`` with 0o666 applies the umask, whereas
``tempfile.mkstemp`` always creates 0600.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from .errors import OutputError


def umask_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a plain ``open(path, "w")`` would have (for files made by ``mkstemp``)."""
    umask = os.umask(0)  # the only portable way to read the umask is to set it
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns the path.

    Every step goes through ``os`` so the kill-injection test can stop the process between any two.
    """
    path = Path(path)
    payload = memoryview(data.encode() if isinstance(data, str) else data)
    path.parent.mkdir(parents=True, exist_ok=True)  # the callers checked that it may be made (check_writable)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        try:
            while payload:
                payload = payload[os.write(fd, payload):]
            os.fsync(fd)  # the bytes reach the disk before the rename makes them visible
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # a full disk, Ctrl-C: no half-written hidden file is left in the user's folder
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)  # and the rename itself survives a power cut
    return path


def atomic_save(path: str | os.PathLike, save) -> Path:
    """``save(buffer)`` into memory (PIL's ``Image.save``, matplotlib's ``savefig``...), then :func:`atomic_write`."""
    buf = io.BytesIO()
    save(buf)
    return atomic_write(path, buf.getvalue())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(path: Path, flag: str, folder: bool) -> None:
    """Raise :class:`OutputError` unless ``path`` can be created (or written) as a file or folder; ``flag``
    names it in the message (``--out``, ``checkpoint_dir``)."""
    if path.exists() and folder != path.is_dir():
        want = "a folder" if folder else "a file"
        raise OutputError(f"{flag} {path} exists and is not {want}; choose another {flag}.")
    anchor = path if path.exists() and folder else path.parent  # a file is replaced by a rename in its folder
    while not anchor.exists():  # the nearest existing ancestor decides whether we can create the rest
        anchor = anchor.parent
    if not anchor.is_dir():
        raise OutputError(f"{flag} {path} is under {anchor}, which is a file; choose another {flag}.")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: {anchor} is not writable; choose another {flag}.")
