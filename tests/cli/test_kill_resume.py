"""Crash consistency: a kill at any file operation of a checkpoint write, then ``--resume``, ends
bit-identical to an uninterrupted run.

Every write goes through ``distillset._io``, which calls ``os`` for each step (open, write, fsync,
close, rename, directory fsync). The test swaps that ``os`` for one that dies at operation k: the
operation does not happen (a write happens by half: a torn write), and neither does any later one,
as after ``kill -9``. It runs once for every operation of the second checkpoint write (which has a
previous checkpoint to fall back on), and around the first write's rename (before it there is none:
the resumed run starts from the beginning).
"""
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import distillset._io
from distillset.cli import main

ARGV = ["distill", "--iterations", "2", "--model", "convnet_w32", "--checkpoint-every", "1", "--no-eval", "--quiet", "--device", "cpu",
        "--param", "batch_real=4"]
OPS = ("open", "write", "fsync", "close", "replace", "unlink")  # a killed process removes nothing either


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no ``except Exception`` clean-up runs."""


class DyingOS:
    """``os`` that records its file operations and dies before operation number ``at``."""

    def __init__(self, at: int | None = None):
        self.at, self.trace, self.dead = at, [], False

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in OPS:
            return real

        def op(*args, **kw):
            if self.dead:  # a killed process does nothing more
                raise Killed
            if len(self.trace) == self.at:
                self.dead = True
                if name == "write":  # the kernel may have taken part of the buffer
                    real(args[0], args[1][: len(args[1]) // 2])
                raise Killed
            self.trace.append((name, str(args[0]) if name in ("open", "replace") else None))
            return real(*args, **kw)
        return op


def run(monkeypatch, out: Path, at=None, resume=False) -> DyingOS:
    fake = DyingOS(at)
    monkeypatch.setattr(distillset._io, "os", fake)
    try:
        assert main([*ARGV, "--out", str(out), *(["--resume"] if resume else [])]) == 0
    finally:
        monkeypatch.setattr(distillset._io, "os", os)
    return fake


def checkpoint_ops(trace) -> list[int]:
    """Every operation of the second checkpoint write (from opening the temporary file to closing the
    directory after its fsync), and the first write's rename and the operation after it."""
    starts = [i for i, (name, path) in enumerate(trace) if name == "open" and path.endswith(".checkpoint.safetensors.tmp")]
    return [starts[0] + 4, starts[0] + 5, *range(starts[1], starts[1] + 8)]


@pytest.fixture
def one_thread():
    """21 tiny runs: a second thread only adds synchronisation (and on a busy machine, waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_kill_at_every_checkpoint_operation_then_resume_is_bit_identical(tmp_path, monkeypatch, capsys, one_thread):
    straight = tmp_path / "straight"
    trace = run(monkeypatch, straight).trace
    ops = checkpoint_ops(trace)
    assert [trace[i][0] for i in ops] == ["replace", "open"] + ["open", "write", "fsync", "close", "replace", "open",
                                                               "fsync", "close"]
    want_set = (straight / "synthetic.safetensors").read_bytes()
    want_ckpt = load_file(str(straight / "checkpoint" / "checkpoint.safetensors"))
    for k in ops:
        out = tmp_path / f"killed{k}"
        with pytest.raises(Killed):
            run(monkeypatch, out, at=k)
        assert not (out / "synthetic.safetensors").exists()
        run(monkeypatch, out, resume=True)
        assert (out / "synthetic.safetensors").read_bytes() == want_set, f"kill before operation {k}: {trace[k]}"
        got = load_file(str(out / "checkpoint" / "checkpoint.safetensors"))
        assert got.keys() == want_ckpt.keys() and all(got[n].equal(want_ckpt[n]) for n in got), k
    capsys.readouterr()
