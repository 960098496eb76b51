"""Reading Fashion-MNIST's real images from Debian's ``dataset-fashion-mnist`` package.

The built-in image data sets (``fashion4``) and video–text clips are made from these 70,000
images, so nothing is downloaded. The files are the original IDX format, gzip-compressed:
a big-endian header (magic, then one uint32 per dimension) followed by the uint8 array.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from avsearch.errors import AvsearchInputError

__all__ = ["CLASS_NAMES", "DEFAULT_ROOT", "load_fashion_mnist", "read_idx"]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_UBYTE = 0x08                       # IDX type code of unsigned bytes


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array of one gzip-compressed IDX file; a bad file is an input error."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise AvsearchInputError(f"{path}: cannot read as gzip-compressed IDX ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
        raise AvsearchInputError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    if len(raw) != header + int(np.prod(shape)):
        raise AvsearchInputError(f"{path}: the header says shape {shape}, "
                                 f"but the file holds {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(split: str = "train", root: Path | str | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of Fashion-MNIST's ``train`` (60,000) or ``test`` (10,000) split:
    uint8 images (N, 28, 28) and int64 labels (N,) in 0-9 (:data:`CLASS_NAMES`)."""
    if split not in _FILES:
        raise AvsearchInputError(f"Fashion-MNIST split must be one of {sorted(_FILES)}, "
                                 f"not {split!r}")
    root = Path(root) if root is not None else DEFAULT_ROOT
    paths = [root / name for name in _FILES[split]]
    for path in paths:
        if not path.exists():
            raise AvsearchInputError(
                f"{path} not found: Fashion-MNIST's images come from Debian's "
                "dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)")
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise AvsearchInputError(f"{root}: images {images.shape} and labels {labels.shape} "
                                 "do not pair up")
    return images, labels.astype(np.int64)
