"""The speed machinery must not change what is computed: re-drawn networks, chunked channels-last
forwards, side-by-side evaluation and bf16 each against the plain computation."""
import math

import pytest
import torch

from distillset import Evaluator
from distillset.methods import RandomSubset, get_method
from distillset.models import Redraw, get_model
from distillset.precision import bf16_supported, chunk_size, frozen_embed, resolve_precision, to_channels_last


def test_redraw_follows_pytorch_default_init_and_the_generator():
    net = get_model("convnet", (1, 28, 28), 10, seed=0)
    redraw = Redraw(net)
    a = [p.clone() for p in redraw(torch.Generator().manual_seed(1)).parameters()]
    b = [p.clone() for p in redraw(torch.Generator().manual_seed(1)).parameters()]
    c = [p.clone() for p in redraw(torch.Generator().manual_seed(2)).parameters()]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    conv = net.features[4]  # 128 -> 128, 3x3: U(-1/sqrt(1152), 1/sqrt(1152)), as nn.Conv2d's own init
    bound = 1 / math.sqrt(128 * 9)
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.95 * bound
    assert abs(conv.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound  # the uniform's std
    norm = net.features[1]
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.equal(norm.bias, torch.zeros_like(norm.bias))



@pytest.mark.parametrize("name", ["ntk_fc", "ntk_convnet(width=16, depth=2)"])
def test_redraw_draws_ntk_layers_standard_normal(name):
    """NTK-parameterised layers are N(0, 1) (scaled in the forward): DM / DC / IDM re-draw them (a TypeError before)."""
    net = get_model(name, (1, 8, 8), 10, seed=0)
    a = torch.cat([p.flatten().clone() for p in Redraw(net)(torch.Generator().manual_seed(1)).parameters()])
    b = torch.cat([p.flatten().clone() for p in Redraw(net)(torch.Generator().manual_seed(1)).parameters()])
    assert torch.equal(a, b) and a.numel() > 500
    assert abs(a.mean().item()) < 0.1 and abs(a.std().item() - 1) < 0.1


def test_dm_fits_with_an_ntk_model(digits):
    dm = get_method("dm", ipc=1, iterations=2, model="ntk_fc", random_state=0, progress=False).fit(digits)
    assert torch.isfinite(dm.synthetic_.images).all()

@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_frozen_embed_equals_the_plain_forward(shape):
    net = get_model("convnet", shape, 10, seed=0).requires_grad_(False)
    x = torch.randn(45, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = net.embed(x)
    fp32 = frozen_embed(net, x, dtype=None, chunk=chunk_size(shape))  # chunked, channels-last on CPU
    assert torch.allclose(fp32, plain, atol=1e-4, rtol=1e-4)
    bf16 = frozen_embed(net, x, dtype=torch.bfloat16, chunk=16)
    assert bf16.dtype == torch.float32 and (bf16 - plain).norm() < 0.03 * plain.norm()
    assert x.is_contiguous() and next(net.parameters()).is_contiguous()  # caller's tensors untouched


def test_to_channels_last_also_for_one_channel():
    x = torch.randn(2, 1, 4, 4)
    y = to_channels_last(x)
    assert torch.equal(x, y) and y.stride() == (16, 1, 4, 1)


def test_side_by_side_evaluation_is_bit_identical_to_one_at_a_time(digits):
    syn = RandomSubset(ipc=2, random_state=0).fit(digits).synthetic_
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread either way, so the arithmetic is the same
    try:
        kw = dict(n_models=3, epochs=8, augment="auto", random_state=0, device="cpu", precision="fp32")
        one = Evaluator(**kw, workers=1).score(syn, digits)["convnet"].accuracies
        three = Evaluator(**kw, workers=3).score(syn, digits)["convnet"].accuracies
    finally:
        torch.set_num_threads(threads)
    assert one == three and len(set(one)) > 1  # distinct networks, same results
    assert torch.get_num_threads() == threads


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="this CPU emulates bf16 (no AVX512-BF16 / AMX, "
                    "~0.7 GFLOP/s): 4 networks take minutes here; precision='auto' never picks bf16 on it")
def test_bf16_evaluation_matches_fp32_within_noise(digits):
    syn = RandomSubset(ipc=3, random_state=0).fit(digits).synthetic_
    kw = dict(n_models=4, epochs=100, augment=None, random_state=0, device="cpu")
    fp32 = Evaluator(**kw, precision="fp32").score(syn, digits)["convnet"]
    bf16 = Evaluator(**kw, precision="bf16").score(syn, digits)["convnet"]
    assert fp32.precision == "fp32" and bf16.precision == "bf16"
    assert abs(fp32.mean - bf16.mean) < 2 * max(fp32.std, bf16.std, 1.0), (fp32, bf16)


@pytest.mark.parametrize("method", ["dm", "dsa"])
def test_bf16_distillation_follows_fp32(digits, method):
    """The same seed at bf16 and fp32: the losses agree to bf16's resolution and the images stay float32."""
    kw = dict(ipc=1, iterations=4, batch_real=16, random_state=0, device="cpu", progress=False)
    if method == "dsa":
        kw.update(lr_img=0.01, model="convnet_d2")  # the 8x8 settings of DC's docstring
    a = get_method(method, precision="fp32", **kw).fit(digits)
    b = get_method(method, precision="bf16", **kw).fit(digits)
    la, lb = torch.tensor(a.history_["loss"]), torch.tensor(b.history_["loss"])
    assert b.synthetic_.images.dtype == torch.float32
    assert torch.allclose(la[0], lb[0], rtol=0.03), (la, lb)  # first step: same images and network
    assert not torch.equal(la, lb)  # bf16 was really used


def test_precision_auto_is_bf16_exactly_where_the_device_has_it():
    cpu = torch.device("cpu")
    assert (resolve_precision("auto", cpu) == torch.bfloat16) == bf16_supported(cpu)
    assert resolve_precision("bf16", cpu) == torch.bfloat16 and resolve_precision("fp32", cpu) is None


_STEPS = """
import resource, sys, torch
from distillset.evaluate import train_network
from distillset.models import get_model
from distillset.utils import keep_freed_memory
torch.set_num_threads(1)
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
x, y = torch.randn(100, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(10).repeat_interleave(10)
net = get_model("convnet", (1, 28, 28), 10, seed=0)
run = lambda epochs: train_network(net, x, y, epochs=epochs, generator=torch.Generator().manual_seed(1), precision="fp32")
def faults_of(epochs):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run(epochs)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
run(1)
faults = min(faults_of(3), faults_of(3))  # the lower of two: a fault burst from elsewhere on the machine hits one
print(kept, faults, sum(p.double().sum().item() for p in net.parameters()))
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_kept_freed_memory_ends_the_page_faults_of_each_step_and_changes_no_value():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()  # malloc as glibc ships it, whatever this shell set
           if k not in ("DISTILLSET_KEEP_FREED_MEMORY", "GLIBC_TUNABLES", "LD_PRELOAD") and not k.startswith("MALLOC_")}

    def run(mode):
        out = subprocess.run([sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True, env=env)
        return out.stdout.split()

    default, kept = run("default"), run("keep")
    if kept[0] != "True":
        pytest.skip("mallopt is not available (not glibc)")
    if int(default[1]) < 100_000:
        pytest.skip(f"glibc's default malloc faulted only {default[1]} times here (e.g. transparent huge pages 'always')")
    assert int(kept[1]) < int(default[1]) / 10, (default, kept)  # 227k vs 9k measured
    assert kept[2] == default[2]  # the same weights to the last digit


def test_keep_freed_memory_leaves_other_devices_alone():
    from distillset.utils import keep_freed_memory

    assert keep_freed_memory(torch.device("meta")) is False and keep_freed_memory("meta") is False


_BIG_STEP = """
import ctypes, os
from distillset.utils import keep_freed_memory
print(keep_freed_memory())
libc = ctypes.CDLL(None)  # malloc itself: a tensor's small allocations could sit between the block and the top
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
n = 5 * 2**28  # a step's activations of 1.25 GiB, written, then freed at its end
block = libc.malloc(n)
ctypes.memset(block, 1, n)
libc.free(block)
print(int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20)  # resident MiB
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_step_freeing_more_than_a_gib_keeps_it_too():
    """A 1 GiB trim threshold handed such a step's memory back at once and the next step faulted it in again:
    DM factor 2 at CIFAR-10 IPC 10 in fp32 spent 25 % of its time in the kernel. Resident memory after the
    free tells (page faults would not where transparent huge pages make them few)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DISTILLSET_KEEP_FREED_MEMORY"}
    out = subprocess.run([sys.executable, "-c", _BIG_STEP], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    if out[0] != "True":
        pytest.skip("glibc's mallopt is not available here")
    assert int(out[1]) > 1200, out  # kept: 1498 MiB resident; with the 1 GiB threshold 282 (measured)
