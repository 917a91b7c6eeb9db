"""Any model, any data: foreign architectures written here in different styles, measured,
attacked and trained through ncscope without adapters of their own.

Styles: a net returning ``(logits, features)`` whose final Linear is found as the last
``nn.Linear`` giving the model output; a net normalising inside ``forward`` with its head called
``head`` (and a hidden Linear called ``fc``); a timm-style net (``forward_features`` /
``forward_head`` / ``get_classifier()``); a Hugging-Face-style ``.logits`` output; a dict output.
Data: ``(X, y)`` as tensors or numpy arrays, DataLoaders, TensorDataset, ImageDataset and a
map-style Dataset of numpy items. Plus the ``"package.module:factory"`` model of the CLI.
"""

from __future__ import annotations

import functools
import sys
import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import ncscope
from ncscope.attacks import PGD
from ncscope.cli import main
from ncscope.collapse import FeatureTaps, nc_metrics, wide
from ncscope.data import load_dataset
from ncscope.models import adapt_output, find_classifier, logits_of, penultimate_layer
from ncscope.models.config import ModelConfig
from ncscope.train import TrainConfig, Trainer, train

# Tiny nets on 100 digits: the attacks' gradient-masking flags are not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::ncscope.attacks.AttackSanityWarning")


# ------------------------------------------------------------------------ the architectures
class TupleNet(nn.Module):
    """Returns ``(logits, features)``; a hidden Linear ``proj``; the final Linear ``out``."""

    def __init__(self, k: int = 10) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32),
                                     nn.ReLU())
        self.proj = nn.Linear(32, 16)
        self.act = nn.ReLU()
        self.out = nn.Linear(16, k)

    def forward(self, x):
        h = self.act(self.proj(self.encoder(x)))
        return self.out(h), h


