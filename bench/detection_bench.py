"""Face detection quality: recall, false positives per image and time per image, per detector setting.

Builds --scenes group photos (640x480): scikit-image's photos with 0 to 4 faces pasted at known boxes,
each a drawn demo face (the head region of one of 8 subjects x 7 classes) or the astronaut's head (cut
out by the face bank's mask), 50 to 160 px wide. A detection finds a face when its centre lies in the
pasted head's box and its width is 0.3 to 1.5 of the box's (`feratt.inference.scenes.matches`).

Settings: the face bank's own detection (`detect_faces`: the cascade on a 320 px copy, overlapping
boxes averaged, no filter), then `find_faces` (the cascade on a copy of at most SIDE px, the cascade's
min_neighbours N, non-maximum suppression, then no filter, the skin filter (at least 0.15 of the box's
middle skin-coloured) or skin and eyes (also a feature contrast of at least 0.1 in the eye band))
over a grid, and YuNet with --yunet MODEL.onnx when given. Time is the median per image, detection
only (no framing).

    .venv/bin/python bench/detection_bench.py --scenes 60
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from feratt.datasets.demo import DEMO_CLASSES
from feratt.datasets.detect import DetectorSettings, detect_faces, find_faces
from feratt.inference.scenes import astronaut_portrait, demo_portrait, matches, random_scene


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--yunet", help="a local YuNet .onnx model, to add its rows")
    args = parser.parse_args()
    made = scenes(args.scenes, args.seed)
    faces = sum(len(s.faces) for s in made)
    print(f"{len(made)} scenes of 640x480, {faces} faces pasted")
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


if __name__ == "__main__":
    main()
