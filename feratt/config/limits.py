"""The largest sizes feratt accepts from a file or an option, checked before anything is sized from them.

A file is data: a number read from it (a face size, a class count, an input side) could ask for
gigabytes. Every reader checks such numbers against these limits first and names the limit it hit.
"""

from __future__ import annotations

#: Side of a face-bank crop, a rendered sample or a model input, in pixels.
MAX_IMAGE_SIDE = 1024
#: Expression classes of a data set, a render or a model.
MAX_CLASSES = 1000
#: A margin or fit-mask padding, as a fraction of the face box's side.
MAX_MARGIN = 2.0
