"""Several processes, one run: the plumbing for ``torch.distributed`` (``torchrun``, or an initialised group).

How a run splits (methods whose ``_distributed`` is True): every rank draws *every* random number of an
iteration from the same replicated generator (the networks, every class's real batch, every
augmentation), so the draws do not depend on the number of processes; each rank then computes the loss
of its share of the classes only (class c goes to rank c mod world size; DD shares its initialisations
the same way), the gradients of the learnable tensors are summed across ranks before the one shared
update (:func:`all_reduce_sum`), and every rank holds the identical synthetic set after every step. A
class's loss reaches only its own images, so a row's summed gradient is its owner's gradient plus zeros: the result equals the one-process run up to
the floating-point differences of smaller batches (measured: ``tests/test_distributed.py``).

The evaluator spreads its networks the same way (network i on rank i mod world size) and gathers their
accuracies (:func:`gather`). Checkpoints are written by rank 0 only (atomically, so a failing rank
leaves the last good one) and read by every rank.

Splitting is opt-in: the functions here act only inside :func:`enabled` (the CLI enters it under
``torchrun``), in a process group of more than one process. Elsewhere (no group, or a group the caller
uses for something else, e.g. DDP training that calls ``fit`` or ``Evaluator.score`` on one rank) every
function is the one-process identity.

Examples
--------
>>> active(), share(3)
(False, [0, 1, 2])
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import os
from typing import TYPE_CHECKING

from .errors import InvalidParameterError  # torch is imported where used: the CLI's --help stays instant

if TYPE_CHECKING:
    import torch


_ENABLED = False


@contextlib.contextmanager
def enabled():
    """Split distillset's work across the processes of the initialised default group while inside."""
    global _ENABLED
    before, _ENABLED = _ENABLED, True
    try:
        yield
    finally:
        _ENABLED = before


def active() -> bool:
    """Inside :func:`enabled`, with an initialised group of more than one process."""
    import torch.distributed as dist

    return _ENABLED and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def share(n: int) -> list[int]:
    """This rank's items of ``range(n)``: every world-size-th, from its rank on."""
    return list(range(rank(), n, world_size()))


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Sum each tensor across ranks, in place (one flat buffer: one collective call)."""
    if not active() or not tensors:
        return
    import torch
    import torch.distributed as dist

    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))  # float64 stays float64
    flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def gather(local: list, n: int) -> list:
    """The results of all ranks' :func:`share` of ``range(n)``, in item order (``local`` is this rank's, in
    order). Results must be picklable; small (numbers), since every rank receives all of them."""
    if not active():
        return local
    import torch.distributed as dist

    parts = [None] * world_size()
    dist.all_gather_object(parts, local)
    out = [None] * n
    for r, part in enumerate(parts):
        out[r::world_size()] = part
    return out


def broadcast_(tensors: list[torch.Tensor]) -> None:
    """Rank 0's values of ``tensors`` on every rank, in place: work every rank repeats with the same draws
    stays identical even where a GPU kernel is nondeterministic."""
    if not active():
        return
    import torch.distributed as dist

    for t in tensors:
        dist.broadcast(t.data, 0)


def broadcast_module_(net: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers of ``net`` on every rank."""
    broadcast_(list(net.parameters()) + list(net.buffers()))


@contextlib.contextmanager
def on_main(context):
    """Enter ``context()`` on rank 0 alone (the one process that writes, e.g. holding the --out folder);
    when that fails, every process raises the error (an :class:`OutputError` with its message where it is
    not distillset's own), so each names the reason rather than waiting at its next collective."""
    from .errors import DistillsetError, OutputError

    with contextlib.ExitStack() as stack:
        error = None
        if is_main():
            try:
                stack.enter_context(context())
            except Exception as e:  # told to the other ranks, raised here as it is
                error = e
        told = error if error is None or isinstance(error, DistillsetError) else \
            OutputError(f"rank 0: {type(error).__name__}: {error}")  # any exception type pickles as this one
        if active():
            import torch.distributed as dist

            shared = [told]
            dist.broadcast_object_list(shared, 0)
            told = shared[0]
        if error is not None or told is not None:
            raise error or told
        yield


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def world_size_from_env() -> int:
    """The number of processes ``torchrun`` started (``$WORLD_SIZE``; 1 when unset)."""
    from .utils import env_number

    return env_number("WORLD_SIZE")


def init_from_env(device: str | None = None) -> bool:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1); returns
    True when it did. NCCL when this process has a GPU (``cuda:LOCAL_RANK``), gloo otherwise. A rank
    that waits longer than ``$DISTILLSET_TIMEOUT_S`` seconds (default 1800, as torch's) for the others
    fails with an error rather than hanging: ranks with fewer evaluation networks wait for the others."""
    if world_size_from_env() <= 1:
        return False
    import torch
    import torch.distributed as dist

    from .utils import env_number

    if dist.is_initialized():
        return False
    timeout_s = env_number("DISTILLSET_TIMEOUT_S")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise InvalidParameterError(f"WORLD_SIZE is set but {key} is not: start several processes with torchrun "
                                        "(torchrun --nproc-per-node N -m distillset ...), which sets them.")
    gpu = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if gpu:
        local_rank = env_number("LOCAL_RANK")
        if local_rank >= torch.cuda.device_count():
            raise InvalidParameterError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} CUDA "
                                        "device(s); start at most that many processes per node (torchrun --nproc-per-node).")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if gpu else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return True


def check_supported(method, num_classes: int | None = None) -> None:
    """Refuse, before any work, a method that cannot run across processes (its ``_distributed`` says why),
    or more processes than the data set has classes to split."""
    if not active():
        return
    if num_classes is not None and world_size() > num_classes:
        raise InvalidParameterError(f"{world_size()} processes for {num_classes} classes would leave a process "
                                    f"without work; start at most {num_classes} (torchrun --nproc-per-node).")
    reason = getattr(method, "_distributed", False)
    if reason is not True:
        raise InvalidParameterError(
            f"{type(method).__name__} cannot split its work across {world_size()} processes: {reason or 'not supported'}. "
            "Run it in one process (several seeds or data sets can run side by side).")


def agree(value, what: str) -> None:
    """Refuse to go on unless every process holds the same ``value`` (e.g. the checkpoint it resumes)."""
    if not active():
        return
    import torch.distributed as dist

    values = [None] * world_size()
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise InvalidParameterError(f"The processes disagree on {what} ({values}); every process must see the same "
                                    "files: put --out on a file system shared by all nodes.")
