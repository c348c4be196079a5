"""What it takes for KIP (fc_ntk) images to train their own finite network ``ntk_fc``: measurements for
issue 18 on the committed MNIST IPC 10 sets (root seed 2, ``results/sets/mnist_ipc10_{kip,random}_ntkfc``).

Part A, the kernel's own prediction of the training (float64, no network): in the NTK limit a network
trained with MSE follows linear dynamics in the eigenbasis of the kernel matrix K_ss, so the evaluator's
schedule (SGD with momentum, full batch since 100 < 256, lr x0.1 at half the epochs) can be replayed per
eigenvalue exactly. The test prediction after T epochs is K_ts K_ss^-1 (I - R_T) Y (the mean over initial
networks; weight decay left out), compared with the converged kernel's.

Part B, the finite networks: ``ntk_fc`` (width 1024) trained by the library's evaluator under the first
recorded recipe (lr 3, 300 epochs, bf16 autocast, the protocol's weight decay 5e-4) and variations (fp32,
no weight decay, centred ``ntk_fc(centred=True)``, longer). Per variation: the single-network test
accuracy, the accuracy of the 5 networks' mean output (which averages out the random initial function a
single network keeps), the final training MSE, and the agreement of the networks' argmax with the
converged kernel's. The single-network accuracy is the evaluator's, under the row's precision; the
5-network mean and the agreement are computed here in fp32.

Part C: how far one network's weights move from their initialisation under that recipe, with and without
weight decay.

The test set here serves an analysis, not a choice: no setting below feeds back into a table.

    python benchmarks/kip_transfer_sweep.py [--quick]

Writes ``results/kip_transfer_sweep.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import data_root, git_commit, git_dirty, hardware, versions  # noqa: E402

SETS = {"kip": "mnist_ipc10_kip_ntkfc", "random": "mnist_ipc10_random_ntkfc"}
RECORDED = {"lr": 3.0, "epochs": 300, "momentum": 0.9}  # what validation chose for root seed 2 (both sets)
# (name, network, epochs, lr, precision, weight decay)
VARIATIONS = [("recorded recipe (bf16, weight decay 5e-4)", "ntk_fc", 300, 3.0, "bf16", 5e-4),
              ("fp32", "ntk_fc", 300, 3.0, "fp32", 5e-4),
              ("no weight decay", "ntk_fc", 300, 3.0, "bf16", 0.0),
              ("no weight decay, centred", "ntk_fc(centred=True)", 300, 3.0, "bf16", 0.0),
              ("no weight decay, centred, 1000 epochs", "ntk_fc(centred=True)", 1000, 3.0, "bf16", 0.0)]


def replay(eigenvalues: torch.Tensor, *, lr: float, epochs: int, momentum: float, n_outputs: int) -> torch.Tensor:
    """R_T per eigenvalue: the residual f - y left after the evaluator's schedule under linear dynamics.

    F.mse_loss averages over n x C entries, so a step moves the residual in eigendirection k by
    lr x 2 lambda_k / (n C) through SGD's momentum buffer (the same recursion as torch.optim.SGD)."""
    n = eigenvalues.numel()
    rate = 2.0 * eigenvalues / (n * n_outputs)
    r, v = torch.ones_like(eigenvalues), torch.zeros_like(eigenvalues)
    for epoch in range(epochs):
        step = lr * (0.1 if epochs >= 2 and epoch >= epochs // 2 else 1.0)
        v = momentum * v + rate * r
        r = r - step * v
    return r


def kernel_theory(kernel, x_s, y_s, x_test, labels_test, num_classes: int) -> dict:
    from distillset.kernels import centered_one_hot

    k_ss, k_ts = kernel(x_s).double(), kernel(x_test, x_s).double()
    y = centered_one_hot(y_s, num_classes)
    lam, u = torch.linalg.eigh(k_ss)
    out = {"condition_number": float(lam.max() / lam.min()), "eigenvalue_range": [float(lam.min()), float(lam.max())]}

    def accuracy(weights):  # weights: per-eigenvalue factor on U^T y
        pred = k_ts @ (u @ ((weights / lam)[:, None] * (u.T @ y)))
        return 100.0 * float((pred.argmax(1) == labels_test).double().mean()), pred.argmax(1)

    out["converged"], converged_argmax = accuracy(torch.ones_like(lam))
    energy = (u.T @ y).pow(2).sum(1)  # the targets' energy per eigendirection
    out["schedules"] = {}
    for epochs in (300, 3000, 30000):
        r = replay(lam, lr=RECORDED["lr"], epochs=epochs, momentum=RECORDED["momentum"], n_outputs=num_classes)
        acc, _ = accuracy(1.0 - r)
        out["schedules"][str(epochs)] = {
            "test_accuracy": acc,
            "train_residual_fraction": float((r.pow(2) * energy).sum() / energy.sum()),
            "unconverged_directions": int((r.abs() > 0.1).sum())}
    return out, converged_argmax


def finite_networks(syn, data, x_test, labels_test, converged_argmax, *, network, epochs, lr, precision,
                    weight_decay, n_models):
    from distillset.evaluate import Evaluator

    ev = Evaluator(network, n_models=n_models, epochs=epochs, lr=lr, loss="mse", augment=None,
                   precision=precision, weight_decay=weight_decay, random_state=2)
    t0 = time.perf_counter()
    result = next(iter(ev.score(syn, data, keep_networks=True).values()))
    nets = next(iter(ev.networks_.values()))
    target = torch.nn.functional.one_hot(syn.labels, data.num_classes).float() - 1.0 / data.num_classes
    with torch.no_grad():
        outputs = torch.stack([net.float()(x_test) for net in nets])
        train_mse = [float(torch.nn.functional.mse_loss(net(syn.images.float()), target)) for net in nets]
    argmax = outputs.argmax(2)
    return {"network": network, "epochs": epochs, "lr": lr, "precision": precision, "weight_decay": weight_decay,
            "single_accuracies": result.accuracies,
            "single_mean": statistics.fmean(result.accuracies), "single_std": statistics.stdev(result.accuracies),
            "ensemble_accuracy": 100.0 * float((outputs.mean(0).argmax(1) == labels_test).float().mean()),
            "agreement_with_kernel": [100.0 * float((a == converged_argmax).float().mean()) for a in argmax],
            "train_mse": train_mse, "seconds": time.perf_counter() - t0}


def weight_norms(syn, data, *, lr: float, epochs: int) -> dict:
    """||theta_T|| / ||theta_0|| per parameter tensor of one ``ntk_fc`` (seed 0) after the recorded recipe,
    with the protocol's weight decay and without: how far training leaves the initialisation (the kernel
    regime keeps it close)."""
    import torch.nn.functional as F

    from distillset.evaluate import train_network
    from distillset.models import get_model
    from distillset.utils import make_generator

    target = F.one_hot(syn.labels, data.num_classes).float() - 1.0 / data.num_classes
    out = {}
    for weight_decay in (5e-4, 0.0):
        net = get_model("ntk_fc", data.image_shape, data.num_classes, seed=0)
        start = {name: float(p.detach().norm()) for name, p in net.named_parameters()}
        train_network(net, syn.images.float(), target, epochs=epochs, generator=make_generator(0, "cpu"), lr=lr,
                      loss="mse", augment=None, weight_decay=weight_decay, precision="fp32")
        out[str(weight_decay)] = {name: float(p.detach().norm()) / start[name] for name, p in net.named_parameters()}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="part A only")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from distillset import SyntheticSet, load_dataset
    from distillset.kernels import make_kernel

    data = load_dataset("mnist", root=data_root())
    x_test, labels_test = data.normalize(data.test.images), data.test.labels
    kernel = make_kernel("fc_ntk")
    out = {"commit": git_commit(), "dirty": git_dirty(), "command": "python benchmarks/kip_transfer_sweep.py",
           "versions": versions(), "hardware": hardware(args.threads), "recorded": RECORDED, "sets": {}}
    for name, entry in SETS.items():
        syn = SyntheticSet.load(HERE / "results" / "sets" / entry)
        theory, converged_argmax = kernel_theory(kernel, syn.images.double(), syn.labels, x_test.double(),
                                                 labels_test, data.num_classes)
        out["sets"][name] = {"entry": entry, "kernel": theory, "networks": []}
        print(name, json.dumps(theory), flush=True)
        if args.quick:
            continue
        out["sets"][name]["weight_norm_ratio"] = weight_norms(syn, data, lr=RECORDED["lr"], epochs=RECORDED["epochs"])
        print(name, "weight norm ratios", out["sets"][name]["weight_norm_ratio"], flush=True)
        for label, network, epochs, lr, precision, weight_decay in VARIATIONS:
            row = {"variation": label, **finite_networks(syn, data, x_test, labels_test, converged_argmax,
                                                         network=network, epochs=epochs, lr=lr, precision=precision,
                                                         weight_decay=weight_decay, n_models=5)}
            out["sets"][name]["networks"].append(row)
            print(name, label, {k: row[k] for k in ("single_mean", "single_std", "ensemble_accuracy")},
                  f"agreement {statistics.fmean(row['agreement_with_kernel']):.1f}",
                  f"train mse {statistics.fmean(row['train_mse']):.2e}", f"{row['seconds']:.0f} s", flush=True)
    if not args.quick:
        (HERE / "results" / "kip_transfer_sweep.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
