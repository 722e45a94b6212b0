"""Shard files: every compression reads back exactly, viewer attributes, atomic writes."""

import h5py
import numpy as np
import pytest

from feratt.artifacts.shard import ShardData, file_sha256, write_shard


def _data(n=5, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return ShardData(
        images=rng.integers(0, 256, (n, size, size, 3), np.uint8),
        masks=(rng.random((n, size, size)) > 0.5).astype(np.uint8) * 255,
        faces=rng.integers(0, 256, (n, size, size, 3), np.uint8),
        labels=rng.integers(0, 7, n).astype(np.int16),
        face_index=np.arange(n, dtype=np.int32),
        sample_index=np.arange(100, 100 + n),
        background_ids=[f"bg{i}" for i in range(n)],
        matrices=rng.normal(size=(n, 3, 3)),
        crops=rng.random((n, 3)).astype(np.float32),
        luminance_ratio=rng.random(n).astype(np.float32),
        params=rng.random((n, 4)).astype(np.float32),
        attrs={"subject": "S1", "kind": "feratt-shard"},
    )


@pytest.mark.parametrize(("compression", "filter_name"), [("gzip", "gzip"), ("lzf", "lzf"), ("none", None)])
def test_shard_reads_back_exactly(tmp_path, compression, filter_name):
    data = _data()
    path = tmp_path / "s" / "shard-00000.h5"
    digest = write_shard(path, data, compression=compression, level=4)
    assert digest == file_sha256(path)
    with h5py.File(path, "r") as h5:
        for name in (
            "images",
            "masks",
            "faces",
            "labels",
            "face_index",
            "sample_index",
            "matrices",
            "crops",
            "luminance_ratio",
            "params",
        ):
            np.testing.assert_array_equal(h5[name][()], getattr(data, name), err_msg=name)
        assert list(h5["background_ids"].asstr()[()]) == data.background_ids
        assert h5["images"].chunks == (1, 16, 16, 3)
        assert h5["masks"].chunks == (1, 16, 16)
        assert h5["images"].compression == filter_name
        assert h5["images"].attrs["CLASS"] == b"IMAGE"
        assert h5["images"].attrs["IMAGE_SUBCLASS"] == b"IMAGE_TRUECOLOR"
        assert h5["images"].attrs["INTERLACE_MODE"] == b"INTERLACE_PIXEL"
        assert h5["faces"].attrs["IMAGE_SUBCLASS"] == b"IMAGE_TRUECOLOR"
        assert h5["masks"].attrs["IMAGE_SUBCLASS"] == b"IMAGE_GRAYSCALE"
        assert h5.attrs["subject"] == "S1"
    assert [p.name for p in path.parent.iterdir()] == ["shard-00000.h5"]


def test_gzip_chunks_are_plain_deflate_with_shuffle(tmp_path):
    path = tmp_path / "shard.h5"
    write_shard(path, _data(), compression="gzip", level=6)
    with h5py.File(path, "r") as h5:
        assert h5["images"].compression_opts == 6 and h5["images"].shuffle
        # Reading one sample decompresses only its own chunk.
        np.testing.assert_array_equal(h5["images"][3], _data().images[3])


def test_same_content_gives_identical_bytes(tmp_path):
    write_shard(tmp_path / "a.h5", _data())
    write_shard(tmp_path / "b.h5", _data())
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
