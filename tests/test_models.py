"""Tests of ncscope.models: shapes, initialisation, names/taps, normalisation, user models."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from ncscope.data import CIFAR100_INFO, DIGITS_INFO, UnknownNameError
from ncscope.models import (
    BNMLP,
    VGG,
    Normalize,
    NormalizedModel,
    SmallCNN,
    available_models,
    classifier_of,
    create_model,
    default_taps,
    load_reference_state_dict,
    penultimate_layer,
    prepare_model,
)

torch.set_num_threads(1)

CASES = [
    ("bn_mlp", (1, 8, 8), 128),
    ("small_cnn", (1, 28, 28), 128),
    ("vgg11_bn", (3, 32, 32), 512),
    ("preactresnet18", (3, 32, 32), 512),
    ("vgg11_bn_imagenette", (3, 160, 160), 512),
    ("preactresnet18_imagenette", (3, 160, 160), 512),
]

PAPER_TAPS = {
    "vgg11_bn": [
        "features." + n
        for n in ("pool1", "pool2", "relu3", "pool3", "relu5", "pool4", "relu7", "relu8")
    ],
    "vgg11_bn_imagenette": [
        "features." + n
        for n in ("pool1", "pool2", "relu3", "pool3", "relu5", "pool4", "relu7", "pool5")
    ],
    "preactresnet18": ["conv1", "layer1", "layer2", "layer3", "layer4", "bn"],
    "preactresnet18_imagenette": ["maxpool", "layer1", "layer2", "layer3", "layer4", "bn"],
    "bn_mlp": [f"features.block{i}" for i in range(1, 5)],
    "small_cnn": ["features.block1", "features.block2", "features.block3", "features.fc"],
}

_BUILT: dict[str, nn.Module] = {}


def built(name: str) -> nn.Module:
    """Build each architecture once per session (VGG/ResNet construction is the slow part)."""
    if name not in _BUILT:
        torch.manual_seed(0)
        shape = dict((n, s) for n, s, _ in CASES)[name]
        _BUILT[name] = create_model(name, 7, input_shape=shape)
    return _BUILT[name]


@pytest.mark.parametrize(("name", "shape", "dim"), CASES)
def test_forward_shapes_taps_and_penultimate(name, shape, dim):
    model = built(name).eval()
    x = torch.rand(2, *shape)
    captured = {}
    spec = penultimate_layer(model)
    assert spec == "classifier:in"
    clf = classifier_of(model)
    assert isinstance(clf, nn.Linear) and clf is model.classifier
    assert clf.in_features == dim and clf.out_features == 7
    taps = default_taps(model)
    assert taps == PAPER_TAPS[name]
    modules = dict(model.named_modules())
    assert all(t in modules for t in taps)
    hooks = [
        modules[t].register_forward_hook(lambda _m, _i, o, t=t: captured.__setitem__(t, o))
        for t in taps
    ]
    hooks.append(clf.register_forward_hook(lambda _m, i, _o: captured.__setitem__("pen", i[0])))
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
    for h in hooks:
        h.remove()
    assert out.shape == (2, 7)
    assert set(captured) == {*taps, "pen"}
    assert captured["pen"].shape == (2, dim) and torch.allclose(captured["pen"], feats)
    assert model.input_shape == shape and model.num_classes == 7


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_normalize_is_first_module(name):
    model = built(name)
    first_name, first = next(iter(model.named_children()))
    assert first_name == "normalize" and isinstance(first, Normalize)
    # the first module touched in forward is the Normalize, and it sees the raw pixels
    order = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, inp, n=n: order.append((n, inp[0])))
        for n, m in model.named_modules()
        if n and not list(m.children())
    ]
    x = torch.rand(2, *model.input_shape)
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    assert order[0][0] == "normalize" and torch.equal(order[0][1], x)


def test_normalize_statistics_in_pixel_space():
    model = create_model("bn_mlp", dataset="digits").eval()
    assert model.normalize.mean.tolist() == pytest.approx(list(DIGITS_INFO.mean))
    plain = copy.deepcopy(model)
    plain.normalize = Normalize(0.0, 1.0)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        a = model(x)
        b = plain((x - DIGITS_INFO.mean[0]) / DIGITS_INFO.std[0])
    assert torch.allclose(a, b, atol=1e-5)
    assert "normalize.mean" in model.state_dict() and "normalize.std" in model.state_dict()


def test_normalize_module():
    n = Normalize((0.5, 0.25, 0.0), (0.5, 0.5, 2.0))
    x = torch.ones(2, 3, 4, 4)
    y = n(x)
    assert y[:, 0].unique().tolist() == [1.0] and y[:, 2].unique().tolist() == [0.5]
    assert Normalize(0.5, 0.5)(torch.ones(3, 5)).unique().tolist() == [1.0]
    with pytest.raises(ValueError, match="positive"):
        Normalize(0.0, 0.0)
    with pytest.raises(ValueError):
        Normalize((0.1, 0.2), (0.1, 0.2, 0.3))
    assert "mean=(0.5, 0.25, 0)" in repr(n)


def test_create_model_from_dataset_info():
    m = create_model("vgg11_bn", dataset="cifar100")
    assert m.classifier.out_features == 100 and m.input_shape == (3, 32, 32)
    assert m.normalize.mean.tolist() == pytest.approx(list(CIFAR100_INFO.mean))
    m = create_model("small_cnn", dataset="fashion_mnist")
    assert m.features.block1.conv.in_channels == 1
    m = create_model("MLP", dataset=DIGITS_INFO, widths=(32, 16))
    assert isinstance(m, BNMLP) and m.classifier.in_features == 16
    assert default_taps(m) == ["features.block1", "features.block2"]
    m = create_model("bn_mlp", 3, input_shape=(2, 4, 4))
    assert m.features.block1.linear.in_features == 32 and m.normalize.mean.tolist() == [0.0]
    m = create_model("vgg11_bn", 10, in_channels=1, input_shape=(3, 28, 28), mean=0.13, std=0.3)
    assert m.input_shape == (1, 28, 28) and m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        create_model("wideresnet28")
    for name in available_models():
        assert name in str(err.value)
    assert set(PAPER_TAPS) <= set(available_models())


def test_small_cnn_without_hidden_layer():
    m = SmallCNN(1, 10, channels=(8, 16), hidden=None)
    assert default_taps(m) == ["features.block1", "features.block2"]
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10) and m.classifier.in_features == 16


# ----------------------------------------------------------------------------- initialisation
def _conv_stds(model, fan):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = (
                m.kernel_size[0]
                * m.kernel_size[1]
                * (m.in_channels if fan == "in" else m.out_channels)
            )
            yield m, math.sqrt(2.0 / n)


@pytest.mark.parametrize(("name", "fan"), [("vgg11_bn", "in"), ("vgg11_bn_imagenette", "out")])
def test_vgg_initialisation(name, fan):
    model = built(name)
    for conv, expected in _conv_stds(model, fan):
        assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.10
        assert abs(float(conv.weight.detach().mean())) < 0.2 * expected
        assert torch.count_nonzero(conv.bias) == 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert abs(float(model.classifier.weight.detach().std()) - 0.01) < 0.001
    assert torch.count_nonzero(model.classifier.bias) == 0
    first = model.features.conv1
    assert first.in_channels == 3 and first.bias is not None and first.kernel_size == (3, 3)


def test_preactresnet_initialisation():
    imnet = built("preactresnet18_imagenette")
    for conv, expected in _conv_stds(imnet, "out"):
        assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.10
        assert conv.bias is None
    assert imnet.conv1.kernel_size == (7, 7) and imnet.conv1.stride == (2, 2)
    assert not imnet.layer1[0].preactivate and imnet.layer1[1].preactivate
    assert imnet.layer2[0].preactivate and imnet.layer2[0].shortcut is not None
    cifar = built("preactresnet18")
    # PyTorch default (kaiming_uniform a=sqrt(5)): std = 1/sqrt(3 * fan_in)
    conv = cifar.layer3[1].conv2
    expected = 1 / math.sqrt(3 * conv.in_channels * 9)
    assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.10
    assert all(b.preactivate for layer in (cifar.layer1, cifar.layer4) for b in layer)


def test_parameter_counts_match_paper():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(create_model("vgg11_bn")) == 9_231_114  # ~9.2 M (Su et al. 2024)
    assert count(create_model("preactresnet18")) == 11_172_170  # ~11.2 M


# ----------------------------------------------------------------------------- hooks
@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_no_in_place_mutation_after_hooks(name):
    model = built(name).train()
    seen = []

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            seen.append((out, out.detach().clone()))

    hooks = [m.register_forward_hook(hook) for n, m in model.named_modules() if n]
    model(torch.rand(2, *model.input_shape))
    for h in hooks:
        h.remove()
    assert seen and all(torch.equal(a, b) for a, b in seen)
    assert not any(getattr(m, "inplace", False) for m in model.modules())


# ----------------------------------------------------------------------------- user models
def _user_net():
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(12, 6),
            relu=nn.ReLU(),
            head=nn.Linear(6, 3),
        )
    )


def test_classifier_of_error_lists_linears():
    with pytest.raises(ValueError, match="fc1, head"):
        classifier_of(_user_net())
    with pytest.raises(ValueError, match="ReLU"):
        classifier_of(_user_net(), "relu")
    assert classifier_of(_user_net(), "head").out_features == 3


def test_prepare_model_normalizes_and_keeps_names():
    net = _user_net()
    x = torch.rand(2, 3, 2, 2)
    with torch.no_grad():
        expected = net((x - 0.5) / 0.25)
    model = prepare_model(net, classifier="head", mean=0.5, std=0.25, example_input=x)
    assert model is net and "input_mean" in net.state_dict()
    assert penultimate_layer(model) == "head:in"
    assert classifier_of(model) is net.head
    assert default_taps(model) == ["flatten", "fc1", "relu"]
    with torch.no_grad():
        assert torch.allclose(model(x), expected)
        prepare_model(net, mean=0.0, std=1.0)  # preparing again replaces the statistics
        assert torch.allclose(model(x), net.forward(x))
    # the wrapper is still available for code that wants a new module
    wrapped = NormalizedModel(_user_net(), 0.5, 0.25, classifier="head")
    assert penultimate_layer(wrapped) == "net.head:in"


def test_prepare_model_in_place_and_taps():
    net = _user_net()
    same = prepare_model(net, classifier="head", taps=["fc1", "relu"])
    assert same is net and penultimate_layer(net) == "head:in"
    assert default_taps(net) == ["fc1", "relu"]
    with pytest.raises(ValueError, match="not found"):
        prepare_model(_user_net(), classifier="head", taps=["nope"])
    # fallback taps of a plain model: top-level children except the classifier
    plain = nn.Sequential(OrderedDict(body=nn.Linear(4, 4), classifier=nn.Linear(4, 2)))
    assert default_taps(plain) == ["body"] and penultimate_layer(plain) == "classifier:in"


def test_prepare_model_detects_non_final_classifier():
    net = nn.Sequential(OrderedDict(classifier=nn.Linear(4, 4), extra=nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="not the final layer"):
        prepare_model(net, example_input=torch.rand(2, 4))

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 2)
            self.classifier = nn.Linear(2, 2)

        def forward(self, x):
            return self.body(x)

    unused = Unused()
    with pytest.raises(ValueError, match="not used"):
        prepare_model(unused, example_input=torch.rand(2, 4))
    assert unused.training  # the training flag is restored


def test_load_reference_state_dict_by_position():
    torch.manual_seed(1)
    src = create_model("vgg11_bn", 10)
    dst = create_model("vgg11_bn", 10, dataset="cifar10")
    # official names: features.<k> for the flat cfg-A sequence, classifier.*
    ref = OrderedDict()
    for i, (k, v) in enumerate(
        (k, v) for k, v in src.state_dict().items() if not k.startswith("normalize.")
    ):
        ref[f"module.w{i}" if "classifier" not in k else k] = v.clone()
    mapping = load_reference_state_dict(dst, ref)
    assert mapping["classifier.weight"] == "classifier.weight"
    assert torch.equal(dst.features.conv5.weight, src.features.conv5.weight)
    assert dst.normalize.mean.tolist() == pytest.approx([0.4914, 0.4822, 0.4465])
    ref.popitem()
    with pytest.raises(ValueError, match="entries"):
        load_reference_state_dict(dst, ref)


def test_vgg_cfg_validation():
    with pytest.raises(ValueError):
        VGG(cfg=("M",))
    with pytest.raises(ValueError):
        VGG(init_fan="both")  # type: ignore[arg-type]


def test_bn_mlp_linear_bottleneck() -> None:
    """``bottleneck=3``: a plain linear 3-D penultimate layer (signs free, no ReLU), found as
    the penultimate tap; bad widths are one-line errors."""
    from ncscope.models import create_model, penultimate_layer
    from ncscope.models.mlp import BNMLP

    torch.manual_seed(0)
    model = create_model("bn_mlp", dataset="digits", widths=[32], bottleneck=3).eval()
    assert model.tap_layers == ["features.block1", "features.bottleneck"]
    assert isinstance(model.features.bottleneck, torch.nn.Linear)
    h = model.forward_features(torch.rand(64, 1, 8, 8))
    assert h.shape == (64, 3) and (h < 0).any()  # not a ReLU output
    assert penultimate_layer(model) == "classifier:in"
    assert model.classifier.in_features == 3
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="bottleneck") as err:
            BNMLP(bottleneck=bad)
        assert "\n" not in str(err.value)
