"""``load_dataset``: what ``--data`` names, dispatched to its loader.

This module sits above the loaders (:mod:`avsearch.data.avdigits`, :mod:`avsearch.data.avnas`,
:mod:`avsearch.data.ssvh`) and the :class:`~avsearch.data.dataset.Dataset` they produce, so none
of them imports another for a side effect: the built-in data sets are registered here.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from avsearch.data import avdigits, fashion4
from avsearch.data.dataset import Dataset
from avsearch.errors import AvsearchInputError
from avsearch.registry import Registry

__all__ = ["load_dataset", "register_builtin", "DATASETS"]

# the data sets ``--data`` names (beside files and folders): a loader each
DATASETS: Registry[Callable[[], Dataset]] = Registry("data set")
DATASETS.register("avdigits", avdigits.load_avdigits)
DATASETS.register("fashion4", fashion4.load_fashion4)


def register_builtin(name: str, loader: Callable[[], Dataset]) -> None:
    """Make ``--data name`` load a data set: ``loader()`` returns it."""
    DATASETS.register(name, loader)


def load_dataset(spec: str | Path) -> Dataset:
    """Load ``--data``: a built-in name, an AV-NAS JSON config, an SSVH folder, or an ``.npz``
    that ``avsearch data build avdigits [--variant NAME]`` or ``avsearch data build fashion4``
    wrote (its sha256 is recorded in ``info``, not checked against the shipped file's), optionally
    followed by ``:MODALITIES`` to keep some of its modalities (:meth:`Dataset.select`),
    e.g. ``avdigits:visual+audio``."""
    from avsearch.data import avnas, ssvh   # h5py and scipy: only when a file is read

    text = str(spec)
    base, sep, modalities = text.rpartition(":")
    if sep and text not in DATASETS and not Path(text).exists() and base:
        return load_dataset(base).select(modalities)
    if text in DATASETS:
        return DATASETS.get(text)()
    path = Path(text)
    if path.is_dir():
        return ssvh.load_ssvh(path)
    if path.suffix.lower() == ".json":
        return avnas.load_avnas(path)
    if path.suffix.lower() == ".npz" and path.exists():
        loader = fashion4.load_fashion4 if _built_name(path).startswith("fashion4") \
            else avdigits.load_avdigits
        return loader(path, expected_sha256=None)
    if not path.exists():
        raise AvsearchInputError(f"{path}: no such file or folder, and not a built-in data set "
                                 f"(built-in: {', '.join(DATASETS.names())})")
    raise AvsearchInputError(f"{path}: expected an AV-NAS JSON config (.json), an SSVH folder "
                             f"or an avdigits .npz")


def _built_name(path: Path) -> str:
    """The ``name`` in a built-in data set's ``.npz`` metadata ("" when it has none): which
    loader reads it. The loader then checks the file properly and names what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"].item())) if "meta" in z.files else {}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return ""
    return str(meta.get("name", "")) if isinstance(meta, dict) else ""
