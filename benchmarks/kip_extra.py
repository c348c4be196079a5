"""Kernel-regression accuracy for KIP / LS benchmark entries (``extra: "kip_extra:evaluate"``).

KRR accuracy (test %, full real test set) of the distilled set under a named kernel, next to the same
kernel's accuracy on (a) a random real subset of the same size (one-hot labels, same seed) and (b) the
set's own images with plain one-hot labels (for LS and learned-label KIP this isolates the label gain).
This is kernel accuracy, never network accuracy: the runner reports finite-network accuracy separately.

Entry keys read: ``kernel_eval`` (a kernel spec; default: the method's kernel, or its first family
member; random-feature kernels are rebuilt from their fixed ``seed``, 0 unless the spec says otherwise),
``paper_kernel`` (the published KERNEL accuracy, quoted in the summary only), ``seed``.
"""
from __future__ import annotations

import time

import torch

from distillset.kernels import kernel_accuracy, make_kernel
from distillset.methods import get_method
from distillset.zca import apply_zca


def _whiten(x: torch.Tensor, extra: dict) -> torch.Tensor:
    """Apply the set's ZCA to normalised images, as the method did."""
    return apply_zca(x, extra["zca"], extra.get("zca_mean")) if "zca" in extra else x


def evaluate(method, data, entry: dict) -> dict:
    t0 = time.perf_counter()
    syn = method.synthetic_
    spec = entry.get("kernel_eval") or (method.kernel if isinstance(method.kernel, str) else method.kernel[0])
    kernel = make_kernel(spec, in_shape=data.image_shape, num_classes=data.num_classes, seed=0,
                         model=method.model)
    k = data.num_classes
    x_test = _whiten(data.normalize(data.test.images), syn.extra)
    y_test = data.test.labels
    reg = getattr(method, "reg", 1e-6)

    def acc(images, labels):
        return kernel_accuracy(kernel, images.float(), labels, x_test, y_test, num_classes=k, reg=reg)

    ours = acc(syn.images, syn.labels)
    one_hot = torch.arange(k).repeat_interleave(syn.images.shape[0] // k)  # sets are class-major
    own_images = acc(syn.images, one_hot) if syn.labels.dim() == 2 else None
    rnd = get_method("random", ipc=entry["ipc"], random_state=entry.get("seed", 0), device="cpu").fit(data).synthetic_
    random_acc = acc(_whiten(rnd.images, syn.extra), rnd.labels)
    paper = entry.get("paper_kernel")
    summary = f"kernel acc [{spec}]: {ours:.2f} %" + (f" (paper {paper})" if paper else "")
    summary += f"; random real {random_acc:.2f} %"
    if own_images is not None:
        summary += f"; own images, one-hot labels {own_images:.2f} %"
    return {"kernel": spec, "paper_kernel": paper, "kernel_accuracy": ours, "random_kernel_accuracy": random_acc,
            "own_images_one_hot_kernel_accuracy": own_images, "labels": "float targets" if syn.labels.dim() == 2
            else "hard", "seconds": time.perf_counter() - t0, "summary": summary}
