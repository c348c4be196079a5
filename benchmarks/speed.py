"""Speed benchmark: seconds per iteration, images per second and peak memory, next to the reference code.

    python benchmarks/speed.py                          # every setting at fp32 and bf16 -> results/speed_cpu.json
    python benchmarks/speed.py --device cuda            # -> results/speed_cuda.json
    python benchmarks/speed.py --only dm_ipc10 --precision bf16 --no-write
    python benchmarks/speed.py --world-size 2           # 1 and 2 processes (torchrun) -> results/speed_cpu_processes.json
    python benchmarks/speed.py --precision fp32 --reference-code ~/DatasetCondensation --name avx2
        # the reference measured here too, setting by setting, before distillset -> results/speed_cpu_avx2.json

Each (setting, precision) runs in its own process, so its peak RSS is its own. With ``--world-size N`` each
setting that splits across processes runs at 1 and at N processes (``torchrun``, the cores shared evenly:
each process gets cores // N torch threads) and rank 0 reports; its peak RSS is one process's. A method setting runs
``warmup + iterations`` iterations of ``fit`` on MNIST and reports the median of the last ``iterations``
(per-iteration timestamps from the fit callback; the median keeps one disturbed step out); an evaluation setting times whole evaluations and divides by the
epochs. The convolution FLOPs of one iteration are counted with ``torch.utils.flop_counter`` and
divided by the time, and that rate is put next to this device's own float32 convolution throughput,
measured in the same process on ConvNet-3's widest layer. The reference column holds the figures of
the 2021 reference code (DC/DSA/DM, commit 53f63a6), measured side by side with distillset 0.1.0 on a
2-core x86 CPU with torch 2.13 (issue "Speed"); they are cited, not re-measured here, unless
``--reference-code`` names a checkout of the reference: then each setting's reference figure is measured
on this machine just before distillset's (``benchmarks/reference_speed.py`` says how), and the record
holds both. Timings mean something only on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reference_speed  # noqa: E402
from run import data_root, git_commit, hardware, versions  # noqa: E402

REFERENCE = "the 2021 reference code (commit 53f63a6), measured on a 2-core x86 CPU with torch 2.13"
# name -> what runs. ref_s: the reference's seconds per iteration (per epoch for evaluations); ref_rss_gib
# its peak RSS; both from the speed issue's side-by-side table (None: the reference has no such setting).
SETTINGS = {
    "dm_ipc1": dict(method="dm", ipc=1, params={"batch_real": 64}, ref_s=0.69, ref_rss_gib=1.2),
    "dm_ipc10": dict(method="dm", ipc=10, params={"batch_real": 256}, ref_s=3.89, ref_rss_gib=1.5),
    "dc_ipc1": dict(method="dc", ipc=1, params={"batch_real": 256}, ref_s=8.24, ref_rss_gib=1.8),
    "dsa_ipc1": dict(method="dsa", ipc=1, params={"batch_real": 256}, ref_s=8.24, ref_rss_gib=1.8,
                     ref_note="the reference's DC figure, a lower bound of its DSA cost"),
    # no FLOP count for these two: counting DD's unrolled double backward takes minutes, KIP is kernel algebra
    "dd_step": dict(method="dd", ipc=1, params={"batch_real": 102}, ref_s=None, ref_rss_gib=None, count_flops=False),
    "kip_step": dict(method="kip", ipc=10, params={}, ref_s=None, ref_rss_gib=None, count_flops=False),
    "eval_5x10": dict(eval_images=10, n_models=5, ref_s=5 * 0.20, ref_rss_gib=None,
                      ref_note="5 sequential reference runs at 0.20 s per epoch on 10 images (measured on a loaded machine)"),
    "eval_1x100": dict(eval_images=100, n_models=1, ref_s=0.255, ref_rss_gib=None),
}
PRECISION_METHODS = {"dm", "dc", "dsa"}  # methods with a precision option (DD and KIP compute in float32)


def conv_throughput(device) -> float:
    """This device's float32 convolution rate in GFLOP/s: ConvNet-3's 128->128 3x3 layer at 16x16, batch 64."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(64, 128, 16, 16, device=device)
    w = torch.randn(128, 128, 3, 3, device=device)
    flops = 2 * 64 * 128 * 128 * 9 * 16 * 16
    with torch.no_grad():
        for _ in range(3):
            F.conv2d(x, w, padding=1)
        sync(device)
        t0, reps = time.perf_counter(), 20
        for _ in range(reps):
            F.conv2d(x, w, padding=1)
        sync(device)
    return flops * reps / (time.perf_counter() - t0) / 1e9


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def count_conv_flops(fn) -> int:
    """Convolution + matmul FLOPs (forward and backward) of one call of ``fn``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def time_method(name: str, cfg: dict, precision: str, device: str, warmup: int, iterations: int) -> dict:
    from distillset import get_method, load_dataset

    data = load_dataset("mnist", root=data_root())
    params = {**cfg["params"], **({"precision": precision} if cfg["method"] in PRECISION_METHODS else {})}

    def build(its):
        return get_method(cfg["method"], ipc=cfg["ipc"], iterations=its, random_state=0, device=device,
                          progress=False, **params)

    stamps = []
    build(warmup + iterations).fit(data, callback=lambda m, it, losses: (sync(device), stamps.append(time.perf_counter())))
    steps = [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])]
    flops = count_conv_flops(lambda: build(1).fit(data)) if cfg.get("count_flops", True) else None  # incl. set-up
    seconds = statistics.median(steps)
    batch_real = params.get("batch_real")
    images = data.num_classes * batch_real if batch_real else None  # batch_real is per class in every method
    return {"seconds": seconds, "seconds_min": min(steps), "images_per_iteration": images, "conv_flops": flops,
            "params": params}


def time_evaluation(name: str, cfg: dict, precision: str, device: str, warmup: int, iterations: int) -> dict:
    from distillset import Evaluator, get_method, load_dataset
    from distillset.data import Split

    data = load_dataset("mnist", root=data_root())
    # 200 test images: the test pass is subtracted below, and over all 10,000 (~55 s for five fp32 networks on
    # an AVX2 CPU) its swing between two passes (52-61 s) outweighed the training epochs being timed
    data = dataclasses.replace(data, test=Split(data.test.images[:200], data.test.labels[:200]))
    syn = get_method("random", ipc=cfg["eval_images"] // data.num_classes, random_state=0).fit(data).synthetic_
    epochs = max(1, iterations) * 10
    ev = Evaluator("convnet", n_models=cfg["n_models"], epochs=epochs, augment="auto", precision=precision,
                   random_state=0, device=device)
    Evaluator("convnet", n_models=cfg["n_models"], epochs=2, augment="auto", precision=precision,
              random_state=0, device=device).score(syn, data)  # warm-up
    t0 = time.perf_counter()
    ev.score(syn, data)
    total = time.perf_counter() - t0
    # the test pass is part of an evaluation; per epoch we report training only, as the reference figure does
    t1 = time.perf_counter()
    Evaluator("convnet", n_models=cfg["n_models"], epochs=0, augment="auto", precision=precision,
              random_state=0, device=device).score(syn, data)
    test_s = time.perf_counter() - t1
    def flops(epochs):
        ev = Evaluator("convnet", n_models=1, epochs=epochs, augment="auto", precision=precision, random_state=0,
                       device=device)
        return count_conv_flops(lambda: ev.score(syn, data))

    return {"seconds": (total - test_s) / epochs, "test_pass_seconds": test_s, "epochs": epochs,
            "images_per_iteration": cfg["eval_images"] * cfg["n_models"],
            "conv_flops": (flops(1) - flops(0)) * cfg["n_models"]}  # one training epoch of every network


def measure_one(name: str, precision: str, device: str, warmup: int, iterations: int) -> dict:
    import torch

    cfg = SETTINGS[name]
    timer = time_evaluation if "eval_images" in cfg else time_method
    out = timer(name, cfg, precision, device, warmup, iterations)
    out.update(setting=name, precision=precision, device=device,
               images_per_second=out["images_per_iteration"] / out["seconds"] if out["images_per_iteration"] else None,
               peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
               conv_gflops_fp32_peak=conv_throughput(device))
    if out.get("conv_flops"):
        out["conv_gflops"] = out["conv_flops"] / out["seconds"] / 1e9
        out["fraction_of_fp32_conv_peak"] = out["conv_gflops"] / out["conv_gflops_fp32_peak"]
    return out


def report_lines(record: dict) -> list[str]:
    """The RESULTS.md "Speed" section for one speed record."""
    hw = record["hardware"]
    where = hw.get("gpu") or f"{hw['cpu_count']} CPU cores, {hw['torch_threads']} torch threads"
    if not hw.get("gpu") and hw.get("isa"):  # the CPU kind: which kernels (and which precision "auto" is) it gets
        where += f", {'/'.join(hw['isa'])}"
    measured = record.get("reference_measured")
    source = ("the 2021 reference code (commit 53f63a6), measured on this machine just before each distillset "
              "setting (`benchmarks/reference_speed.py`)" if measured else f"{REFERENCE} (cited)")
    lines = [f"## Speed ({record['device']}: {where})", "",
             f"`{record['command']}` at commit {record['commit']}, {record['date']}, torch {record['versions']['torch']}. "
             f"Reference: {source}. Per iteration for methods, per training epoch for evaluations.", "",
             "| setting | precision | processes | s / it | images / s | peak RSS MiB | conv GFLOP/s (share of fp32 peak) | reference s / it | speed-up | reference RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["runs"]:
        cfg = SETTINGS[r["setting"]]
        if measured is not None:  # measured here, or not at all
            mine = measured.get(r["setting"], {})
            cfg = {**cfg, "ref_s": mine.get("seconds"), "ref_rss_gib": mine.get("peak_rss_mib", 0) / 1024, "ref_note": None}
        ref = cfg["ref_s"]
        share = (f"{r['conv_gflops']:.0f} ({100 * r['fraction_of_fp32_conv_peak']:.0f} %)" if r.get("conv_gflops") else "-")
        ips = f"{r['images_per_second']:.0f}" if r.get("images_per_second") else "-"
        ref_rss = f"{cfg['ref_rss_gib'] * 1024:.0f}" if cfg["ref_rss_gib"] else "-"
        note = f" ({cfg['ref_note']})" if cfg.get("ref_note") else ""
        speedup = f"{ref / r['seconds']:.2f}x" if ref else "-"
        ref_s = (f"{ref:.3f}" if measured is not None else f"{ref}") if ref else "-"
        lines.append(f"| {r['setting']} | {r['precision']} | {r.get('processes', 1)} | {r['seconds']:.3f} | {ips} | {r['peak_rss_mib']:.0f} | {share} "
                     f"| {ref_s}{note} | {speedup} | {ref_rss} |")
    if any(r.get("processes", 1) > 1 for r in record["runs"]):
        lines += ["", "Processes > 1: torchrun on this machine, the cores shared evenly (torch threads per process: "
                  f"{sorted({r.get('threads_per_process') for r in record['runs']})}); s / it and peak RSS are rank 0's, "
                  "conv GFLOP/s counts rank 0's share of the classes, and its share of peak is against one process's "
                  "own (fewer-thread) convolution rate."]
    peak = statistics.fmean(r["conv_gflops_fp32_peak"] for r in record["runs"])
    lines += ["", f"This device's measured float32 convolution throughput: {peak:.0f} GFLOP/s (ConvNet-3's 128->128 "
              "3x3 layer, batch 64, mean over the runs)."]
    return lines


def splits(name: str) -> bool:
    """Whether the setting's work spreads across processes (an evaluation's networks always do)."""
    from distillset import get_method

    method = SETTINGS[name].get("method")
    return method is None or type(get_method(method))._distributed is True


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_child(name: str, precision: str, world: int, args) -> dict:
    """One measurement in a fresh process (``world`` > 1: under torchrun, each with its share of the cores)."""
    one = [__file__, "--one", "--only", name, "--precision", precision, "--device", args.device,
           "--warmup", str(args.warmup), "--iterations", str(args.iterations)]
    launcher = [sys.executable] if world == 1 and args.world_size == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world), "--master-addr", "127.0.0.1",
         "--master-port", str(free_port())]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if args.world_size > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // world))
    out = subprocess.run(launcher + one, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{name} {precision} x{world} failed:\n{out.stderr[-2000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "threads_per_process": env.get("OMP_NUM_THREADS")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iterations", type=int, default=7)
    p.add_argument("--no-write", action="store_true", help="print, do not write results/speed_<device>.json")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process: one setting, JSON out
    p.add_argument("--reference-code", type=Path, default=None,
                   help="a checkout of the reference (53f63a6): measure it here instead of citing its figures")
    p.add_argument("--reference-python", default=sys.executable, help="the interpreter that runs the reference")
    p.add_argument("--name", default=None, help="written to results/speed_<device>_<name>.json (e.g. the CPU kind)")
    p.add_argument("--world-size", type=int, default=1,
                   help="also run each setting that splits across processes at this many processes (torchrun)")
    args = p.parse_args(argv)
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][\w.-]*", args.name):
        raise SystemExit(f"--name goes into a file name: letters, digits, '_', '.', '-' (e.g. avx2); got {args.name!r}")
    if args.reference_code and not shutil.which(args.reference_python):
        raise SystemExit(f"--reference-python {args.reference_python!r} is not an interpreter here; give its path")
    if args.one:
        from distillset import distributed

        distributed.init_from_env(args.device)
        result = measure_one(args.only[0], args.precision[0], args.device, args.warmup, args.iterations)
        if distributed.is_main():
            print(json.dumps({**result, "processes": distributed.world_size()}))
        return 0
    worlds = [1] if args.world_size == 1 else [1, args.world_size]
    runs, measured = [], {}
    work = args.reference_code and tempfile.TemporaryDirectory()  # held to the end: the reference's copy lives there
    ref = work and reference_speed.prepare(args.reference_code.expanduser(), args.reference_python, Path(work.name))
    for name in args.only:
        if ref and name in reference_speed.RUNS:  # just before distillset's, on the same (idle) machine
            measured[name] = reference_speed.measure(name, ref, args.reference_python, data_root())
            print(f"{name:11s} reference: {measured[name]['seconds']:.3f} s/it, peak RSS "
                  f"{measured[name]['peak_rss_mib']:.0f} MiB", flush=True)
        if args.world_size > 1 and not splits(name):
            continue
        for precision in args.precision:
            if precision == "bf16" and SETTINGS[name].get("method") not in PRECISION_METHODS | {None}:
                continue
            for world in worlds:
                runs.append(run_child(name, precision, world, args))
                r = runs[-1]
                print(f"{name:11s} {precision} x{world}: {r['seconds']:.3f} s/it, peak RSS {r['peak_rss_mib']:.0f} MiB",
                      flush=True)
    command = "python benchmarks/speed.py" + ("" if args.device == "cpu" else f" --device {args.device}") + \
        (f" --world-size {args.world_size}" if args.world_size > 1 else "")
    if ref:
        command += f" --reference-code REFERENCE --precision {' '.join(args.precision)}"
    if args.name:
        command += f" --name {args.name}"
    record = {"device": args.device, "runs": runs, "hardware": hardware(), "versions": versions(),
              "commit": git_commit(), "date": time.strftime("%Y-%m-%d"), "command": command,
              **({"reference_measured": measured} if ref else {})}
    print("\n".join(report_lines(record)))
    if not args.no_write:
        suffix = "_processes" if args.world_size > 1 else ""
        path = HERE / "results" / f"speed_{args.device.split(':')[0]}{suffix}{'_' + args.name if args.name else ''}.json"
        path.write_text(json.dumps(record, indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
