"""Significance tests against Demsar (2006) and a hand-computed case; the CD diagram's groups."""

import json

import numpy as np
import pytest
from PIL import Image

from feratt.codec import encode
from feratt.experiments.figures import cd_diagram, cd_groups, confusion_figure
from feratt.experiments.stats import (
    average_ranks,
    bonferroni_dunn_test,
    critical_difference,
    critical_value,
    friedman_from_ranks,
    friedman_test,
    nemenyi_test,
)

# Demsar (2006), Table 5: q_0.05 for k = 2..10, printed to 3 decimals (2.343 is 2.3437 cut short).
NEMENYI_Q05 = (1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164)
BONFERRONI_DUNN_Q05 = (1.960, 2.241, 2.394, 2.498, 2.576, 2.638, 2.690, 2.724, 2.773)


@pytest.mark.parametrize("k", range(2, 11))
def test_critical_values_match_demsar_table_5(k):
    assert critical_value(k, 0.05, "nemenyi") == pytest.approx(NEMENYI_Q05[k - 2], abs=1e-3)
    # The table as quoted gives 2.724 for k = 9, out of step with its neighbours 2.690 and 2.773;
    # norm.ppf(1 - 0.05 / 16) is 2.734, so 2.724 is taken to be a misprint.
    expected = 2.734 if k == 9 else BONFERRONI_DUNN_Q05[k - 2]
    assert critical_value(k, 0.05, "bonferroni-dunn") == pytest.approx(expected, abs=1e-3)


# Demsar (2006), section 3.2.4: C4.5, C4.5+m, C4.5+cf and C4.5+m+cf on 14 data sets.
DEMSAR_NAMES = ["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"]
DEMSAR_RANKS = [3.143, 2.000, 2.893, 1.964]
# Not Table 6's AUCs: a rank table (lower is better) built to have the paper's rank sums 44, 28, 40.5
# and 27.5 over 14 rows, so the score-based functions can be run end to end on the worked example.
DEMSAR_RANK_TABLE = [
    [2, 1, 4, 3], [2, 3, 4, 1], [2, 4, 1, 3], [3, 1, 2, 4], [3, 1, 2, 4], [3, 1, 4, 2], [3, 1, 4, 2],
    [3, 2, 4, 1], [3, 4, 2, 1], [4, 1, 2.5, 2.5], [4, 2, 3, 1], [4, 2, 3, 1], [4, 2, 3, 1], [4, 3, 2, 1],
]  # fmt: skip


def test_demsar_worked_example_from_the_published_ranks():
    result = friedman_from_ranks(DEMSAR_RANKS, n=14)
    assert result.statistic == pytest.approx(9.28, abs=0.01)
    assert result.iman_davenport == pytest.approx(3.69, abs=0.01)
    # F(3, 39) at 0.05 is 2.85: the null hypothesis is rejected, as in the paper.
    assert result.iman_davenport_p < 0.05
    assert (result.n, result.k) == (14, 4)
    # CD = q * sqrt(4 * 5 / (6 * 14)) = q * 0.48795.
    assert critical_value(4, 0.05, "nemenyi") == pytest.approx(2.569, abs=5e-4)
    assert critical_difference(4, 14, 0.05, "nemenyi") == pytest.approx(1.25, abs=0.005)
    assert critical_value(4, 0.05, "bonferroni-dunn") == pytest.approx(2.394, abs=5e-4)
    assert critical_difference(4, 14, 0.05, "bonferroni-dunn") == pytest.approx(1.168, abs=0.001)
    # At alpha 0.10: q = 2.128 and CD = 2.128 * 0.48795 = 1.04 (not 1.12).
    assert critical_value(4, 0.10, "bonferroni-dunn") == pytest.approx(2.128, abs=5e-4)
    assert critical_difference(4, 14, 0.10, "bonferroni-dunn") == pytest.approx(1.038, abs=0.001)
    # All four ranks lie within the Nemenyi CD of each other: one group in the diagram.
    ranks = dict(zip(DEMSAR_NAMES, DEMSAR_RANKS, strict=True))
    assert cd_groups(ranks, 1.25) == [["C4.5+m+cf", "C4.5+m", "C4.5+cf", "C4.5"]]


