"""The IDX reader behind the Fashion-MNIST-based built-in data, against files written here
byte by byte with ``struct``, and on Debian's real files when they are installed."""
import gzip
import struct

import numpy as np
import pytest

from avsearch.data.fashion_mnist import DEFAULT_ROOT, load_fashion_mnist, read_idx
from avsearch.errors import AvsearchInputError


def _write_idx(path, array, magic_type=0x08):
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, magic_type, array.ndim]))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_read_idx_matches_the_bytes_written(tmp_path):
    images = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    _write_idx(tmp_path / "x.gz", images)
    out = read_idx(tmp_path / "x.gz")
    assert out.shape == (2, 3, 5) and out.dtype == np.uint8
    assert out[1, 2, 4] == 29 and out[0, 1, 0] == 5     # row-major, as IDX stores it


def test_bad_files_name_the_file(tmp_path):
    _write_idx(tmp_path / "float.gz", np.zeros((2, 2)), magic_type=0x0D)
    with pytest.raises(AvsearchInputError, match=r"float\.gz.*unsigned bytes"):
        read_idx(tmp_path / "float.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:     # header says 4 bytes, holds 3
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 4) + b"abc")
    with pytest.raises(AvsearchInputError, match=r"short\.gz.*holds 3 bytes"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "plain").write_bytes(b"not gzip")
    with pytest.raises(AvsearchInputError, match="plain"):
        read_idx(tmp_path / "plain")
    with pytest.raises(AvsearchInputError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)


@pytest.mark.skipif(not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_the_real_test_split():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10   # Fashion-MNIST's test split is balanced
