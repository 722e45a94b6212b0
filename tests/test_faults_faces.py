"""`feratt faces` under bad input and faults: tiny, huge and oddly named images, two writers, a full disk."""

import errno
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_user_error, run
from disk_helpers import tmpfs
from PIL import Image
from skimage import data

from feratt.artifacts.bank import FaceBank, safe_text
from feratt.datasets.bank import build_bank
from feratt.datasets.imageio import read_image
from feratt.errors import BadInputFile, FerattError

#: The astronaut's head, a face the cascade finds.
FACE = np.asarray(data.astronaut()[40:220, 130:310])


def _faces(root: Path) -> Path:
    """A class folder holding one good face, s1_ok.png."""
    (root / "happy").mkdir(parents=True, exist_ok=True)
    Image.fromarray(FACE).save(root / "happy" / "s1_ok.png")
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_1x1_image_is_skipped_with_its_reason(tmp_path):
    root = _faces(tmp_path / "faces")
    Image.new("RGB", (1, 1)).save(root / "happy" / "s2_dot.png")
    Image.new("L", (200, 20)).save(root / "happy" / "s3_strip.png")
    result = run("faces", root, "--out", tmp_path / "b.h5", "--jobs", 1)
    assert result.exit_code == 0, result.output
    assert "files skipped: 2" in result.output
    dot = root / "happy" / "s2_dot.png"
    assert f"  {dot}: too small to hold a face: 1x1 px, the shorter side is under 32 px" in result.output
    assert "200x20 px" in result.output
    assert FaceBank.open(tmp_path / "b.h5").subjects == ["s1"]


def test_min_side_is_an_option(tmp_path):
    root = _faces(tmp_path / "faces")
    Image.new("L", (200, 20), 128).save(root / "happy" / "s3_strip.png")
    result = build_bank(source=root, out=tmp_path / "b.h5", min_side=16, jobs=1)
    assert result.total == 2 and result.skipped == []
    assert_user_error(run("faces", root, "--out", tmp_path / "c.h5", "--min-side", 0), "--min-side")
    with pytest.raises(FerattError, match="minimum image side"):
        build_bank(source=root, out=tmp_path / "d.h5", min_side=0)
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "d.h5").exists()


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG of a few hundred bytes whose header declares `width` x `height` RGB pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 1000)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_is_skipped_with_its_reason(tmp_path):
    root = _faces(tmp_path / "faces")
    bomb = _png_claiming(root / "happy" / "s2_bomb.png", 30000, 30000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may reach stderr as a warning
        result = run("faces", root, "--out", tmp_path / "b.h5", "--jobs", 1)
    assert result.exit_code == 0, result.output
    assert f"  {bomb}: too large to decode safely: Image size (900000000 pixels) exceeds" in result.output
    assert FaceBank.open(tmp_path / "b.h5").subjects == ["s1"]


def test_an_image_over_the_warning_limit_is_skipped_too(tmp_path, monkeypatch):
    root = _faces(tmp_path / "faces")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20000)  # the 180x180 face is over it, under twice it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FerattError, match="none of the 1 faces"):
            build_bank(source=root, out=tmp_path / "b.h5", jobs=1)
        with pytest.raises(
            BadInputFile, match="too large to decode safely: 180x180 px, over the limit of 20000"
        ):
            read_image(root / "happy" / "s1_ok.png")


