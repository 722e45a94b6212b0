"""Fault probes of paths and outputs (issue 21, round 3): names from files that would lead out of the
output, symbolic links in a hostile render folder, outputs that are inputs, foreign files in an output
folder, and COCO file names that climb out of the images folder.

Each runs the command line and checks the exit status, the one `Error:` line, and that nothing outside
the output changed (hashes of every file before and after).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import h5py
import pytest
from cli_helpers import assert_user_error, hashes, render_tiny, run, write_backgrounds, write_demo_bank
from fixture_trees import make_jaffe_tree
from skimage import data

from feratt.artifacts.bank import FaceBank
from feratt.artifacts.render import RenderSet
from feratt.hdf5 import write_strings
from feratt.names import file_name


@pytest.fixture(scope="module")
def backgrounds(tmp_path_factory) -> Path:
    return write_backgrounds(tmp_path_factory.mktemp("backgrounds"), names=("coffee", "chelsea"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A folder holding bank.h5, backgrounds/ and render/: 2 demo subjects, 64 px."""
    base = tmp_path_factory.mktemp("tiny")
    render_tiny(base, subjects=2)
    return base


TINY_TRAINING = ("--preset", "cpu-small", "--epochs", 1, "--fold-size", 1, "--val-subjects", 0)


def render_args(bank: Path, out: Path, backgrounds: Path) -> list:
    return [
        "render",
        bank,
        "--out",
        out,
        "--backgrounds",
        backgrounds,
        "--per-face",
        1,
        "--size",
        32,
        "-j",
        1,
    ]


def outside(before: dict[str, str], after: dict[str, str], output: str) -> dict[str, str]:
    """The files of `after` outside `output` (a folder relative to where the hashes were taken)."""
    changed = {k: v for k, v in after.items() if not k.startswith(output + "/")}
    assert changed == before, "files outside the output changed"
    return changed


def retitle_subject(bank: Path, old: str, new: str) -> None:
    """Rename subject `old` of a bank to `new` and record the matching content checksum, as a hostile
    bank would."""
    with h5py.File(bank, "r+") as h5:
        subjects = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["subjects"][()]]
        del h5["subjects"]
        write_strings(h5, "subjects", [new if s == old else s for s in subjects])
    checksum = FaceBank.open(bank, verify=False).content_checksum()
    with h5py.File(bank, "r+") as h5:
        h5.attrs["content_sha256"] = checksum
    FaceBank.open(bank)  # the tampered bank verifies


# ------------------------------------------------------------ 1: subject names that would become paths


def test_a_subject_name_from_a_bank_never_leads_out_of_the_render(tmp_path, backgrounds):
    bank = write_demo_bank(tmp_path / "bank.h5", subjects=2, size=64)
    retitle_subject(bank, "D02", "../../BANKESC")
    before = hashes(tmp_path)
    out = tmp_path / "escout" / "deep" / "r"
    result = run(*render_args(bank, out, backgrounds))
    assert result.exit_code == 0, result.output
    outside(before, hashes(tmp_path), "escout/deep/r")
    assert sorted(p.name for p in (tmp_path / "escout" / "deep").iterdir()) == ["r"]
    render = RenderSet.open(out)
    assert sorted(render.subjects) == ["../../BANKESC", "D01"]  # the original name is recorded
    escaped = file_name("../../BANKESC")
    assert escaped == "%2E%2E%2F%2E%2E%2FBANKESC"
    assert sorted(p.name for p in (out / "shards").iterdir()) == [escaped, "D01"]
    assert (out / "manifests" / f"{escaped}.json").is_file()
    assert len(render.shards(["../../BANKESC"])) == 1
    assert run("inspect", out, "--verify").exit_code == 0


