"""The losses of paper sections 3.2-3.3 against hand values, torch's own losses and a numpy reference."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from feratt.config.methods import METHODS, get_method
from feratt.errors import FerattError
from feratt.training.losses import (
    LossConfig,
    LossWeights,
    attention_loss,
    classification_loss,
    compute_losses,
    gaussian_manifold_loss,
)


def clusters(distance, per_class=10, classes=3, dim=8, noise=0.1, seed=0):
    """Gaussian clusters whose centres sit `distance` apart along orthogonal axes (scaled)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(classes, dim) * distance / np.sqrt(2)
    labels = np.repeat(np.arange(classes), per_class)
    points = centres[labels] + noise * rng.standard_normal((len(labels), dim))
    return torch.tensor(points), torch.tensor(labels)


def reference_manifold_loss(z, labels, sigma, leave_one_out=False):
    """Eqs. 2, 4 and 5 written out literally in float64 numpy (normalised densities, uniform priors).

    With `leave_one_out`, each sample's own class mean is the mean of the others of its class, and samples
    alone in their class are not scored.
    """
    present = np.unique(labels)
    n, d = z.shape
    density = np.zeros((n, len(present)))
    for k in range(n):
        for column, c in enumerate(present):
            members = labels == c
            if leave_one_out:
                members = members & (np.arange(n) != k)
            if members.any():
                squared = ((z[k] - z[members].mean(0)) ** 2).sum()
                density[k, column] = np.exp(-squared / (2 * sigma**2)) / np.sqrt((2 * np.pi) ** d * sigma)
    prior = 1.0 / len(present)
    scored = [k for k in range(n) if not leave_one_out or (labels == labels[k]).sum() > 1]
    posterior = prior * density[scored] / (prior * density[scored]).sum(1, keepdims=True)
    target = (labels[scored, None] == present[None, :]).astype(float)
    return ((posterior - target) ** 2).sum(1).mean()


def test_manifold_loss_near_zero_for_separated_clusters():
    z, y = clusters(20.0)
    assert gaussian_manifold_loss(z, y, 3, sigma=1.0).item() < 1e-3


def test_manifold_loss_large_when_classes_share_a_mean():
    z, y = clusters(0.0, noise=1.0)
    for c in range(3):
        z[y == c] -= z[y == c].mean(0)
    loss = gaussian_manifold_loss(z, y, 3, sigma=1.0).item()
    assert loss > 0.3
    # Equal distances to every mean: the posterior is 1/3 everywhere, so the loss is (C - 1) / C.
    assert loss == pytest.approx(2 / 3, abs=1e-9)


def test_manifold_loss_gradients_are_finite_and_nonzero():
    z, y = clusters(2.0, noise=1.0)
    z = z.float().requires_grad_()
    (grad,) = torch.autograd.grad(gaussian_manifold_loss(z, y, 3), z)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


def test_manifold_loss_far_apart_points_stay_finite():
    z, y = clusters(1e4, noise=1.0)
    z = z.float().requires_grad_()
    loss = gaussian_manifold_loss(z, y, 3)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("size", [1, 5])
def test_manifold_loss_single_class_is_zero_and_backward_works(size):
    z = torch.randn(size, 4, requires_grad=True)
    loss = gaussian_manifold_loss(z, torch.full((size,), 2), 7)
    assert loss.item() == 0.0
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_manifold_loss_empty_batch_is_zero_and_backward_works():
    z = torch.zeros(0, 4, requires_grad=True)
    loss = gaussian_manifold_loss(z, torch.zeros(0, dtype=torch.int64), 3)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert z.grad is not None


def test_manifold_loss_skips_absent_classes():
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    dense = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1])
    sparse = torch.tensor([0, 2, 5])[dense]
    assert gaussian_manifold_loss(z, sparse, 7).item() == pytest.approx(
        gaussian_manifold_loss(z, dense, 3).item(), abs=1e-12
    )


def test_manifold_loss_matches_numpy_reference():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((24, 6)) * 0.8
    y = rng.integers(0, 5, 24)
    y[:5] = np.arange(5)
    for sigma in (0.5, 1.0, 2.0):
        ours = gaussian_manifold_loss(torch.tensor(z), torch.tensor(y), 8, sigma=sigma).item()
        assert ours == pytest.approx(reference_manifold_loss(z, y, sigma), abs=1e-6)


def test_manifold_loss_leave_one_out_matches_numpy_reference():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((20, 6)) * 0.6
    y = rng.integers(0, 4, 20)
    y[:5] = [0, 1, 2, 3, 5]  # class 5 has a single sample, which is left out of the average
    for sigma in (0.5, 1.0, 2.0):
        ours = gaussian_manifold_loss(
            torch.tensor(z), torch.tensor(y), 6, sigma=sigma, class_means="leave-one-out"
        ).item()
        assert ours == pytest.approx(reference_manifold_loss(z, y, sigma, leave_one_out=True), abs=1e-6)
        assert ours != pytest.approx(reference_manifold_loss(z, y, sigma), abs=1e-3)


