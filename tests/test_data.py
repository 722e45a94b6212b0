"""Training data: folds, shard streams over ranks and workers, verification, batches on the device."""

import json
import pickle
import random
import shutil
from types import SimpleNamespace

import cv2
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from skimage import data

from feratt.artifacts.render import RenderSet
from feratt.artifacts.run import FoldsRecord, RunFolder
from feratt.cli import main
from feratt.codec import encode
from feratt.datasets.bank import write_faces
from feratt.datasets.demo import list_demo
from feratt.datasets.faces import BankOptions, build_faces
from feratt.datasets.records import ReaderOptions
from feratt.errors import FerattError
from feratt.jsonfile import write_json
from feratt.training.data import (
    ShardRef,
    ShardStream,
    make_loader,
    normalise_batch,
    prepare_inputs,
)
from feratt.training.folds import make_folds, render_folds, resolve_folds, split_fold

SUBJECTS = [f"D{i:02d}" for i in range(1, 7)]
PER_SUBJECT = 28  # 7 faces x 4 samples, in shards of 10, 10 and 8


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """A small render: 6 demo subjects x 7 classes x 4 samples at 48 px, shards of at most 10."""
    base = tmp_path_factory.mktemp("data")
    listing = list_demo(ReaderOptions(demo_subjects=len(SUBJECTS), demo_per_class=1))
    options = BankOptions(size=96)
    write_faces(base / "bank.h5", listing, build_faces(listing, options), options)
    backgrounds = base / "backgrounds"
    backgrounds.mkdir()
    for name in ("coffee", "chelsea", "rocket"):
        photo = cv2.resize(getattr(data, name)(), (160, 120), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(backgrounds / f"{name}.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    out = base / "out"
    args = ["render", base / "bank.h5", "--out", out, "--backgrounds", backgrounds]
    args += ["--size", 48, "--per-face", 4, "--shard-size", 10, "--jobs", 1]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def open_files() -> int:
    return h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)


def epoch_indices(loader, stream=None, epoch=None) -> list[int]:
    if epoch is not None:
        stream.set_epoch(epoch)
    return [int(i) for batch in loader for i in batch["sample_index"]]


def all_refs(render) -> list[ShardRef]:
    return RenderSet.open(render).shards(SUBJECTS)


# Render index and manifests.


def test_missing_index_is_a_user_error(tmp_path):
    with pytest.raises(FerattError) as caught:
        RenderSet.open(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path} has no index.json: is it a feratt render folder? "
        "(run feratt render, or feratt index after the parts)"
    )


def test_shards_for_subjects_follow_the_manifests(render):
    index = RenderSet.open(render)
    assert sorted(index.subjects) == SUBJECTS
    refs = RenderSet.open(render).shards(["D03", "D01"])
    assert [r.subject for r in refs] == ["D03"] * 3 + ["D01"] * 3
    assert [r.samples for r in refs] == [10, 10, 8] * 2
    manifest = json.loads((render / "manifests" / "D03.json").read_text())
    assert refs[0].path == str(render / manifest["shards"][0]["path"])
    assert refs[0].sha256 == manifest["shards"][0]["sha256"]
    with pytest.raises(FerattError, match="subject 'X99' is not in the render"):
        RenderSet.open(render).shards(["D01", "X99"])


# Items, order and coverage.


