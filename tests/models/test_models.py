"""The model registry rules and per-model details; the contract every model passes is in tests/test_common.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distillset.errors import InvalidParameterError, UnknownNameError
from distillset.data import list_datasets
from distillset.models import canonical_model_name, get_model, has_batchnorm, list_models

NUM_CLASSES = 5
BN_MODELS = {"convnet_bn", "alexnet_bn", "vgg11_bn", "resnet18_bn"}


def _squash(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def test_bn_models_are_exactly_the_bn_variants():
    assert {n for n in list_models() if n.endswith("_bn")} == BN_MODELS


def test_eval_mode_forward_of_bn_models():
    for name in sorted(BN_MODELS):
        net = get_model(name, (1, 8, 8), NUM_CLASSES, seed=0).eval()
        with torch.no_grad():
            x = torch.randn(1, 1, 8, 8)
            torch.testing.assert_close(net(x), net.classify(net.embed(x)))


def test_registry_has_the_cross_architecture_set():
    expected = {"mlp", "lenet", "alexnet", "alexnet_bn", "alexcifarnet", "vgg11", "vgg11_bn", "resnet18", "resnet18_bn"}
    assert expected <= set(list_models())


def test_no_two_names_squash_alike():
    squashed = [_squash(n) for n in list_models()]
    assert len(squashed) == len(set(squashed))


@pytest.mark.parametrize(
    "alias, name",
    [("ResNet18BN", "resnet18_bn"), ("ResNet18", "resnet18"), ("resnet-18-bn", "resnet18_bn"),
     ("VGG11BN", "vgg11_bn"), ("VGG11", "vgg11"), ("AlexNetBN", "alexnet_bn"), ("AlexNet", "alexnet"),
     ("AlexCifarNet", "alexcifarnet"), ("LeNet", "lenet"), ("MLP", "mlp"), ("ConvNetBN", "convnet_bn"),
     ("ConvNetD4", "convnet_d4")],
)
def test_literature_names_resolve(alias, name):
    assert canonical_model_name(alias) == name
    assert type(get_model(alias, (1, 8, 8), 2)) is type(get_model(name, (1, 8, 8), 2))


@pytest.mark.parametrize("name", ["resnet19", "ResNet19"])
def test_unknown_name_suggests_a_close_match(name):
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet18'"):
        get_model(name, (3, 32, 32), 10)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("vgg11", {"norm": "foo"},
         r"The 'norm' parameter of VGG11 must be one of 'instancenorm', 'batchnorm'.* Got 'foo' instead\."),
        ("resnet18", {"norm": "layer"}, r"The 'norm' parameter of ResNet must be one of"),
        ("alexnet", {"norm": "bn"}, r"The 'norm' parameter of AlexNet must be one of"),
        ("lenet", {"act": "tanhh"}, r"The 'act' parameter of LeNet must be one of 'relu'"),
        ("mlp", {"act": "foo"}, r"The 'act' parameter of MLP must be one of"),
        ("mlp", {"width": 0}, r"The 'width' parameter of MLP"),
        ("alexnet_bn", {"norm": "none"}, r"The 'norm' parameter of alexnet_bn is fixed to 'batchnorm'"),
        ("resnet18", {"layers": (1, 1, 1, 1)}, r"The 'layers' parameter of resnet18 is fixed"),
        ("convnet", {"norm": "foo"}, r"The 'norm' parameter of ConvNet must be one of"),
    ],
)
def test_bad_option_raises(name, kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        get_model(name, (1, 8, 8), 10, **kwargs)


def test_options_are_honoured():
    assert not has_batchnorm(get_model("alexnet", (3, 32, 32), 10, norm="none"))
    assert has_batchnorm(get_model("vgg11", (1, 8, 8), 10, norm="batchnorm"))
    assert get_model("vgg11_bn", (1, 8, 8), 10, norm="batchnorm") is not None  # the fixed value itself is accepted
    assert get_model("mlp", (1, 8, 8), 10, width=32).feature_dim == 32
    lenet = get_model("lenet", (1, 8, 8), 10, act="sigmoid")
    assert any(isinstance(m, nn.Sigmoid) for m in lenet.modules())


@pytest.mark.parametrize(
    "name, shape, dim",
    [("convnet", (1, 28, 28), 2048), ("convnet", (3, 32, 32), 2048),  # REFERENCE section 1
     ("alexnet", (1, 28, 28), 3072), ("alexnet", (3, 32, 32), 3072), ("vgg11", (3, 32, 32), 512),
     ("vgg11", (1, 28, 28), 512), ("resnet18", (3, 32, 32), 512), ("alexcifarnet", (3, 32, 32), 192),
     ("lenet", (1, 28, 28), 84), ("mlp", (3, 32, 32), 128)],
)
def test_reference_feature_sizes(name, shape, dim):
    assert get_model(name, shape, 10).feature_dim == dim


def test_reference_conv_feature_maps():
    """The standard inputs give the reference code's conv feature maps (deviations only on other sizes)."""
    lenet = get_model("lenet", (1, 28, 28), 10)
    assert lenet.features[:6](torch.zeros(1, 1, 28, 28)).shape == (1, 16, 5, 5)  # fc1 is 400 -> 120
    lenet = get_model("lenet", (3, 32, 32), 10)
    assert lenet.features[:6](torch.zeros(1, 3, 32, 32)).shape == (1, 16, 5, 5)
    net = get_model("alexcifarnet", (3, 32, 32), 10)
    assert net.features(torch.zeros(1, 3, 32, 32)).shape == (1, 64, 8, 8)  # DD's fc1 is 4096 -> 384
    assert sum(isinstance(m, nn.MaxPool2d) for m in get_model("vgg11", (3, 32, 32), 10).modules()) == 5


