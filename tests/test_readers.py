"""The face readers on fixture trees in each real layout: counts, labels, subjects, protocols, errors."""

from collections import Counter
from pathlib import Path

import pytest
from fixture_trees import (
    CK48_COUNTS,
    bu3dfe_subjects,
    make_bu3dfe_tree,
    make_ckplus_folders_tree,
    make_ckplus_tree,
    make_class_folders_tree,
    make_csv_tree,
    make_jaffe_tree,
    write_emotion_file,
    write_image,
)

from feratt.datasets.bu3dfe import read_bu3dfe
from feratt.datasets.ckplus import read_ckplus, read_ckplus_folders
from feratt.datasets.classes import CANONICAL_CLASSES
from feratt.datasets.generic import read_csv, read_folders
from feratt.datasets.jaffe import read_jaffe
from feratt.datasets.records import ReaderOptions
from feratt.datasets.sources import FORMATS, READERS, detect_format, list_faces
from feratt.errors import FerattError

SEVEN = ("neutral", "anger", "disgust", "fear", "happy", "sadness", "surprise")


def class_counts(listing):
    return Counter(listing.classes[e.label] for e in listing.entries)


def by_relpath(listing):
    return {e.relpath: e for e in listing.entries}


# --- CK+ -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ck40(tmp_path_factory):
    """40 subjects, two sequences each (the second unlabelled), five frames per sequence."""
    return make_ckplus_tree(tmp_path_factory.mktemp("ck40"), n_subjects=40)


def test_ckplus_paper_protocol(ck40):
    listing = read_ckplus(ck40.root, ReaderOptions())
    assert listing.format == "ckplus"
    assert listing.root == str(ck40.root)
    assert listing.classes == CANONICAL_CLASSES
    assert listing.skipped == []
    assert listing.notes == ["40 sequences without an emotion file (unlabelled), not used"]

    labelled = ck40.labelled()
    assert len(labelled) == 40
    expected = Counter(s.class_name for s in labelled)
    expected["neutral"] = 33
    assert class_counts(listing) == expected
    assert len(listing.entries) == 73

    entries = by_relpath(listing)
    for seq in labelled:
        peak = entries[seq.frames[-1]]
        assert listing.classes[peak.label] == seq.class_name
        assert peak.subject == seq.subject
        assert peak.source == str(ck40.root / seq.frames[-1])
        stem = Path(seq.frames[-1]).stem
        assert peak.landmarks == str(
            ck40.root / "Landmarks" / seq.subject / seq.name / f"{stem}_landmarks.txt"
        )
    assert [e.relpath for e in listing.entries] == sorted(e.relpath for e in listing.entries)
    assert not any(".DS_Store" in e.relpath for e in listing.entries)


def test_ckplus_neutral_selection(ck40):
    listing = read_ckplus(ck40.root, ReaderOptions(seed=7))
    neutral = [e for e in listing.entries if e.label == 0]
    assert len(neutral) == 33
    assert len({e.subject for e in neutral}) == 33
    assert {e.subject for e in neutral} <= set(ck40.subjects())
    for entry in neutral:
        assert entry.relpath.endswith("_00000001.png")
    keys = sorted("/".join(e.relpath.split("/")[1:3]) for e in neutral)
    assert listing.protocol == {
        "protocol": "ckplus-8",
        "last_frames": 1,
        "include_neutral": True,
        "neutral_subjects": 33,
        "seed": 7,
        "neutral_sequences": keys,
    }
    # Unlabelled sequences can give neutral frames: the pool is every subject's sequences with frames.
    again = read_ckplus(ck40.root, ReaderOptions(seed=7))
    assert again.protocol["neutral_sequences"] == keys
    assert again.entries == listing.entries
    other = read_ckplus(ck40.root, ReaderOptions(seed=8))
    assert other.protocol["neutral_sequences"] != keys
    assert len(other.protocol["neutral_sequences"]) == 33


def test_ckplus_fewer_subjects_than_asked(tmp_path):
    tree = make_ckplus_tree(tmp_path, n_subjects=3)
    listing = read_ckplus(tmp_path, ReaderOptions(neutral_subjects=5))
    neutral = [e for e in listing.entries if e.label == 0]
    assert {e.subject for e in neutral} == set(tree.subjects())
    assert len(neutral) == 3
    assert "only 3 subjects have frames, fewer than the 5 asked for" in listing.notes[-1]


