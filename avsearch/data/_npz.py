"""The built-in data sets' file format, shared by their builders and loaders.

A built-in data set (``avdigits``, ``fashion4``) ships as one ``.npz`` of named arrays plus a
``meta`` array holding a JSON object (``format`` among its keys). :func:`write_npz` writes it
so that its bytes depend only on the arrays (fixed zip timestamps and modes), which is what
lets a builder reproduce the shipped file byte for byte and a checksum pin it;
:func:`read_npz` checks the digest, the zip and the format and says what is wrong, naming the
file, as a one-line input error.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from avsearch._files import sha256_file
from avsearch.errors import AvsearchInputError

__all__ = ["write_npz", "read_npz"]


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` as an ``.npz`` whose bytes depend only on the arrays (fixed
    zip timestamps and modes, deflate level 9), atomically: a temporary file beside ``path`` is
    renamed onto it, so no half-written file ever stands under its name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(arr, order="C"), allow_pickle=False)
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info.create_system = 3
                zf.writestr(info, buf.getvalue(), compresslevel=9)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_npz(path: str | Path, what: str, format_version: int, rebuild: str,
             expected_sha256: str | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    """``(arrays, meta, sha256)`` of a built-in data set's file, ``meta`` popped from the
    arrays and parsed.

    Args:
        path: the ``.npz``.
        what: the data set's name, for messages (``"avdigits"``).
        format_version: the ``meta["format"]`` this avsearch reads.
        rebuild: how to make the file again, for messages (``"avsearch data build avdigits"``).
        expected_sha256: the digest the file must have; ``None`` skips the check.

    Raises:
        AvsearchInputError: the file is missing, fails the checksum, is not a readable zip of
            arrays, has no ``meta`` or another format.
    """
    path = Path(path)
    if not path.is_file():
        raise AvsearchInputError(f"{path}: {what} data file not found (reinstall avsearch, or "
                                 f"rebuild it: the command '{rebuild}')")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise AvsearchInputError(f"{path}: checksum mismatch (sha256 {digest[:16]}..., expected "
                                 f"{expected_sha256[:16]}...): the {what} file is corrupt or "
                                 f"not the shipped one")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise AvsearchInputError(f"{path}: not a readable {what} file ({e})") from None
    if "meta" not in arrays:
        article = "an" if what[:1] in "aeiou" else "a"
        raise AvsearchInputError(f"{path}: not {article} {what} file (no 'meta' array; write one "
                                 f"with {rebuild})")
    try:
        meta = json.loads(str(arrays.pop("meta").item()))
    except ValueError as e:
        raise AvsearchInputError(f"{path}: not a readable {what} file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != format_version:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise AvsearchInputError(f"{path}: {what} format {found!r}, "
                                 f"this avsearch reads format {format_version}")
    return arrays, meta, digest
