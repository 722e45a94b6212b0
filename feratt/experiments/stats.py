"""Comparing methods over folds (Demsar, 2006): Friedman, Nemenyi and Bonferroni-Dunn tests on ranks."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


def _scores(scores: ArrayLike) -> np.ndarray:
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"scores must be a (folds x methods) table, not shape {matrix.shape}")
    if matrix.shape[0] < 2 or matrix.shape[1] < 2:
        raise ValueError(f"the tests need at least 2 folds and 2 methods, not {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("scores must all be finite")
    return matrix


def average_ranks(scores: ArrayLike, higher_is_better: bool = True) -> np.ndarray:
    """Mean rank of each method over the rows (1 = best; ties share their average rank)."""
    matrix = _scores(scores)
    ranks = stats.rankdata(-matrix if higher_is_better else matrix, axis=1)
    return ranks.mean(axis=0)


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman's chi-square and Iman-Davenport's F over N folds and k methods."""

    statistic: float
    p_value: float
    iman_davenport: float
    iman_davenport_p: float
    ranks: tuple[float, ...]
    n: int
    k: int


def friedman_from_ranks(ranks: ArrayLike, n: int) -> FriedmanResult:
    """The Friedman test from the methods' average ranks over `n` folds."""
    ranks = np.asarray(ranks, dtype=np.float64)
    k = len(ranks)
    if k < 2 or n < 2:
        raise ValueError(f"the Friedman test needs at least 2 methods and 2 folds, not {k} and {n}")
    if not np.isfinite(ranks).all():
        raise ValueError("ranks must all be finite")
    chi2 = 12.0 * n / (k * (k + 1)) * (float(np.sum(ranks**2)) - k * (k + 1) ** 2 / 4.0)
    p_value = float(stats.chi2.sf(chi2, k - 1))
    denominator = n * (k - 1) - chi2
    if denominator <= 0:  # every fold ranks the methods the same way
        f_f, f_p = math.inf, 0.0
    else:
        f_f = (n - 1) * chi2 / denominator
        f_p = float(stats.f.sf(f_f, k - 1, (k - 1) * (n - 1)))
    return FriedmanResult(chi2, p_value, f_f, f_p, tuple(float(r) for r in ranks), n, k)


def friedman_test(scores: ArrayLike, higher_is_better: bool = True) -> FriedmanResult:
    """The Friedman test of a (folds x methods) score table."""
    matrix = _scores(scores)
    return friedman_from_ranks(average_ranks(matrix, higher_is_better), matrix.shape[0])


def critical_value(k: int, alpha: float = 0.05, test: str = "nemenyi") -> float:
    """q_alpha of Demsar's Table 5: Nemenyi (studentized range / sqrt 2) or Bonferroni-Dunn."""
    if k < 2:
        raise ValueError(f"a critical value needs at least 2 methods, not {k}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, not {alpha}")
    if test == "nemenyi":
        # Infinite degrees of freedom: the range of k standard normals, as in Demsar's Table 5.
        return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))
    if test == "bonferroni-dunn":
        return float(stats.norm.ppf(1 - alpha / (2 * (k - 1))))
    raise ValueError(f"unknown test {test!r}: nemenyi or bonferroni-dunn")


def critical_difference(k: int, n: int, alpha: float = 0.05, test: str = "nemenyi") -> float:
    """The critical difference in average rank, q_alpha * sqrt(k (k + 1) / (6 N))."""
    if n < 1:
        raise ValueError(f"a critical difference needs at least 1 fold, not {n}")
    return critical_value(k, alpha, test) * math.sqrt(k * (k + 1) / (6.0 * n))


def _check_names(names: list[str], k: int) -> None:
    if len(names) != k or len(set(names)) != k:
        raise ValueError(f"need {k} distinct method names, not {names}")


@dataclass(frozen=True)
class NemenyiPair:
    """Two methods, their difference in average rank, and whether it reaches the critical difference."""

    a: str
    b: str
    difference: float
    significant: bool


@dataclass(frozen=True)
class NemenyiResult:
    """Average ranks, the critical difference, and every pair of methods with its verdict."""

    alpha: float
    cd: float
    ranks: dict[str, float]
    pairs: tuple[NemenyiPair, ...]


def nemenyi_test(
    scores: ArrayLike, names: list[str], alpha: float = 0.05, higher_is_better: bool = True
) -> NemenyiResult:
    """All-pairs Nemenyi post-hoc test: a pair differs when its ranks differ by at least the CD."""
    matrix = _scores(scores)
    n, k = matrix.shape
    _check_names(names, k)
    ranks = dict(zip(names, (float(r) for r in average_ranks(matrix, higher_is_better)), strict=True))
    cd = critical_difference(k, n, alpha, "nemenyi")
    pairs = tuple(
        NemenyiPair(a, b, abs(ranks[a] - ranks[b]), bool(abs(ranks[a] - ranks[b]) >= cd))
        for a, b in itertools.combinations(names, 2)
    )
    return NemenyiResult(alpha, cd, ranks, pairs)


@dataclass(frozen=True)
class DunnComparison:
    """One method against the control: rank difference, z, two-sided p, Bonferroni-adjusted p, verdict."""

    method: str
    difference: float
    z: float
    p: float
    p_adjusted: float
    significant: bool


@dataclass(frozen=True)
class BonferroniDunnResult:
    """Each method against a control: rank difference, z, Bonferroni-adjusted p and verdict."""

    alpha: float
    control: str
    cd: float
    comparisons: tuple[DunnComparison, ...]


def bonferroni_dunn_test(
    scores: ArrayLike, names: list[str], control: str, alpha: float = 0.05, higher_is_better: bool = True
) -> BonferroniDunnResult:
    """Bonferroni-Dunn test of every method against `control` on average ranks."""
    matrix = _scores(scores)
    n, k = matrix.shape
    _check_names(names, k)
    if control not in names:
        raise ValueError(f"the control {control!r} is not one of the methods {names}")
    ranks = dict(zip(names, (float(r) for r in average_ranks(matrix, higher_is_better)), strict=True))
    scale = math.sqrt(k * (k + 1) / (6.0 * n))
    cd = critical_difference(k, n, alpha, "bonferroni-dunn")
    comparisons = []
    for name in names:
        if name == control:
            continue
        difference = ranks[name] - ranks[control]
        z = difference / scale
        p = float(2 * stats.norm.sf(abs(z)))
        comparisons.append(
            DunnComparison(name, difference, z, p, min(1.0, p * (k - 1)), bool(abs(difference) >= cd))
        )
    return BonferroniDunnResult(alpha, control, cd, tuple(comparisons))