def test_ckplus_last_frames(tmp_path):
    tree = make_ckplus_tree(tmp_path, n_subjects=3, sequences_per_subject=1, frames=6)
    listing = read_ckplus(tmp_path, ReaderOptions(last_frames=3, neutral_subjects=0))
    expected = {rel: seq for seq in tree.labelled() for rel in seq.frames[-3:]}
    assert sorted(by_relpath(listing)) == sorted(expected)
    for entry in listing.entries:
        assert listing.classes[entry.label] == expected[entry.relpath].class_name
    assert listing.protocol["last_frames"] == 3
    assert listing.protocol["neutral_sequences"] == []
    assert listing.notes == []


def test_ckplus_window_never_takes_the_first_frame(tmp_path):
    make_ckplus_tree(tmp_path, n_subjects=2, sequences_per_subject=1, frames=3)
    listing = read_ckplus(tmp_path, ReaderOptions(last_frames=3, neutral_subjects=0))
    assert (
        sorted(e.relpath.rsplit("_", 1)[1] for e in listing.entries)
        == ["00000002.png"] * 2 + ["00000003.png"] * 2
    )
    assert listing.notes == [
        "2 labelled sequences have fewer than 3 frames between the first frame and the peak; "
        "they gave fewer frames"
    ]


def test_ckplus_without_neutral(ck40):
    listing = read_ckplus(ck40.root, ReaderOptions(include_neutral=False))
    assert listing.classes == CANONICAL_CLASSES[1:]
    assert len(listing.entries) == 40
    assert class_counts(listing) == Counter(s.class_name for s in ck40.labelled())
    assert listing.protocol["protocol"] == "ckplus-7"
    assert listing.protocol["neutral_sequences"] == []
    assert not any(e.relpath.endswith("_00000001.png") for e in listing.entries)


def test_ckplus_class_list_is_fixed(tmp_path):
    make_ckplus_tree(tmp_path, n_subjects=1, sequences_per_subject=1, code_for=lambda i, j, n: 5)
    listing = read_ckplus(tmp_path, ReaderOptions())
    assert listing.classes == CANONICAL_CLASSES
    assert class_counts(listing) == {"happy": 1, "neutral": 1}
    assert listing.entries[1].label == CANONICAL_CLASSES.index("happy")


@pytest.mark.parametrize("code", ["   9.0000000e+00\n", "   2.5000000e+00\n", "-1\n"])
def test_ckplus_unknown_emotion_code_is_fatal(tmp_path, code):
    tree = make_ckplus_tree(tmp_path, n_subjects=2)
    bad = tree.labelled()[0].emotion_file
    write_emotion_file(bad, code)
    with pytest.raises(FerattError) as info:
        read_ckplus(tmp_path, ReaderOptions())
    message = str(info.value)
    assert str(bad) in message
    assert (
        "valid codes: 0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise"
        in message
    )


def test_ckplus_bad_emotion_files_are_skipped(tmp_path):
    tree = make_ckplus_tree(tmp_path, n_subjects=4, sequences_per_subject=1)
    seqs = tree.labelled()
    write_emotion_file(seqs[0].emotion_file, "happy\n")
    write_emotion_file(seqs[1].emotion_file, "")
    seqs[2].emotion_file.write_bytes(b"\xff\xfe\x00\x81")
    listing = read_ckplus(tmp_path, ReaderOptions(neutral_subjects=0))
    reasons = {s.path: s.reason for s in listing.skipped}
    assert sorted(reasons) == sorted(str(seq.emotion_file) for seq in seqs[:3])
    assert reasons[str(seqs[0].emotion_file)] == "emotion file does not hold one number: 'happy'"
    assert reasons[str(seqs[1].emotion_file)] == "empty emotion file"
    assert reasons[str(seqs[2].emotion_file)].startswith("cannot read emotion file")
    assert [e.relpath for e in listing.entries] == [seqs[3].frames[-1]]


