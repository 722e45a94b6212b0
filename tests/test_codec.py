"""The JSON of the dataclasses that feratt.codec writes: each against a literal document, and back again.

The literals are what the hand-written to_dict methods these classes had wrote, key order and number
types included (compared as JSON text), so that a change of a file's or a command's JSON cannot pass
unnoticed.
"""

import dataclasses
import json
from pathlib import Path

import pytest

from feratt.codec import decode, encode
from feratt.config.framing import Framing
from feratt.config.rendering import ColourConfig, GeometryConfig, RenderConfig
from feratt.experiments.stats import (
    BonferroniDunnResult,
    DunnComparison,
    FriedmanResult,
    NemenyiPair,
    NemenyiResult,
)
from feratt.experiments.tables import MetricSummary, SplitTable
from feratt.inference.export import ExportResult
from feratt.inference.predict import Prediction, PredictionResult
from feratt.inference.video import FrameFace, FrameRecord, TrackSummary, VideoResult, track_summaries
from feratt.renderer.params import ColourParams, GeometryParams, SampleParams

GEOMETRY = GeometryParams(
    scale=1.1, flip=True, angle=12.0, tx=0.05, ty=-0.03, corners=(0.02, -0.01, 0.0, 0.03, -0.02, 0.0)
)
GEOMETRY_JSON = {
    "scale": 1.1,
    "flip": True,
    "angle": 12.0,
    "tx": 0.05,
    "ty": -0.03,
    "corners": [0.02, -0.01, 0.0, 0.03, -0.02, 0.0],
    "perspective": False,
}
COLOUR = ColourParams(gamma=1.1, noise_seed=7)
COLOUR_JSON = {
    "brightness": None,
    "contrast": None,
    "gamma": 1.1,
    "blur_sigma": None,
    "noise_sigma": None,
    "noise_seed": 7,
}
GEOMETRY_CONFIG = GeometryConfig(perspective=0.05)
GEOMETRY_CONFIG_JSON = {
    "scale": 0.2,
    "flip_p": 0.5,
    "rotation": 30.0,
    "translation": 0.2,
    "warp": 0.1,
    "perspective": 0.05,
}
COLOUR_CONFIG_JSON = {
    "brightness_p": 0.75,
    "brightness": [0.75, 1.25],
    "contrast_p": 0.75,
    "contrast": [0.75, 1.25],
    "gamma_p": 0.75,
    "gamma": [0.75, 1.25],
    "blur_p": 0.25,
    "blur_sigma": [0.5, 1.5],
    "noise_p": 0.25,
    "noise_sigma": [2.0, 10.0],
}
RENDER_CONFIG = RenderConfig(size=96, geometry=GEOMETRY_CONFIG, feather=0.0, grey=True, fit_mask=0.1)
RENDER_CONFIG_JSON = {
    "size": 96,
    "geometry": GEOMETRY_CONFIG_JSON,
    "colour": COLOUR_CONFIG_JSON,
    "luminance": True,
    "luminance_ratio": [0.5, 1.5],
    "lightness_range": [10.0, 90.0],
    "feather": 0.0,
    "grey": True,
    "background_scale": [0.3, 1.0],
    "balance": "classes",
    "fit_mask": 0.1,
}

# The hand-computed case of test_stats: methods A, B and C over four folds.
FRIEDMAN = FriedmanResult(5.375, 0.0680508540250102, 6.142857142857143, 0.0353279, (1.25, 1.875, 2.875), 4, 3)
FRIEDMAN_JSON = {
    "statistic": 5.375,
    "p_value": 0.0680508540250102,
    "iman_davenport": 6.142857142857143,
    "iman_davenport_p": 0.0353279,
    "ranks": [1.25, 1.875, 2.875],
    "n": 4,
    "k": 3,
}
PAIR = NemenyiPair("A", "C", 1.625, False)
PAIR_JSON = {"a": "A", "b": "C", "difference": 1.625, "significant": False}
NEMENYI = NemenyiResult(0.05, 1.657246577699061, {"A": 1.25, "B": 1.875, "C": 2.875}, (PAIR,))
NEMENYI_JSON = {
    "alpha": 0.05,
    "cd": 1.657246577699061,
    "ranks": {"A": 1.25, "B": 1.875, "C": 2.875},
    "pairs": [PAIR_JSON],
}
COMPARISON = DunnComparison("A", -1.625, -2.2980970388562794, 0.02155626676001633, 0.04311253352003266, True)
COMPARISON_JSON = {
    "method": "A",
    "difference": -1.625,
    "z": -2.2980970388562794,
    "p": 0.02155626676001633,
    "p_adjusted": 0.04311253352003266,
    "significant": True,
}
DUNN = BonferroniDunnResult(0.05, "C", 1.584911068059482, (COMPARISON,))
DUNN_JSON = {"alpha": 0.05, "control": "C", "cd": 1.584911068059482, "comparisons": [COMPARISON_JSON]}

