"""The render plan: samples per face, shards that never mix subjects, parts of a plan."""

import numpy as np
import pytest

from feratt.errors import FerattError
from feratt.manifests.plan import face_counts, make_plan, select_part

LABELS = np.array([0, 0, 1, 2, 2, 2, 1, 0])
SUBJECTS = ["b", "a", "a", "b", "c", "a", "c", "c"]


def test_per_face_gives_every_face_the_same_count():
    counts = face_counts(LABELS, 3, per_face=5, total=None, balance="classes", seed=0)
    assert counts.tolist() == [5] * 8


def test_total_balanced_by_class():
    counts = face_counts(LABELS, 3, per_face=None, total=30, balance="classes", seed=0)
    assert counts.sum() == 30
    per_class = [counts[c == LABELS].sum() for c in range(3)]
    assert per_class == [10, 10, 10]
    # Within a class the faces share the quota as evenly as possible.
    assert sorted(counts[LABELS == 1].tolist()) == [5, 5]
    assert sorted(counts[LABELS == 0].tolist()) == [3, 3, 4]


def test_total_balanced_by_face_and_remainders():
    counts = face_counts(LABELS, 3, per_face=None, total=19, balance="faces", seed=0)
    assert counts.sum() == 19 and sorted(set(counts.tolist())) == [2, 3]
    assert (counts == 3).sum() == 3
    again = face_counts(LABELS, 3, per_face=None, total=19, balance="faces", seed=0)
    np.testing.assert_array_equal(counts, again)


def test_total_skips_classes_absent_from_the_bank():
    counts = face_counts(np.array([0, 0, 2]), 4, per_face=None, total=10, balance="classes", seed=1)
    assert counts[:2].sum() == 5 and counts[2] == 5


def test_exactly_one_of_per_face_and_total():
    with pytest.raises(FerattError, match="exactly one"):
        face_counts(LABELS, 3, per_face=2, total=10, balance="classes", seed=0)


def test_shards_never_mix_subjects_and_cover_every_sample():
    counts = np.array([3, 2, 2, 1, 4, 2, 3, 1])
    tasks = make_plan(SUBJECTS, counts, shard_size=4)
    for task in tasks:
        assert {SUBJECTS[f] for f in task.faces} == {task.subject}
        assert 1 <= len(task) <= 4
    faces = [f for t in tasks for f in t.faces]
    assert np.bincount(faces, minlength=8).tolist() == counts.tolist()
    assert [t.relpath for t in tasks] == [
        "shards/a/shard-00000.h5",
        "shards/a/shard-00001.h5",
        "shards/b/shard-00000.h5",
        "shards/c/shard-00000.h5",
        "shards/c/shard-00001.h5",
    ]
    assert [t.first_sample for t in tasks] == [0, 4, 6, 10, 14]
    # Subject a's faces 1, 2, 5 interleave round by round.
    assert tasks[0].faces + tasks[1].faces == (1, 2, 5, 1, 2, 5)


def test_parts_partition_the_plan():
    tasks = make_plan(SUBJECTS, np.full(8, 5), shard_size=3)
    parts = [select_part(tasks, i, 3) for i in (1, 2, 3)]
    assert sorted((t for p in parts for t in p), key=lambda t: t.first_sample) == tasks
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    with pytest.raises(FerattError):
        select_part(tasks, 4, 3)