def test_batch_means_reward_random_embeddings_and_leave_one_out_does_not():
    # 32 label-independent 64-d embeddings, 4-5 per class: counting each sample in its own class mean puts
    # every sample nearest its own mean, so noise nearly minimises the authors' loss at unit scale.
    z = torch.randn(32, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.arange(32) % 7
    batch = gaussian_manifold_loss(z, labels, 7)
    leave_one_out = gaussian_manifold_loss(z, labels, 7, class_means="leave-one-out")
    assert batch.item() == pytest.approx(0.0397, abs=1e-3)
    assert leave_one_out.item() == pytest.approx(1.560, abs=1e-3)
    # Shrinking z toward 0 moves both toward the uniform posterior's (C - 1) / C = 0.857.
    for mode in ("batch", "leave-one-out"):
        assert gaussian_manifold_loss(z * 1e-4, labels, 7, class_means=mode).item() == pytest.approx(
            6 / 7, abs=1e-3
        )


def test_manifold_loss_leave_one_out_separated_clusters_and_singletons():
    z, y = clusters(20.0)
    assert gaussian_manifold_loss(z, y, 3, class_means="leave-one-out").item() < 1e-3
    singletons = torch.randn(4, 5, requires_grad=True)
    loss = gaussian_manifold_loss(singletons, torch.arange(4), 4, class_means="leave-one-out")
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(singletons.grad).all()


def test_manifold_loss_grows_with_sigma():
    z, y = clusters(4.0, noise=0.5)
    values = [gaussian_manifold_loss(z, y, 3, sigma=s).item() for s in (0.5, 1.0, 2.0, 4.0)]
    assert values == sorted(values) and values[0] < values[-1]


def test_manifold_loss_half_precision_input_is_computed_in_float32():
    z, y = clusters(3.0, noise=1.0)
    loss = gaussian_manifold_loss(z.bfloat16(), y, 3)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(gaussian_manifold_loss(z.float(), y, 3).item(), abs=0.02)


def test_classification_losses_match_torch():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(9, 7, generator=generator)
    labels = torch.randint(0, 7, (9,), generator=generator)
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, 7).float())
    assert classification_loss(logits, labels).item() == pytest.approx(bce.item(), abs=1e-7)
    assert classification_loss(logits, labels, "ce").item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), abs=1e-7
    )
    with pytest.raises(FerattError, match="bce, ce"):
        classification_loss(logits, labels, "hinge")


def test_attention_mse_and_clamp():
    image = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    target[:, :, :2] = 2.0  # half the pixels off by 2: MSE 2
    assert attention_loss(image, target).item() == pytest.approx(2.0)
    far = torch.full((2, 3, 4, 4), 10.0)
    assert attention_loss(image, far).item() == pytest.approx(30.0)
    assert attention_loss(image, far, clamp=1000.0).item() == pytest.approx(100.0)


def test_attention_tanh_variant():
    image = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[0.5, -0.5], [0.0, 0.1]]]])
    expected = (2 * np.tanh(1.5) + 0.0 + np.tanh(0.3)) / 4
    assert attention_loss(image, target, kind="tanh").item() == pytest.approx(expected, abs=1e-7)


def test_attention_loss_rejects_mismatched_shapes_and_kinds():
    with pytest.raises(ValueError, match="differ"):
        attention_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 8, 8))
    with pytest.raises(FerattError, match="mse, tanh"):
        attention_loss(torch.zeros(1), torch.zeros(1), kind="l1")


def model_output(with_attention=True, with_embedding=True):
    generator = torch.Generator().manual_seed(4)
    return SimpleNamespace(
        logits=torch.randn(6, 3, generator=generator, requires_grad=True),
        embedding=torch.randn(6, 5, generator=generator, requires_grad=True) if with_embedding else None,
        attention_image=torch.rand(6, 3, 8, 8, generator=generator) if with_attention else None,
    )


def test_compute_losses_total_is_weighted_sum():
    output = model_output()
    target = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    config = LossConfig(weights=LossWeights(attention=2.0, representation=3.0, classification=5.0))
    losses = compute_losses(METHODS["feratt-rep-cls"].terms, output, target, labels, 3, config)
    assert set(losses) == {"attention", "representation", "classification", "total"}
    assert losses["attention"].item() == pytest.approx(attention_loss(output.attention_image, target).item())
    assert losses["representation"].item() == pytest.approx(
        gaussian_manifold_loss(output.embedding, labels, 3).item()
    )
    expected = 2 * losses["attention"] + 3 * losses["representation"] + 5 * losses["classification"]
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    losses["total"].backward()
    assert output.logits.grad is not None and output.embedding.grad is not None


def test_compute_losses_uses_only_the_methods_terms():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    baseline = compute_losses(
        ("classification",), model_output(False, False), None, labels, 3, LossConfig(classification_kind="ce")
    )
    assert set(baseline) == {"classification", "total"}
    assert baseline["total"].item() == pytest.approx(baseline["classification"].item())
    output = model_output(with_embedding=False)
    cls = compute_losses(METHODS["feratt-cls"].terms, output, output.attention_image, labels, 3, LossConfig())
    assert set(cls) == {"attention", "classification", "total"}
    assert cls["attention"].item() == 0.0
    with pytest.raises(FerattError, match="embedding"):
        compute_losses(
            METHODS["feratt-rep-cls"].terms, output, output.attention_image, labels, 3, LossConfig()
        )


def test_methods_and_config_validation():
    assert get_method("feratt-rep-cls").terms == ("attention", "representation", "classification")
    assert [m.title for m in METHODS.values()] == ["PreActResNet18", "FERAtt+Cls", "FERAtt+Rep+Cls"]
    assert [m.model for m in METHODS.values()] == ["baseline", "feratt", "feratt"]
    with pytest.raises(FerattError, match="baseline, feratt-cls, feratt-rep-cls") as caught:
        get_method("feratt")
    assert caught.value.field == "method"
    with pytest.raises(FerattError, match="unknown loss terms"):
        compute_losses(("nope",), model_output(), None, torch.zeros(6, dtype=torch.int64), 3, LossConfig())
    with pytest.raises(FerattError, match="mse, tanh"):
        LossConfig(attention_kind="l2")
    with pytest.raises(FerattError, match="sigma"):
        LossConfig(sigma=0.0)
    with pytest.raises(FerattError, match="batch, leave-one-out"):
        LossConfig(class_means="median")