def test_ckplus_emotion_without_frames_is_skipped(tmp_path):
    tree = make_ckplus_tree(tmp_path, n_subjects=2, sequences_per_subject=1)
    orphan = write_emotion_file(tmp_path / "Emotion" / "S099" / "001" / "S099_001_00000009_emotion.txt", 3)
    missing_frame = tree.labelled()[0]
    (tmp_path / missing_frame.frames[-1]).unlink()
    listing = read_ckplus(tmp_path, ReaderOptions(neutral_subjects=0))
    assert {(s.path, s.reason) for s in listing.skipped} == {
        (str(orphan), "sequence S099/001 has no frames in cohn-kanade-images/"),
        (
            str(missing_frame.emotion_file),
            "names frame S005_001_00000005, which is not in cohn-kanade-images/S005/001/",
        ),
    }
    assert [e.relpath for e in listing.entries] == [tree.labelled()[1].frames[-1]]


def test_ckplus_neutral_code(tmp_path):
    make_ckplus_tree(
        tmp_path, n_subjects=2, sequences_per_subject=1, code_for=lambda i, j, n: 0 if i == 0 else 1
    )
    listing = read_ckplus(tmp_path, ReaderOptions(neutral_subjects=0))
    assert class_counts(listing) == {"neutral": 1, "anger": 1}
    without = read_ckplus(tmp_path, ReaderOptions(include_neutral=False))
    assert class_counts(without) == {"anger": 1}
    assert [s.reason for s in without.skipped] == [
        "emotion code 0 (neutral), but the neutral class is excluded"
    ]


def test_ckplus_without_landmarks(tmp_path):
    make_ckplus_tree(tmp_path, n_subjects=2, landmarks=False)
    listing = read_ckplus(tmp_path, ReaderOptions())
    assert all(e.landmarks is None for e in listing.entries)


def test_ckplus_needs_both_folders(tmp_path):
    make_ckplus_tree(tmp_path, n_subjects=1)
    for path in sorted((tmp_path / "Emotion").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "Emotion").rmdir()
    with pytest.raises(FerattError, match="it has no Emotion/ folder"):
        read_ckplus(tmp_path, ReaderOptions())


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"last_frames": 0}, "last_frames", "the number of frames per sequence must be at least 1, got 0"),
        (
            {"neutral_subjects": -1},
            "neutral_subjects",
            "the number of neutral subjects must be 0 or more, got -1",
        ),
    ],
)
def test_ckplus_bad_protocol_options_name_their_field(tmp_path, options, field, message):
    make_ckplus_tree(tmp_path, n_subjects=1)
    with pytest.raises(FerattError) as info:
        read_ckplus(tmp_path, ReaderOptions(**options))
    assert str(info.value) == message and info.value.field == field


# --- CK+ in class folders ------------------------------------------------------------------------


