"""The networks: output shapes, gradient flow, teacher forcing, options, local ResNet34 weights, factory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feratt.config.training import TrainConfig
from feratt.errors import FerattError
from feratt.training.models import (
    FERAtt,
    ModelOutput,
    ResNet34Encoder,
    create_model,
    list_models,
    load_resnet34_weights,
)

WIDTH = 0.125  # narrow networks keep the tests fast; the structure is the same at every width
CLASSES = 5


def small(name: str, size: int = 64, **kwargs) -> nn.Module:
    """A narrow model of `name` for input `size`, seeded."""
    torch.manual_seed(0)
    return create_model(name, num_classes=CLASSES, in_size=size, width=WIDTH, **kwargs)


def images(size: int, batch: int = 4, seed: int = 1) -> torch.Tensor:
    """A reproducible batch of images in [0, 1]."""
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def labels(batch: int = 4) -> torch.Tensor:
    return torch.arange(batch) % CLASSES


def assert_every_parameter_learns(model: nn.Module) -> None:
    """Every trainable parameter got a finite gradient that is not all zero."""
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        assert parameter.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name}: non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{name}: all-zero gradient"


# ---- factory ----------------------------------------------------------------------------------------


def test_list_models_and_presets():
    assert list_models() == ["baseline", "feratt"]
    paper = TrainConfig(preset="paper").resolved()
    assert (paper.in_size, paper.width) == (128, 1.0)
    small_preset = TrainConfig(preset="cpu-small").resolved()
    assert (small_preset.in_size, small_preset.width) == (64, 0.25)
    assert TrainConfig(method="baseline", preset="cpu-small", in_size=96).resolved().in_size == 96
    assert TrainConfig(preset="cpu-small", in_size=192).resolved().in_size == 192
    with pytest.raises(FerattError, match="in_size: 96 must be a multiple of 64 for feratt-cls") as caught:
        TrainConfig(method="feratt-cls", in_size=96)
    assert caught.value.field == "in_size"
    with pytest.raises(FerattError, match="valid presets") as caught:
        TrainConfig(preset="huge").resolved()
    assert caught.value.field == "preset"


def test_unknown_model_name_lists_known_names():
    with pytest.raises(FerattError, match="known models: baseline, feratt") as info:
        create_model("resnet9000", num_classes=3)
    assert "\n" not in str(info.value)


def test_unknown_option_and_bad_values_are_user_errors():
    with pytest.raises(FerattError, match="no option"):
        create_model("baseline", num_classes=3, rec_concat=True)
    with pytest.raises(FerattError, match="multiple of 64"):
        create_model("feratt", num_classes=3, in_size=96, width=WIDTH)
    with pytest.raises(FerattError, match="multiple of 32"):
        create_model("baseline", num_classes=3, in_size=100, width=WIDTH)
    with pytest.raises(FerattError, match="teacher_forcing"):
        create_model("feratt", num_classes=3, width=WIDTH, teacher_forcing=1.5)
    for side in (32, 48, 96):  # G_att's U-Net cannot halve these six times
        with pytest.raises(FerattError, match="multiples of 64"):
            small("feratt")(torch.rand(1, 3, side, side))


# ---- shapes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128])
def test_feratt_output_shapes(size):
    model = small("feratt", size).eval()
    with torch.no_grad():
        out = model(images(size, batch=2))
    assert isinstance(out, ModelOutput)
    features = model.g_ft.out_channels
    assert out.logits.shape == (2, CLASSES)
    assert out.embedding.shape == (2, 64)
    assert out.attention_image.shape == (2, 3, size, size)
    assert out.attention_map.shape == (2, 1, size, size)
    assert out.features.shape == (2, features, size, size)
    assert out.teacher_forced is False
    assert model.rep_input(out.attention_image).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("size", [64, 128])
def test_baseline_output_shapes(size):
    model = small("baseline", size).eval()
    with torch.no_grad():
        out = model(images(size, batch=2))
    assert out.logits.shape == (2, CLASSES)
    assert out.embedding is None and out.attention_image is None
    assert out.attention_map is None and out.features is None


def test_full_feratt_has_about_46m_parameters():
    with torch.device("meta"):  # builds the shapes without allocating or running anything
        paper = TrainConfig(preset="paper").resolved()
        model = create_model("feratt", num_classes=8, in_size=paper.in_size, width=paper.width)
        encoder = ResNet34Encoder()
    assert 45e6 < sum(p.numel() for p in model.parameters()) < 47e6
    # torchvision's resnet34 without its fc layer: 21,284,672 parameters and 216 state_dict keys.
    assert sum(p.numel() for p in encoder.parameters()) == 21_284_672
    state = encoder.state_dict()
    assert len(state) == 216
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert state["layer4.2.bn2.running_var"].shape == (512,)


# ---- gradients --------------------------------------------------------------------------------------


def test_baseline_gradients_reach_every_parameter():
    model = small("baseline").train()
    F.cross_entropy(model(images(64)).logits, labels()).backward()
    assert_every_parameter_learns(model)


@pytest.mark.parametrize("with_embedding_loss", [False, True])
def test_feratt_gradients_reach_every_parameter(with_embedding_loss):
    model = small("feratt").train()
    target = images(64, seed=2)
    out = model(images(64), target=target)
    loss = F.mse_loss(out.attention_image, target) + F.cross_entropy(out.logits, labels())
    if with_embedding_loss:
        loss = loss + out.embedding.pow(2).mean()
    loss.backward()
    assert_every_parameter_learns(model)
    for part in ("g_att", "g_ft", "g_rec", "g_rep"):
        assert any(p.grad is not None for p in getattr(model, part).parameters())


# ---- teacher forcing --------------------------------------------------------------------------------


def test_teacher_forcing_feeds_the_target_in_training():
    model = small("feratt", teacher_forcing=1.0).train()
    target = images(64, seed=2)
    out = model(images(64), target=target)
    assert out.teacher_forced
    _, expected = model.g_rep(model.rep_input(target))
    torch.testing.assert_close(out.logits, expected)
    assert out.attention_image.shape == target.shape  # I_att still there for the attention loss
    assert not model(images(64)).teacher_forced  # no target, nothing to force


def test_teacher_forcing_never_in_eval_mode():
    model = small("feratt", teacher_forcing=1.0).eval()
    target = images(64, seed=2)
    with torch.no_grad():
        for _ in range(3):
            out = model(images(64), target=target)
            assert not out.teacher_forced
            _, expected = model.g_rep(model.rep_input(out.attention_image))
            torch.testing.assert_close(out.logits, expected)


def test_teacher_forcing_draws_repeat_under_a_seed():
    model = small("feratt", 64, teacher_forcing=0.5).train()
    x, target = images(64, batch=2), images(64, batch=2, seed=2)

    def draws() -> list[bool]:
        torch.manual_seed(123)
        return [model._force(target) for _ in range(40)]

    first = draws()
    assert first == draws()
    assert 0 < sum(first) < 40
    torch.manual_seed(0)
    assert model(x, target=target).teacher_forced in (True, False)


# ---- options ----------------------------------------------------------------------------------------


def test_attention_channels_per_class():
    model = small("feratt", attention_channels=CLASSES).train()
    out = model(images(64))
    assert out.attention_map.shape == (4, CLASSES, 64, 64)
    assert out.attention_image.shape == (4, 3, 64, 64)
    F.cross_entropy(out.logits, labels()).backward()
    assert model.g_att.head[1].weight.grad is not None


def test_rec_concat_later_reconstruction():
    model = small("feratt", 128, rec_concat=True, attention_channels=2).train()
    target = images(128, batch=2, seed=2)
    out = model(images(128, batch=2), target=target)
    assert out.attention_image.shape == (2, 3, 128, 128)
    assert (out.attention_image >= 0).all()  # BatchNorm then ReLU
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.g_rec.modules())
    (F.mse_loss(out.attention_image, target) + F.cross_entropy(out.logits, labels(2))).backward()
    assert_every_parameter_learns(model.g_rec)


def test_ft_blocks_and_embedding_dim():
    model = small("feratt", ft_blocks=8, embedding_dim=16).eval()
    assert len(model.g_ft.blocks) == 8
    with torch.no_grad():
        out = model(images(64, batch=2))
    assert out.embedding.shape == (2, 16)
    assert out.features.shape[1] == model.g_ft.out_channels


# ---- local ResNet34 weights -------------------------------------------------------------------------


def test_resnet34_weights_round_trip(tmp_path):
    source = small("feratt")
    state = dict(source.g_att.encoder.state_dict())  # torchvision's key layout
    state["fc.weight"] = torch.randn(1000, 8)
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet34.pth"
    torch.save(state, path)

    torch.manual_seed(5)
    model = create_model("feratt", num_classes=CLASSES, width=WIDTH, in_size=64, attention_weights=str(path))
    assert isinstance(model, FERAtt)
    assert model.attention_init == f"resnet34:{path}"
    assert small("feratt").attention_init == "random"
    loaded = model.g_att.encoder.state_dict()
    for key, value in source.g_att.encoder.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert load_resnet34_weights(model, path) == []


def test_resnet34_weights_reports_and_refusals(tmp_path):
    encoder = ResNet34Encoder(width=WIDTH)
    state = dict(encoder.state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["layer4.2.bn2.running_var"]
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    report = load_resnet34_weights(ResNet34Encoder(width=WIDTH), partial)
    assert report == ["missing: layer4.2.bn2.running_var", "unexpected: extra.weight"]
    with pytest.raises(FerattError, match="missing"):
        create_model("feratt", num_classes=3, width=WIDTH, attention_weights=str(partial))

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(FerattError, match="not a torch state_dict") as info:
        create_model("feratt", num_classes=3, width=WIDTH, attention_weights=str(garbage))
    assert "\n" not in str(info.value)

    unrelated = tmp_path / "unrelated.pth"
    torch.save({"weight": torch.zeros(3)}, unrelated)
    with pytest.raises(FerattError, match="no ResNet34 weights"):
        load_resnet34_weights(ResNet34Encoder(width=WIDTH), unrelated)
    with pytest.raises(FerattError, match=r"width 1\.0"):
        load_resnet34_weights(ResNet34Encoder(width=2 * WIDTH), partial)
    with pytest.raises(FerattError, match="does not exist"):
        load_resnet34_weights(encoder, tmp_path / "absent.pth")
