"""Mixed precision and bounded-memory forwards, shared by every method and the evaluator.

``precision`` means one thing everywhere: ``"fp32"`` computes in float32; ``"bf16"`` runs forward and
backward passes under ``torch.autocast(dtype=bfloat16)`` while the learnable tensors (synthetic images,
network weights) and every optimizer step stay float32 (master copies); ``"auto"`` is bf16 where the
device has fast bf16 arithmetic (CUDA with bf16 support; a CPU with AVX512-BF16 or AMX) and fp32
elsewhere. bf16 needs no loss scaling (its exponent range is float32's).

Why bf16 pays on CPU (measured, ``benchmarks/speed.py``): ConvNet-3 training steps are bound by the
convolution arithmetic, which AVX512-BF16 does at twice the float32 rate; the memory-bound layers
(norm, ReLU, pooling) move half the bytes.
"""
from __future__ import annotations

import contextlib

import torch
from torch.func import functional_call

PRECISIONS = ("auto", "fp32", "bf16")

# Largest activation a chunked forward materialises, in elements (1.5 Mi = 6 MB in float32): ConvNet-3 on
# 32x32 maps then runs 12 images at a time, the fastest chunk on 2 cores at fp32 and bf16 (measured:
# 8-16 images within a few %, 32 images 1.3-1.7x slower, one 640-image batch 2-5x slower; activations
# over 32 MB leave glibc's heap, and their page faults cost more than the arithmetic).
CHUNK_ELEMENTS = 3 * 2**19


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` does bf16 arithmetic natively (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``: ``torch.bfloat16`` or ``None`` (float32).

    >>> resolve_precision("fp32", torch.device("cpu")) is None
    True
    """
    if precision == "fp32":
        return None
    if precision == "bf16" or bf16_supported(device):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op for float32 (``dtype=None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    """``"bf16"`` or ``"fp32"``: what a run records."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def chunk_size(image_shape, channels: int = 128, floor: int = 8) -> int:
    """Images per chunk so that one ``channels``-wide activation at the input resolution stays under
    ``CHUNK_ELEMENTS`` (at least ``floor``). 128 is ConvNet's width, the widest first layer we ship.

    >>> chunk_size((1, 28, 28)), chunk_size((3, 32, 32)), chunk_size((3, 64, 64))
    (12, 12, 8)
    """
    _, h, w = image_shape
    pad = 4 if (h, w) == (28, 28) else 0  # ConvNet pads 28x28 input to 32x32
    return max(floor, CHUNK_ELEMENTS // (channels * (h + pad) * (w + pad)))


@torch.no_grad()
def frozen_embed(net: torch.nn.Module, x: torch.Tensor, *, dtype: torch.dtype | None, chunk: int) -> torch.Tensor:
    """``net.embed`` of ``x`` without a graph, in chunks of ``chunk`` images: float32 (B, F).

    Bounded memory: one chunk's activations at a time, whatever B is. Under bf16 on CPU the chunk runs
    in channels-last layout, where oneDNN's convolutions and pooling are 1.6x and 5x faster than in the
    default layout (measured on ConvNet-3); inputs and convolution weights are passed channels-last, and the network's norm layers handle the layout themselves.
    """
    embed = _Embed(net)
    state = {**{f"net.{k}": v for k, v in net.named_parameters()}, **{f"net.{k}": v for k, v in net.named_buffers()}}
    channels_last = x.device.type == "cpu" and x.dim() == 4
    if channels_last:
        state = {k: to_channels_last(v) if v.dim() == 4 else v for k, v in state.items()}
    out = []
    for xb in x.split(chunk):
        if channels_last:
            xb = to_channels_last(xb)
        with autocast(x.device, dtype):
            out.append(functional_call(embed, state, (xb,)).float())
    return torch.cat(out)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) with channels-last strides, also for C = 1, where ``contiguous(memory_format=
    channels_last)`` keeps the default strides (both layouts are the same bytes) and the next layer would
    stay in the default layout."""
    if x.shape[1] == 1:
        n, _, h, w = x.shape
        return x.contiguous().as_strided(x.shape, (h * w, 1, w, 1))
    return x.contiguous(memory_format=torch.channels_last)


class _Embed(torch.nn.Module):
    """``net.embed`` as a module's forward, for ``functional_call``."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)