class HeadNet(nn.Module):
    """Normalises inside ``forward`` with its own statistics; a hidden ``fc``; the ``head``."""

    def __init__(self, k: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.3))
        self.register_buffer("std", torch.tensor(0.4))
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.fc = nn.Linear(8 * 4 * 4, 32)
        self.head = nn.Linear(32, k)

    def forward(self, x):
        z = self.conv((x - self.mean) / self.std)
        return self.head(torch.relu(self.fc(z.flatten(1))))


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class TimmNet(nn.Module):
    """timm's interface: ``forward_features``, ``forward_head(pre_logits=)``,
    ``get_classifier()``; 2x2 patches, two residual MLP blocks, mean pooling."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, embed_dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, embed_dim, 2, stride=2)
        self.blocks = nn.Sequential(Block(embed_dim), Block(embed_dim))
        self.norm = nn.LayerNorm(embed_dim)
        self.head_drop = nn.Dropout(0.1)
        self.last_linear = nn.Linear(embed_dim, num_classes)

    def forward_features(self, x):
        return self.norm(self.blocks(self.stem(x).flatten(2).transpose(1, 2)))

    def forward_head(self, x, pre_logits: bool = False):
        x = self.head_drop(x.mean(1))
        return x if pre_logits else self.last_linear(x)

    def get_classifier(self) -> nn.Module:
        return self.last_linear

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@dataclass
class HFOutput:
    """The Hugging Face ``ModelOutput`` convention: logits as an attribute."""

    logits: torch.Tensor
    hidden_states: torch.Tensor | None = None


class HFNet(TupleNet):
    def forward(self, x):
        logits, h = super().forward(x)
        return HFOutput(logits=logits, hidden_states=h)


class DictNet(HeadNet):
    def forward(self, x):
        return {"features": None, "logits": super().forward(x)}


class ScoresNet(HeadNet):
    def forward(self, x):
        return {"scores": super().forward(x)}


# style: (class, classifier name, layers of analyze's default "all")
STYLES = {
    "tuple": (TupleNet, "out", ["encoder", "proj", "out:in"]),
    "head": (HeadNet, "head", ["conv", "fc", "head:in"]),
    "timm": (TimmNet, "last_linear", ["stem", "blocks", "norm", "last_linear:in"]),
    "hf": (HFNet, "out", ["encoder", "proj", "out:in"]),
    "dict": (DictNet, "head", ["conv", "fc", "head:in"]),
}
QUICK = {"sources": ["clean", "pgd"], "eps": 0.1, "steps": 2, "progress": False}


@functools.cache
def _data():
    return (load_dataset("digits", n_per_class=10),
            load_dataset("digits", split="test", n_per_class=5))


@functools.cache
def _trained(style: str) -> nn.Module:
    cls = STYLES[style][0]
    torch.manual_seed(0)
    model = cls()
    x, y = _data()[0].tensors
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(logits_of(model(x)), y).backward()
        opt.step()
    return model.eval()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert len(text.splitlines()) == 1, text
    return text


# ------------------------------------------------------------------------- analyze any data
@pytest.mark.parametrize("style", list(STYLES))
def test_analyze_any_model_on_any_data(style: str) -> None:
    _, head, layers = STYLES[style]
    model = _trained(style)
    train_set, test_set = _data()
    x, y = train_set.tensors
    df = ncscope.analyze(model, (x, y), test_data=test_set, **QUICK)
    assert list(dict.fromkeys(df.layer)) == layers  # the user's own module names
    assert not hasattr(model, "classifier_name")  # nothing set on the user's model
    # numpy arrays (float64 pixels become float32): the same table
    arrays = ncscope.analyze(model, (x.double().numpy(), y.numpy()),
                             test_data=(test_set.images.numpy(), test_set.targets.numpy()),
                             **QUICK)
    np.testing.assert_allclose(arrays["value"], df["value"], rtol=1e-6, atol=1e-9,
                               equal_nan=True)
    # a DataLoader in batches of 32: the clean rows agree up to float rounding
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    streamed = ncscope.analyze(model, loader, **QUICK)
    clean = df[(df.source == "clean") & (df.split == "train")].reset_index(drop=True)
    clean_l = streamed[(streamed.source == "clean")].reset_index(drop=True)
    pd.testing.assert_frame_equal(clean[["layer", "metric"]], clean_l[["layer", "metric"]])
    np.testing.assert_allclose(clean_l["value"], clean["value"], rtol=1e-4, atol=1e-7,
                               equal_nan=True)
    # NC3/NC4 come from the right head: the same as nc_metrics on the head's input
    w = wide(df)
    row = w[(w.source == "clean") & (w.split == "train") & (w.reference == "own")
            & (w.layer == f"{head}:in")].iloc[0]
    linear = model.get_submodule(head)
    with torch.no_grad(), FeatureTaps(model, [f"{head}:in"]) as taps:
        model(x)
        h = taps.features[f"{head}:in"]
    ref = nc_metrics(h, y, linear.weight.detach(), linear.bias.detach())
    for key in ("nc3", "nc4", "nc1"):
        assert row[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-9), key
    assert w[w.layer != f"{head}:in"]["nc3"].isna().all()


@pytest.mark.parametrize("style", list(STYLES))
def test_pgd_reads_logits_of_any_output(style: str) -> None:
    model = _trained(style)
    x, y = _data()[0].tensors
    attack = PGD(model, eps=0.1, steps=3, seed=0)
    x_adv = attack(x, y)  # the first call runs the full checks (noise baseline included)
    assert x_adv.shape == x.shape and float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    with torch.no_grad():
        clean_acc = float((logits_of(model(x)).argmax(1) == y).float().mean())
        adv_acc = float((logits_of(model(x_adv)).argmax(1) == y).float().mean())
    assert adv_acc < clean_acc
    assert attack.last_report.forwards > 3


# --------------------------------------------------------------------------- train any data
class NumpyItems(Dataset):
    """A map-style data set whose items are numpy images and int labels."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.numpy().astype(np.float64), y.tolist()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def _form(form: str, dataset):
    x, y = dataset.tensors
    return {"numpy": (x.numpy(), y.numpy()), "tensors": (x, y), "image_dataset": dataset,
            "tensor_dataset": TensorDataset(x, y), "items": NumpyItems(x, y)}[form]


@pytest.mark.parametrize(("style", "form", "mode"), [
    ("tuple", "numpy", "at"), ("head", "image_dataset", "at"), ("timm", "items", "st"),
    ("hf", "tensor_dataset", "trades"), ("dict", "tensors", "at")])
