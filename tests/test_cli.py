"""The command line through click's CliRunner: help, `faces` options, printed summaries and user errors."""

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_user_error, run
from fixture_trees import make_ckplus_tree, write_emotion_file
from PIL import Image
from skimage import data

from feratt import __version__
from feratt.artifacts.bank import FaceBank, Skipped
from feratt.datasets.bank import BankRequest, BankResult


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


def test_faces_on_demo_prints_the_summary(tmp_path):
    out, sheet = tmp_path / "bank.h5", tmp_path / "sheet.png"
    args = ("--preview", sheet, "--demo-subjects", 3, "--demo-per-class", 1, "--size", 96, "--jobs", 1)
    result = run("faces", "builtin:demo", "--out", out, *args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:4] == [
        "detected format: demo",
        "21 faces listed in builtin:demo (7 classes)",
        "landmarks: dlib HOG detector and 68-point shape predictor (feratt[landmarks])",
        "faces per class:",
    ]
    assert "  happy     3" in lines
    assert "faces per subject (3 subjects):\n  D01 7, D02 7, D03 7" in result.output
    methods = Counter(FaceBank.open(out).methods)
    assert f"masks by method: {', '.join(f'{m} {n}' for m, n in sorted(methods.items()))}" in lines
    checksum = FaceBank.open(out).checksum
    assert lines[-3:] == [
        "files skipped: 0",
        f"wrote {out}: 21 faces, sha256 {checksum[:16]}",
        f"wrote {sheet}",
    ]


def _fake_result(out) -> BankResult:
    return BankResult(
        path=Path(out),
        format="folders",
        root="faces",
        classes=("happy", "sadness"),
        per_class={"happy": 2, "sadness": 1},
        per_subject={"s1": 2, "s2": 1},
        per_method={"file": 1, "grabcut": 2},
        conversions={"RGBA": 1},
        skipped=[Skipped(f"faces/x{i}.png", "empty file (0 bytes)") for i in range(52)],
        notes=["2 files outside class folders, not used"],
        checksum="0123456789abcdef" * 4,
    )


@pytest.fixture
def fake_build_bank(monkeypatch):
    """Replace the library call: record the request and its log, return a fixed result."""
    calls = []

    def build_bank(request, /, *, progress=None, log=None):
        calls.append(request)
        log("detected format: folders")
        progress(0, 3)
        return _fake_result(request.out)

    monkeypatch.setattr("feratt.datasets.bank.build_bank", build_bank)
    return calls


def test_faces_options_make_the_request_and_the_result_is_printed(fake_build_bank, tmp_path):
    result = run(
        "faces", "faces", "--out", "b.h5", "--format", "folders", "--size", 64, "--margin", 0.5,
        "--masks", tmp_path, "--forehead", 0.25, "--seed", 3, "--neutral-subjects", 5, "--last-frames", 2,
        "--no-neutral", "--bu-intensity", 3, "--subject-regex", "^(s\\d)", "--demo-subjects", 4,
        "--demo-per-class", 5, "--jobs", 2, "--preview", "p.png",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = BankRequest(
        source="faces", out="b.h5", format="folders", size=64, margin=0.5, masks_root=str(tmp_path),
        forehead=0.25, seed=3, neutral_subjects=5, last_frames=2, include_neutral=False, bu_intensity=3,
        subject_regex="^(s\\d)", demo_subjects=4, demo_per_class=5, jobs=2, preview="p.png",
    )  # fmt: skip
    assert fake_build_bank == [expected]
    skipped = [f"  faces/x{i}.png: empty file (0 bytes)" for i in range(50)]
    assert result.output.splitlines() == [
        "detected format: folders",
        "faces per class:",
        "  happy    2",
        "  sadness  1",
        "faces per subject (2 subjects):",
        "  s1 2, s2 1",
        "masks by method: file 1, grabcut 2",
        "images converted: RGBA 1",
        "note: 2 files outside class folders, not used",
        "files skipped: 52",
        *skipped,
        "  ... and 2 more, listed in the bank's 'skipped' table",
        "wrote b.h5: 3 faces, sha256 0123456789abcdef",
        "wrote p.png",
    ]


def test_faces_defaults_are_the_request_defaults(fake_build_bank):
    assert run("faces", "faces", "--out", "b.h5").exit_code == 0
    assert fake_build_bank == [BankRequest(source="faces", out="b.h5")]


def test_faces_prints_skipped_files_and_conversions(tmp_path):
    root = tmp_path / "faces"
    (root / "happy").mkdir(parents=True)
    face = np.asarray(data.astronaut()[40:220, 130:310])
    Image.fromarray(face).convert("RGBA").save(root / "happy" / "s1_rgba.png")
    (root / "happy" / "s2_empty.png").write_bytes(b"")
    result = run("faces", root, "--out", tmp_path / "b.h5", "--jobs", 1)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == ["detected format: folders", f"2 faces listed in {root} (1 classes)"]
    assert "images converted: RGBA 1" in lines
    assert lines[-3:-1] == ["files skipped: 1", f"  {root / 'happy' / 's2_empty.png'}: empty file (0 bytes)"]


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


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--out", "nodir/b.h5"), "Error: --out: cannot write nodir/b.h5: folder nodir does not exist"),
        (
            ("-o", "b.h5", "--preview", "nodir/x.png"),
            "Error: --preview: cannot write nodir/x.png: folder nodir does not exist",
        ),
        (("--out", "."), "Error: Invalid value for '--out' / '-o': File '.' is a directory."),
    ],
)
def test_unwritable_output(tmp_path, monkeypatch, args, error):
    monkeypatch.chdir(tmp_path)
    result = run("faces", "builtin:demo", *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == error
    assert list(tmp_path.iterdir()) == []


def test_unknown_emotion_code_is_a_user_error(tmp_path):
    tree = make_ckplus_tree(tmp_path / "ck", n_subjects=1, landmarks=False)
    write_emotion_file(Path(tree.labelled()[0].emotion_file), 9)
    result = run("faces", tree.root, "--out", tmp_path / "b.h5")
    assert_user_error(result, "emotion code")
    assert "valid codes: 0 neutral, 1 anger, 2 contempt" in result.output