def test_items_match_the_shards(render):
    refs = RenderSet.open(render).shards(["D02"])
    stream = ShardStream(refs, shuffle=False)
    items = list(stream)
    assert len(items) == PER_SUBJECT == stream.samples_per_rank
    stored = {}
    for ref in refs:
        with h5py.File(ref.path, "r") as h5:
            for row, index in enumerate(h5["sample_index"][()]):
                stored[int(index)] = {name: h5[name][row] for name in ("images", "masks", "faces", "labels")}
    assert [int(i["sample_index"]) for i in items] == sorted(stored)
    for item in items:
        want = stored[int(item["sample_index"])]
        assert item["image"].shape == (3, 48, 48) and item["image"].dtype == np.uint8
        assert item["mask"].shape == (1, 48, 48) and item["mask"].dtype == np.uint8
        assert item["face"].shape == (3, 48, 48) and item["face"].dtype == np.uint8
        assert item["label"].dtype == np.int64 and item["sample_index"].dtype == np.int64
        np.testing.assert_array_equal(item["image"], want["images"].transpose(2, 0, 1))
        np.testing.assert_array_equal(item["face"], want["faces"].transpose(2, 0, 1))
        np.testing.assert_array_equal(item["mask"][0], want["masks"])
        assert int(item["label"]) == int(want["labels"])
    batch = next(iter(make_loader(stream, 8, 0)))
    assert batch["image"].shape == (8, 3, 48, 48) and batch["image"].dtype == torch.uint8
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (8,)


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_and_epoch_give_the_same_order(render, workers):
    refs = all_refs(render)
    stream = ShardStream(refs, shuffle=True, seed=3, buffer_size=16)
    loader = make_loader(stream, 7, workers)
    first = epoch_indices(loader, stream, 0)
    second = epoch_indices(loader, stream, 1)
    again = epoch_indices(loader, stream, 0)  # persistent workers must see set_epoch
    assert first == again
    assert first != second and sorted(first) == sorted(second)
    fresh = ShardStream(refs, shuffle=True, seed=3, buffer_size=16)
    assert epoch_indices(make_loader(fresh, 7, workers), fresh, 0) == first
    other = ShardStream(refs, shuffle=True, seed=4, buffer_size=16)
    assert epoch_indices(make_loader(other, 7, workers), other, 0) != first
    assert first != sorted(first)


def test_unshuffled_order_is_the_shard_order(render):
    refs = all_refs(render)
    stream = ShardStream(refs, shuffle=False)
    expected = []
    for ref in refs:
        with h5py.File(ref.path, "r") as h5:
            expected.extend(int(i) for i in h5["sample_index"][()])
    assert epoch_indices(make_loader(stream, 5, 0), stream, 0) == expected
    assert epoch_indices(make_loader(stream, 5, 0), stream, 4) == expected


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("subjects", [SUBJECTS, ["D05"]])
def test_ranks_and_workers_cover_an_epoch_once(render, workers, shuffle, subjects):
    refs = RenderSet.open(render).shards(subjects)
    expected = set()
    for ref in refs:
        with h5py.File(ref.path, "r") as h5:
            expected.update(int(i) for i in h5["sample_index"][()])
    world = 2
    for epoch in (0, 1):
        seen = []
        counts = []
        for rank in range(world):
            stream = ShardStream(refs, shuffle=shuffle, seed=1, buffer_size=8, rank=rank, world_size=world)
            indices = epoch_indices(make_loader(stream, 4, workers), stream, epoch)
            assert len(indices) == len(set(indices)) == stream.samples_per_rank
            counts.append(len(indices))
            seen.extend(indices)
        assert counts[0] == counts[1] == len(expected) // world
        assert len(seen) == len(set(seen)), "a sample went to two ranks or workers"
        assert set(seen) <= expected
        assert len(expected - set(seen)) == len(expected) % world  # the dropped tail: under world_size


def test_uneven_streams_cover_every_sample(render):
    refs = RenderSet.open(render).shards(["D01", "D02", "D03"])  # 84 samples
    seen = []
    for rank in range(5):
        stream = ShardStream(refs, shuffle=True, rank=rank, world_size=5, even=False, buffer_size=4)
        seen.extend(epoch_indices(make_loader(stream, 4, 0), stream, 2))
    assert len(seen) == len(set(seen)) == 84
    even = [ShardStream(refs, rank=r, world_size=5).samples_per_rank for r in range(5)]
    assert even == [16] * 5


