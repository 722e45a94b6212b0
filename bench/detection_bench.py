"""Face detection quality: recall, false positives per image and time per image, per detector setting.

Four sections (--sections, all by default):

grid: --scenes group photos (640x480): scikit-image's photos with 0 to 4 faces pasted at known boxes,
each a drawn demo face (the head region of one of 8 subjects x 7 classes) or the astronaut's head (cut
out by the face bank's mask), 50 to 160 px wide. A detection finds a face when its centre lies in the
pasted head's box and its width is 0.3 to 1.5 of the box's (`feratt.inference.scenes.matches`).
Settings: the face bank's own detection (`detect_faces`: the cascade on a 320 px copy, overlapping
boxes averaged, no filter), then `find_faces` (the cascade on a copy of at most SIDE px, the cascade's
min_neighbours N, non-maximum suppression, then no filter, the skin filter (at least 0.15 of the box's
middle skin-coloured) or skin and eyes (also a feature contrast of at least 0.1 in the eye band))
over a grid, and YuNet with --yunet MODEL.onnx when given. Time is the median per image, detection
only (no framing).

families: --family-scenes scenes (640x480) of each of six families, each differing from the first in
one thing: colour faces in colour photos (80 to 400 px wide), grey faces in colour photos, grey faces
in grey photos, small faces (40 to 80 px), faces rotated by 10 to 20 degrees either way, and faces
partly covered (a flat rectangle over 25-30% of the head's box: its lower part or one side). Faces are
the demo's 24 subjects x 7 classes and the astronaut (one face in eight), widths log-uniform; the
detectors: the cascade with and without its filters, dlib's HOG at upsample 0 and 1 with score
thresholds 0, 0.15 and 0.3, `auto` (the default: HOG upsample 1, threshold 0.15, plus the filtered
cascade's other faces), dlib's CNN (upsample 0, on the first --cnn-scenes scenes of each family
only: it takes seconds a photo on a CPU) and YuNet with --yunet.

masks: the demo faces of the default bank (24 subjects x 7 classes x 2), whose true regions are known:
the head (face, ears and hair) and the face alone (the skin inside the face's outline, hair and ears
excluded), as `feratt.datasets.demo.draw_demo_face` draws them. IoU, in the 160 px image's pixels,
of the convex hull of the 68 landmarks `face_landmarks` finds, of `compute_mask` (GrabCut around
the cascade's face) and of the inscribed ellipse.

bank: seconds per face of `build_bank(source="builtin:demo")` with mask_method landmarks and grabcut,
at jobs 1 and 2 (--bank-subjects demo subjects, --bank-runs runs each, median).

    .venv/bin/python bench/detection_bench.py --scenes 60
    .venv/bin/python bench/detection_bench.py --sections families,masks,bank --family-scenes 16
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from feratt.datasets.demo import DEMO_CLASSES
from feratt.datasets.detect import DetectorSettings, FaceBox, detect_faces, find_faces, is_grey
from feratt.inference.scenes import (
    SCENE_PHOTOS,
    Portrait,
    apart,
    astronaut_portrait,
    background,
    demo_portrait,
    grey_portrait,
    matches,
    paste,
    random_scene,
)

SECTIONS = ("grid", "families", "masks", "bank")
SIZE = (640, 480)
COLOUR_PHOTOS = ("coffee", "chelsea", "rocket")  # the colour ones of SCENE_PHOTOS; the rest are grey
FAMILIES = ("colour", "grey in colour", "grey in grey", "small 40-80 px", "rotated", "covered")


def scenes(count: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    portraits = [demo_portrait(s, c) for s in range(8) for c in DEMO_CLASSES]
    portraits += [astronaut_portrait()] * 8  # about one face in eight is the photographed one
    return [random_scene(rng, portraits, int(rng.integers(0, 5)), widths=(50.0, 160.0)) for _ in range(count)]


def score(detect, made: list) -> tuple[float, float, float, int, int]:
    """(recall, false positives per image, median seconds per image, faces found, faces)."""
    found = false = 0
    seconds = []
    for scene in made:
        started = time.perf_counter()
        boxes = detect(scene.image)
        seconds.append(time.perf_counter() - started)
        hits, misses = matches(boxes, scene.faces)
        found += hits
        false += misses
    faces = sum(len(scene.faces) for scene in made)
    return found / faces, false / len(made), statistics.median(seconds), found, faces


def load() -> str:
    return "load " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def run_grid(args: argparse.Namespace) -> None:
    made = scenes(args.scenes, args.seed)
    faces = sum(len(s.faces) for s in made)
    print(f"\n## grid: {len(made)} scenes of 640x480, {faces} faces pasted ({load()})")
    rows = [("face bank's detect_faces (320 px, N 4, averaged, no filter)", detect_faces)]
    filters = (("none", 0.0, 0.0), ("skin", 0.15, 0.0), ("skin + eyes", 0.15, 0.1))
    for side in (320, 480, 640):
        for neighbours in (2, 4):
            for name, skin, contrast in filters:
                settings = DetectorSettings(
                    side=side, min_neighbours=neighbours, min_skin=skin, min_contrast=contrast
                )
                rows.append((f"find_faces side {side}, N {neighbours}, filters: {name}", settings))
    if args.yunet:
        for threshold in (0.6, 0.8):
            rows.append(
                (f"YuNet, score > {threshold}", DetectorSettings(model=args.yunet, min_score=threshold))
            )
    print("| setting | recall | false positives / image | ms / image |")
    print("|---|---:|---:|---:|")
    for name, how in rows:
        detect = how if callable(how) else (lambda image, s=how: find_faces(image, s))
        recall, false, seconds, found, total = score(detect, made)
        print(f"| {name} | {recall:.3f} ({found}/{total}) | {false:.2f} | {1000 * seconds:.0f} |", flush=True)


# --- families: grey, small, rotated and covered faces ---------------------------------------------------


@dataclass(frozen=True)
class FamilyScene:
    family: str
    image: np.ndarray
    faces: tuple[FaceBox, ...]
    kinds: tuple[str, ...]  # each face's kind: "drawn" (a demo face) or "astronaut" (the photographed one)


def rotate_portrait(portrait: Portrait, degrees: float) -> Portrait:
    """`portrait` turned by `degrees` (counter-clockwise) about its face box's centre, on a canvas large
    enough to hold it; the face box becomes the turned region's bounding box."""
    height, width = portrait.region.shape
    box = portrait.face
    affine = cv2.getRotationMatrix2D((box.x + box.width / 2, box.y + box.height / 2), degrees, 1.0)
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    turned = corners @ affine[:, :2].T + affine[:, 2]
    low, high = np.floor(turned.min(axis=0)), np.ceil(turned.max(axis=0))
    affine[:, 2] -= low
    size = (int(high[0] - low[0]), int(high[1] - low[1]))
    image = cv2.warpAffine(
        portrait.image, affine, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    region = cv2.warpAffine(portrait.region.astype(np.float32), affine, size, flags=cv2.INTER_LINEAR) >= 0.5
    x, y, w, h = cv2.boundingRect(region.astype(np.uint8))
    return Portrait(image, region, FaceBox(float(x), float(y), float(w), float(h)))


def cover(scene: np.ndarray, box: FaceBox, rng: np.random.Generator) -> None:
    """Paint a flat rectangle over 25-30% of `box`: its lower part, or its left or right side."""
    fraction = float(rng.uniform(0.25, 0.30))
    x0, y0, x1, y1 = box.x, box.y, box.x + box.width, box.y + box.height
    side = int(rng.integers(3))
    if side == 0:
        y0 = y1 - fraction * box.height
    elif side == 1:
        x1 = x0 + fraction * box.width
    else:
        x0 = x1 - fraction * box.width
    colour = rng.integers(0, 256, 3) if not is_grey(scene) else np.repeat(rng.integers(0, 256), 3)
    scene[round(y0) : round(y1), round(x0) : round(x1)] = colour.astype(np.uint8)


def family_scene(
    rng: np.random.Generator, family: str, colour: list[Portrait], grey: list[Portrait], drawn: int
) -> FamilyScene:
    """One scene of `family`: 1 to 3 faces (3 to 6 small ones) at log-uniform widths, kept apart; the
    first `drawn` portraits are drawn faces, the rest the astronaut."""
    grey_photo = family == "grey in grey"
    photos = SCENE_PHOTOS if grey_photo else COLOUR_PHOTOS
    scene = background(photos[int(rng.integers(len(photos)))], SIZE)
    if grey_photo:
        scene = np.repeat(cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    portraits = grey if family in ("grey in colour", "grey in grey") else colour
    small = family.startswith("small")
    low, high = (40.0, 80.0) if small else (80.0, 400.0)
    count = int(rng.integers(3, 7)) if small else int(rng.integers(1, 4))
    taken: list[FaceBox] = []
    kinds: list[str] = []
    for _ in range(50 * count):
        if len(taken) == count:
            break
        index = int(rng.integers(len(portraits)))
        portrait = portraits[index]
        if family == "rotated":
            degrees = float(rng.uniform(10.0, 20.0)) * (1 if rng.integers(2) else -1)
            portrait = rotate_portrait(portrait, degrees)
        width = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        height = width * portrait.face.height / portrait.face.width
        if width >= SIZE[0] or height >= SIZE[1]:
            continue
        x, y = float(rng.uniform(0, SIZE[0] - width)), float(rng.uniform(0, SIZE[1] - height))
        if not all(apart(FaceBox(x, y, width, height), other) for other in taken):
            continue
        box = paste(scene, portrait, x, y, width)
        if family == "covered":
            cover(scene, box, rng)
        taken.append(box)
        kinds.append("drawn" if index < drawn else "astronaut")
    return FamilyScene(family, scene, tuple(taken), tuple(kinds))


def family_scenes(per_family: int, seed: int) -> list[FamilyScene]:
    """`per_family` scenes of each family; family k's scenes come from the generator seeded [seed, k]."""
    colour = [demo_portrait(s, c) for s in range(24) for c in DEMO_CLASSES]
    colour += [astronaut_portrait()] * 24  # about one face in eight is the photographed one
    grey = [grey_portrait(p) for p in colour]
    made = []
    for k, family in enumerate(FAMILIES):
        rng = np.random.default_rng([seed, k])
        made += [
            family_scene(rng, family, colour, grey, drawn=24 * len(DEMO_CLASSES)) for _ in range(per_family)
        ]
    return made


@dataclass
class Outcome:
    """One detector on one scene."""

    family: str
    hits: int
    false: int
    faces: int
    seconds: float
    found: tuple[str, ...]  # the kinds of the faces found


def detect_all(detect: Callable[[np.ndarray], list], made: list[FamilyScene]) -> list[Outcome]:
    outcomes = []
    for scene in made:
        started = time.perf_counter()
        boxes = detect(scene.image)
        seconds = time.perf_counter() - started
        hits, false = matches(boxes, scene.faces)
        # matches() takes the true faces in order, greedily: a face is found when the prefix ending with
        # it finds one more face than the prefix before it.
        prefix = [matches(boxes, scene.faces[:k])[0] for k in range(len(scene.faces) + 1)]
        found = tuple(kind for k, kind in enumerate(scene.kinds) if prefix[k + 1] > prefix[k])
        outcomes.append(Outcome(scene.family, hits, false, len(scene.faces), seconds, found))
    return outcomes


def _recall(outcomes: list[Outcome]) -> str:
    hits, faces = sum(o.hits for o in outcomes), sum(o.faces for o in outcomes)
    return f"{hits / faces:.2f} ({hits}/{faces})" if faces else "-"


def _false(outcomes: list[Outcome]) -> str:
    return f"{sum(o.false for o in outcomes) / len(outcomes):.2f}" if outcomes else "-"


def family_tables(rows: list[tuple[str, list[Outcome]]], made: list[FamilyScene], title: str) -> None:
    header = " | ".join(FAMILIES)
    rule = "|---" + "|---:" * (len(FAMILIES) + 3) + "|"
    print(f"\n{title}: recall by family (found/faces), all families, false faces per image, ms per image\n")
    print(f"| detector | {header} | all | false / image | ms / image |")
    print(rule)
    for name, outcomes in rows:
        cells = [_recall([o for o in outcomes if o.family == f]) for f in FAMILIES]
        ms = 1000 * statistics.median(o.seconds for o in outcomes)
        print(f"| {name} | {' | '.join(cells)} | {_recall(outcomes)} | {_false(outcomes)} | {ms:.0f} |")
    print(f"\n{title}: recall by kind of face (drawn demo faces, the photographed astronaut), all families\n")
    print("| detector | drawn | astronaut |")
    print("|---|---:|---:|")
    for name, outcomes in rows:
        cells = []
        for kind in ("drawn", "astronaut"):
            total = sum(s.kinds.count(kind) for s in made)
            hits = sum(o.found.count(kind) for o in outcomes)
            cells.append(f"{hits / total:.2f} ({hits}/{total})" if total else "-")
        print(f"| {name} | {' | '.join(cells)} |")
    print(f"\n{title}: false faces per image by family\n")
    print(f"| detector | {header} |")
    print("|---" + "|---:" * len(FAMILIES) + "|")
    for name, outcomes in rows:
        cells = [_false([o for o in outcomes if o.family == f]) for f in FAMILIES]
        print(f"| {name} | {' | '.join(cells)} |", flush=True)


def run_families(args: argparse.Namespace) -> None:
    made = family_scenes(args.family_scenes, args.seed)
    faces = {f: sum(len(s.faces) for s in made if s.family == f) for f in FAMILIES}
    listed = ", ".join(f"{f} {n}" for f, n in faces.items())
    print(f"\n## families: {len(made)} scenes of 640x480, {sum(faces.values())} faces ({listed}); {load()}")
    settings = [
        ("cascade, filters (detector=cascade)", DetectorSettings(detector="cascade")),
        ("cascade, no filters", DetectorSettings(detector="cascade", min_skin=0.0, min_contrast=0.0)),
    ]
    for upsample in (0, 1):
        for threshold in (0.0, 0.15, 0.3):
            hog = DetectorSettings(detector="hog", upsample=upsample, hog_threshold=threshold)
            settings.append((f"HOG upsample {upsample}, threshold {threshold}", hog))
    settings.append(("auto (HOG up 1, thr 0.15, + filtered cascade)", DetectorSettings()))
    if args.yunet:
        settings.append(("YuNet, score >= 0.7", DetectorSettings(model=args.yunet)))
    rows = []
    for name, setting in settings:
        rows.append((name, detect_all(lambda image, s=setting: find_faces(image, s), made)))
        print(f"  {name}: done ({load()})", flush=True)
    if not args.yunet:
        print("  YuNet: not run: no model file (--yunet MODEL.onnx)")
    family_tables(rows, made, "all scenes")
    if args.cnn_scenes > 0:
        chosen = [i for i, s in enumerate(made) if i % args.family_scenes < args.cnn_scenes]
        subset = [made[i] for i in chosen]
        cnn = DetectorSettings(detector="cnn", upsample=0)
        outcomes = detect_all(lambda image: find_faces(image, cnn), subset)
        sub_rows = [(name, [outcomes_[i] for i in chosen]) for name, outcomes_ in rows]
        sub_rows.append(("CNN (MMOD) upsample 0", outcomes))
        family_tables(sub_rows, subset, f"CNN subset (the first {args.cnn_scenes} scenes of each family)")


# --- masks against the demo faces' true regions ---------------------------------------------------------


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def run_masks(args: argparse.Namespace) -> None:
    from feratt.datasets.align import polygon_mask
    from feratt.datasets.demo import demo_source, draw_demo_face
    from feratt.datasets.facemask import compute_mask, inscribed_ellipse
    from feratt.datasets.landmarks import face_landmarks

    faces = [(s, c, v) for s in range(args.mask_subjects) for c in DEMO_CLASSES for v in range(2)]
    print(f"\n## masks: {len(faces)} demo faces ({args.mask_subjects} subjects x 7 classes x 2); {load()}")
    methods: dict[str, int] = {}
    seconds: dict[str, list[float]] = {"landmarks": [], "grabcut": []}
    per_face = []
    for subject, class_name, variant in faces:
        drawn = draw_demo_face(demo_source(subject, class_name, variant), 0)
        image, head, face = drawn.image, drawn.head, drawn.face
        started = time.perf_counter()
        points = face_landmarks(image)
        seconds["landmarks"].append(time.perf_counter() - started)
        started = time.perf_counter()
        grabcut, method = compute_mask(image)
        seconds["grabcut"].append(time.perf_counter() - started)
        methods[method] = methods.get(method, 0) + 1
        masks = {"grabcut": grabcut, "ellipse": inscribed_ellipse(image.shape[:2])}
        if points is not None:
            masks["landmarks"] = polygon_mask(points, image.shape[0])
        scores = {name: (mask_iou(mask, head), mask_iou(mask, face)) for name, mask in masks.items()}
        per_face.append((scores, method))
    print("compute_mask's method: " + ", ".join(f"{k} {v}" for k, v in sorted(methods.items())))
    found = [s for s, _ in per_face if "landmarks" in s]
    cascade = [s for s, m in per_face if m in ("grabcut", "prior")]
    both = [s for s, m in per_face if "landmarks" in s and m in ("grabcut", "prior")]
    auto = [s["landmarks"] if "landmarks" in s else s["grabcut"] for s, _ in per_face]
    rows = [
        ("landmarks hull (faces HOG finds)", [s["landmarks"] for s in found]),
        ("GrabCut, compute_mask (all faces)", [s["grabcut"] for s, _ in per_face]),
        ("GrabCut, faces the cascade finds (grabcut or prior)", [s["grabcut"] for s in cascade]),
        ("inscribed ellipse (all faces)", [s["ellipse"] for s, _ in per_face]),
        ("auto: landmarks hull, else GrabCut (all faces)", auto),
        ("landmarks hull, faces both find", [s["landmarks"] for s in both]),
        ("GrabCut, faces both find", [s["grabcut"] for s in both]),
        ("inscribed ellipse, faces both find", [s["ellipse"] for s in both]),
    ]
    print("\n| mask | faces | median IoU vs head (face, ears, hair) | median IoU vs face alone |")
    print("|---|---:|---:|---:|")
    for name, pairs in rows:
        if not pairs:
            print(f"| {name} | 0 | - | - |")
            continue
        head_iou = statistics.median(p[0] for p in pairs)
        face_iou = statistics.median(p[1] for p in pairs)
        print(f"| {name} | {len(pairs)} | {head_iou:.2f} | {face_iou:.2f} |")
    for name, values in seconds.items():
        print(f"median ms per face, {name} mask (detection included): {1000 * statistics.median(values):.0f}")


# --- the face bank's time per face ----------------------------------------------------------------------


def run_bank(args: argparse.Namespace) -> None:
    from feratt.datasets.bank import build_bank

    print(f"\n## bank: builtin:demo with demo_subjects={args.bank_subjects}; {load()}")
    times: dict[tuple[str, int], list[float]] = {}
    written: dict[tuple[str, int], str] = {}
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.bank_runs):
            for jobs in (1, 2):
                for method in ("landmarks", "grabcut"):
                    out = Path(folder) / f"{method}-{jobs}-{run}.h5"
                    started = time.perf_counter()
                    result = build_bank(
                        source="builtin:demo",
                        out=out,
                        jobs=jobs,
                        mask_method=method,
                        demo_subjects=args.bank_subjects,
                        overwrite=True,
                    )
                    wall = time.perf_counter() - started
                    listed = result.total + len(result.skipped)
                    times.setdefault((method, jobs), []).append(wall / listed)
                    written[method, jobs] = f"{result.total}/{listed} written, " + ", ".join(
                        f"{k} {v}" for k, v in sorted(result.per_method.items())
                    )
                    print(f"  run {run + 1}, {method}, jobs {jobs}: {wall:.1f} s ({load()})", flush=True)
                    out.unlink()
    print("\n| mask method | jobs | ms per face (median) | runs (ms per face) | faces |")
    print("|---|---:|---:|---|---|")
    for (method, jobs), values in times.items():
        runs = ", ".join(f"{1000 * v:.0f}" for v in values)
        median = 1000 * statistics.median(values)
        print(f"| {method} | {jobs} | {median:.0f} | {runs} | {written[method, jobs]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {SECTIONS}")
    parser.add_argument("--scenes", type=int, default=60, help="grid: scenes")
    parser.add_argument("--family-scenes", type=int, default=16, help="families: scenes per family")
    parser.add_argument("--cnn-scenes", type=int, default=4, help="families: CNN on this many per family")
    parser.add_argument("--mask-subjects", type=int, default=24, help="masks: demo subjects (x 7 x 2)")
    parser.add_argument("--bank-subjects", type=int, default=12, help="bank: demo subjects (x 7 x 2)")
    parser.add_argument("--bank-runs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that it runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--yunet", help="a local YuNet .onnx model, to add its rows")
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}: choose from {SECTIONS}")
    if args.quick:
        args.scenes, args.family_scenes, args.cnn_scenes = 6, 2, 1
        args.mask_subjects, args.bank_subjects, args.bank_runs = 1, 1, 1
    started = time.perf_counter()
    for name in sections:
        {"grid": run_grid, "families": run_families, "masks": run_masks, "bank": run_bank}[name](args)
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s ({load()})")


if __name__ == "__main__":
    main()
