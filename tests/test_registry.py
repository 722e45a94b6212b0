"""The model registry and the method table: what each network declares, and who asks for it."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch
from model_helpers import untrained_checkpoint
from torch import Tensor, nn

from feratt.config.methods import METHODS, Method
from feratt.config.training import TrainConfig
from feratt.errors import FerattError
from feratt.inference.backends import open_model
from feratt.training.checkpoints import load_trained
from feratt.training.models import (
    ModelOutput,
    create_model,
    list_models,
    model_entry,
    model_outputs,
    register_model,
    registry,
)

TINY = {"num_classes": 3, "in_size": 64, "width": 0.05}


class Toy(nn.Module):
    """A one-layer classifier of the mean colour."""

    outputs: ClassVar[frozenset[str]] = frozenset({"logits"})
    input_multiple: ClassVar[int] = 1

    def __init__(self, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(3, num_classes, bias=bias)

    def forward(self, x: Tensor, target: Tensor | None = None) -> ModelOutput:
        del target
        return ModelOutput(logits=self.fc(x.mean(dim=(2, 3))))


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry, restored after the test whatever it registered."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def filled(output: ModelOutput) -> frozenset[str]:
    """The output fields a forward set (teacher_forced is a flag, always set)."""
    names = (f.name for f in dataclasses.fields(output) if f.name != "teacher_forced")
    return frozenset(name for name in names if getattr(output, name) is not None)


def test_a_registered_model_is_listed_and_built(scratch_registry):
    assert register_model("toy")(Toy) is Toy
    assert list_models() == ["baseline", "feratt", "toy"]
    assert list_models("t*") == ["toy"] and list_models("nothing*") == []
    entry = model_entry("toy")
    assert (entry.cls, entry.outputs, entry.input_multiple) == (Toy, {"logits"}, 1)
    assert entry.options == ("num_classes", "bias")
    model = create_model("toy", num_classes=4, bias=False)
    assert isinstance(model, Toy) and model.fc.bias is None
    assert model(torch.rand(2, 3, 5, 7)).logits.shape == (2, 4)
    with pytest.raises(FerattError, match="has no option"):
        create_model("toy", num_classes=4, width=1.0)


def test_the_toy_is_gone_after_its_test():
    assert list_models() == ["baseline", "feratt"]
    with pytest.raises(FerattError, match="unknown model 'toy'; known models: baseline, feratt"):
        create_model("toy", num_classes=3)


def test_registration_refuses_bad_declarations(scratch_registry):
    with pytest.raises(ValueError, match=r"taken by feratt\.training\.models\.feratt\.FERAtt"):
        register_model("feratt")(Toy)
    for outputs in (None, frozenset({"embedding"}), frozenset({"logits", "heatmap"}), {"logits"}):
        bad = type("Bad", (Toy,), {"outputs": outputs})
        with pytest.raises(ValueError, match="outputs must be"):
            register_model("bad")(bad)
    for multiple in (0, 1.5, None):
        bad = type("Bad", (Toy,), {"input_multiple": multiple})
        with pytest.raises(ValueError, match="input_multiple must be"):
            register_model("bad")(bad)
    assert "bad" not in list_models()


def test_unknown_names_and_options_and_a_missing_class_count_are_user_errors():
    with pytest.raises(FerattError, match="unknown model 'resnet9000'"):
        model_entry("resnet9000")
    with pytest.raises(FerattError, match="needs num_classes"):
        create_model("baseline", in_size=64)
    with pytest.raises(FerattError, match=r"has no option\(s\) attention_channels"):
        create_model("baseline", num_classes=3, attention_channels=2)


@pytest.mark.parametrize("name", ["baseline", "feratt"])
def test_declared_outputs_are_what_the_forward_fills(name):
    entry = model_entry(name)
    torch.manual_seed(0)
    model = create_model(name, **TINY)
    assert model_outputs(model) == entry.outputs == type(model).outputs
    x, target = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert filled(model.eval()(x)) == entry.outputs
        assert filled(model.train()(x, target=target)) == entry.outputs


@pytest.mark.parametrize("name", ["baseline", "feratt"])
def test_declared_input_multiple_is_what_the_model_needs(name):
    multiple = model_entry(name).input_multiple
    create_model(name, **{**TINY, "in_size": 2 * multiple})
    with pytest.raises(FerattError, match=f"multiple of {multiple}"):
        create_model(name, **{**TINY, "in_size": 2 * multiple + multiple // 2})


def test_the_method_table_agrees_with_the_registry():
    for method in METHODS.values():
        entry = model_entry(method.model)
        assert (method.outputs, method.input_multiple) == (entry.outputs, entry.input_multiple), method.name
        assert method.attention == ("attention_image" in entry.outputs)
        assert "attention" not in method.terms or "attention_image" in method.outputs
        assert "representation" not in method.terms or "embedding" in method.outputs
    assert [m.name for m in METHODS.values() if m.attention] == ["feratt-cls", "feratt-rep-cls"]


def test_the_method_table_sets_the_input_multiple(monkeypatch):
    assert TrainConfig(method="baseline", in_size=96).in_size == 96
    with pytest.raises(FerattError) as caught:
        TrainConfig(method="feratt-rep-cls", in_size=96)
    assert str(caught.value) == (
        "training option in_size: 96 must be a multiple of 64 for feratt-rep-cls "
        "(G_att's U-Net halves its input six times)"
    )
    assert caught.value.field == "in_size"
    toy = Method("toy", "Toy", "baseline", ("classification",), input_multiple=96)
    monkeypatch.setitem(METHODS, "toy", toy)
    assert TrainConfig(method="toy", in_size=192).in_size == 192
    with pytest.raises(FerattError, match=r"in_size: 128 must be a multiple of 96 for toy$") as caught:
        TrainConfig(method="toy", in_size=128)
    assert caught.value.field == "in_size"
    assert TrainConfig(method="unknown", in_size=96).method == "unknown"  # refused where it is looked up


@pytest.mark.parametrize("method", ["baseline", "feratt-cls"])
def test_a_loaded_model_says_what_it_outputs(tmp_path, method):
    checkpoint = untrained_checkpoint(tmp_path / "model.pt", method)
    trained = load_trained(checkpoint)
    assert trained.outputs == METHODS[method].outputs
    assert open_model(checkpoint, device="cpu").has_attention == METHODS[method].attention
