"""The command line through click's CliRunner: help, the demo bank, bad input and skipped files."""

import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import assert_user_error, run
from fixture_trees import (
    make_bu3dfe_tree,
    make_ckplus_folders_tree,
    make_ckplus_tree,
    make_class_folders_tree,
    make_csv_tree,
    make_jaffe_tree,
    write_emotion_file,
)
from PIL import Image
from skimage import data

from feratt import __version__
from feratt.datasets.bank import read_bank
from feratt.datasets.classes import canonical_name


def test_help_and_version_are_fast():
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "feratt.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert time.perf_counter() - started < 2.0
    assert "faces" in done.stdout
    # The heavy libraries stay unimported until a command runs.
    probe = (
        "import sys, feratt.cli; "
        "print(sorted(m for m in ('cv2', 'h5py', 'torch', 'skimage') if m in sys.modules))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout
    assert imported.strip() == "[]"
    result = run("--version")
    assert result.output.strip() == f"feratt, version {__version__}"


def test_faces_on_demo_writes_bank_preview_and_summary(tmp_path):
    out, sheet = tmp_path / "bank.h5", tmp_path / "sheet.png"
    result = run(
        "faces",
        "builtin:demo",
        "--out",
        out,
        "--preview",
        sheet,
        "--demo-subjects",
        3,
        "--demo-per-class",
        1,
        "--size",
        96,
        "--jobs",
        1,
    )
    assert result.exit_code == 0, result.output
    assert "faces per class:" in result.output
    assert "  happy     3" in result.output
    assert "faces per subject (3 subjects):\n  D01 7, D02 7, D03 7" in result.output
    assert "masks by method:" in result.output
    assert "files skipped: 0" in result.output
    bank = read_bank(out)
    assert len(bank) == 21 and sorted(set(bank.subjects)) == ["D01", "D02", "D03"]
    picture = np.asarray(Image.open(sheet))
    assert picture.shape[0] == 7 * (96 + 14) + 6 * 2  # a row per class
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.h5", "sheet.png"]


def test_astronaut_in_a_class_folder(tmp_path):
    (tmp_path / "faces" / "happy").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(tmp_path / "faces" / "happy" / "eileen_1.png")
    result = run("faces", tmp_path / "faces", "--out", tmp_path / "bank.h5", "--preview", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    assert "detected format: folders" in result.output
    assert "masks by method: grabcut 1" in result.output
    bank = read_bank(tmp_path / "bank.h5")
    assert bank.subjects == ["eileen"] and bank.classes == ("happy",)
    assert 0.3 < (bank.masks[0] > 0).mean() < 0.7


def test_missing_path(tmp_path):
    assert_user_error(run("faces", tmp_path / "nowhere", "--out", tmp_path / "b.h5"), "path not found")


def test_unknown_layout_lists_what_was_looked_for(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hello")
    result = run("faces", tmp_path / "stuff", "--out", tmp_path / "b.h5")
    assert_user_error(result, "no known face data set layout")
    for layout in ("ckplus", "ckplus-folders", "bu3dfe", "jaffe", "folders", "csv"):
        assert layout in result.output


def test_unknown_class_name_lists_valid_names(tmp_path):
    (tmp_path / "joy").mkdir()
    Image.fromarray(np.zeros((80, 80), np.uint8)).save(tmp_path / "joy" / "a_1.png")
    result = run("faces", tmp_path, "--format", "folders", "--out", tmp_path / "b.h5")
    assert_user_error(result, "unknown class name 'joy'")
    assert "happiness" in result.output


@pytest.mark.parametrize("out", ["missing-dir/bank.h5", "."])
def test_unwritable_output(tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    result = run("faces", "builtin:demo", "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: Invalid value for")


def test_bad_images_are_skipped_and_converted_ones_kept(tmp_path):
    root = tmp_path / "faces"
    (root / "happy").mkdir(parents=True)
    (root / "sadness").mkdir(parents=True)
    face, _ = np.asarray(data.astronaut()[40:220, 130:310]), None
    Image.fromarray(face).save(root / "happy" / "s1_ok.png")
    Image.fromarray(face).convert("RGBA").save(root / "happy" / "s2_rgba.png")
    Image.fromarray(face).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "happy" / "s3_pal.png")
    Image.fromarray(face).convert("CMYK").save(root / "sadness" / "s4_cmyk.jpg")
    grey16 = np.asarray(Image.fromarray(face).convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey16).save(root / "sadness" / "s5_16.png")
    (root / "sadness" / "s6_empty.png").write_bytes(b"")
    full = (root / "happy" / "s1_ok.png").read_bytes()
    (root / "sadness" / "s7_cut.png").write_bytes(full[: len(full) // 3])
    (root / "sadness" / "s8_junk.jpg").write_bytes(b"GIF89a but not really")
    result = run("faces", root, "--out", tmp_path / "b.h5", "--jobs", 2)
    assert result.exit_code == 0, result.output
    assert "files skipped: 3" in result.output
    assert f"{root / 'sadness' / 's6_empty.png'}: empty file (0 bytes)" in result.output
    assert f"{root / 'sadness' / 's7_cut.png'}: truncated image" in result.output
    assert f"{root / 'sadness' / 's8_junk.jpg'}: not a readable image" in result.output
    assert "images converted: " in result.output
    bank = read_bank(tmp_path / "b.h5")
    assert bank.subjects == ["s1", "s2", "s3", "s4", "s5"]
    with h5py.File(tmp_path / "b.h5") as h5:
        conversions = [c.decode() for c in h5["conversions"][()]]
        assert conversions == ["", "RGBA", "palette", "CMYK", "16-bit"]
        assert h5["grey"][()].tolist() == [False, False, False, False, True]
        reasons = sorted(r.decode() for r in h5["skipped/reason"][()])
    assert reasons == ["empty file (0 bytes)", "not a readable image", "truncated image"]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("trees")
    return {
        "ckplus": make_ckplus_tree(base / "ckplus", n_subjects=3, size=(96, 80)),
        "ckplus-folders": make_ckplus_folders_tree(base / "ckplus-folders", n_subjects=2),
        "bu3dfe": make_bu3dfe_tree(base / "bu3dfe", n_subjects=2, intensities=(4,)),
        "jaffe": make_jaffe_tree(base / "jaffe", subjects=("KA", "YM"), per_expression=1),
        "folders": make_class_folders_tree(base / "folders", {"happy": 2, "sad": 1}),
        "csv": make_csv_tree(base / "csv", {"fear": 2, "surprise": 1}),
    }


@pytest.mark.parametrize("fmt", ["ckplus-folders", "bu3dfe", "jaffe", "folders", "csv"])
def test_faces_detects_each_layout(tmp_path, trees, fmt):
    tree = trees[fmt]
    result = run("faces", tree.root, "--out", tmp_path / "b.h5", "--size", 64, "--jobs", 1)
    assert result.exit_code == 0, result.output
    assert f"detected format: {fmt}\n" in result.output
    bank = read_bank(tmp_path / "b.h5")
    expected = {file.relpath: file for file in tree.files if file.class_name is not None}
    assert len(bank) == len(expected)
    assert set(bank.subjects) == {file.subject for file in expected.values()}
    labelled = sorted(zip(bank.subjects, (bank.classes[i] for i in bank.labels), strict=True))
    assert labelled == sorted((f.subject, canonical_name(f.class_name)) for f in expected.values())
    assert bank.attrs["format"] == fmt


def test_faces_on_ckplus_uses_landmarks_and_counts_unlabelled(tmp_path, trees):
    tree = trees["ckplus"]
    result = run("faces", tree.root, "--out", tmp_path / "b.h5", "--size", 64, "--neutral-subjects", 2)
    assert result.exit_code == 0, result.output
    assert "detected format: ckplus" in result.output
    unlabelled = len(tree.unlabelled())
    assert f"note: {unlabelled} sequences without an emotion file (unlabelled), not used" in result.output
    bank = read_bank(tmp_path / "b.h5")
    assert len(bank) == len(tree.labelled()) + 2
    assert bank.classes == ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
    assert set(bank.methods) == {"landmarks"}
    assert (bank.labels == 0).sum() == 2
    assert len(json.loads(bank.attrs["protocol"])["neutral_sequences"]) == 2


def test_unknown_emotion_code_is_a_user_error(tmp_path):
    tree = make_ckplus_tree(tmp_path / "ck", n_subjects=1, landmarks=False)
    write_emotion_file(Path(tree.labelled()[0].emotion_file), 9)
    result = run("faces", tree.root, "--out", tmp_path / "b.h5")
    assert_user_error(result, "emotion code")
    assert "valid codes: 0 neutral, 1 anger, 2 contempt" in result.output
    assert not (tmp_path / "b.h5").exists()
