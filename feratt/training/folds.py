"""Subject-independent folds: leave K subjects out for testing, hold a few training subjects out to validate.

`make_folds` sorts the subjects, shuffles them with the seed and cuts them into n // K test folds of
as equal size as possible: every fold has at least K test subjects and the sizes differ by at most one
(so K or K+1 whenever the remainder n % K is no larger than the number of folds). Each subject is a
test subject of exactly one fold. It takes at least 2K subjects, so that there are two folds and every
fold keeps training subjects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from feratt.artifacts.render import RenderSet
from feratt.errors import FerattError


def make_folds(subjects: list[str], fold_size: int = 10, seed: int = 0) -> list[list[str]]:
    """Cut the subjects into n // fold_size seeded, sorted test folds, sizes differing by one at most."""
    if fold_size < 1:
        raise FerattError(f"the fold size must be at least 1, not {fold_size}", field="fold_size")
    names = sorted(set(subjects))
    if len(names) != len(subjects):
        raise FerattError("the subject list names a subject twice")
    count = len(names)
    if count < 2:
        raise FerattError(f"{count} subject(s) cannot make subject-independent folds: it takes at least 2")
    if count < 2 * fold_size:
        raise FerattError(
            f"{count} subjects cannot make folds of {fold_size} test subjects; "
            f"use a fold size of {count // 2} or less",
            field="fold_size",
        )
    order = [names[i] for i in np.random.default_rng([seed % (1 << 63), 0xF01D]).permutation(count)]
    n_folds = count // fold_size
    base, extra = divmod(count, n_folds)
    folds: list[list[str]] = []
    start = 0
    for fold in range(n_folds):
        size = base + (1 if fold < extra else 0)
        folds.append(sorted(order[start : start + size]))
        start += size
    return folds


def render_folds(
    render: RenderSet | str | os.PathLike[str], fold_size: int = 10, seed: int = 0
) -> list[list[str]]:
    """The test folds of the subjects of `render`."""
    return make_folds(sorted(RenderSet.open(render).subjects), fold_size, seed)


def resolve_folds(spec: str | int, count: int) -> list[int]:
    """The fold indices `spec` names: every one of `count` for 'all', else the one index it gives."""
    if spec == "all":
        return list(range(count))
    try:
        fold = int(spec)
    except ValueError:
        raise FerattError(f"a fold is an index or 'all', not {spec!r}", field="fold") from None
    _check_fold(fold, count)
    return [fold]


def _check_fold(fold: int, count: int) -> None:
    if not 0 <= fold < count:
        raise FerattError(
            f"fold {fold} does not exist: the data set has {count} folds (0-{count - 1})", field="fold"
        )


@dataclass
class FoldSplit:
    """One fold's subjects: its test fold, validation subjects drawn from the rest, and the training ones."""

    fold: int
    test: list[str]
    validation: list[str]
    train: list[str]


def split_fold(folds: list[list[str]], fold: int, val_subjects: int = 2, seed: int = 0) -> FoldSplit:
    """Fold `fold`'s split; validation subjects are drawn (seeded per fold) from its training subjects."""
    _check_fold(fold, len(folds))
    if val_subjects < 0:
        raise FerattError(
            f"the number of validation subjects must be 0 or more, not {val_subjects}", field="val_subjects"
        )
    test = sorted(folds[fold])
    pool = sorted(s for i, f in enumerate(folds) if i != fold for s in f)
    if val_subjects >= len(pool):
        raise FerattError(
            f"fold {fold} has {len(pool)} training subjects, too few to hold {val_subjects} out for "
            f"validation; hold out {len(pool) - 1} or fewer",
            field="val_subjects",
        )
    rng = np.random.default_rng([seed % (1 << 63), fold, 0x5A11])
    picked = {pool[i] for i in rng.choice(len(pool), size=val_subjects, replace=False)}
    validation = sorted(picked)
    train = [s for s in pool if s not in picked]
    return FoldSplit(fold=fold, test=test, validation=validation, train=train)