def test_a_spec_builds_the_same_network_as_its_options():
    direct = get_model("convnet", (1, 8, 8), 10, seed=0, width=16, depth=2, pooling="maxpool").state_dict()
    for spec in ("convnet(width=16, depth=2, pooling='maxpool')", {"name": "convnet", "width": 16, "depth": 2,
                                                                   "pooling": "maxpool"}):
        built = get_model(spec, (1, 8, 8), 10, seed=0).state_dict()
        assert built.keys() == direct.keys() and all(torch.equal(built[k], direct[k]) for k in direct)
    narrow = get_model("convnet", (1, 8, 8), 10, width=8).feature_dim
    assert get_model("convnet(width=16)", (1, 8, 8), 10, width=8).feature_dim == narrow  # kwargs win
    with pytest.raises(InvalidParameterError, match="Cannot parse"):
        get_model("convnet(16)", (1, 8, 8), 10)
    with pytest.raises(UnknownNameError, match="Did you mean 'convnet'"):
        get_model({"name": "convnett", "width": 16}, (1, 8, 8), 10)
    with pytest.raises(InvalidParameterError, match="model 'convnet' has no option 'widht'"):
        get_model("convnet(widht=16)", (1, 8, 8), 10)  # one line naming the typo, not a TypeError
    with pytest.raises(InvalidParameterError, match="cannot be built with"):
        get_model("convnet(width='16')", (1, 8, 8), 10)


def test_one_variant_rule_a_fixed_option_cannot_be_overridden():
    fixed = (("convnet_bn", "norm", "none"), ("alexnet_bn", "norm", "none"), ("convnet_d2", "depth", 3))
    for name, key, value in fixed:
        with pytest.raises(InvalidParameterError, match=f"The '{key}' parameter of {name} is fixed"):
            get_model(name, (1, 8, 8), 10, **{key: value})
    assert has_batchnorm(get_model("convnet_bn", (1, 8, 8), 10, norm="batchnorm"))  # the same value is fine


def _bits(t):
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t.view(torch.int32)


@pytest.mark.parametrize("shape", [(7, 5, 32, 32), (3, 4, 15, 9), (300, 16, 8, 8), (3, 1100, 31, 33)])
def test_fast_bf16_pooling_equals_the_native_kernel_bit_for_bit(shape):
    """Values, gradients and second derivatives (DC's matching) of the fast path are avg_pool2d's: also
    on blocks whose float32 sum rounds by order, on signed zeros, and across sample chunks (the last shape)."""
    import torch.nn.functional as F

    from distillset.models._layers import AvgPool2d

    torch.manual_seed(0)
    x = (torch.randn(shape) * torch.randn(shape).mul(6).exp()).relu_().to(torch.bfloat16)
    x[0, 0, :2, :2] = torch.tensor([[2.0 ** 24, 1], [1, -2.0 ** 24]])  # order-dependent float32 sum
    x[0, 0, 2:4, :2] = torch.tensor([[-0.0, -0.0], [-0.0, -0.0]])
    outs = []
    for pool in (AvgPool2d(), lambda t: F.avg_pool2d(t, 2)):
        xi = x.clone().requires_grad_()
        y = pool(xi)
        (gx,) = torch.autograd.grad(y.float().square().sum(), xi, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.float().square().sum(), xi)
        outs.append((y, gx, ggx))
    for ours, native in zip(*outs):
        assert torch.equal(_bits(ours), _bits(native))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.func.jvp scripts a helper of its own
def test_fast_bf16_pooling_forward_mode():
    import torch.nn.functional as F
    from torch.func import jvp

    from distillset.models._layers import AvgPool2d

    torch.manual_seed(0)
    x, t = torch.randn(2, 3, 5, 7).to(torch.bfloat16), torch.randn(2, 3, 5, 7).to(torch.bfloat16)
    assert torch.equal(jvp(AvgPool2d(), (x,), (t,))[1], jvp(lambda z: F.avg_pool2d(z, 2), (x,), (t,))[1])


def test_fast_bf16_pooling_under_vmap_of_grad():
    """DC takes per-class gradients with vmap(grad(...)) and then differentiates them again."""
    import torch.nn.functional as F
    from torch.func import grad, vmap

    from distillset.models._layers import AvgPool2d

    torch.manual_seed(0)
    w, xs = torch.randn(4, 3, 3, 3, requires_grad=True), torch.randn(5, 2, 3, 10, 10)
    results = []
    for pool in (AvgPool2d(), lambda t: F.avg_pool2d(t, 2)):
        def loss(w, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return pool(F.conv2d(x, w)).float().square().sum()
        per_class = vmap(grad(loss), in_dims=(None, 0))(w, xs)
        results += [per_class, torch.autograd.grad(per_class.square().sum(), w)[0]]
    assert torch.equal(results[0], results[2]) and torch.equal(results[1], results[3])


@pytest.mark.parametrize("call,words", [
    (lambda: get_model(None), "A model spec must be a name such as 'convnet'"),  # was "Unknown model 'None'"
    (lambda: get_model("convnet", (1, 8, 8), "10"), "'num_classes' parameter of get_model must be an int >= 1"),
    (lambda: get_model("convnet", (1, 8, 8), 10, seed=-1), "'seed' parameter of get_model must be None or an int"),
    (lambda: list_models(None), "A pattern of model names must be a string"),  # was os.PathLike's TypeError
    (lambda: list_datasets(1), "A pattern of dataset names must be a string"),
])
def test_registry_calls_name_a_wrong_type(call, words):
    with pytest.raises(InvalidParameterError, match=words):
        call()