def test_demsar_worked_example_end_to_end():
    table = np.array(DEMSAR_RANK_TABLE, dtype=float)
    np.testing.assert_allclose(average_ranks(table, higher_is_better=False), DEMSAR_RANKS, atol=5e-4)
    # Demsar's chi2_F has no tie correction (scipy.stats.friedmanchisquare's would give 9.35 here).
    friedman = friedman_test(table, higher_is_better=False)
    assert friedman.statistic == pytest.approx(9.28, abs=0.01)
    assert friedman.iman_davenport == pytest.approx(3.69, abs=0.01)
    nemenyi = nemenyi_test(table, DEMSAR_NAMES, higher_is_better=False)
    # The largest difference, C4.5 vs C4.5+m+cf (1.179), stays below the CD of 1.25.
    assert not any(pair.significant for pair in nemenyi.pairs)
    pair = next(p for p in nemenyi.pairs if (p.a, p.b) == ("C4.5", "C4.5+m+cf"))
    assert pair.difference == pytest.approx(1.179, abs=5e-4)
    # At alpha 0.10 (CD = 2.291 * 0.48795 = 1.118) C4.5 differs from C4.5+m (1.143) and C4.5+m+cf.
    nemenyi_10 = nemenyi_test(table, DEMSAR_NAMES, alpha=0.10, higher_is_better=False)
    assert nemenyi_10.cd == pytest.approx(1.118, abs=0.001)
    significant = {(p.a, p.b) for p in nemenyi_10.pairs if p.significant}
    assert significant == {("C4.5", "C4.5+m"), ("C4.5", "C4.5+m+cf")}
    # Bonferroni-Dunn against C4.5 at 0.05 (CD 1.168): only C4.5+m+cf (1.179) is better.
    dunn = bonferroni_dunn_test(table, DEMSAR_NAMES, control="C4.5", higher_is_better=False)
    verdicts = {row.method: row.significant for row in dunn.comparisons}
    assert verdicts == {"C4.5+m": False, "C4.5+cf": False, "C4.5+m+cf": True}
    json.dumps([encode(friedman), encode(nemenyi), encode(dunn)])


def test_hand_computed_case_with_a_tie():
    # Scores of methods A, B, C over four folds (higher is better); fold 3 ties B and C.
    scores = [[0.9, 0.8, 0.7], [0.85, 0.8, 0.6], [0.7, 0.6, 0.6], [0.6, 0.9, 0.5]]
    # Ranks per fold: (1,2,3), (1,2,3), (1,2.5,2.5), (2,1,3): means A 1.25, B 1.875, C 2.875.
    np.testing.assert_allclose(average_ranks(scores), [1.25, 1.875, 2.875])
    # chi2_F = 12*4/(3*4) * (1.5625 + 3.515625 + 8.265625 - 3*16/4) = 4 * (13.34375 - 12) = 5.375
    result = friedman_test(scores)
    assert result.statistic == pytest.approx(5.375)
    assert result.p_value == pytest.approx(np.exp(-5.375 / 2))  # chi-square, 2 dof: exp(-x/2)
    # F_F = 3 * 5.375 / (4 * 2 - 5.375) = 6.1429 on (2, 6) dof, where sf(x) = (1 + x / 3) ** -3 = 0.0353.
    assert result.iman_davenport == pytest.approx(3 * 5.375 / 2.625)
    assert result.iman_davenport_p == pytest.approx((1 + 3 * 5.375 / 2.625 / 3) ** -3)
    assert result.iman_davenport_p == pytest.approx(0.0353, abs=1e-4)
    nemenyi = nemenyi_test(scores, ["A", "B", "C"])
    # CD = 2.343 * sqrt(3 * 4 / 24) = 1.657; the largest gap, A vs C (1.625), stays below it.
    assert nemenyi.cd == pytest.approx(2.3437 * np.sqrt(0.5), abs=1e-3)
    assert [p.significant for p in nemenyi.pairs] == [False, False, False]
    dunn = bonferroni_dunn_test(scores, ["A", "B", "C"], control="C")
    by_method = {row.method: row for row in dunn.comparisons}
    assert by_method["A"].difference == pytest.approx(-1.625)
    assert by_method["A"].z == pytest.approx(-1.625 / np.sqrt(0.5))
    # z = -2.298, two-sided p = 0.0216, times 2 comparisons: 0.0431 < 0.05, and |d| >= CD 1.585.
    assert by_method["A"].p_adjusted == pytest.approx(0.0431, abs=5e-4)
    assert by_method["A"].significant and not by_method["B"].significant