SUMMARY = MetricSummary.of([0.5, 0.75])
SUMMARY_JSON = {"mean": 62.5, "std": 12.5, "folds": [50.0, 75.0]}
SPLIT = SplitTable(
    {"baseline": {"accuracy": SUMMARY}}, {"note": "one method: nothing to compare"}, "| table |\n"
)
SPLIT_JSON = {
    "table": {"baseline": {"accuracy": SUMMARY_JSON}},
    "tests": {"note": "one method: nothing to compare"},
}

FRAMING = Framing(bank_size=96, size=64, fit_mask=0.05)
FRAMING_JSON = {
    "bank_size": 96, "bank_margin": 0.2, "size": 64, "fit_mask": 0.05, "grey": False,
    "aligned": False, "bank_forehead": 0.0,
}  # fmt: skip
FACE = Prediction(
    path=Path("a.png"),
    face=1,
    box=[1.0, 2.5, 30.0, 40.0],
    probabilities={"happy": 0.75, "sad": 0.25},
    prediction="happy",
)
FACE_JSON = {
    "path": "a.png",
    "face": 1,
    "box": [1.0, 2.5, 30.0, 40.0],
    "probabilities": {"happy": 0.75, "sad": 0.25},
    "prediction": "happy",
}
WHOLE = Prediction(path=Path("b.png"), probabilities={"happy": 0.125, "sad": 0.875}, prediction="sad")
WHOLE_JSON = {
    "path": "b.png",
    "face": 0,
    "box": None,
    "probabilities": {"happy": 0.125, "sad": 0.875},
    "prediction": "sad",
}

FRAME_FACE = FrameFace(
    1, [1.5, 2.0, 3.0, 4.0], {"happy": 0.25, "sad": 0.75}, "sad", {"happy": 0.375, "sad": 0.625}
)
FRAME_FACE_JSON = {
    "track": 1,
    "box": [1.5, 2.0, 3.0, 4.0],
    "probabilities": {"happy": 0.25, "sad": 0.75},
    "prediction": "sad",
    "smoothed": {"happy": 0.375, "sad": 0.625},
}
RECORDS = [
    FrameRecord(0, 0.0, [FrameFace(1, [1.0, 2.0, 3.0, 4.0], {"happy": 0.5, "sad": 0.5}, "happy")]),
    FrameRecord(2, 0.2, [FRAME_FACE]),
]
RECORDS_JSON = [
    {
        "frame": 0,
        "time": 0.0,
        "faces": [
            {
                "track": 1,
                "box": [1.0, 2.0, 3.0, 4.0],
                "probabilities": {"happy": 0.5, "sad": 0.5},
                "prediction": "happy",
            }
        ],
    },
    {"frame": 2, "time": 0.2, "faces": [FRAME_FACE_JSON]},
]
TRACK = TrackSummary(1, 0, 2, 2, {"happy": 0.375, "sad": 0.625}, "sad")
TRACK_JSON = {
    "track": 1,
    "first_frame": 0,
    "last_frame": 2,
    "frames": 2,
    "probabilities": {"happy": 0.375, "sad": 0.625},
    "prediction": "sad",
}
VIDEO = VideoResult(
    Path("clip.mp4"),
    3,
    2,
    10.0,
    2,
    2,
    [TRACK],
    [Path("out/clip.mp4"), Path("out/clip.jsonl")],
    ["a note"],
    RECORDS,
)
VIDEO_JSON = {
    "path": "clip.mp4",
    "frames": 3,
    "classified_frames": 2,
    "fps": 10.0,
    "every": 2,
    "smooth": 2,
    "tracks": [TRACK_JSON],
    "written": ["out/clip.mp4", "out/clip.jsonl"],
    "notes": ["a note"],
    "frame_records": RECORDS_JSON,
}
RESULT = PredictionResult(
    checkpoint=Path("run"),
    method="feratt-cls",
    fold=0,
    epoch=3,
    classes=["happy", "sad"],
    framing=FRAMING,
    detector="lbp-cascade",
    predictions=[FACE, WHOLE],
    no_face=[Path("c.png")],
    videos=[VIDEO],
    attention_written=[Path("att/a-input.png")],
    annotated=[Path("out/a.png")],
)
RESULT_JSON = {
    "checkpoint": "run",
    "method": "feratt-cls",
    "fold": 0,
    "epoch": 3,
    "classes": ["happy", "sad"],
    "framing": FRAMING_JSON,
    "detector": "lbp-cascade",
    "predictions": [FACE_JSON, WHOLE_JSON],
    "no_face": ["c.png"],
    "videos": [VIDEO_JSON],
}
EXPORT = ExportResult(
    Path("m.onnx"),
    Path("run/fold-0/best.pt"),
    "feratt-cls",
    ["happy", "sad"],
    64,
    ["logits", "attention"],
    FRAMING,
)
EXPORT_JSON = {
    "path": "m.onnx",
    "checkpoint": "run/fold-0/best.pt",
    "method": "feratt-cls",
    "classes": ["happy", "sad"],
    "input_size": 64,
    "outputs": ["logits", "attention"],
    "framing": FRAMING_JSON,
}

