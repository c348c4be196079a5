"""DD's own evaluation for the benchmark runner (``extra: "dd_extra:evaluate"`` in a profile entry).

``evaluate(method, data, entry)`` applies the learned T steps with the learned step sizes (REFERENCE
section 2 "DD") and compares with random real images of the same count and layout under the SAME
learned schedule. Entry keys read from ``entry["dd_eval"]``: ``n_models`` (nets for random/pretrained
inits), ``memory`` (true: also measure the peak memory of one T-step meta-gradient, backward "autograd"
vs "constant", each in its own process, as the growth of the process's peak RSS over its state after a
T = 1 warm-up and with the data set freed). Run directly, ``python benchmarks/dd_extra.py --probe autograd|constant|none``
prints the probe's peak RSS.
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


def _random_real_like(synthetic, data, seed):
    """Random real training images in the set's layout: step-major, class-major within a step."""
    from distillset.methods import RealData
    from distillset.utils import make_generator

    steps = synthetic.meta["params"]["steps"]
    k = data.num_classes
    per_class = len(synthetic) // k  # steps * ipc
    real = RealData(data, torch.device("cpu"))
    x = real.images[real.sample_indices(per_class, make_generator(seed))]  # (K * S * ipc, C, H, W), class-major
    x = x.view(k, steps, per_class // steps, *x.shape[1:]).transpose(0, 1)  # (S, K, ipc, C, H, W)
    return x.reshape(len(synthetic), *x.shape[3:])


def _fmt(r):
    return f"{r['mean']:.1f} ± {r['std']:.1f}"


def evaluate(method, data, entry) -> dict:
    from distillset.methods.dd_protocol import evaluate_dd

    cfg = entry.get("dd_eval", {})
    syn = method.synthetic_
    seed = entry.get("seed", 0)
    n = cfg.get("n_models", 10)
    t0 = time.perf_counter()
    ours = evaluate_dd(syn, data, n_models=n, random_state=seed)
    base = evaluate_dd(syn, data, n_models=n, random_state=seed, images=_random_real_like(syn, data, seed))
    out = {"dd_protocol": ours, "random_real_same_schedule": base, "lrs": syn.lrs.tolist()}
    summary = (f"DD protocol ({ours['net_init']} init, {len(ours['accuracies'])} nets): {_fmt(ours)} "
               f"(inits untrained {ours['before_mean']:.1f}; random real imgs + learned lrs {_fmt(base)})")
    if "attack_to_target" in ours:
        summary += (f"; attack {ours['attack_class']}->{ours['target_class']}: {ours['attack_to_target']:.1f}% of class "
                    f"{ours['attack_class']} predicted {ours['target_class']} (random real imgs: "
                    f"{base['attack_to_target']:.1f}%)")
    if cfg.get("memory"):
        out["memory"] = {}
        for ipc in (1, 10):  # the benchmark's set, and 10 images per class per step (where the unroll dominates)
            m = {mode: _probe_in_subprocess(mode, entry, ipc) for mode in ("autograd", "constant")}
            out["memory"][f"ipc{ipc}"] = m
            summary += (f"; peak RSS growth during one T={m['autograd']['T']} meta-grad, {ipc} img/class/step: autograd "
                        f"{m['autograd']['peak_mib'] - m['autograd']['start_mib']:.1f} MiB, constant "
                        f"{m['constant']['peak_mib'] - m['constant']['start_mib']:.1f} MiB")
    out["seconds"] = time.perf_counter() - t0
    out["summary"] = summary
    return out


def _probe_in_subprocess(mode, entry, ipc=1) -> dict:
    cmd = [sys.executable, str(Path(__file__)), "--probe", mode, "--dataset", entry["dataset"],
           "--batch-real", str(entry.get("params", {}).get("batch_real", 1024)), "--ipc", str(ipc)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def probe(mode: str, dataset: str, batch_real: int, steps: int = 10, epochs: int = 3, ipc: int = 1) -> dict:
    """Peak RSS of a process that computes one DD meta-gradient (T = steps * epochs, LeNet)."""
    sys.path.insert(0, str(HERE))
    from run import data_root

    import torch.nn.functional as F

    from distillset import load_dataset
    from distillset.unroll import FlatNet, meta_grad
    from distillset.methods.dd_nets import InitSampler

    data = load_dataset(dataset, root=data_root())
    g = torch.Generator().manual_seed(0)
    f = FlatNet(InitSampler("lenet", data, "cpu").build(0))
    k = data.num_classes
    x_real = data.normalize(data.train.images[:batch_real])
    y_real = data.train.labels[:batch_real]
    images = torch.randn(steps * k * ipc, *data.image_shape, generator=g, requires_grad=True)
    labels = torch.arange(k).repeat_interleave(ipc).repeat(steps)
    lrs_raw = torch.full((steps * epochs,), -3.9, requires_grad=True)
    del data

    def outer(theta):
        return F.cross_entropy(f(theta, x_real), y_real)

    if mode != "none":  # warm-up at T = 1: one-time allocations (kernels, thread pools) are not counted
        meta_grad(f, f.flatten(), images[: k * ipc], labels[: k * ipc], lrs_raw[:1].detach().requires_grad_(True),
                  1, outer, mode)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark (Linux): data loading is not counted
    start = _vm("VmHWM")
    t0 = time.perf_counter()
    if mode != "none":
        meta_grad(f, f.flatten(), images, labels, lrs_raw, steps, outer, mode)
    return {"mode": mode, "T": steps * epochs, "ipc": ipc, "peak_mib": _vm("VmHWM"), "start_mib": start,
            "seconds": time.perf_counter() - t0}


def _vm(key: str) -> float:
    """A /proc/self/status memory field in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--probe", choices=("none", "autograd", "constant"), required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--batch-real", type=int, default=1024)
    p.add_argument("--ipc", type=int, default=1)
    a = p.parse_args()
    print(json.dumps(probe(a.probe, a.dataset, a.batch_real, ipc=a.ipc)))