def test_ckplus_folders(tmp_path):
    tree = make_ckplus_folders_tree(tmp_path)
    (tmp_path / "happy" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    listing = read_ckplus_folders(tmp_path, ReaderOptions())
    assert listing.format == "ckplus-folders"
    assert listing.classes == CANONICAL_CLASSES[1:]
    assert class_counts(listing) == Counter(CK48_COUNTS)
    assert {e.subject for e in listing.entries} == {"S005", "S010", "S015"}
    assert [e.relpath for e in listing.entries] == tree.relpaths()
    for entry, file in zip(listing.entries, sorted(tree.files, key=lambda f: f.relpath), strict=True):
        assert entry.subject == file.subject
        assert listing.classes[entry.label] == file.class_name
        assert entry.source == str(file.path)
    assert listing.skipped == []
    assert listing.notes == []


def test_ckplus_folders_aliases_and_bad_names(tmp_path):
    make_ckplus_folders_tree(tmp_path, counts={"happiness": 3, "neutral": 2, "Surprise": 1})
    write_image(tmp_path / "neutral" / "face01.png")
    (tmp_path / "neutral" / "notes.txt").write_text("x")
    listing = read_ckplus_folders(tmp_path, ReaderOptions())
    assert listing.classes == ("neutral", "happy", "surprise")
    assert class_counts(listing) == {"happy": 3, "neutral": 2, "surprise": 1}
    assert sorted((Path(s.path).name, s.reason) for s in listing.skipped) == [
        ("face01.png", "name does not match S###_###_########"),
        ("notes.txt", "not an image file"),
    ]


def test_ckplus_folders_unknown_class(tmp_path):
    make_ckplus_folders_tree(tmp_path, counts={"happy": 1, "bored": 1})
    with pytest.raises(FerattError) as info:
        read_ckplus_folders(tmp_path, ReaderOptions())
    assert "'bored'" in str(info.value)
    assert "valid names: anger, angry, contempt" in str(info.value)


# --- BU-3DFE -------------------------------------------------------------------------------------


def test_bu3dfe_paper_protocol(tmp_path):
    tree = make_bu3dfe_tree(tmp_path, n_subjects=4)
    (tmp_path / "F0001" / ".DS_Store").write_bytes(b"\0")
    listing = read_bu3dfe(tmp_path, ReaderOptions())
    assert listing.format == "bu3dfe"
    assert listing.classes == SEVEN
    assert class_counts(listing) == dict.fromkeys(SEVEN, 4)
    assert (
        {e.subject for e in listing.entries}
        == set(bu3dfe_subjects(4))
        == {"F0001", "M0001", "F0002", "M0002"}
    )
    assert all(("NE00" in e.relpath) != ("04" in e.relpath) for e in listing.entries)
    assert all(e.relpath.endswith("_F2D.bmp") for e in listing.entries)
    assert listing.protocol == {"protocol": "bu3dfe-7", "intensity": 4}
    assert listing.skipped == []
    assert listing.notes == ["72 expression images at intensities other than 04 not used"]
    assert len(tree.files) == 4 * 25


def test_bu3dfe_intensity_option(tmp_path):
    make_bu3dfe_tree(tmp_path, n_subjects=2, intensities=(1, 2), with_3d=False)
    listing = read_bu3dfe(tmp_path, ReaderOptions(bu_intensity=2))
    assert len(listing.entries) == 14
    entry = by_relpath(listing)["M0001/M0001_HA02BL_F2D.bmp"]
    assert listing.classes[entry.label] == "happy"
    assert entry.subject == "M0001"
    assert listing.protocol["intensity"] == 2
    with pytest.raises(FerattError, match="the BU-3DFE intensity must be 1 to 4, got 5") as info:
        read_bu3dfe(tmp_path, ReaderOptions(bu_intensity=5))
    assert info.value.field == "bu_intensity"
    # Pointing at one subject folder instead of the data set's root finds no subject folders.
    with pytest.raises(FerattError, match=r"no faces found in .*F0001 \(format bu3dfe\)"):
        read_bu3dfe(tmp_path / "F0001", ReaderOptions())


def test_bu3dfe_bad_names(tmp_path):
    make_bu3dfe_tree(tmp_path, n_subjects=1, intensities=(4,))
    write_image(tmp_path / "F0001" / "F0001_AN4WH_F2D.bmp", mode="RGB")
    write_image(tmp_path / "F0001" / "F0002_AN04WH_F2D.bmp", mode="RGB")
    write_image(tmp_path / "F0001" / "F0001_HA05WH_F2D.bmp", mode="RGB")
    listing = read_bu3dfe(tmp_path, ReaderOptions())
    assert len(listing.entries) == 7
    assert sorted((Path(s.path).name, s.reason) for s in listing.skipped) == [
        ("F0001_AN4WH_F2D.bmp", "name does not match F0001_AN04WH_F2D"),
        ("F0001_HA05WH_F2D.bmp", "intensity 05 out of range 01-04"),
        ("F0002_AN04WH_F2D.bmp", "name says subject F0002 but it lies in F0001/"),
    ]
    write_image(tmp_path / "F0001" / "F0001_XX04WH_F2D.bmp", mode="RGB")
    with pytest.raises(FerattError) as info:
        read_bu3dfe(tmp_path, ReaderOptions())
    assert "unknown expression code 'XX'" in str(info.value)
    assert "valid codes: AN anger, DI disgust, FE fear, HA happy, NE neutral, SA sadness, SU surprise" in str(
        info.value
    )


# --- JAFFE ---------------------------------------------------------------------------------------


def test_jaffe(tmp_path):
    tree = make_jaffe_tree(tmp_path, subjects=("KA", "YM"), per_expression=2)
    write_image(tmp_path / "NA.HA1.200.TIF")
    (tmp_path / "README").write_text("JAFFE")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    write_image(tmp_path / "portrait.tiff")
    listing = read_jaffe(tmp_path, ReaderOptions())
    assert listing.format == "jaffe"
    assert listing.classes == SEVEN
    expected = Counter(dict.fromkeys(SEVEN, 4))
    expected["happy"] += 1
    assert class_counts(listing) == expected
    assert {e.subject for e in listing.entries} == {"KA", "YM", "NA"}
    assert by_relpath(listing)["KA.AN1.1.tiff"].label == SEVEN.index("anger")
    assert sorted(by_relpath(listing)) == sorted([*tree.relpaths(), "NA.HA1.200.TIF"])
    assert [(Path(s.path).name, s.reason) for s in listing.skipped] == [
        ("portrait.tiff", "name does not match the JAFFE pattern KA.AN1.39.tiff")
    ]


def test_jaffe_tif_and_unknown_code(tmp_path):
    make_jaffe_tree(tmp_path, subjects=("KM",), per_expression=1, ext=".tif")
    assert len(read_jaffe(tmp_path, ReaderOptions()).entries) == 7
    write_image(tmp_path / "KM.XY1.99.tiff")
    with pytest.raises(FerattError, match="unknown expression code 'XY'; valid codes: AN anger, DI disgust"):
        read_jaffe(tmp_path, ReaderOptions())


# --- class folders and CSV -----------------------------------------------------------------------


def test_folders(tmp_path):
    tree = make_class_folders_tree(tmp_path, {"happiness": 4, "Angry": 3, "neutral": 2})
    (tmp_path / "neutral" / "deeper").mkdir()
    write_image(tmp_path / "neutral" / "deeper" / "alice_999.png")
    (tmp_path / "neutral" / "list.txt").write_text("x")
    (tmp_path / "happiness" / "Thumbs.db").write_bytes(b"\0")
    listing = read_folders(tmp_path, ReaderOptions())
    assert listing.format == "folders"
    assert listing.classes == ("neutral", "anger", "happy")
    assert class_counts(listing) == {"happy": 4, "anger": 3, "neutral": 2}
    assert {e.subject for e in listing.entries} == {"alice", "bob", "carol"}
    assert [e.relpath for e in listing.entries] == tree.relpaths()
    assert [(Path(s.path).name, s.reason) for s in listing.skipped] == [("list.txt", "not an image file")]
    assert listing.notes == [
        "1 subfolders inside class folders ignored (only images directly inside are used)"
    ]
    assert listing.protocol == {"protocol": "folders", "subject_regex": r"^([^_.\-]+)"}


def test_folders_subject_regex(tmp_path):
    make_class_folders_tree(
        tmp_path, {"fear": 4}, subjects=("s1", "s2"), name_template="img-{index}-{subject}"
    )
    write_image(tmp_path / "fear" / "unnamed.png")
    listing = read_folders(tmp_path, ReaderOptions(subject_regex=r"-(s\d+)$"))
    assert sorted(e.subject for e in listing.entries) == ["s1", "s1", "s2", "s2"]
    assert [(Path(s.path).name, s.reason) for s in listing.skipped] == [
        ("unnamed.png", "subject pattern '-(s\\\\d+)$' did not match the file name")
    ]
    with pytest.raises(FerattError, match="has no capture group") as info:
        read_folders(tmp_path, ReaderOptions(subject_regex=r"s\d+"))
    assert info.value.field == "subject_regex"
    with pytest.raises(FerattError, match="invalid subject pattern") as info:
        read_folders(tmp_path, ReaderOptions(subject_regex=r"(s\d+"))
    assert info.value.field == "subject_regex"


def test_folders_unknown_class_and_empty(tmp_path):
    make_class_folders_tree(tmp_path / "a", {"happy": 1, "misc": 1})
    with pytest.raises(FerattError, match="class folder name not recognised: unknown class name 'misc'"):
        read_folders(tmp_path / "a", ReaderOptions())
    (tmp_path / "b" / "happy").mkdir(parents=True)
    with pytest.raises(FerattError, match=r"no faces found in .*b \(format folders\)"):
        read_folders(tmp_path / "b", ReaderOptions())


def test_csv(tmp_path):
    extra = [
        {"path": "images/missing.png", "label": "happy", "subject": "p9"},
        {"path": "images/happy_000.png", "label": "happy", "subject": ""},
    ]
    tree = make_csv_tree(tmp_path, {"happy": 3, "sad": 2, "Surprised": 1}, extra_rows=extra)
    listing = read_csv(tree.root, ReaderOptions())
    assert listing.format == "csv"
    assert listing.root == str(tree.root)
    assert listing.classes == ("happy", "sadness", "surprise")
    assert class_counts(listing) == {"happy": 3, "sadness": 2, "surprise": 1}
    assert {e.subject for e in listing.entries} == {"p1", "p2", "p3"}
    assert [e.relpath for e in listing.entries] == tree.relpaths()
    assert by_relpath(listing)["images/sad_001.png"].source == str(tmp_path / "images" / "sad_001.png")
    assert sorted(s.reason for s in listing.skipped) == ["row 8: file not found", "row 9: empty subject"]


def test_csv_absolute_paths_and_semicolons(tmp_path):
    tree = make_csv_tree(tmp_path, {"fear": 2}, absolute=True)
    listing = read_csv(tree.root, ReaderOptions())
    assert [e.relpath for e in listing.entries] == [str(f.path) for f in tree.files]
    assert [e.source for e in listing.entries] == [str(f.path) for f in tree.files]
    other = tmp_path / "semi.csv"
    other.write_text("Path;Label;Subject\nimages/fear_000.png;fear;x\n")
    assert read_csv(other, ReaderOptions()).entries[0].subject == "x"


def test_csv_errors(tmp_path):
    tree = make_csv_tree(tmp_path, {"fear": 1}, columns=("path", "class"))
    with pytest.raises(FerattError) as info:
        read_csv(tree.root, ReaderOptions())
    assert "missing column(s) label, subject; required columns: path, label, subject" in str(info.value)
    tree = make_csv_tree(
        tmp_path, {"fear": 1}, extra_rows=[{"path": "x.png", "label": "bored", "subject": "a"}]
    )
    with pytest.raises(FerattError, match=r"faces.csv row 3: unknown class name 'bored'; valid names"):
        read_csv(tree.root, ReaderOptions())


# --- detection and dispatch ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    base = tmp_path_factory.mktemp("layouts")
    make_ckplus_tree(base / "ckplus", n_subjects=2)
    make_ckplus_folders_tree(base / "ckplus-folders")
    make_bu3dfe_tree(base / "bu3dfe", n_subjects=1, intensities=(4,), with_3d=True)
    make_jaffe_tree(base / "jaffe", subjects=("KA",), per_expression=1)
    make_class_folders_tree(base / "folders", {"happy": 2, "sad": 2})
    make_csv_tree(base / "csv", {"happy": 2})
    return base


@pytest.mark.parametrize("fmt", sorted(READERS))
def test_detect_format(layouts, fmt):
    path = layouts / fmt / "faces.csv" if fmt == "csv" else layouts / fmt
    assert detect_format(path) == fmt
    listing = list_faces(str(path), "auto", ReaderOptions())
    assert listing.format == fmt
    assert listing.entries
    assert list_faces(str(path), fmt, ReaderOptions()).entries == listing.entries


def test_detect_format_unknown(tmp_path):
    (tmp_path / "stuff").mkdir()
    write_image(tmp_path / "stuff" / "photo.png")
    with pytest.raises(FerattError) as info:
        detect_format(tmp_path)
    assert str(info.value) == (
        f"no known face data set layout in {tmp_path}; looked for: ckplus (cohn-kanade-images/ + Emotion/), "
        "ckplus-folders (<class>/S###_###_########.png), bu3dfe (F0001/F0001_AN04WH_F2D.bmp), "
        "jaffe (KA.AN1.39.tiff), folders (<class>/<image>), csv (a .csv file)"
    )
    with pytest.raises(FerattError, match="no known face data set layout"):
        detect_format(tmp_path / "stuff" / "photo.png")


def test_list_faces_errors(tmp_path, layouts):
    with pytest.raises(FerattError, match=r"^path not found: .*nowhere$"):
        list_faces(str(tmp_path / "nowhere"), "auto", ReaderOptions())
    with pytest.raises(FerattError, match="unknown format 'fer2013'; valid formats: auto, ckplus"):
        list_faces(str(layouts / "jaffe"), "fer2013", ReaderOptions())
    with pytest.raises(FerattError, match="format demo reads the built-in demo set"):
        list_faces(str(layouts / "jaffe"), "demo", ReaderOptions())
    with pytest.raises(FerattError, match="is not a folder"):
        list_faces(str(layouts / "csv" / "faces.csv"), "jaffe", ReaderOptions())
    assert FORMATS == ("ckplus", "ckplus-folders", "bu3dfe", "jaffe", "folders", "csv", "demo")


def test_list_faces_demo():
    listing = list_faces("builtin:demo", "auto", ReaderOptions(demo_subjects=2, demo_per_class=1))
    assert listing.entries