def test_identical_orderings_give_an_infinite_iman_davenport():
    result = friedman_test([[3, 2, 1], [3, 2, 1], [3, 2, 1]])
    assert result.statistic == pytest.approx(6.0) and result.iman_davenport == np.inf
    assert result.iman_davenport_p == 0.0


@pytest.mark.parametrize(
    "scores",
    [[[0.5, 0.6]], [[0.5], [0.6]], [[0.5, np.nan], [0.6, 0.7]], [[0.5, np.inf], [0.6, 0.7]], [0.5, 0.6]],
)
def test_bad_score_tables_are_refused(scores):
    with pytest.raises(ValueError):
        friedman_test(scores)
    with pytest.raises(ValueError):
        nemenyi_test(scores, ["a", "b"])


def test_bad_arguments_are_refused():
    scores = [[0.9, 0.8], [0.7, 0.6]]
    with pytest.raises(ValueError):
        friedman_from_ranks([1.5, np.nan], n=4)
    with pytest.raises(ValueError):
        friedman_from_ranks([1.0], n=4)
    with pytest.raises(ValueError):
        nemenyi_test(scores, ["a", "a"])
    with pytest.raises(ValueError):
        bonferroni_dunn_test(scores, ["a", "b"], control="c")
    with pytest.raises(ValueError):
        critical_difference(4, 14, test="tukey")
    with pytest.raises(ValueError):
        critical_difference(4, 14, alpha=1.5)
    with pytest.raises(ValueError):
        critical_difference(1, 14)


def test_cd_groups_join_methods_closer_than_the_cd():
    ranks = {"d": 3.6, "b": 1.5, "a": 1.0, "c": 2.2}  # groups follow rank order, not dict order
    assert cd_groups(ranks, 1.3) == [["a", "b", "c"]]
    assert cd_groups(ranks, 1.0) == [["a", "b"], ["b", "c"]]
    assert cd_groups(ranks, 0.1) == []
    # A difference of exactly the CD is significant (Nemenyi's ">= CD"), so it is not joined.
    assert cd_groups(ranks, 0.5) == []
    # [b, c] lies inside [a, b, c] and is dropped.
    assert cd_groups({"a": 1.0, "b": 1.2, "c": 1.4, "d": 3.0}, 0.5) == [["a", "b", "c"]]
    assert cd_groups({"a": 2.0, "b": 2.0}, 0.1) == [["a", "b"]]


def test_figures_are_written(tmp_path):
    ranks = {"baseline": 2.5, "feratt-cls": 2.0, "feratt-rep-cls": 1.5}
    path = cd_diagram(ranks, 1.2, tmp_path / "cd.png", title="t", lower_is_better_axis_label="rank")
    assert path == tmp_path / "cd.png" and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 200 and image.size[1] > 50
    matrix = np.array([[5, 1], [2, 4]])
    path = confusion_figure(matrix, ["happy", "sad"], tmp_path / "confusion.png", title="t")
    with Image.open(path) as image:
        assert image.size[0] > 100
    # The atomic writes leave no temporary files behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cd.png", "confusion.png"]


def test_cd_diagram_refuses_a_single_method(tmp_path):
    with pytest.raises(ValueError):
        cd_diagram({"only": 1.0}, 1.0, tmp_path / "cd.png")
    assert not any(tmp_path.iterdir())
