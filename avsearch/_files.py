"""Writing and hashing files: what every artifact writer shares.

``atomic_write`` is why no half-written file ever stands under a complete artifact's name
(write a temporary file beside the target, then rename); ``sha256_file`` is the digest that
``.arch`` files, exported programs and the built-in data record.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_write", "sha256_file", "write_npz", "read_checked_npz"]


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in blocks of 1 MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write to a temporary file beside ``path`` and rename it, so no half-written file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; artifacts get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write an ``.npz`` whose bytes depend only on ``arrays`` (fixed zip timestamps and
    modes, no pickles), so a data builder can reproduce a shipped file byte for byte; like
    :func:`atomic_write`, under a temporary name renamed at the end. Returns ``path``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in arrays.items():
            one = io.BytesIO()
            np.lib.format.write_array(one, np.asarray(arr, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, one.getvalue(), compresslevel=9)
    atomic_write(path, buf.getvalue())
    return Path(path)


def read_checked_npz(path: str | os.PathLike, what: str, expected_sha256: str | None,
                     rebuild: str) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of a built data file and its sha256, checked against ``expected_sha256``
    (None: not checked). ``what`` names the data set in messages, ``rebuild`` says how to
    make the file again.

    Raises:
        AvsearchInputError: the file is missing, fails the checksum or is not a readable
            ``.npz`` without pickles.
    """
    from avsearch.errors import AvsearchInputError

    path = Path(path)
    if not path.is_file():
        raise AvsearchInputError(f"{path}: {what} data file not found (reinstall avsearch, or "
                                 f"rebuild it: {rebuild})")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise AvsearchInputError(f"{path}: checksum mismatch (sha256 {digest[:16]}..., expected "
                                 f"{expected_sha256[:16]}...): the {what} file is corrupt or "
                                 f"not the shipped one")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, digest
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise AvsearchInputError(f"{path}: not a readable {what} file ({e})") from None