CASES = {
    "GeometryParams": (GEOMETRY, GEOMETRY_JSON),
    "ColourParams": (COLOUR, COLOUR_JSON),
    "SampleParams": (SampleParams(GEOMETRY, COLOUR), {"geometry": GEOMETRY_JSON, "colour": COLOUR_JSON}),
    "GeometryConfig": (GEOMETRY_CONFIG, GEOMETRY_CONFIG_JSON),
    "ColourConfig": (ColourConfig(), COLOUR_CONFIG_JSON),
    "RenderConfig": (RENDER_CONFIG, RENDER_CONFIG_JSON),
    "FriedmanResult": (FRIEDMAN, FRIEDMAN_JSON),
    "NemenyiPair": (PAIR, PAIR_JSON),
    "NemenyiResult": (NEMENYI, NEMENYI_JSON),
    "DunnComparison": (COMPARISON, COMPARISON_JSON),
    "BonferroniDunnResult": (DUNN, DUNN_JSON),
    "MetricSummary": (SUMMARY, SUMMARY_JSON),
    "SplitTable": (SPLIT, SPLIT_JSON),
    "Prediction": (FACE, FACE_JSON),
    "Prediction, whole image": (WHOLE, WHOLE_JSON),
    "FrameFace": (FRAME_FACE, FRAME_FACE_JSON),
    "FrameRecord": (RECORDS[0], RECORDS_JSON[0]),
    "TrackSummary": (TRACK, TRACK_JSON),
    "VideoResult": (VIDEO, VIDEO_JSON),
    "PredictionResult": (RESULT, RESULT_JSON),
    "ExportResult": (EXPORT, EXPORT_JSON),
}
#: What the JSON leaves out, and so comes back as the default.
NOT_WRITTEN = {"SplitTable": {"markdown": ""}, "PredictionResult": {"attention_written": [], "annotated": []}}


@pytest.mark.parametrize("name", list(CASES))
def test_encode_writes_the_documented_json(name):
    value, expected = CASES[name]
    # As text, unsorted: key order, int or float, null or missing all count.
    assert json.dumps(encode(value)) == json.dumps(expected)


@pytest.mark.parametrize("name", list(CASES))
def test_decode_reads_back_what_encode_wrote(name):
    value, _ = CASES[name]
    back = decode(type(value), json.loads(json.dumps(encode(value))), "test.json")
    assert back == dataclasses.replace(value, **NOT_WRITTEN.get(name, {}))
    assert json.dumps(encode(back)) == json.dumps(encode(value))


def test_track_summaries_average_each_track_over_its_frames():
    assert track_summaries(RECORDS) == [TRACK]


def test_the_predict_document_prints_as_it_did():
    # `feratt predict --json` prints json.dumps(..., indent=2) of the document, keys in field order.
    text = json.dumps(encode(RESULT), indent=2)
    assert text.startswith(
        '{\n  "checkpoint": "run",\n  "method": "feratt-cls",\n  "fold": 0,\n  "epoch": 3,'
    )
    assert '"box": null,' in text and '"smoothed"' in text and "att/a-input.png" not in text
