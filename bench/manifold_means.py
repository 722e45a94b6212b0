"""Does the manifold loss let G_rep learn? Class means with the sample itself (`batch`) or without it.

Trains the cpu-small G_rep (PreActResNet18 at a quarter width, 64-d z, linear classifier) on the
clean faces of a render (the shards' `faces`, area-resized to 32x32), fold 0 of the demo's folds,
with three losses: BCE alone, BCE + L_rep with `batch` class means (the authors' code), and
BCE + L_rep with `leave-one-out` means, each L_rep at every --rep-weight. Adam (amsgrad) at --lr,
batch --batch-size. Prints the test accuracy after each epoch (median over --seeds) and each seed's
last; first, the loss of label-independent random embeddings under each kind of mean, which shows
the trap without any training.

    .venv/bin/python bench/manifold_means.py demo/render --epochs 10 --rep-weight 1 --rep-weight 0.1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from feratt.artifacts.render import RenderSet
from feratt.training.folds import render_folds, split_fold
from feratt.training.losses import classification_loss, gaussian_manifold_loss
from feratt.training.models.blocks import Normalize
from feratt.training.models.feratt import Representation

LOSSES = ("bce", "bce+rep batch", "bce+rep leave-one-out")


def load_faces(render: Path, subjects: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The subjects' clean faces as float 32x32 tensors in [0, 1], and their labels."""
    faces, labels = [], []
    for ref in RenderSet.open(render).shards(subjects):
        with h5py.File(ref.path, "r") as shard:
            faces.append(shard["faces"][:])
            labels.append(shard["labels"][:])
    images = torch.from_numpy(np.concatenate(faces)).permute(0, 3, 1, 2).float() / 255.0
    return F.interpolate(images, size=(32, 32), mode="area"), torch.from_numpy(np.concatenate(labels)).long()


def random_embedding_losses(batch_size: int, classes: int) -> dict[str, float]:
    """L_rep of label-independent N(0, I) 64-d embeddings, labels cycling over the classes."""
    z = torch.randn(batch_size, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.arange(batch_size) % classes
    return {
        mode: gaussian_manifold_loss(z, labels, classes, class_means=mode).item()
        for mode in ("batch", "leave-one-out")
    }


def train(
    data, loss: str, classes: int, epochs: int, batch_size: int, lr: float, seed: int, weight: float
) -> list[float]:
    """Test accuracy after each epoch of G_rep trained with `loss`."""
    (train_x, train_y), (test_x, test_y) = data
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    model, normalize = Representation(classes, 64, width=0.25), Normalize()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, amsgrad=True)
    accuracies = []
    for _ in range(epochs):
        model.train()
        permutation = torch.randperm(len(train_y), generator=order)
        for start in range(0, len(train_y), batch_size):
            index = permutation[start : start + batch_size]
            z, logits = model(normalize(train_x[index]))
            total = classification_loss(logits, train_y[index], "bce")
            if loss != "bce":
                rep = gaussian_manifold_loss(z, train_y[index], classes, class_means=loss.split()[-1])
                total = total + weight * rep
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            predictions = torch.cat([model(normalize(x))[1].argmax(1) for x in test_x.split(256)])
        accuracies.append((predictions == test_y).float().mean().item())
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("render", type=Path, help="A render folder, such as make demo's demo/render.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rep-weight", type=float, action="append", help="L_rep weights (default 1).")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    index = RenderSet.open(args.render)
    classes = len(index.classes)
    split = split_fold(render_folds(args.render, 10, 0), 0, 2, 0)
    data = (load_faces(args.render, split.train), load_faces(args.render, split.test))
    print(f"fold 0: {len(data[0][1])} training and {len(data[1][1])} test faces, {classes} classes")
    print(
        f"L_rep of random embeddings, batch {args.batch_size}:",
        random_embedding_losses(args.batch_size, classes),
    )
    print(f"{'loss':<28}" + "".join(f"{f'ep {e}':>7}" for e in range(args.epochs)) + "   seconds   per seed")
    weights = args.rep_weight or [1.0]
    variants = [("bce", 0.0)] + [(loss, weight) for weight in weights for loss in LOSSES[1:]]
    for loss, weight in variants:
        start = time.perf_counter()
        runs = [
            train(data, loss, classes, args.epochs, args.batch_size, args.lr, seed, weight)
            for seed in range(args.seeds)
        ]
        medians = [statistics.median(values) for values in zip(*runs, strict=True)]
        finals = " ".join(f"{run[-1]:.3f}" for run in runs)
        seconds = time.perf_counter() - start
        name = loss if loss == "bce" else f"{loss} x{weight:g}"
        row = "".join(f"{value:7.3f}" for value in medians)
        print(f"{name:<28}{row}   {seconds:7.0f}   {finals}", flush=True)


if __name__ == "__main__":
    main()