def write_csv_source(folder: Path, subjects: list[str]) -> Path:
    """A CSV source of astronaut crops, two faces (happy, sadness) per subject in `subjects`."""
    (folder / "img").mkdir(parents=True)
    face = data.astronaut()[0:260, 120:380]
    rows = ["path,label,subject"]
    for number, subject in enumerate(subjects):
        for label, shift in (("happy", 0), ("sadness", 6)):
            name = f"img/{number}-{label}.png"
            crop = cv2.resize(face[shift:, shift:], (128, 128), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / name), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            rows.append(f"{name},{label},{subject}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def test_a_subject_name_from_a_csv_never_leads_out_of_the_render(tmp_path, backgrounds):
    source = write_csv_source(tmp_path / "source", ["S1", "../../CSVESC"])
    built = run("faces", source, "--out", tmp_path / "bank.h5", "--size", 64, "-j", 1)
    assert built.exit_code == 0, built.output
    assert sorted(set(FaceBank.open(tmp_path / "bank.h5").subjects)) == ["../../CSVESC", "S1"]
    before = hashes(tmp_path)
    out = tmp_path / "escout" / "deep" / "r"
    result = run(*render_args(tmp_path / "bank.h5", out, backgrounds))
    assert result.exit_code == 0, result.output
    outside(before, hashes(tmp_path), "escout/deep/r")
    assert not (tmp_path / "escout" / "CSVESC").exists() and not (tmp_path / "CSVESC").exists()
    assert sorted(p.name for p in (out / "shards").iterdir()) == [file_name("../../CSVESC"), "S1"]


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("D01", "D01"),
        ("a/b", "a%2Fb"),
        ("a\\b", "a%5Cb"),
        ("..", "%2E%2E"),
        (".hidden", "%2Ehidden"),
        ("nul\0x", "nul%00x"),
        ("café", "caf%C3%A9"),
    ],
)
def test_file_name_escapes_what_a_path_would_read(name, escaped):
    assert file_name(name) == escaped


def test_file_name_keeps_distinct_names_distinct_and_bounded():
    names = ["a/b", "a%2Fb", "a_b", "x" * 300, "x" * 299 + "y"]
    escaped = [file_name(n) for n in names]
    assert len(set(escaped)) == len(names)
    assert max(len(e) for e in escaped) <= 100


# ------------------------------------------------------------------- 2: a hostile render folder's links


def test_index_never_writes_through_a_hostile_render_folders_links(tiny, tmp_path):
    hostile = tmp_path / "r"
    shutil.copytree(tiny / "render", hostile, symlinks=True)
    config = json.loads((hostile / "render.json").read_text())
    config["shards"][0]["subject"] = "L/x"
    (hostile / "render.json").write_text(json.dumps(config))
    payload, victim = tmp_path / "payload", tmp_path / "victim"
    payload.mkdir()
    victim.mkdir()
    (victim / "x.json").write_text("the victim's file\n")
    (hostile / "shards" / "L").symlink_to("../../payload")
    (hostile / "manifests" / "L").symlink_to(victim)
    # The shard of "L/x", whole, under its escaped name; its manifest a link to the victim's file.
    escaped = file_name("L/x")
    shutil.copytree(hostile / "shards" / "D01", hostile / "shards" / escaped)
    (hostile / "manifests" / f"{escaped}.json").symlink_to(victim / "x.json")
    before = hashes(tmp_path)
    result = run("index", hostile)
    assert_user_error(result, f"the manifest manifests/{escaped}.json would be written to")
    assert "outside" in result.output.strip().splitlines()[-1]
    assert hashes(tmp_path) == before
    assert (victim / "x.json").read_text() == "the victim's file\n"
    assert list(payload.iterdir()) == []


# ----------------------------------------------------------------------- 3: faces replacing its inputs


@pytest.fixture
def csv_source(tmp_path) -> Path:
    return write_csv_source(tmp_path / "source", ["S1", "S2"])


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("source/labels.csv", "source/labels.csv is one of the inputs: write the out elsewhere"),
        ("source/img/0-happy.png", "source/img/0-happy.png is one of the inputs"),
    ],
)
def test_faces_refuses_an_output_that_is_an_input_or_in_the_source_tree(
    csv_source, tmp_path, monkeypatch, out, message
):
    monkeypatch.chdir(tmp_path)
    before = hashes(tmp_path)
    result = run("faces", "source/labels.csv", "--out", out, "-j", 1)
    assert_user_error(result, message)
    assert "--out:" in result.output
    assert hashes(tmp_path) == before


def test_faces_refuses_an_output_in_a_source_folder(tmp_path, monkeypatch):
    make_jaffe_tree(tmp_path / "jaffe", subjects=("KA",), per_expression=1)
    monkeypatch.chdir(tmp_path)
    before = hashes(tmp_path)
    result = run("faces", "jaffe", "--out", "jaffe/bank.h5", "-j", 1)
    assert_user_error(result, "--out: jaffe/bank.h5 lies in the source tree jaffe: write the out elsewhere")
    assert hashes(tmp_path) == before


