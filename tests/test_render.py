"""The render stage end to end: content, determinism, resume, parts, Dask, errors; then the commands."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from cli_helpers import assert_user_error, run, write_backgrounds, write_demo_bank
from fixture_trees import make_coco_tree

from feratt.artifacts.output import MARKER
from feratt.config.rendering import GeometryConfig, RenderConfig, preset_config
from feratt.errors import FerattError
from feratt.jsonfile import read_json
from feratt.renderer.inspect import inspect_render, save_sample_sheet, verify_render
from feratt.renderer.render import BackgroundSource, RenderRequest, index_render, render


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small demo face bank (3 subjects x 7 classes) and a folder of three background photos."""
    base = tmp_path_factory.mktemp("inputs")
    write_demo_bank(base / "bank.h5", subjects=3)
    write_backgrounds(base / "backgrounds")
    return base


def request(inputs, out, **fields) -> RenderRequest:
    """48 px, 4 samples a face, 10 a shard, on the three backgrounds: 84 samples in 9 shards."""
    defaults = {
        "bank": inputs / "bank.h5",
        "backgrounds": BackgroundSource(folder=inputs / "backgrounds"),
        "config": RenderConfig(size=48),
        "per_face": 4,
        "shard_size": 10,
        "jobs": 1,
    }
    return RenderRequest(render=out, **{**defaults, **fields})


def render_args(inputs, out, *extra):
    """The command line of `request(inputs, out)`."""
    return (
        "render", inputs / "bank.h5", "--out", out, "--backgrounds", inputs / "backgrounds",
        "--size", 48, "--per-face", 4, "--shard-size", 10, "--jobs", 1, *extra,
    )  # fmt: skip


def shard_contents(out: Path) -> dict[str, dict[str, np.ndarray]]:
    contents = {}
    for path in sorted(out.glob("shards/*/shard-*.h5")):
        with h5py.File(path, "r") as h5:
            contents[str(path.relative_to(out))] = {name: h5[name][()] for name in h5}
    return contents


def assert_same_render(a: Path, b: Path) -> None:
    left, right = shard_contents(a), shard_contents(b)
    assert left.keys() == right.keys() and left
    for shard in left:
        for name in left[shard]:
            np.testing.assert_array_equal(left[shard][name], right[shard][name], err_msg=f"{shard} {name}")
    assert read_json(a / "index.json") == read_json(b / "index.json")


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    result = render(request(inputs, out))
    assert result.complete and result.rendered_samples == 84
    return out


def test_render_layout_manifests_and_index(inputs, reference):
    index = read_json(reference / "index.json")
    assert index["classes"] == ["neutral", "anger", "disgust", "fear", "happy", "sadness", "surprise"]
    assert index["subjects"] == {"D01": 28, "D02": 28, "D03": 28}
    assert index["totals"]["samples"] == 84 and index["totals"]["shards"] == 9
    assert index["totals"]["class_counts"] == dict.fromkeys(index["classes"], 12)
    assert index["seed"] == 0 and index["render_config"]["size"] == 48
    with h5py.File(inputs / "bank.h5") as h5:
        assert index["bank_sha256"] == h5.attrs["content_sha256"]
    manifest = read_json(reference / "manifests" / "D02.json")
    assert manifest["subject"] == "D02" and manifest["samples"] == 28
    assert [s["samples"] for s in manifest["shards"]] == [10, 10, 8]
    assert sum(manifest["class_counts"].values()) == 28
    for shard in manifest["shards"]:
        path = reference / shard["path"]
        assert path.stat().st_size == shard["bytes"]
        with h5py.File(path) as h5:
            assert h5.attrs["subject"] == "D02"
            assert h5["images"].shape == (shard["samples"], 48, 48, 3)
            assert h5["masks"].shape == (shard["samples"], 48, 48)
            assert h5["faces"].shape == (shard["samples"], 48, 48, 3)
            assert h5["labels"].dtype == np.int16
            assert h5["images"].attrs["IMAGE_SUBCLASS"] == b"IMAGE_TRUECOLOR"
            assert h5["images"].compression == "gzip" and h5["images"].chunks == (1, 48, 48, 3)
            assert json.loads(h5.attrs["class_names"]) == index["classes"]
            assert json.loads(h5.attrs["render_config"])["size"] == 48
            assert h5.attrs["seed"] == 0 and h5.attrs["feratt_version"]
            faces = h5["faces"][()]
            masks = h5["masks"][()]
            # The attention target is black wherever the mask is off.
            assert (faces[masks == 0] == 0).all()
            assert set(np.unique(masks)) <= {0, 255} and (masks > 0).any()
    # Nothing hidden but the folder's marker and lock file: no temporaries, no shard locks.
    hidden = [p for p in reference.rglob("*") if p.name.startswith(".")]
    assert sorted(hidden) == [reference / MARKER, reference / ".feratt.lock"]