def test_train_and_track_any_model_on_any_data(style: str, form: str, mode: str) -> None:
    cls, head, layers = STYLES[style]
    torch.manual_seed(0)
    model = cls()
    train_set, test_set = _data()
    cfg = TrainConfig(mode=mode, epochs=2, batch_size=25, lr=0.05, eps=0.1, steps=2,
                      threads=1, progress=False, track_layers="all")
    res = Trainer(model, _form(form, train_set), _form(form, test_set), cfg).fit()
    hist = res.history
    assert list(dict.fromkeys(hist.layer.dropna())) == layers
    assert set(hist.epoch) == {1, 2}
    nc3 = hist[(hist.metric == "nc3") & (hist.source == "clean") & (hist.split == "train")
               & (hist.reference == "own")]
    assert set(nc3[nc3.value.notna()].layer) == {f"{head}:in"}  # the head reads only it
    assert hist[(hist.metric == "net_accuracy") & (hist.split == "test")].value.notna().all()
    assert not hasattr(model, "classifier_name")


# ---------------------------------------------------------------------- classifier discovery
def test_classifier_discovery_rules() -> None:
    x = _data()[0].tensors[0][:4]
    # rule 5, verified: the last nn.Linear whose output is the model's output
    assert find_classifier(TupleNet(), example=x) == "out"
    # 'head' before the hidden 'fc'
    assert find_classifier(HeadNet(), example=x) == "head"
    # timm's get_classifier() names it, with or without a probe batch
    assert find_classifier(TimmNet(), example=x) == "last_linear"
    assert penultimate_layer(TimmNet()) == "last_linear:in"
    # without a probe only declared names are taken
    with pytest.raises(ValueError, match="probe batch") as exc:
        find_classifier(TupleNet())
    assert "proj, out" in _one_line(exc)
    with pytest.raises(ValueError, match="probe batch"):
        find_classifier(HeadNet())
    net = TupleNet()
    net.classifier_name = "out"
    assert penultimate_layer(net) == "out:in"


