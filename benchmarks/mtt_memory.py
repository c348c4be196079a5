"""Peak memory and time of one MTT gradient, by ``backward`` and ``syn_steps`` (issue 13).

Each probe runs in its own process: load MNIST, build ConvNet-3, warm up with a 1-step gradient, reset the
RSS high-water mark (Linux ``/proc/self/clear_refs``), then compute one MTT gradient (``unrolled_grad``:
N student steps on ``10 * ipc`` images from an expert-like start, the normalised parameter distance) and
report the growth of the peak RSS and the seconds. Writes ``results/mtt_memory.json`` (commit, command,
versions, hardware). Usage: ``python benchmarks/mtt_memory.py`` (about 3 minutes on an idle core), or
``--probe BACKWARD STEPS IPC`` for one probe.
"""
from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PROBES = [(ipc, steps, backward) for ipc, steps_list in ((1, (10, 40)), (10, (5, 20)))
          for steps in steps_list for backward in ("autograd", "constant", "tesla")]


def probe(backward: str, steps: int, ipc: int) -> dict:
    sys.path.insert(0, str(HERE))

    from dd_extra import _vm
    from run import data_root

    from distillset import load_dataset
    from distillset.models import get_model
    from distillset.unroll import FlatNet, unrolled_grad

    torch.set_num_threads(1)
    data = load_dataset("mnist", root=data_root())
    g = torch.Generator().manual_seed(0)
    f = FlatNet(get_model("convnet", data.image_shape, 10, seed=0))
    theta0 = f.flatten()
    target = theta0 + 0.01 * torch.randn(theta0.shape, generator=g)
    images = data.normalize(data.train.images[: 10 * ipc]).requires_grad_(True)
    labels = data.train.labels[: 10 * ipc]
    lr = torch.tensor(0.01, requires_grad=True)
    del data

    def batch(t, leaves):
        return leaves[0], labels, leaves[1]

    def outer(theta):
        return ((theta - target) ** 2).sum() / ((theta0 - target) ** 2).sum()

    unrolled_grad(f, theta0, 1, batch, [images, lr], outer, backward)  # warm-up: kernels, thread pools
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    start = _vm("VmHWM")
    t0 = time.perf_counter()
    unrolled_grad(f, theta0, steps, batch, [images, lr], outer, backward)
    return {"backward": backward, "syn_steps": steps, "ipc": ipc, "seconds": time.perf_counter() - t0,
            "peak_growth_mib": _vm("VmHWM") - start, "params": f.size}


def main() -> None:
    from run import git_commit, git_dirty, hardware, versions

    rows = []
    for ipc, steps, backward in PROBES:
        res = subprocess.run([sys.executable, __file__, "--probe", backward, str(steps), str(ipc)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    record = {"name": "mtt_memory", "rows": rows, "command": "python benchmarks/mtt_memory.py",
              "commit": git_commit(), "dirty": git_dirty(), "versions": versions(), "hardware": hardware(1),
              "date": time.strftime("%Y-%m-%d")}
    (HERE / "results" / "mtt_memory.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        print(json.dumps(probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