def test_result_reports_the_plan_and_the_index_totals(inputs, tmp_path):
    lines = []
    result = render(request(inputs, tmp_path / "out"), log=lines.append)
    assert lines == [
        f"folder backgrounds from {inputs / 'backgrounds'}: kept 3 of 3 images",
        "plan: 84 samples of 21 faces in 9 shards, 3 subjects",
    ]
    assert (result.planned_samples, result.planned_faces, result.planned_shards) == (84, 21, 9)
    assert result.planned_subjects == 3 and result.part is None and result.part_shards == 9
    assert (result.rendered_samples, result.rendered_shards, result.reused_shards) == (84, 9, 0)
    assert result.missing_shards == () and result.index == tmp_path / "out" / "index.json"
    assert result.totals.samples == 84 and result.totals.shards == 9 and result.totals.subjects == 3
    assert list(result.totals.class_counts) == [
        "neutral",
        "anger",
        "disgust",
        "fear",
        "happy",
        "sadness",
        "surprise",
    ]


def test_keyword_fields_equal_a_request(inputs, reference, tmp_path):
    seen = []
    result = render(
        render=tmp_path / "out",
        bank=inputs / "bank.h5",
        backgrounds=inputs / "backgrounds",  # a folder path stands for BackgroundSource(folder=...)
        config=RenderConfig(size=48),
        per_face=4,
        shard_size=10,
        jobs=1,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result.complete
    assert seen[-1] == (84, 84) and [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert_same_render(reference, tmp_path / "out")
    again = render(request(inputs, tmp_path / "elsewhere"), render=tmp_path / "out")
    assert again.render == tmp_path / "out" and again.reused_shards == 9


def test_jobs_do_not_change_the_samples(inputs, reference, tmp_path):
    render(request(inputs, tmp_path / "out", jobs=2))
    assert_same_render(reference, tmp_path / "out")


def test_rerun_keeps_complete_shards_and_redoes_damaged_ones(inputs, reference, tmp_path):
    out = tmp_path / "out"
    render(request(inputs, out))
    again = render(request(inputs, out))
    assert (again.rendered_samples, again.rendered_shards, again.reused_shards) == (0, 0, 9)
    damaged = out / "shards" / "D01" / "shard-00001.h5"
    blob = bytearray(damaged.read_bytes())
    blob[-100] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    (out / "shards" / "D03" / "shard-00000.h5").unlink()
    third = render(request(inputs, out))
    assert (third.rendered_samples, third.rendered_shards, third.reused_shards) == (20, 2, 7)
    assert_same_render(reference, out)


def test_other_configuration_is_refused_unless_overwrite(inputs, tmp_path):
    out = tmp_path / "out"
    render(request(inputs, out))
    rotated = RenderConfig(size=48, geometry=GeometryConfig(rotation=10))
    with pytest.raises(FerattError, match="holds a render with another configuration") as caught:
        render(request(inputs, out, config=rotated))
    assert caught.value.field == "overwrite"
    assert render(request(inputs, out, config=rotated, overwrite=True)).complete
    index = read_json(out / "index.json")
    assert index["render_config"]["geometry"]["rotation"] == 10


def test_parts_then_index_equal_one_run(inputs, reference, tmp_path):
    out = tmp_path / "out"
    lines = []
    first = render(request(inputs, out, part=(1, 2)), log=lines.append)
    assert lines[-1] == "plan: 84 samples of 21 faces in 9 shards, 3 subjects; part 1/2: 5 shards"
    assert first.part == (1, 2) and first.part_shards == 5 and len(first.missing_shards) == 4
    assert not first.complete and first.totals is None and not (out / "index.json").exists()
    second = render(request(inputs, out, part=(2, 2)))
    assert second.complete and second.totals.samples == 84
    (out / "index.json").unlink()
    indexed = index_render(out)
    assert indexed.index == out / "index.json" and indexed.totals == second.totals
    assert_same_render(reference, out)


def test_index_names_missing_shards(inputs, tmp_path):
    out = tmp_path / "out"
    render(request(inputs, out, part=(1, 3)))
    with pytest.raises(FerattError, match="6 shards are missing or incomplete, such as shards/D01/"):
        index_render(out)


def test_dask_backend_matches_loky(inputs, reference, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        out = tmp_path / "out"
        render(request(inputs, out, backend="dask", scheduler=cluster.scheduler_address))
    assert_same_render(reference, out)


@pytest.mark.slow
def test_killed_render_resumes_to_the_same_output(inputs, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "feratt.cli", *map(str, render_args(inputs, out, "--per-face", 20))]
    shards = 42  # 3 subjects x 7 faces x 20 samples, 10 a shard

    def finished_shards():
        return len(list(out.glob("shards/*/shard-*.json")))

    seen = []
    for threshold in (3, 15, 30):
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while finished_shards() < threshold and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        seen.append(finished_shards())
    assert seen[0] < seen[1] < seen[2] < shards, seen
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert f"kept {seen[2]} complete shards" in finished.stdout
    whole = tmp_path / "whole"
    render(request(inputs, whole, per_face=20))
    assert_same_render(whole, out)
    samples = np.concatenate([v["sample_index"] for v in shard_contents(out).values()])
    assert sorted(samples.tolist()) == list(range(420))
    assert sorted(p for p in out.rglob("*") if p.name.startswith(".")) == [out / MARKER, out / ".feratt.lock"]


def test_inspect_describes_verifies_and_draws(reference, tmp_path):
    lines = inspect_render(reference)
    assert lines[0].startswith("9 shards, 84 samples")
    assert lines[1].startswith("samples per class: neutral 12, anger 12")
    assert any(line.startswith("  images   (10, 48, 48, 3)") and "gzip 1 +shuffle" in line for line in lines)
    assert verify_render(reference) == []
    assert save_sample_sheet(reference, tmp_path / "sheet.png", 8) == tmp_path / "sheet.png"
    assert cv2.imread(str(tmp_path / "sheet.png")).shape[0] == 2 * (48 + 16)


def test_verify_names_corrupted_and_missing_shards(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    path = out / "shards" / "D02" / "shard-00002.h5"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x55
    path.write_bytes(bytes(blob))
    (out / "shards" / "D01" / "shard-00000.h5").unlink()
    problems = verify_render(out)
    assert "shards/D02/shard-00002.h5: corrupted (sha256 differs from its manifest)" in problems
    assert "shards/D01/shard-00000.h5: missing" in problems


def test_bad_inputs(inputs, tmp_path):
    with pytest.raises(FerattError, match="face bank not found"):
        render(render=tmp_path / "o", bank=tmp_path / "none.h5")
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(FerattError, match=r"empty\.h5"):
        render(render=tmp_path / "o", bank=tmp_path / "empty.h5")
    (tmp_path / "not-coco.json").write_text('{"hello": 1}')
    (tmp_path / "images").mkdir()
    coco = BackgroundSource(coco_annotations=tmp_path / "not-coco.json", coco_images=tmp_path / "images")
    with pytest.raises(FerattError, match="COCO"):
        render(render=tmp_path / "o", bank=inputs / "bank.h5", backgrounds=coco)
    (tmp_path / "blocker").write_text("a file where the out folder should go")
    with pytest.raises(FerattError, match="cannot write to") as caught:
        render(render=tmp_path / "blocker" / "out", bank=inputs / "bank.h5")
    assert caught.value.field == "render"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"per_face": 2, "total": 10}, "total"),
        ({"per_face": 0}, "per_face"),
        ({"balance": "subjects"}, "balance"),
        ({"shard_size": 0}, "shard_size"),
        ({"backend": "dask"}, "scheduler"),
        ({"backend": "ray"}, "backend"),
        ({"part": (3, 2)}, "part"),
        ({"part": (1, 2, 3)}, "part"),
        ({"compression": "zstd"}, "compression"),
        ({"compression_level": 10}, "compression_level"),
        ({"crops_per_background": 0}, "crops_per_background"),
        ({"frames": 3}, None),
    ],
)
def test_a_bad_request_names_its_field_before_writing_anything(tmp_path, fields, field):
    with pytest.raises(FerattError) as caught:
        render(render=tmp_path / "out", **fields)
    assert caught.value.field == field
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"coco_annotations": "a.json"}, "coco_images"),
        ({"coco_images": "images"}, "coco_annotations"),
        ({"coco_annotations": "a.json", "coco_images": "images", "folder": "photos"}, "backgrounds"),
        ({"min_side": -1}, "min_side"),
    ],
)
def test_a_bad_background_source_names_its_field(fields, field):
    with pytest.raises(FerattError) as caught:
        BackgroundSource(**fields)
    assert caught.value.field == field


