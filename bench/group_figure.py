"""The README's group photo: drawn demo faces and the astronaut on a scikit-image photo, found and classified.

Only images feratt may ship: scikit-image's rocket photo, four demo faces drawn by feratt and the
astronaut's head (scikit-image's astronaut photo, public domain). Runs `predict` with a trained
checkpoint (the demo's baseline by default, framed as the demo render framed its faces) and writes the
annotated picture. Prints each pasted face's drawn expression beside what the model says.

    .venv/bin/python bench/group_figure.py --out docs/group-predict.jpg
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2

from feratt.datasets.detect import FaceBox
from feratt.inference.predict import predict
from feratt.inference.scenes import README_FACES, matches, readme_group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="demo/experiment/runs/baseline")
    parser.add_argument("--render", default="demo/render", help="the render the checkpoint was trained on")
    parser.add_argument("--out", default="docs/group-predict.jpg")
    args = parser.parse_args()
    scene = readme_group()
    shown = [f"{expression}{' (a photo)' if subject < 0 else ''}" for subject, expression, *_ in README_FACES]
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "group.png"
        cv2.imwrite(str(photo), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        result = predict(
            checkpoint=args.checkpoint,
            images=[photo],
            render=args.render,
            annotate=Path(tmp) / "out",
            device="cpu",
        )
        drawn = cv2.imread(str(Path(tmp) / "out" / "group.png"))
    cv2.imwrite(args.out, drawn, [cv2.IMWRITE_JPEG_QUALITY, 88])
    boxes = [p.box for p in result.predictions]

    found, false = matches([FaceBox(*box) for box in boxes], scene.faces)
    print(f"{result.method} ({result.checkpoint}); {found} of {len(scene.faces)} faces found, {false} false")
    for prediction in sorted(result.predictions, key=lambda p: p.box[0]):
        index = min(range(len(scene.faces)), key=lambda i: abs(scene.faces[i].x - prediction.box[0]))
        print(f"  drawn {shown[index]}: predicted {prediction.prediction} ({prediction.probability:.2f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
