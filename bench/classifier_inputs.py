"""What G_rep can learn from its input: FERAtt's classifier trained from scratch on three inputs.

G_rep (FERAtt's PreActResNet18 classifier, `Representation`) is trained alone, with the classification
loss only, on one fold's training subjects, from each of:

- faces: the clean attention target (the rendered face under its mask, without the composite's
  luminance change), the default target of I_att;
- masked: the composite under the face mask, the paper's literal target (`--att-target input-masked`);
- images: the composite, the baseline's input;
- attention: the I_att of a trained FERAtt checkpoint (--checkpoint), frozen, in eval mode.

Each input is what FERAtt's G_rep sees: the image at the model's input size, average-pooled to 32x32 and
standardised with the fixed CIFAR statistics. The three inputs are computed once per split, and every seed
trains each of them on the same batches in the same order, at the same budget (epochs, batch size, lr).
The fold split, input size, width, batch size and lr are the checkpoint's (or the preset's without one);
no training noise is added. The model is the final epoch's; validation accuracy is printed alongside.

    .venv/bin/python bench/classifier_inputs.py --shards RENDER --fold 0 --epochs 12 --seeds 0,1,2 \\
        --checkpoint RUN/fold-0/best.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from feratt.artifacts.render import RenderSet
from feratt.config.training import TrainConfig
from feratt.errors import FerattError
from feratt.training.attention import AttentionSums
from feratt.training.checkpoints import TrainedModel, load_trained
from feratt.training.data import (
    ShardStream,
    make_loader,
    normalise_batch,
    prepare_inputs,
)
from feratt.training.device import pick_device
from feratt.training.folds import render_folds, split_fold
from feratt.training.losses import classification_loss
from feratt.training.models.blocks import REP_SIZE, Normalize, pool_to
from feratt.training.models.feratt import Representation

SOURCES = {
    "faces": "clean rendered face on black (`--att-target face`)",
    "masked": "composite under the mask (`--att-target input-masked`)",
    "images": "composite (images; the baseline's input)",
    "attention": "I_att of the frozen FERAtt",
}


@dataclass
class SplitInputs:
    """One split's 32x32 classifier inputs (before standardising) per source, its labels, I_att's scores."""

    sources: dict[str, Tensor]
    labels: Tensor
    attention_scores: dict[str, float] | None


def collect(
    shards: Path,
    subjects: list[str],
    config: TrainConfig,
    device: torch.device,
    frozen: TrainedModel | None,
    max_batches: int | None,
) -> SplitInputs:
    """Read `subjects`' samples in shard order once; pool each source to 32x32 (float16, on the CPU)."""
    stream = ShardStream(
        RenderSet.open(shards).shards(subjects), buffer_size=0, verify=config.verify, rank=0, world_size=1
    )
    loader = make_loader(stream, config.batch_size, config.workers)
    names = ["faces", "masked", "images"] + (["attention"] if frozen is not None else [])
    parts: dict[str, list[Tensor]] = {name: [] for name in names}
    labels: list[Tensor] = []
    sums = AttentionSums(device)
    with torch.no_grad():
        for step, raw in enumerate(loader):
            if max_batches is not None and step >= max_batches:
                break
            batch = normalise_batch(raw, device)
            inputs, target = prepare_inputs(batch, config)
            _, faces = prepare_inputs(batch, dataclasses.replace(config, att_target="face"))
            _, masked = prepare_inputs(batch, dataclasses.replace(config, att_target="input-masked"))
            pooled = {"faces": faces, "masked": masked, "images": inputs}
            if frozen is not None:
                output = frozen.model(inputs)
                pooled["attention"] = output.attention_image
                sums.update(output.attention_image, target, output.attention_map, batch["mask"])
            for name in names:
                parts[name].append(pool_to(pooled[name].float(), REP_SIZE).half().cpu())
            labels.append(batch["label"].long().cpu())
    return SplitInputs(
        sources={name: torch.cat(chunks) for name, chunks in parts.items()},
        labels=torch.cat(labels),
        attention_scores=sums.means() if frozen is not None else None,
    )


def accuracy(
    model: Representation, norm: Normalize, split: SplitInputs, source: str, device: torch.device
) -> float:
    """The share of `split`'s samples that `model` classifies right from `source`."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(split.labels), 256):
            x = norm(split.sources[source][start : start + 256].to(device).float())
            _, logits = model(x)
            correct += int((logits.argmax(1).cpu() == split.labels[start : start + 256]).sum())
    return correct / max(len(split.labels), 1)


def train_classifier(
    train: SplitInputs,
    source: str,
    config: TrainConfig,
    num_classes: int,
    seed: int,
    epochs: int,
    device: torch.device,
) -> tuple[Representation, Normalize]:
    """G_rep trained from scratch on `train`'s `source`; batches drawn in an order fixed by `seed`."""
    torch.manual_seed(seed)
    model = Representation(num_classes, width=config.width or 1.0).to(device)
    norm = Normalize().to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, amsgrad=config.amsgrad, weight_decay=config.weight_decay
    )
    order = torch.Generator().manual_seed(seed)
    samples = len(train.labels)
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(samples, generator=order).split(config.batch_size):
            x = norm(train.sources[source][index].to(device).float())
            _, logits = model(x)
            loss = classification_loss(logits, train.labels[index].to(device), config.classification_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model, norm


def _spread(values: list[float]) -> str:
    deviation = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * deviation:.2f}"


