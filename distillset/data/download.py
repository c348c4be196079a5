"""Downloading the published data set files: md5-checked, atomic, standard library only.

A file is streamed to a hidden temporary file in its destination folder while its md5 is computed;
only if the md5 matches the published one is it renamed into place (``os.replace``, atomic on one
file system). A mismatch removes the temporary file and raises
:class:`~distillset.errors.ChecksumError`; an interrupted download leaves nothing under the final name.

Mirrors
-------
Set ``$DISTILLSET_MIRROR`` (or pass ``mirror=``) to a base URL that mirrors the *data root layout*:
the file stored at ``<root>/mnist/train-images-idx3-ubyte.gz`` is fetched from
``<mirror>/mnist/train-images-idx3-ubyte.gz``. ``file://`` URLs work too.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterable

from .._io import umask_mode
from ..errors import ChecksumError, CorruptFileError, DataError
from .base import RemoteFile

log = logging.getLogger(__name__)

__all__ = ["RemoteFile", "DownloadError", "md5sum", "resolve_url", "download_file", "fetch_files", "extract_zip"]

MIRROR_ENV = "DISTILLSET_MIRROR"
_CHUNK = 1 << 20


class DownloadError(DataError):
    """A download failed (network error, HTTP error, unwritable folder)."""


def md5sum(path: str | os.PathLike, chunk_size: int = _CHUNK) -> str:
    """md5 hex digest of a file, read in chunks.

    Parameters
    ----------
    path : path-like
    chunk_size : int, default=1 MiB

    Returns
    -------
    str
        32 lowercase hex digits.
    """
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def resolve_url(file: RemoteFile, mirror: str | None = None) -> str:
    """The URL to fetch ``file`` from: ``<mirror>/<file.path>`` with a mirror, else ``file.url``.

    Parameters
    ----------
    file : RemoteFile
    mirror : str, optional
        Base URL; defaults to ``$DISTILLSET_MIRROR`` when set.

    Returns
    -------
    str
    """
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if mirror:
        return f"{mirror.rstrip('/')}/{file.path.lstrip('/')}"
    return file.url


def download_file(url: str, dest: str | os.PathLike, md5: str | None = None, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its md5.

    Parameters
    ----------
    url : str
        ``http(s)://`` or ``file://`` address.
    dest : path-like
        Final file path; its folder is created if needed.
    md5 : str, optional
        Expected md5 hex digest. ``None`` skips the check (logged as a warning).
    timeout : float, default=60
        Socket timeout in seconds.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    ChecksumError
        The downloaded bytes have another md5 (the temporary file is removed, ``dest`` untouched).
    DownloadError
        Network or HTTP failure, or the destination folder cannot be written.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise DownloadError(f"Cannot write into {dest.parent} to download {dest.name} ({e}). "
                            "Choose a writable root (root=... or $DISTILLSET_DATA).") from e
    tmp = Path(tmp_name)
    h = hashlib.md5()
    size = 0
    try:
        log.info("downloading %s -> %s", url, dest)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                fd = -1
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    size += len(block)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"Download of {url} failed: HTTP {e.code} {e.reason}.") from e
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"Download of {url} failed: {reason}. Check the network or set "
                                f"${MIRROR_ENV} to a reachable mirror.") from e
        got = h.hexdigest()
        if md5 is None:
            log.warning("no published md5 for %s; downloaded %d bytes without a checksum check", dest.name, size)
        elif got != md5.lower():
            raise ChecksumError(
                f"Checksum mismatch for {dest.name} from {url}: expected md5 {md5.lower()}, got {got} "
                f"({size} bytes). The download was discarded; try again or use another mirror."
            )
        umask_mode(tmp)  # mkstemp made it 0600
        os.replace(tmp, dest)
    finally:
        if fd != -1:
            os.close(fd)
        tmp.unlink(missing_ok=True)
    return dest


def fetch_files(files: Iterable[RemoteFile], root: str | os.PathLike, *, mirror: str | None = None,
                verify_existing: bool = False, timeout: float = 60.0) -> list[Path]:
    """Make sure every file in ``files`` exists under ``root``, downloading the missing ones.

    Parameters
    ----------
    files : iterable of RemoteFile
        Published files; each goes to ``root / file.path``.
    root : path-like
        Data root.
    mirror : str, optional
        Base URL mirroring the data root layout (default ``$DISTILLSET_MIRROR``).
    verify_existing : bool, default=False
        Also check the md5 of files already present (reads them fully); a mismatch raises
        :class:`ChecksumError`.
    timeout : float, default=60

    Returns
    -------
    list of pathlib.Path
        The local paths, in the order of ``files``.
    """
    root = Path(root)
    out = []
    for f in files:
        dest = root / f.path
        if dest.is_file():
            if verify_existing and f.md5 is not None:
                got = md5sum(dest)
                if got != f.md5:
                    raise ChecksumError(f"Checksum mismatch for {dest}: expected md5 {f.md5}, got {got}. "
                                        "Delete it and download again.")
        else:
            download_file(resolve_url(f, mirror), dest, f.md5, timeout=timeout)
        out.append(dest)
    return out


def extract_zip(archive: str | os.PathLike, dest: str | os.PathLike, top: str) -> Path:
    """Extract ``archive`` whose members all live under ``top/`` into ``dest/top`` atomically.

    The archive is unpacked into a temporary folder next to the target, then renamed into place,
    so a half-extracted tree never appears under the final name. Members escaping the folder
    (absolute paths, ``..``) are refused.

    Parameters
    ----------
    archive : path-like
        The ``.zip`` file.
    dest : path-like
        Folder that will contain ``top``.
    top : str
        The archive's top-level folder name, e.g. ``"tiny-imagenet-200"``.

    Returns
    -------
    pathlib.Path
        ``dest / top``.
    """
    archive, dest = Path(archive), Path(dest)
    target = dest / top
    if target.exists() and any(target.iterdir()):
        raise DataError(f"Cannot extract {archive.name}: {target} already exists and is not empty "
                        "(an incomplete earlier copy?). Remove it and try again.")
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{top}.", suffix=".part"))
    try:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                name = info.filename
                parts = Path(name).parts
                if name.startswith("/") or ".." in parts or not parts or parts[0] != top:
                    raise CorruptFileError(f"{archive}: unexpected member {name!r} (expected all under {top}/).")
            z.extractall(tmp)
        os.replace(tmp / top, target)
    except zipfile.BadZipFile as e:
        raise CorruptFileError(f"{archive}: not a valid zip file ({e}).") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