def test_preset_config_applies_overrides_and_keeps_the_rest():
    config = preset_config("eval", size=64, rotation=10, scale=None, feather=0, no_colour=True)
    assert config.size == 64 and config.feather == 0
    assert config.geometry == GeometryConfig(rotation=10, translation=0.3, warp=0.2)
    assert config.colour.brightness_p == 0 and config.colour.noise_p == 0
    assert config.colour.brightness == RenderConfig().colour.brightness
    assert preset_config() == RenderConfig()
    with pytest.raises(FerattError, match="unknown preset") as caught:
        preset_config("paper")
    assert caught.value.field == "preset"
    with pytest.raises(FerattError, match="no setting rotatoin"):
        preset_config(rotatoin=3)


def test_undecodable_background_is_skipped_and_recorded(inputs, tmp_path):
    folder = tmp_path / "backgrounds"
    shutil.copytree(inputs / "backgrounds", folder)
    jpeg = (folder / "coffee.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(jpeg[:200])
    result = render(
        request(
            inputs, tmp_path / "out", backgrounds=folder, per_face=2, shard_size=7, crops_per_background=1
        )
    )
    index = read_json(tmp_path / "out" / "index.json")
    skipped = index["skipped_backgrounds"]
    assert [s["path"] for s in skipped] == [str(folder / "broken.jpg")]
    assert index["totals"]["samples"] == 42 == result.totals.samples


def test_embedded_backgrounds_are_the_default(inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("FERATT_CACHE", str(tmp_path / "cache"))
    lines = []
    result = render(
        request(inputs, tmp_path / "out", backgrounds=BackgroundSource(), per_face=1), log=lines.append
    )
    assert lines[0] == "embedded backgrounds from builtin:skimage: kept 10 of 10 images"
    index = read_json(tmp_path / "out" / "index.json")
    assert index["backgrounds"]["kind"] == "embedded" and index["backgrounds"]["count"] == 10
    assert (tmp_path / "cache" / "backgrounds" / "annotations.json").is_file()
    assert result.totals.samples == 21 and result.totals.shards == 3
    assert list(result.totals.class_counts.values()) == [3] * 7


def test_no_background_left_after_filtering(inputs, tmp_path):
    small = BackgroundSource(folder=inputs / "backgrounds", min_side=5000)
    with pytest.raises(FerattError, match="no background"):
        render(request(inputs, tmp_path / "out", backgrounds=small))


def test_render_from_coco(inputs, tmp_path):
    annotations, images = make_coco_tree(tmp_path)
    lines = []
    coco = BackgroundSource(coco_annotations=annotations, coco_images=images)
    render(
        request(inputs, tmp_path / "out", backgrounds=coco, shard_size=1000, crops_per_background=1),
        log=lines.append,
    )
    assert lines[0] == f"coco backgrounds from {annotations}: kept 6 of 10 images"
    assert "left out 2: has person" in lines
    index = read_json(tmp_path / "out" / "index.json")
    used = set()
    for path in (tmp_path / "out").glob("shards/*/shard-*.h5"):
        with h5py.File(path) as h5:
            used |= set(h5["background_ids"].asstr()[()])
    # Images 2 and 9 show people; 6 is missing, 7 empty, and 8 is truncated, so it fails to decode.
    assert used == {"1", "3", "4", "5", "10"}
    assert [s["path"] for s in index["skipped_backgrounds"]] == [str(Path(images) / "000000000008.jpg")]
    assert index["backgrounds"]["kind"] == "coco" and index["totals"]["samples"] == 84


def test_a_moved_bank_with_the_same_content_resumes(inputs, tmp_path):
    out = tmp_path / "out"
    render(request(inputs, out))
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(inputs / "bank.h5", moved / "bank.h5")
    again = render(request(inputs, out, bank=moved / "bank.h5"))
    assert (again.rendered_samples, again.rendered_shards, again.reused_shards) == (0, 0, 9)


# ------------------------------------------------------------------------------------------ command line


def test_render_command_prints_the_plan_and_the_totals(inputs, reference, tmp_path):
    out = tmp_path / "out"
    result = run(*render_args(inputs, out))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == [
        f"folder backgrounds from {inputs / 'backgrounds'}: kept 3 of 3 images",
        "plan: 84 samples of 21 faces in 9 shards, 3 subjects",
    ]
    assert lines[2].startswith("rendered 84 samples in 9 shards (") and lines[2].endswith(
        " samples/s); kept 0 complete shards"
    )
    assert lines[3:] == [
        "84 samples in 9 shards of 3 subjects; per class: neutral 12, anger 12, disgust 12, fear 12, "
        "happy 12, sadness 12, surprise 12",
        f"wrote {out / 'index.json'}",
    ]
    assert_same_render(reference, out)


def test_render_command_options_make_the_same_request(inputs, tmp_path):
    """Every option of the command lands in the request: the files equal those of the API."""
    result = run(
        "render", inputs / "bank.h5", "--out", tmp_path / "cli", "--backgrounds", inputs / "backgrounds",
        "--size", 48, "--shard-size", 10, "--jobs", 1, "--geometry", "eval", "--rotation", 10, "--no-colour",
        "--feather", 0, "--fit-mask", 0.1, "--grey", "--no-luminance", "--background-scale", "0.5:0.9",
        "--compression", "lzf", "--seed", 3, "--total", 30, "--balance", "faces", "--crops-per-background", 2,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = preset_config(
        "eval", size=48, rotation=10, no_colour=True, feather=0, fit_mask=0.1, grey=True, luminance=False,
        background_scale=(0.5, 0.9),
    )  # fmt: skip
    fields = {"compression": "lzf", "seed": 3, "total": 30, "balance": "faces", "crops_per_background": 2}
    render(request(inputs, tmp_path / "api", config=config, per_face=None, **fields))
    for name in ("render.json", "index.json", "manifests/D01.json", "shards/D01/shard-00000.h5"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes(), name


def test_render_command_parts_and_index(inputs, tmp_path):
    out = tmp_path / "out"
    first = run(*render_args(inputs, out, "--part", "1/2"))
    assert first.exit_code == 0, first.output
    assert "plan: 84 samples of 21 faces in 9 shards, 3 subjects; part 1/2: 5 shards" in first.output
    assert first.output.splitlines()[-1] == (
        f"4 shards of the plan are not rendered yet; after all parts finish, run: feratt index {out}"
    )
    assert_user_error(run("index", out), "4 shards are missing or incomplete")
    assert run(*render_args(inputs, out, "--part", "2/2")).exit_code == 0
    result = run("index", out)
    assert result.exit_code == 0 and result.output == f"wrote {out / 'index.json'}\n"


def test_render_command_errors(inputs, tmp_path):
    out = tmp_path / "out"
    assert run(*render_args(inputs, out)).exit_code == 0
    refused = run(*render_args(inputs, out, "--rotation", 10))
    assert_user_error(refused, "--overwrite: ")
    assert_user_error(run(*render_args(inputs, out, "--overwrite", "--part", "3/2")), "--part: part 3 of 2")
    assert_user_error(run(*render_args(inputs, out, "--part", "two")), "takes I/K, such as 2/8")
    assert_user_error(run(*render_args(inputs, out, "--background-scale", "1")), "takes LOW:HIGH")
    assert_user_error(run(*render_args(inputs, out, "--backend", "dask")), "--scheduler: ")
    coco = run(*render_args(inputs, out, "--coco-images", inputs))
    assert_user_error(coco, "--coco-annotations: COCO annotations and COCO images go together")
    assert_user_error(run("render", tmp_path / "none.h5", "--out", tmp_path / "o"), "face bank not found")
    blocked = run("render", inputs / "bank.h5", "--out", out / "index.json" / "out")
    assert_user_error(blocked, "--out: cannot write to")


def test_inspect_command_prints_and_exits(reference, tmp_path):
    result = run("inspect", reference, "--verify", "--sheet", tmp_path / "sheet.png", "--samples", 8)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:-2] == inspect_render(reference)
    assert lines[-2:] == [f"wrote {tmp_path / 'sheet.png'}", "verified: every checksum and the schema match"]
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    (out / "shards" / "D01" / "shard-00000.h5").unlink()
    broken = run("inspect", out, "--verify")
    assert "problem: shards/D01/shard-00000.h5: missing" in broken.output
    assert_user_error(broken, "verification failed: 1 problems")
    assert_user_error(run("inspect", tmp_path / "absent"), "not found")
