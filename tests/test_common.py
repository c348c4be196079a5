"""The contract every registered method, model, kernel and data set passes (scikit-learn's test_common habit).

A new entry in a registry is covered by registering it. The model, kernel and method checks run on
``--device`` (default cpu; ``pytest --device cuda`` on a GPU); the model and kernel checks in ``--dtype``
(methods compute in float32 and skip other dtypes).
"""
import json

import pytest
import torch

from distillset.data import DATASETS, list_datasets
from distillset.kernels import list_kernels, make_kernel
from distillset.methods import METHODS, DistillMethod, get_method, list_methods
from distillset.models import get_model, has_batchnorm, list_models

# ------------------------------------------------------------------------------------------- registries


def test_registries_are_not_empty():
    assert "digits" in list_datasets() and "convnet" in list_models() and "dm" in list_methods()
    assert "fc_ntk" in list_kernels()


# ------------------------------------------------------------------------------------------- models

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)]
NUM_CLASSES = 5
BN_MODELS = {"convnet_bn", "alexnet_bn", "vgg11_bn", "resnet18_bn"}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list_models())
def test_model_contract(name, shape, device, dtype):
    """forward (B, C), embed (B, feature_dim), finite, and a nonzero gradient to every parameter and the input."""
    net = get_model(name, shape, NUM_CLASSES, seed=0, device=device).to(dtype)  # train mode: BN uses batch stats
    assert isinstance(net.feature_dim, int) and not isinstance(net.feature_dim, bool)
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(2, *shape, generator=g, device=device).to(dtype).requires_grad_(True)

    h = net.embed(x)
    out = net.classify(h)
    assert h.shape == (2, net.feature_dim), f"{name}: embed gave {tuple(h.shape)}, feature_dim={net.feature_dim}"
    assert out.shape == (2, NUM_CLASSES) and out.dtype == dtype and out.device.type == device.type
    assert torch.isfinite(out).all() and torch.isfinite(h).all()

    assert (h[0] - h[1]).abs().max() > 1e-3, f"{name}: embeddings do not depend on the input"
    (out * torch.randn(out.shape, generator=g, device=device).to(dtype)).sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
        # A conv bias right before instance/batch norm is cancelled by the norm (true zero gradient, as in
        # the reference nets). Every other parameter must get a real one: a collapsed net (e.g. instance
        # norm on 1x1 maps) gives ~1e-7 from rounding alone, healthy nets > 1e-3 here.
        if not pname.endswith("bias"):
            assert p.grad.abs().max() > 1e-5, f"{name}: (near-)zero gradient at {pname}"
    assert x.grad is not None and x.grad.abs().max() > 1e-5, f"{name}: the input gets no gradient"

    with torch.no_grad():  # forward == classify(embed(x)) (no BN here: train-mode BN stats would move)
        if not has_batchnorm(net):
            torch.testing.assert_close(net(x), out)
    assert has_batchnorm(net) == (name in BN_MODELS)


@pytest.mark.parametrize("name", list_models())
def test_model_seed_gives_identical_weights_and_leaves_global_rng_alone(name, device):
    shape = (1, 8, 8)
    state = torch.get_rng_state()
    a = get_model(name, shape, NUM_CLASSES, seed=3, device=device).state_dict()
    b = get_model(name, shape, NUM_CLASSES, seed=3, device=device).state_dict()
    c = get_model(name, shape, NUM_CLASSES, seed=4, device=device).state_dict()
    assert torch.equal(torch.get_rng_state(), state), "get_model(seed=...) changed the global RNG state"
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# ------------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("name", list_kernels())
def test_kernel_contract(name, device, dtype):
    """Symmetric, positive semi-definite on distinct inputs, ``diag`` agrees with the matrix."""
    if dtype == torch.bfloat16:
        pytest.skip("kernels are solved in float64; bfloat16 inputs lose the PSD check to rounding")
    kernel = make_kernel(name, in_shape=(1, 8, 8), num_classes=NUM_CLASSES, seed=0, device=device,
                         model="convnet_w32")
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    k = kernel(x)
    assert k.shape == (6, 6) and k.dtype == dtype
    torch.testing.assert_close(k, k.T)
    torch.testing.assert_close(k.diagonal(), kernel.diag(x))
    assert torch.linalg.eigvalsh(k.double()).min() > -1e-6 * k.diagonal().abs().max().double()


# ------------------------------------------------------------------------------------------- data sets


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_spec_contract(name):
    """Every registered data set: a provenance label, consistent constants, checksummed downloads."""
    spec = DATASETS.get(name)
    assert spec.name == name and spec.source and callable(spec.read)
    if spec.mean is not None:
        assert len(spec.mean) == len(spec.std) and all(s > 0 for s in spec.std)
        if spec.image_shape is not None:
            assert len(spec.mean) == spec.image_shape[0]
    for f in spec.files:
        assert f.url.startswith(("http://", "https://")) and f.md5 and len(f.md5) == 32