def test_faces_refuses_a_preview_that_is_an_input(csv_source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = hashes(tmp_path)
    result = run("faces", "source/labels.csv", "--out", "bank.h5", "--preview", "source/img/0-happy.png")
    assert_user_error(result, "--preview: source/img/0-happy.png is one of the inputs")
    assert hashes(tmp_path) == before


def test_faces_replaces_another_bank_or_file_only_with_overwrite(csv_source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("faces", "source/labels.csv", "--out", "bank.h5", "--size", 64, "-j", 1).exit_code == 0
    first = hashes(tmp_path)
    # The same source and settings: a rerun rebuilds the bank it wrote.
    assert run("faces", "source/labels.csv", "--out", "bank.h5", "--size", 64, "-j", 1).exit_code == 0
    assert hashes(tmp_path) == first
    other = run("faces", "source/labels.csv", "--out", "bank.h5", "--size", 96, "-j", 1)
    assert_user_error(
        other, "--overwrite: bank.h5 exists already (a face bank of another source or settings)"
    )
    Path("notes.txt").write_text("a user's notes\n")
    before = hashes(tmp_path)
    result = run("faces", "source/labels.csv", "--out", "notes.txt", "-j", 1)
    assert_user_error(result, "--overwrite: notes.txt exists already (a file)")
    assert hashes(tmp_path) == before
    replaced = run("faces", "source/labels.csv", "--out", "bank.h5", "--size", 96, "-j", 1, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert FaceBank.open("bank.h5").size == 96


# ---------------------------------------------------------------- 4: foreign files in an output folder


def test_render_refuses_a_folder_of_someone_elses_files(tiny, backgrounds, tmp_path):
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "index.json").write_text('{"mine": true}\n')
    (docs / "thesis.tex").write_text("\\section{}\n")
    before = hashes(tmp_path)
    result = run(*render_args(tiny / "bank.h5", docs, backgrounds))
    assert_user_error(result, f"{docs} holds files feratt did not write")
    assert hashes(tmp_path) == before
    assert sorted(p.name for p in docs.iterdir()) == ["index.json", "thesis.tex"]


def test_render_into_an_empty_folder_marks_it_and_a_rerun_is_welcome(tiny, backgrounds, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert run(*render_args(tiny / "bank.h5", out, backgrounds)).exit_code == 0
    marker = json.loads((out / ".feratt-folder.json").read_text())
    assert (marker["kind"], marker["folder"]) == ("feratt-folder", "render")
    first = hashes(out)
    assert run(*render_args(tiny / "bank.h5", out, backgrounds)).exit_code == 0
    assert hashes(out) == first


def test_experiment_refuses_a_folder_with_a_report_of_its_own(tiny, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "report.md").write_text("# my report\n")
    (out / "results.json").write_text("{}\n")
    before = hashes(tmp_path)
    result = run("experiment", tiny / "render", "--out", out, "--methods", "baseline", *TINY_TRAINING)
    assert_user_error(result, f"{out} holds files feratt did not write")
    assert hashes(tmp_path) == before


def test_a_folder_of_another_kind_is_refused_even_with_overwrite(tiny, tmp_path):
    before = hashes(tiny)
    result = run(
        "experiment",
        tiny / "render",
        "--out",
        tiny / "render",
        "--methods",
        "baseline",
        "--overwrite",
        *TINY_TRAINING,
    )
    assert_user_error(result, "is a feratt render folder, not an experiment folder")
    assert hashes(tiny) == before


# ------------------------------------------------------------------ 18c: COCO names outside the images


def test_coco_file_names_that_leave_the_images_folder_are_skipped(tiny, tmp_path):
    images = write_backgrounds(tmp_path / "coco" / "images", names=("coffee", "chelsea"))
    secret = write_backgrounds(tmp_path / "private", names=("rocket",)) / "rocket.jpg"
    entries = [
        ("coffee.jpg", 1),
        ("chelsea.jpg", 2),
        (str(secret), 3),  # absolute
        ("../../private/rocket.jpg", 4),  # climbs out
    ]
    coco = {
        "images": [{"id": i, "file_name": name, "width": 160, "height": 120} for name, i in entries],
        "annotations": [],
        "categories": [{"id": 1, "name": "person"}],
    }
    annotations = tmp_path / "coco" / "instances.json"
    annotations.write_text(json.dumps(coco))
    out = tmp_path / "r"
    result = run(
        "render", tiny / "bank.h5", "--out", out, "--coco-annotations", annotations, "--coco-images", images,
        "--per-face", 1, "--size", 32, "-j", 1,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "kept 2 of 4 images" in result.output
    assert "left out 2: file_name leads outside the images folder" in result.output
    assert json.loads((out / "render.json").read_text())["backgrounds"]["count"] == 2