def test_no_h5py_file_open_in_the_main_process_before_iteration(render):
    before = open_files()
    stream = ShardStream(all_refs(render), shuffle=True, buffer_size=16)
    copy = pickle.loads(pickle.dumps(stream))
    assert copy.samples_per_rank == stream.samples_per_rank
    loader = make_loader(stream, 16, 2)
    assert open_files() == before
    indices = epoch_indices(loader, stream, 0)
    assert len(indices) == len(SUBJECTS) * PER_SUBJECT
    assert open_files() == before, "workers, not the main process, open the shards"
    # In the main process (no workers) every file is closed again at the end of the epoch, or on a break.
    assert len(epoch_indices(make_loader(copy, 16, 0), copy, 0)) == len(indices)
    assert open_files() == before
    iterator = iter(copy)
    next(iterator)
    assert open_files() > before
    iterator.close()
    assert open_files() == before


# Verification.


@pytest.fixture
def corrupted(render, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(render, out)
    bad = out / "shards" / "D04" / "shard-00001.h5"
    with open(bad, "ab") as handle:  # the file still reads, but its bytes no longer match the manifest
        handle.write(b"\0" * 64)
    return out, bad


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupted_shard_is_named(corrupted, workers):
    out, bad = corrupted
    stream = ShardStream(RenderSet.open(out).shards(["D03", "D04"]), shuffle=True, verify=True)
    with pytest.raises(FerattError) as caught:
        epoch_indices(make_loader(stream, 4, workers), stream, 0)
    message = str(caught.value)
    assert message.startswith(f"shard {bad} is corrupt") and "\n" not in message


def test_verify_false_skips_the_check(corrupted):
    out, _ = corrupted
    stream = ShardStream(RenderSet.open(out).shards(["D03", "D04"]), shuffle=True, verify=False)
    assert len(epoch_indices(make_loader(stream, 4, 0), stream, 0)) == 2 * PER_SUBJECT


def test_a_missing_shard_is_named(render, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(render, out)
    gone = out / "shards" / "D01" / "shard-00002.h5"
    gone.unlink()
    stream = ShardStream(RenderSet.open(out).shards(["D01"]), verify=False)
    with pytest.raises(FerattError, match=r"shard-00002\.h5"):
        list(stream)


# Batches on the device.


def test_normalise_batch_scales_to_unit_range(render):
    stream = ShardStream(RenderSet.open(render).shards(["D01"]))
    raw = next(iter(make_loader(stream, 6, 0)))
    batch = normalise_batch(raw, "cpu")
    for key in ("image", "face", "mask"):
        assert batch[key].dtype == torch.float32
        assert float(batch[key].min()) >= 0 and float(batch[key].max()) <= 1
        torch.testing.assert_close(batch[key] * 255, raw[key].float())
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    assert batch["label"].dtype == torch.int64
    assert torch.equal(normalise_batch(raw, "cpu", noise_sigma=(0.0, 0.0))["image"], batch["image"])
    noisy = [
        normalise_batch(raw, "cpu", noise_sigma=(0.05, 0.2), generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    ]
    assert torch.equal(noisy[0]["image"], noisy[1]["image"])
    assert not torch.equal(noisy[0]["image"], batch["image"])
    assert float(noisy[0]["image"].min()) >= 0 and float(noisy[0]["image"].max()) <= 1
    assert torch.equal(noisy[0]["face"], batch["face"]), "noise goes on the input only"
    spread = (noisy[0]["image"] - batch["image"]).std(dim=(1, 2, 3))
    assert float(spread.max()) < 0.25
    with pytest.raises(FerattError):
        normalise_batch(raw, "cpu", noise_sigma=(0.3, 0.1))


def test_attention_targets_are_the_face_or_the_clean_input_under_the_mask(render):
    stream = ShardStream(RenderSet.open(render).shards(["D01"]))
    raw = next(iter(make_loader(stream, 6, 0)))
    clean = normalise_batch(raw, "cpu")
    noisy = normalise_batch(raw, "cpu", noise_sigma=(0.2, 0.2), generator=torch.Generator().manual_seed(1))
    # At the render's own size (48 px, not a model size), so that nothing is resized.
    face_config = SimpleNamespace(att_target="face", in_size=clean["image"].shape[-1])
    masked_config = SimpleNamespace(att_target="input-masked", in_size=clean["image"].shape[-1])
    assert torch.equal(prepare_inputs(clean, face_config)[1], clean["face"])
    inputs, target = prepare_inputs(noisy, masked_config)
    assert torch.equal(inputs, noisy["image"])
    inside = clean["mask"] > 0.5
    assert torch.equal(target, clean["image"] * inside), "the target never carries the training noise"
    assert float(target[~inside.expand_as(target)].abs().max()) == 0.0
    assert float((target - clean["face"]).abs()[inside.expand_as(target)].mean()) > 0.01


# Folds.


def test_folds_are_disjoint_covering_and_split_cleanly():
    rng = random.Random(0)
    for trial in range(200):
        count = rng.randint(11, 60)
        subjects = [f"S{rng.randrange(10**6):06d}" for _ in range(count)]
        subjects = sorted(set(subjects))
        count = len(subjects)
        size = rng.randint(3, 10)
        if count < 2 * size:
            with pytest.raises(FerattError, match=f"use a fold size of {count // 2} or less"):
                make_folds(subjects, size, seed=trial)
            continue
        folds = make_folds(rng.sample(subjects, count), size, seed=trial)
        assert folds == make_folds(subjects, size, seed=trial), "the subjects' input order does not matter"
        assert len(folds) == count // size
        assert sorted(s for f in folds for s in f) == subjects
        sizes = [len(f) for f in folds]
        assert min(sizes) >= size and max(sizes) - min(sizes) <= 1
        if count % size <= len(folds):
            assert max(sizes) <= size + 1
        val = rng.randint(0, 3)
        for fold in range(len(folds)):
            split = split_fold(folds, fold, val_subjects=val, seed=trial)
            assert split.fold == fold and split.test == folds[fold]
            assert len(split.validation) == val
            parts = [set(split.test), set(split.validation), set(split.train)]
            assert sum(len(p) for p in parts) == count and set().union(*parts) == set(subjects)
            assert not set(split.validation) & set(split.test)
            assert split.train
            assert split == split_fold(folds, fold, val_subjects=val, seed=trial)


def test_folds_depend_on_the_seed():
    subjects = [f"S{i:02d}" for i in range(40)]
    assert make_folds(subjects, 10, 0) != make_folds(subjects, 10, 1)
    folds = make_folds(subjects, 10, 0)
    picks = {tuple(split_fold(folds, 0, 2, seed).validation) for seed in range(10)}
    assert len(picks) > 1


def test_too_few_subjects_suggest_a_smaller_fold_size():
    jaffe = ["KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM"]
    with pytest.raises(FerattError) as caught:
        make_folds(jaffe, 10)
    assert (
        str(caught.value) == "10 subjects cannot make folds of 10 test subjects; use a fold size of 5 or less"
    )
    assert caught.value.field == "fold_size"
    assert [len(f) for f in make_folds(jaffe, 5)] == [5, 5]
    assert len(make_folds(jaffe, 3)) == 3
    with pytest.raises(FerattError, match="at least 2"):
        make_folds(["only"], 1)


def test_fold_out_of_range_and_too_many_validation_subjects():
    folds = make_folds([f"S{i:02d}" for i in range(25)], 5)
    with pytest.raises(FerattError) as caught:
        split_fold(folds, 7)
    assert str(caught.value) == "fold 7 does not exist: the data set has 5 folds (0-4)"
    with pytest.raises(FerattError, match="fold -1 does not exist"):
        split_fold(folds, -1)
    with pytest.raises(FerattError, match="hold out 19 or fewer") as caught:
        split_fold(folds, 0, val_subjects=20)
    assert caught.value.field == "val_subjects"


def test_fold_specs_resolve_to_indices():
    assert resolve_folds("all", 3) == [0, 1, 2]
    assert resolve_folds("2", 3) == resolve_folds(2, 3) == [2]
    for spec, message in (("3", "fold 3 does not exist"), ("first", "an index or 'all'")):
        with pytest.raises(FerattError, match=message) as caught:
            resolve_folds(spec, 3)
        assert caught.value.field == "fold"


def test_folds_json_round_trip(tmp_path):
    folds = make_folds([f"S{i:02d}" for i in range(23)], 4, seed=9)
    run = RunFolder(tmp_path / "run")
    path = run.folds_file
    path.parent.mkdir()
    write_json(path, encode(FoldsRecord.of(folds, seed=9, fold_size=4)))
    assert run.folds().test_folds() == folds
    payload = json.loads(path.read_text())
    assert payload["seed"] == 9 and payload["fold_size"] == 4
    assert [f["test"] for f in payload["folds"]] == folds
    assert not [p for p in path.parent.iterdir() if p.name != "folds.json"], "no temporary file left"
    path.write_text("{}")
    with pytest.raises(FerattError, match="not a feratt folds file"):
        run.folds()


def test_render_folds_are_the_folds_of_the_renders_subjects(render):
    assert render_folds(render, 2, seed=3) == make_folds(SUBJECTS, 2, seed=3)


def _slice_epochs(refs, epochs, per_epoch, workers, world=2):
    """The sample_index lists of each epoch and rank of streams taking `per_epoch` fresh samples an epoch."""
    result = []
    streams = [
        ShardStream(refs, shuffle=True, seed=5, buffer_size=8, rank=rank, world_size=world,
                    samples_per_epoch=per_epoch)
        for rank in range(world)
    ]  # fmt: skip
    loaders = [make_loader(stream, 6, workers) for stream in streams]
    for epoch in epochs:
        result.append(
            [epoch_indices(loader, stream, epoch) for stream, loader in zip(streams, loaders, strict=True)]
        )
    return result


@pytest.mark.parametrize("workers", [0, 2])
def test_fresh_samples_every_epoch_until_the_render_is_exhausted(render, workers):
    refs = all_refs(render)  # 168 samples: four epochs of 40, then the fifth wraps to a new order
    epochs = _slice_epochs(refs, range(5), 40, workers)
    seen = []
    for ranks in epochs:
        assert [len(indices) for indices in ranks] == [20, 20]
        seen.extend(i for indices in ranks for i in indices)
    fresh = seen[:160]
    assert len(fresh) == len(set(fresh)), "a sample came twice across epochs, ranks or workers"
    expected = set()
    for ref in refs:
        with h5py.File(ref.path, "r") as h5:
            expected.update(int(i) for i in h5["sample_index"][()])
    assert set(seen) == expected  # the fifth epoch takes the 8 left of the first order first
    assert len(expected - set(fresh)) == 8 and len(seen[160:]) == 40
    stream = ShardStream(refs, shuffle=True, samples_per_epoch=40, rank=0, world_size=2)
    assert stream.samples_per_rank == 20


def test_a_resumed_stream_takes_the_same_slice(render):
    refs = all_refs(render)
    whole = _slice_epochs(refs, range(4), 30, 0)
    resumed = _slice_epochs(refs, [2, 3], 30, 0)
    assert resumed == whole[2:]
    other_seed = ShardStream(refs, shuffle=True, seed=6, samples_per_epoch=30, rank=0, world_size=1)
    assert set(epoch_indices(make_loader(other_seed, 6, 0), other_seed, 2)) != set(whole[2][0] + whole[2][1])