def test_loaded_dataset_contract(digits, device):
    """What the methods rely on, on the zero-download data set: uint8 images, int64 labels, normalisation."""
    for split in (digits.train, digits.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == digits.image_shape
        assert split.labels.dtype == torch.int64 and 0 <= int(split.labels.min()) <= int(split.labels.max()) < 10
    x = digits.normalize(digits.train.images[:4].to(device))
    assert x.dtype == torch.float32 and x.device.type == device.type
    torch.testing.assert_close(digits.denormalize(x), digits.train.images[:4].to(device).float() / 255)
    json.dumps(digits.meta())


# ------------------------------------------------------------------------------------------- methods

# small, fast settings per method (digits); a new method adds a line here
FAST = {
    "dm": dict(batch_real=16),
    "random": {}, "herding": dict(features="pixels"), "kcenter": dict(features="pixels"),
    "dc": dict(batch_real=16),
    "dsa": dict(batch_real=16),
    "dd": dict(steps=1, epochs=2, batch_real=6),
    "kip": {},
    "ls": {},
    "mtt": dict(model="mlp", num_experts=2, train_epochs=2, syn_steps=3, expert_epochs=1, max_start_epoch=2, lr_img=10.0),
    "datm": dict(model="mlp", num_experts=2, train_epochs=2, syn_steps=3, expert_epochs=1, max_start_epoch=2),
    "idm": dict(batch_real=16, net_num=3, net_generate_interval=1, model_train_steps=2, batch_train=32),
    "dance": dict(batch_real=16, model="mlp", num_experts=2, train_epochs=1),
    "ncfm": dict(batch_real=16, model="mlp", num_experts=2, train_epochs=1, num_freqs=64),
}
SELECTION = ("random", "herding", "kcenter", "ls")  # no iterations
DETERMINISTIC = ("herding", "kcenter", "ls")  # on pixel features the seed plays no part
ITERATIVE = [m for m in list_methods() if m not in SELECTION]


@pytest.fixture
def fast(device, dtype):
    if dtype != torch.float32:
        pytest.skip("methods compute in float32")

    def build(name, **kw):
        base = dict(ipc=2, random_state=0, device=str(device), progress=False)
        return get_method(name, **{**base, **FAST.get(name, {}), **kw})

    return build


def test_every_method_has_fast_settings():
    assert set(list_methods()) <= set(FAST), f"add fast test settings for {set(list_methods()) - set(FAST)}"


@pytest.mark.parametrize("name", list_methods())
def test_method_init_only_stores(name):
    cls = METHODS.get(name)
    assert issubclass(cls, DistillMethod) and cls.name == name
    m = cls()
    for k, v in m.get_params().items():  # every constructor argument is stored under its own name
        assert getattr(m, k) is v
    assert cls.__doc__ and "Parameters" in (cls.__doc__ + (DistillMethod.__doc__ or ""))


@pytest.mark.parametrize("name", list_methods())
def test_method_smoke(name, digits, fast):
    m = fast(name, iterations=0 if name in SELECTION else 2).fit(digits)
    s = m.synthetic_
    assert s.images.shape == (20, 1, 8, 8) and torch.isfinite(s.images).all()
    if s.labels.dim() == 1:
        assert torch.equal(torch.bincount(s.labels, minlength=10), torch.full((10,), 2))
    else:  # learned soft labels (LS): their argmax need not be the class an image was drawn from
        assert s.labels.shape == (20, 10) and torch.isfinite(s.labels).all()
    assert s.meta["method"] == name and s.meta["seed"] == 0 and s.meta["dataset"] == "digits"
    assert m.planned_output() == {"label_kind": s.label_kind, "zca": "zca" in s.extra}  # declared before the work


@pytest.mark.parametrize("name, options", [("kip", dict(learn_labels=True)), ("kip", dict(zca=True)),
                                           ("datm", dict(soft_labels=False)), ("mtt", dict(soft_labels=True))])
def test_planned_output_follows_the_options(name, options, digits, fast):
    m = fast(name, iterations=1, **options)
    planned = m.planned_output()
    s = m.fit(digits).synthetic_
    assert planned == {"label_kind": s.label_kind, "zca": "zca" in s.extra}


@pytest.mark.parametrize("name", list_methods())
def test_method_same_seed_same_bits(name, digits, fast):
    iterations = 3 if name in ITERATIVE else 0
    a = fast(name, iterations=iterations).fit(digits).synthetic_
    b = fast(name, iterations=iterations).fit(digits).synthetic_
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    if name not in DETERMINISTIC:
        c = fast(name, iterations=iterations, random_state=1).fit(digits).synthetic_
        assert not torch.equal(a.images, c.images)


class Interrupt(Exception):
    pass


def stop_at(k):
    def cb(method, it, losses):
        if it == k:
            raise Interrupt
    return cb


@pytest.mark.parametrize("name", ITERATIVE)
def test_method_interrupt_then_resume_is_identical(name, digits, tmp_path, fast):
    straight = fast(name, iterations=6).fit(digits)
    m = fast(name, iterations=6, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    with pytest.raises(Interrupt):
        m.fit(digits, callback=stop_at(4))  # dies during iteration 5, last checkpoint after iteration 4
    resumed = fast(name, iterations=6, checkpoint_dir=str(tmp_path), checkpoint_every=2).fit(digits, resume=True)
    assert torch.equal(straight.synthetic_.images, resumed.synthetic_.images)
    assert straight.history_["loss"] == resumed.history_["loss"]
