"""Small HDF5 helpers shared by the face bank and the shards."""

from __future__ import annotations

import h5py
import numpy as np


def set_image_attrs(dataset: h5py.Dataset, truecolor: bool) -> None:
    """Add the HDF5 Image spec attributes so that HDFView and h5web show the dataset as pictures."""
    dataset.attrs["CLASS"] = np.bytes_("IMAGE")
    dataset.attrs["IMAGE_VERSION"] = np.bytes_("1.2")
    if truecolor:
        dataset.attrs["IMAGE_SUBCLASS"] = np.bytes_("IMAGE_TRUECOLOR")
        dataset.attrs["INTERLACE_MODE"] = np.bytes_("INTERLACE_PIXEL")
    else:
        dataset.attrs["IMAGE_SUBCLASS"] = np.bytes_("IMAGE_GRAYSCALE")
        dataset.attrs["IMAGE_WHITE_IS_ZERO"] = np.uint8(0)


def write_strings(group: h5py.Group, name: str, values: list[str]) -> h5py.Dataset:
    """Write a list of strings as a UTF-8 string dataset."""
    return group.create_dataset(
        name, data=np.array(values, dtype=object), dtype=h5py.string_dtype(), track_times=False
    )


def read_strings(dataset: h5py.Dataset) -> list[str]:
    """Read a string dataset as a list of str."""
    return list(dataset.asstr()[()])
