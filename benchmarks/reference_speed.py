"""The 2021 reference code's speed on this machine, for ``benchmarks/speed.py --reference-code DIR``.

``DIR`` is a checkout of the reference (github.com/VICO-UoE/DatasetCondensation, commit 53f63a6); it is
not part of distillset and is never copied into it. Each setting runs the reference's own script twice in
fresh processes, at two iteration counts (epoch counts for an evaluation), on MNIST from
``../shared/data``; the difference of the two wall times over the difference of the counts is its time
per iteration, so start-up, data loading, the iteration-0 step and the test pass cancel out. Peak RSS is
the longer run's. Both runs use this machine's default torch threads, as ``speed.py`` does.

The reference runs as written but for what torch 2.13 refuses, changed in a temporary copy (the values
computed are the same):
- ``networks.py`` flattens with ``view``, which fails on the non-contiguous maps that DSA's transforms
  make: ``reshape``;
- ``utils.py``'s Siamese augmentation writes ``x[:] = x[0]``, an overlapping write torch now refuses at
  batch 1 (IPC 1): ``x[:] = x[0].clone()``;
- where the interpreter has no torchvision (none matches the CPU torch here), a stand-in for the three
  things it imports: MNIST from the original idx files, normalised as the reference's transform does,
  and a no-op ``save_image``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# setting -> (script, arguments with {n}, the two counts, what one count is)
RUNS = {
    "dm_ipc1": ("main_DM.py", "--ipc 1 --batch_real 64 --num_eval 0 --Iteration {n}", (1, 21)),
    "dm_ipc10": ("main_DM.py", "--ipc 10 --batch_real 256 --num_eval 0 --Iteration {n}", (1, 11)),
    "dc_ipc1": ("main.py", "--method DC --ipc 1 --batch_real 256 --num_eval 0 --Iteration {n}", (1, 6)),
    "dsa_ipc1": ("main.py", "--method DSA --dsa_strategy color_crop_cutout_flip_scale_rotate --ipc 1 "
                 "--batch_real 256 --num_eval 0 --Iteration {n}", (1, 6)),
    # evaluations: per training epoch of all the networks (5 on 10 images, 1 on 100), with DSA as the reference
    "eval_5x10": ("main_DM.py", "--ipc 1 --Iteration 0 --num_eval 5 --epoch_eval_train {n}", (20, 80)),
    "eval_1x100": ("main_DM.py", "--ipc 10 --Iteration 0 --num_eval 1 --epoch_eval_train {n}", (20, 120)),
}

STAND_IN = '''"""Stand-in for the torchvision parts the reference imports (written by distillset's benchmarks/reference_speed.py)."""
import gzip, os, sys, types
import numpy as np
import torch


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std


def _idx(path):
    data = gzip.open(path, "rb").read()
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


class MNIST(torch.utils.data.Dataset):
    folder = "mnist"

    def __init__(self, root, train=True, download=False, transform=None):
        base = os.path.join(root, self.folder, "train" if train else "t10k")
        norm = next(t for t in transform if isinstance(t, Normalize))
        x = torch.from_numpy(_idx(base + "-images-idx3-ubyte.gz").copy()).float().div(255).unsqueeze(1)
        self.x, self.y = (x - norm.mean[0]) / norm.std[0], _idx(base + "-labels-idx1-ubyte.gz").astype(np.int64)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


datasets = types.SimpleNamespace(MNIST=MNIST)
transforms = types.SimpleNamespace(Compose=list, ToTensor=lambda: None, Normalize=Normalize)
utils = sys.modules["torchvision.utils"] = types.ModuleType("torchvision.utils")
utils.save_image = lambda *a, **k: None
'''


def prepare(code: Path, python: str, work: Path) -> dict:
    """A patched copy of the reference in ``work`` and the environment to run it (with the stand-in if needed)."""
    if not (code / "main_DM.py").is_file() or not (code / "networks.py").is_file():
        raise SystemExit(f"--reference-code {code} is not a checkout of the reference (no main_DM.py / networks.py)")
    copy = work / "reference"
    shutil.copytree(code, copy, ignore=shutil.ignore_patterns(".git"))
    net = copy / "networks.py"
    net.write_text(net.read_text().replace("out.view(out.size(0), -1)", "out.reshape(out.size(0), -1)"))
    utils = copy / "utils.py"
    utils.write_text(re.sub(r"(\w+)\[:\] = \1\[0\]\n", r"\1[:] = \1[0].clone()\n", utils.read_text()))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if subprocess.run([python, "-c", "import torchvision.datasets"], capture_output=True).returncode:
        (work / "stand_in" / "torchvision").mkdir(parents=True)
        (work / "stand_in" / "torchvision" / "__init__.py").write_text(STAND_IN)
        env["PYTHONPATH"] = str(work / "stand_in")
    return {"dir": copy, "env": env, "stand_in": "PYTHONPATH" in env}


def run_once(ref: dict, python: str, script: str, args: str, data_root: str, save: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one run of the reference's ``script``."""
    cmd = [python, script, "--dataset", "MNIST", "--num_exp", "1", "--data_path", data_root, "--save_path", str(save),
           *args.split()]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ref["dir"], env=ref["env"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"the reference failed ({' '.join(cmd[1:])}):\n{proc.stderr.read().decode()[-1500:]}")
    return seconds, usage.ru_maxrss / 1024


def measure(setting: str, ref: dict, python: str, data_root: str) -> dict:
    """The reference's seconds per iteration (or per epoch) and peak RSS for ``setting``."""
    script, args, (lo, hi) = RUNS[setting]
    with tempfile.TemporaryDirectory() as save:
        (t_lo, _), (t_hi, rss) = (run_once(ref, python, script, args.format(n=n), data_root, Path(save)) for n in (lo, hi))
    return {"seconds": (t_hi - t_lo) / (hi - lo), "peak_rss_mib": rss, "counts": [lo, hi], "walls": [t_lo, t_hi],
            "command": f"{script} {args.format(n='N')}", "stand_in_torchvision": ref["stand_in"]}


if __name__ == "__main__":
    sys.exit("run it through benchmarks/speed.py --reference-code DIR")