class HiddenHead(nn.Module):
    """A Linear called ``head`` that is *not* the final layer; the final one is ``out``."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(torch.relu(self.head(x.flatten(1))))


def test_a_linear_that_is_not_final_is_refused() -> None:
    train_set, _ = _data()
    x, y = train_set.tensors
    tail = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh())  # no final Linear at all
    with pytest.raises(ValueError, match="not the final layer") as exc:
        ncscope.analyze(tail, (x, y), **QUICK)
    assert "model.classifier" in _one_line(exc)
    with pytest.raises(ValueError, match="'head' is not the final layer") as exc:
        ncscope.analyze(HiddenHead(), (x, y), **QUICK)
    _one_line(exc)
    # named explicitly: the final one is taken, a hidden one is still refused
    df = ncscope.analyze(HiddenHead(), (x, y), classifier="out", **QUICK)
    assert "out:in" in set(df.layer)
    with pytest.raises(ValueError, match="not the final layer"):
        find_classifier(TupleNet(), "proj", x[:4])
    with pytest.raises(ValueError, match="not the final layer"):
        Trainer(HiddenHead(), (x, y), config=TrainConfig(epochs=1, progress=False))


# --------------------------------------------------------------------------- output adapter
def test_logits_of_every_output_form() -> None:
    z = torch.randn(3, 4)
    for out in (z, (z, None), [z, z + 1], {"logits": z}, HFOutput(z)):
        assert logits_of(out) is z
    assert logits_of({"scores": z}, lambda o: o["scores"]) is z
    for bad, name in (({"scores": z}, "dict"), (None, "NoneType"), ((None, z), "tuple")):
        with pytest.raises(TypeError, match=name) as exc:
            logits_of(bad)
        assert "output=" in _one_line(exc)


def test_exotic_output_through_an_output_function() -> None:
    torch.manual_seed(0)
    model = ScoresNet().eval()
    x, y = _data()[0].tensors
    with pytest.raises(TypeError, match="dict without a 'logits'.*'scores'") as exc:
        ncscope.analyze(model, (x, y), **QUICK)
    _one_line(exc)
    with pytest.raises(TypeError, match="PGD: the model returned a dict"):
        PGD(model, eps=0.1, steps=1)(x, y)
    df = ncscope.analyze(model, (x, y), output=lambda out: out["scores"], **QUICK)
    assert set(df.source) == {"clean", "pgd"} and "head:in" in set(df.layer)
    assert isinstance(model(x[:2]), dict)  # the output function is not left on the model
    with adapt_output(model, lambda out: out["scores"]):  # training: around fit()
        res = Trainer(model, (x, y), config=TrainConfig(mode="at", epochs=1, eps=0.1, steps=2,
                                                        threads=1, progress=False)).fit()
    assert set(res.history.layer.dropna()) == {"head:in"}


# ---------------------------------------------------------------------------- input checks
def test_inputs_the_model_cannot_take_are_one_line_errors() -> None:
    train_set, _ = _data()
    x, y = train_set.tensors
    conv = HeadNet()
    with pytest.raises(ValueError, match=r"shape \(8, 64\).*flattened images") as exc:
        ncscope.analyze(conv, (x.flatten(1).numpy(), y.numpy()), **QUICK)
    _one_line(exc)
    with pytest.raises(ValueError, match=r"shape \(8, 8, 8\).*channel dimension") as exc:
        ncscope.analyze(conv, (x[:, 0], y), **QUICK)
    _one_line(exc)
    with pytest.raises(TypeError, match=r"dtype torch.float64.*x.to\(torch.float32\)") as exc:
        ncscope.analyze(TupleNet(), (x.double(), y), **QUICK)
    _one_line(exc)
    with pytest.raises(TypeError, match="uint8.*255") as exc:
        ncscope.analyze(conv, ((x.numpy() * 255).astype(np.uint8), y.numpy()), **QUICK)
    _one_line(exc)
    with pytest.raises(ValueError, match="flattened images"):
        Trainer(conv, (x.flatten(1), y), config=TrainConfig(epochs=1, progress=False))
    with pytest.raises(TypeError, match="got str"):
        ncscope.analyze(conv, "digits", **QUICK)


# ----------------------------------------------------------------------- factory from the CLI
NETS = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes, input_shape, width):
        super().__init__()
        c, h, w = input_shape
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU())
        self.logits = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.logits(self.body(x)), None


def make_net(num_classes, input_shape, width=16):
    return Net(num_classes, input_shape, width)
'''


def test_factory_model_from_the_cli(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "ncs_user_nets.py").write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ncs_user_nets", raising=False)
    cfg = ModelConfig(name="ncs_user_nets:make_net", kwargs={"width": 12})
    torch.manual_seed(0)
    model = cfg.build("digits")  # num_classes and input_shape from the data set
    assert (model.body[1].in_features, model.body[1].out_features) == (64, 12)
    assert model.logits.out_features == 10
    weights, out = tmp_path / "net.pt", tmp_path / "a.csv"
    torch.save(model.state_dict(), weights)
    common = ["--set", "model.kwargs={width: 12}", "--set", f"weights=[{weights}]",
              "--set", "sources=[clean, pgd]", "--set", "steps=2", "--set", "eps=0.1",
              "--set", "data.n_per_class=5", "--set", f"out={out}", "--quiet"]
    assert main(["analyze", "--set", "model.name=ncs_user_nets:make_net", *common]) == 0
    table = pd.read_csv(out)
    assert set(table.layer) == {"body", "logits:in"} or set(table.layer) == {"logits:in"}
    assert set(table.source) == {"clean", "pgd"}
    capsys.readouterr()
    for name, message in (("no_such_module_xyz:make_net", "cannot import module"),
                          ("ncs_user_nets:nope", "has no attribute 'nope'")):
        assert main(["analyze", "--set", f"model.name={name}", *common]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert ModelConfig(name="mlp").name == "bn_mlp"  # registry names as before
    res = train(TrainConfig(data={"dataset": "digits", "n_per_class": 5},
                            model={"name": "ncs_user_nets:make_net", "kwargs": {"width": 8}},
                            epochs=1, batch_size=25, eps=0.1, steps=2, threads=1,
                            progress=False))
    assert set(res.history.layer.dropna()) == {"logits:in"}