def test_predict_refuses_a_bomb_in_one_line(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from feratt.config.framing import Framing
    from feratt.inference import predict as inference
    from feratt.inference.inputs import read_rgb

    bomb = _png_claiming(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(FerattError, match="too large to decode safely"):
        read_rgb(bomb)
    model = SimpleNamespace(
        has_attention=True, in_size=64, source=tmp_path / "x.pt", method="feratt-cls", fold=0, epoch=0,
        classes=["a", "b"], framing=Framing(size=64),
    )  # fmt: skip
    monkeypatch.setattr(inference, "open_model", lambda *args, **kwargs: model)
    (tmp_path / "x.pt").write_bytes(b"")
    result = run("predict", tmp_path / "x.pt", bomb, "--device", "cpu")
    assert_user_error(result, f"{bomb}: too large to decode safely")
    assert len(result.output.strip().splitlines()) == 1


def test_a_file_name_that_is_not_utf8_is_recorded_escaped(tmp_path):
    root = _faces(tmp_path / "faces")
    folder = os.fsencode(root / "happy")
    Image.fromarray(FACE).save(folder + b"/\xffbad.png")
    Image.new("RGB", (1, 1)).save(folder + b"/tiny\xfe.png")
    escaped = f"{root / 'happy'}/\\xffbad.png"
    result = build_bank(source=root, out=tmp_path / "b.h5", jobs=1)
    assert [s.path for s in result.skipped] == [f"{root / 'happy'}/tiny\\xfe.png"]
    bank = FaceBank.open(tmp_path / "b.h5")
    assert sorted(zip(bank.subjects, bank.sources, strict=True)) == [
        ("\\xffbad", escaped),
        ("s1", str(root / "happy" / "s1_ok.png")),
    ]
    cli = run("faces", root, "--out", tmp_path / "c.h5", "--jobs", 1)
    assert cli.exit_code == 0, cli.output
    assert "faces per subject (2 subjects):\n  \\xffbad 1, s1 1" in cli.output
    assert f"  {root / 'happy'}/tiny\\xfe.png: too small" in cli.output
    assert FaceBank.open(tmp_path / "c.h5").checksum == result.checksum


def test_safe_text_keeps_utf8_and_escapes_the_rest():
    assert safe_text("café/ok.png") == "café/ok.png"
    assert safe_text(os.fsdecode(b"a\xff.png")) == "a\\xff.png"
    assert safe_text("lone \ud800") == "lone \\ud800"


def _tiff_with_a_bad_tag(path: Path) -> Path:
    """A TIFF of the face whose description tag claims more bytes than the file holds."""
    import io
    import struct

    buffer = io.BytesIO()
    Image.fromarray(FACE).save(buffer, format="TIFF", tiffinfo={270: "x" * 100})
    raw = bytearray(buffer.getvalue())
    (ifd,) = struct.unpack("<I", raw[4:8])
    (entries,) = struct.unpack("<H", raw[ifd : ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * entries, 12):
        if struct.unpack("<H", raw[entry : entry + 2])[0] == 270:
            raw[entry + 4 : entry + 8] = struct.pack("<I", 10**7)
    path.write_bytes(bytes(raw))
    return path


def test_decoder_warnings_become_notes_not_stderr(tmp_path):
    import subprocess
    import sys

    root = _faces(tmp_path / "faces")
    tiff = _tiff_with_a_bad_tag(root / "happy" / "s2_tag.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tiff)[0].shape == (180, 180, 3)
    command = [sys.executable, "-m", "feratt", "faces", str(root), "--out", str(tmp_path / "b.h5"), "-j", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "warn" not in done.stderr, done.stderr
    note = f"{tiff}: decoder warning: Tag data larger than file. Skipping tag 270"
    assert f"note: {note}\n" in done.stdout
    bank = FaceBank.open(tmp_path / "b.h5")
    assert bank.header.notes == (note,) and len(bank) == 2


def test_a_warning_joins_the_reason_of_a_skipped_image(tmp_path):
    tiff = _tiff_with_a_bad_tag(tmp_path / "tag.tif")
    raw = tiff.read_bytes()
    tiff.write_bytes(raw[: len(raw) // 2])  # the pixels are cut short too
    with pytest.raises(BadInputFile) as caught:
        read_image(tiff)
    assert caught.value.reason.endswith("(Tag data larger than file. Skipping tag 270)")


_LARGE_FACE_CHILD = """
import json, resource, sys, time
from feratt.datasets.bank import build_bank
start = time.perf_counter()
result = build_bank(source=sys.argv[1], out=sys.argv[2], jobs=1, mask_method=sys.argv[3])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
print(json.dumps({"methods": result.per_method, "seconds": seconds, "peak": peak}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["landmarks", "grabcut"])
def test_a_6000_px_face_finishes_in_bounded_time_and_memory(tmp_path, method):
    import subprocess
    import sys

    import cv2

    (tmp_path / "faces" / "happy").mkdir(parents=True)
    large = cv2.resize(data.astronaut(), (6000, 6000), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "faces" / "happy" / "s1_big.jpg"), cv2.cvtColor(large, cv2.COLOR_RGB2BGR))
    del large
    command = [
        sys.executable,
        "-c",
        _LARGE_FACE_CHILD,
        str(tmp_path / "faces"),
        str(tmp_path / "b.h5"),
        method,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["methods"] == {method: 1}
    # OpenCV's buffers are invisible to tracemalloc; the child's peak resident set size counts them.
    assert measured["seconds"] < 30 and measured["peak"] < 2 << 30, measured
    assert (FaceBank.open(tmp_path / "b.h5").masks[0] > 0).mean() > 0.2


def test_a_second_writer_of_one_bank_is_refused(tmp_path):
    import socket

    from feratt.locks import exclusive

    root = _faces(tmp_path / "faces")
    build_bank(source=root, out=tmp_path / "b.h5", jobs=1)
    before = _sha(tmp_path / "b.h5")
    with exclusive(tmp_path / "b.h5"):  # another feratt process writing the bank, as the lock sees it
        result = run("faces", root, "--out", tmp_path / "b.h5", "--jobs", 1)
    assert_user_error(result, f"face bank {tmp_path / 'b.h5'} is being written by another feratt process")
    assert f"(pid {os.getpid()} on {socket.gethostname()})" in result.output
    assert _sha(tmp_path / "b.h5") == before
    assert run("faces", root, "--out", tmp_path / "b.h5", "--jobs", 1).exit_code == 0


def test_temporaries_a_killed_run_left_are_removed(tmp_path):
    root = _faces(tmp_path / "faces")
    stale = [tmp_path / ".b.h5.k2j4x9.tmp.h5", tmp_path / ".b.h5.a8d0q1.tmp"]
    others = [tmp_path / ".c.h5.k2j4x9.tmp.h5", tmp_path / "b.h5.tmp", tmp_path / ".b.h5x.k2j4x9.tmp.h5"]
    for path in stale + others:
        path.write_bytes(b"half a bank")
    lines = []
    build_bank(source=root, out=tmp_path / "b.h5", jobs=1, log=lines.append)
    assert f"removed 2 temporary files an interrupted run left beside {tmp_path / 'b.h5'}" in lines
    assert not any(path.exists() for path in stale) and all(path.exists() for path in others)
    assert sorted(p.name for p in tmp_path.glob(".b.h5*")) == [".b.h5.lock", ".b.h5x.k2j4x9.tmp.h5"]


class _DiskFillsUp:
    """A file whose writes fail with ENOSPC once `budget` bytes are written; it counts writes after that."""

    def __init__(self, file, budget: int) -> None:
        self._file = file
        self.budget = budget
        self.failed_writes = 0

    def write(self, data) -> int:
        if self.budget < len(data):
            self.failed_writes += 1
            raise OSError(errno.ENOSPC, "No space left on device", self._file.name)
        self.budget -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _fill_disk_after(monkeypatch, budget: int) -> list[_DiskFillsUp]:
    """Make every bank written from now on fail with ENOSPC after `budget` bytes; the files, to inspect."""
    from feratt.artifacts import bank as bank_module

    files = []
    sink_init = bank_module._StopAtFirstError.__init__

    def init(self, path):
        sink_init(self, path)
        self._file = _DiskFillsUp(self._file, budget)
        files.append(self._file)

    monkeypatch.setattr(bank_module._StopAtFirstError, "__init__", init)
    return files


@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_stops_the_bank_at_the_first_error(tmp_path, monkeypatch, existing):
    import h5py

    out = tmp_path / "b.h5"
    if existing:
        build_bank(source="builtin:demo", out=out, demo_subjects=1, demo_per_class=1, size=64, jobs=1)
        before = _sha(out)
    files = _fill_disk_after(monkeypatch, budget=200_000)
    result = run("faces", "builtin:demo", "--out", out, "--demo-subjects", 4, "--jobs", 1, "--overwrite")
    kept = "the face bank already there is unchanged" if existing else "no face bank was written"
    assert_user_error(result, f"Error: {out}: No space left on device; {kept}")
    assert result.output.count("Error") == 1 and "Traceback" not in result.output
    assert len(files) == 1 and files[0].failed_writes == 1  # nothing more was written once a write failed
    assert h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE) == []  # the HDF5 file was closed
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.h5.lock"] + (["b.h5"] if existing else [])
    if existing:
        assert _sha(out) == before


def test_an_os_error_while_writing_a_face_names_the_bank(tmp_path, monkeypatch):
    from feratt.artifacts import bank as bank_module

    calls = []
    append = bank_module.BankWriter.add

    def failing(writer, face):
        calls.append(face)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error", str(tmp_path / "b.h5"))
        append(writer, face)

    monkeypatch.setattr(bank_module.BankWriter, "add", failing)
    result = run("faces", "builtin:demo", "--out", tmp_path / "b.h5", "--demo-subjects", 2, "--jobs", 1)
    assert_user_error(result, f"Error: {tmp_path / 'b.h5'}: Input/output error; no face bank was written")
    assert len(calls) == 2 and sorted(p.name for p in tmp_path.iterdir()) == [".b.h5.lock"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs mounted in the test's folder, where this process may mount one."""
    with tmpfs(tmp_path / "tmpfs", "256k") as mount:
        yield mount


def test_a_full_tmpfs_ends_in_one_line_not_a_crash(small_tmpfs):
    import subprocess
    import sys

    out = small_tmpfs / "b.h5"
    faces = [sys.executable, "-m", "feratt", "faces", "builtin:demo", "--out", str(out), "--jobs", "1"]
    faces += ["--demo-per-class", "1"]
    assert (
        subprocess.run([*faces, "--demo-subjects", "1", "--size", "64"], capture_output=True).returncode == 0
    )
    before = _sha(out)
    for subjects in ("1", "3"):  # 7 faces of 160 px nearly fit, 21 do not
        done = subprocess.run(
            [*faces, "--demo-subjects", subjects, "--overwrite"], capture_output=True, text=True
        )
        assert done.returncode == 2, (done.returncode, done.stderr)  # 139 was a segfault
        assert (
            done.stderr
            == f"Error: {out}: No space left on device; the face bank already there is unchanged\n"
        )
        assert sorted(p.name for p in small_tmpfs.iterdir()) == [".b.h5.lock", "b.h5"]
        assert _sha(out) == before


def test_decoder_warnings_past_the_limit_are_counted(tmp_path, monkeypatch):
    from feratt.datasets import bank as bank_module

    monkeypatch.setattr(bank_module, "_MAX_WARNINGS", 1)
    root = tmp_path / "faces"
    (root / "happy").mkdir(parents=True)
    first = _tiff_with_a_bad_tag(root / "happy" / "s1_tag.tif")
    for name in ("s2_tag.tif", "s3_tag.tif"):
        _tiff_with_a_bad_tag(root / "happy" / name)
    result = build_bank(source=root, out=tmp_path / "b.h5", jobs=1)
    assert result.total == 3
    assert result.notes == [
        f"{first}: decoder warning: Tag data larger than file. Skipping tag 270",
        "decoder warnings not listed: 2",
    ]


def test_the_temporary_file_of_a_killed_run_goes_at_the_next_run(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "b.h5"
    command = [sys.executable, "-m", "feratt", "faces", "builtin:demo", "--out", str(out), "--jobs", "1"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".b.h5.*.tmp.h5")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    left = list(tmp_path.glob(".b.h5.*.tmp.h5"))
    assert len(left) == 1 and not out.exists()
    lines = []
    build_bank(source="builtin:demo", out=out, demo_subjects=1, demo_per_class=1, jobs=1, log=lines.append)
    assert f"removed 1 temporary file an interrupted run left beside {out}" in lines
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.h5.lock", "b.h5"]