def table(results: dict[str, dict[str, list[float]]], scores: dict[str, float] | None) -> str:
    """The markdown table: test accuracy (median, mean ± std over seeds), validation accuracy, I_att."""
    lines = [
        "| G_rep input | Test acc. median (%) | Test acc. mean ± std (%) | Validation acc. mean ± std (%) "
        "| Test I_att PSNR (dB) | Test gate IoU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for source, figures in results.items():
        psnr = iou = ""
        if source == "attention" and scores is not None:
            psnr, iou = f"{scores['att_psnr']:.2f}", f"{scores['att_iou']:.3f}"
        median = f"{100 * statistics.median(figures['test']):.2f}"
        validation = _spread(figures["validation"]) if figures["validation"] else "-"
        lines.append(
            f"| {SOURCES[source]} | {median} | {_spread(figures['test'])} | {validation} | {psnr} | {iou} |"
        )
    return "\n".join(lines)


def _config(args: argparse.Namespace, device: torch.device) -> tuple[TrainConfig, TrainedModel | None]:
    """The split and budget settings: the checkpoint's, else the preset's; flags given replace them."""
    frozen = None
    if args.checkpoint is not None:
        frozen = load_trained(args.checkpoint, fold=args.fold, device=device)
        if frozen.fold != args.fold:
            sys.exit(f"{frozen.checkpoint} is a model of fold {frozen.fold}, not of fold {args.fold}")
        config = frozen.config
    else:
        config = TrainConfig(preset=args.preset).resolved()
    given = {
        "batch_size": args.batch_size,
        "lr": args.lr,
        "workers": args.workers,
        "fold_size": args.fold_size,
        "val_subjects": args.val_subjects,
    }
    return dataclasses.replace(config, **{k: v for k, v in given.items() if v is not None}), frozen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shards", type=Path, required=True, help="the render (its folds as training makes them)"
    )
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", default="0,1,2", help="G_rep's training seeds, comma-separated")
    parser.add_argument(
        "--checkpoint", type=Path, help="a FERAtt run folder, fold folder or .pt of this fold"
    )
    parser.add_argument("--preset", default="cpu-small", help="settings without a checkpoint")
    parser.add_argument("--batch-size", type=int, help="default: the checkpoint's or the preset's")
    parser.add_argument("--lr", type=float, help="default: the checkpoint's or the preset's")
    parser.add_argument("--fold-size", type=int, help="test subjects a fold (default: as trained)")
    parser.add_argument("--val-subjects", type=int, help="validation subjects (default: as trained)")
    parser.add_argument("--workers", type=int, help="loader workers for the one read of each split")
    parser.add_argument(
        "--max-batches", type=int, help="read at most this many batches of each split (smoke)"
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    config, frozen = _config(args, device)
    num_classes = len(RenderSet.open(args.shards).classes)
    split = split_fold(
        render_folds(args.shards, config.fold_size, config.seed), args.fold, config.val_subjects, config.seed
    )
    parts = {
        name: collect(args.shards, subjects, config, device, frozen, args.max_batches)
        for name, subjects in (("train", split.train), ("validation", split.validation), ("test", split.test))
        if subjects
    }
    seeds = [int(seed) for seed in args.seeds.split(",")]
    results: dict[str, dict[str, list[float]]] = {}
    for source in parts["train"].sources:
        results[source] = {"test": [], "validation": []}
        for seed in seeds:
            model, norm = train_classifier(
                parts["train"], source, config, num_classes, seed, args.epochs, device
            )
            for name in ("test", "validation"):
                if name in parts:
                    results[source][name].append(accuracy(model, norm, parts[name], source, device))
            print(f"{source} seed {seed}: test acc {results[source]['test'][-1]:.4f}", file=sys.stderr)
    print(
        f"Fold {args.fold} of `{args.shards}`: {len(parts['train'].labels)} training samples, "
        f"{len(parts['test'].labels)} test samples; {args.epochs} epochs, batch {config.batch_size}, "
        f"lr {config.lr}, input {config.in_size} px pooled to 32, seeds {args.seeds}."
        + (f" I_att of `{frozen.checkpoint}` (epoch {frozen.epoch})." if frozen is not None else "")
    )
    print()
    print(table(results, parts["test"].attention_scores))


if __name__ == "__main__":
    try:
        main()
    except FerattError as exc:
        sys.exit(f"error: {exc}")
