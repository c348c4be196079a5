"""The kernel side of the KIP-transfer rows (``mnist_ipc10_kip_ntkfc`` / ``mnist_ipc10_random_ntkfc``):
each committed set's ``fc_ntk`` kernel accuracy on MNIST's test set and the condition number of its
kernel matrix K_ss, next to the finite network's accuracy the records hold; and the size of the random
function a plain ``ntk_fc`` starts as (its prior std per output, sqrt of the ``fc_nngp`` diagonal, on the
set's images and on the test images) against the centred one-hot targets' (0.3). Writes
``results/kip_transfer_check.json``.

    python benchmarks/kip_transfer_check.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import data_root, git_commit  # noqa: E402

SETS = {"mnist_ipc10_kip_ntkfc": "kip", "mnist_ipc10_random_ntkfc": "random"}


def main() -> int:
    from distillset import SyntheticSet, load_dataset
    from distillset.kernels import kernel_accuracy, make_kernel

    data = load_dataset("mnist", root=data_root())
    kernel, prior = make_kernel("fc_ntk"), make_kernel("fc_nngp")
    x_test = data.normalize(data.test.images).double()
    out = {"kernel": "fc_ntk", "commit": git_commit(), "command": "python benchmarks/kip_transfer_check.py", "sets": {}}
    for name, method in SETS.items():
        syn = SyntheticSet.load(HERE / "results" / "sets" / name)  # the last root seed's set
        eig = torch.linalg.eigvalsh(kernel(syn.images.double()))
        record = json.loads((HERE / "results" / f"{name}.json").read_text())
        out["sets"][name] = {
            "root_seed": record["seeds"][-1],
            "kernel_accuracy": kernel_accuracy(kernel, syn.images.double(), syn.labels, x_test, data.test.labels),
            "condition_number": float(eig.max() / eig.min()),
            "initial_function_std": {"set": float(prior.diag(syn.images.double()).mean().sqrt()),
                                     "test": float(prior.diag(x_test).mean().sqrt())},
            "target_rms": float((1 - 1 / data.num_classes) ** 2 / data.num_classes
                                + (data.num_classes - 1) / data.num_classes ** 3) ** 0.5,
            "network_accuracy_this_seed": next(iter(record["per_seed"][-1]["results"][method].values()))["mean"],
            "network": next(iter(record["per_seed"][-1]["results"][method]))}
        print(name, out["sets"][name])
    (HERE / "results" / "kip_transfer_check.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
