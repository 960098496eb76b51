"""``fashion4``: the built-in image data set (multi-label image hashing, as on MS-COCO): what it
is, and its loader. The builder is :mod:`avsearch.data.fashion4_builder`.

Items are 56x56 **composites of real Fashion-MNIST images** (Debian's ``dataset-fashion-mnist``,
read through :mod:`avsearch.data.fashion_mnist`): a 2x2 grid of 28x28 quadrants, each holding
one Fashion-MNIST image or left blank. An item shows 1, 2 or 3 distinct classes (probabilities
0.35 / 0.45 / 0.20) in as many quadrants or one more (a class may appear twice), at random
positions; its **labels** are the multi-hot set of the classes shown (10 classes, 1.84 per
item on average). Relevance is sharing a label, as in the image-hashing papers: two random items are
relevant to each other 32 % of the time (measured on the shipped file).

**Features** (what VGG16 fc7 is in the papers, which cannot be downloaded here): a small CNN
(conv 32-64-128 with 3x3 kernels, batch norm, max-pooling, global average pooling, a 128-unit
ReLU layer "fc7" and a 10-way classifier) is trained to classify *single* Fashion-MNIST images
from a pool of 1,000 per class that no composite uses; a composite's feature is that network's
fc7 on the whole 56x56 composite (the convolutions run over all four quadrants and the global
pooling mixes them, as fc7 mixes the objects of a photograph), 128-d, taken before fc7's ReLU:
after it a quarter of this small network's units never fire, which would leave fewer
informative dimensions than the 128 bits the papers hash to.

**Auxiliary semantics** (LAGNH's detected objects, Faster R-CNN's in the paper): the same CNN
run as a *detector* on each non-blank quadrant, cropped from the composite with its box shifted
by up to 3 pixels in each direction (imprecise region proposals: a neighbour's edge bleeds in);
a class is detected when its softmax probability in some quadrant reaches 0.5. The tags are
0/1, one per class (the detector's vocabulary is the 10 Fashion-MNIST classes, as the authors'
code's auxiliary vector has the evaluation classes' dimensions), and deliberately imperfect,
as real detections are: the file's metadata (``info["detection"]``) records their precision and
recall against the labels and how many items' tags equal their labels exactly (measured on the
shipped file: precision 0.75, recall 0.70, exact on 0.46 of the items; the tests compute them
again; the CNN classifies 0.82 of held-out single images right). They are :attr:`Split.aux`:
an objective may read them, never the labels.

**Splits** (image-hashing protocol): ``train`` 5,000 items (fit the hash function), ``val``
1,000 (model selection), ``test`` 2,000 (the queries), ``retrieval`` 12,000 (the database the
queries search; val queries search it too, since it holds no test item). Every Fashion-MNIST
image (the 60,000 training and 10,000 test images together) is used by at most one of: the
CNN's pool, train, val, test, retrieval; within a split an image appears at most once, unless
its class's share of images runs out (then the split reuses its own images; the metadata
counts reuses: none in the shipped file). ``info["provenance"][split]`` gives each item's
source image per quadrant (index into the 70,000, ``-1`` = blank).

Why these sizes: 20,000 items x 128 float16 features is 4.8 MB compressed, the most we ship; the
training set is in the thousands as in the papers (LAGNH trains on 5,000 MS-COCO images), and
the database is several times larger than it, large enough for MAP@1000.

Storage: ``builtin/fashion4.npz``: per split ``features`` (N, 128) float16, ``labels`` and
``tags`` (N, 10) uint8, ``source`` (N, 4) int32; ``cnn/pool`` (the CNN's 10,000 training
images, ``info["provenance"]["cnn_pool"]``); and ``meta`` (JSON: seed, versions, the CNN's
recipe and accuracy, the detection statistics). :data:`DATA_SHA256` is checked on every load.
``avsearch data build fashion4 --out DIR`` rebuilds it bit for bit (minutes: the CNN trains
5 epochs on one thread) when torch is :data:`TORCH_VERSION` and the CPU has the same vector
instruction set as the machine that built it (:data:`CPU_CAPABILITY`, what
``torch.backends.cpu.get_cpu_capability()`` says, and :data:`CPU_NATIVE_BF16`: an AVX-512 CPU
without native bf16 gave another file; :func:`rebuild_differs` says why one may): the builder
trains and runs the CNN on one thread with deterministic algorithms and fixed seeds, but
another torch or another instruction set may round a float differently. Everything else
(which images, where, the crops) is drawn from numpy's generators seeded from the seed alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avsearch.data._npz import read_npz
from avsearch.data.dataset import SPLITS, Dataset, Split
from avsearch.data.fashion_mnist import CLASS_NAMES
from avsearch.errors import AvsearchInputError

__all__ = ["DATA_FILE", "DATA_SHA256", "TORCH_VERSION", "CPU_CAPABILITY", "CPU_NATIVE_BF16",
           "FORMAT_VERSION", "SIZES", "load_fashion4", "rebuild_differs"]

DATA_FILE = Path(__file__).resolve().parent / "builtin" / "fashion4.npz"
# sha256 of DATA_FILE; checked on load. Rebuilding with seed 0 must give the same digest.
DATA_SHA256 = "b31a95351f9b576741fbb900827aea5120b8a35e707dc2bbee757dc0ca69b144"
# what built the shipped file: another torch or instruction set may round differently
TORCH_VERSION = "2.13.0+cpu"
CPU_CAPABILITY = "AVX512"
CPU_NATIVE_BF16 = True   # AVX-512 BF16 or AMX: oneDNN and MKL pick other kernels without it
FORMAT_VERSION = 1
SIZES = {"train": 5000, "val": 1000, "test": 2000, "retrieval": 12000}
MODALITY = "visual"
REBUILD = "avsearch data build fashion4"


def load_fashion4(path: str | Path | None = None, *,
                  expected_sha256: str | None = DATA_SHA256) -> Dataset:
    """Load fashion4 (the shipped file by default) or a file the builder wrote.

    Items are images: one 128-d feature vector each (modality ``visual``, length 1), labels
    (N, 10) multi-hot, auxiliary semantics (:attr:`Split.aux`) the detector's (N, 10) tags.
    ``info`` records the file's path and sha256, its metadata and each item's source images
    (``info["provenance"][split]``, (N, 4), -1 = blank quadrant).

    Args:
        path: a fashion4 ``.npz``; default the one shipped in the package.
        expected_sha256: digest the file must have (default: the shipped file's); ``None``
            skips the check (a file built with another seed or size).

    Raises:
        AvsearchInputError: the file is missing, corrupt, fails the checksum, or its arrays
            disagree in items or widths.
    """
    path = Path(path) if path is not None else DATA_FILE
    arrays, meta, digest = read_npz(path, "fashion4", FORMAT_VERSION, REBUILD, expected_sha256)
    splits: dict[str, Split] = {}
    provenance: dict[str, np.ndarray] = {}
    try:
        num_class = len(meta["classes"])
        name = str(meta["name"])
        for split in SPLITS:
            feats = arrays[f"{split}/features"].astype(np.float32)
            labels = arrays[f"{split}/labels"].astype(bool)
            tags = arrays[f"{split}/tags"].astype(np.float32)
            source = arrays[f"{split}/source"]
            n = len(feats)
            if feats.ndim != 2 or labels.shape != (n, num_class) or len(tags) != n \
                    or tags.ndim != 2 or source.shape != (n, 4):
                raise AvsearchInputError(
                    f"{path}: fashion4 split {split!r} arrays disagree: features {feats.shape}, "
                    f"labels {labels.shape}, tags {tags.shape}, source {source.shape}")
            if not np.isfinite(feats).all():
                raise AvsearchInputError(f"{path}: fashion4 split {split!r} has NaN or "
                                         f"infinite features")
            ids = [f"{name}-{split}-{i:05d}" for i in range(n)]
            splits[split] = Split(ids=ids, labels=labels, features={MODALITY: feats}, aux=tags)
            provenance[split] = source
        provenance["cnn_pool"] = arrays["cnn/pool"]
        info: dict[str, Any] = {"path": str(path), "sha256": digest, "provenance": provenance}
        info.update({k: meta[k] for k in ("seed", "classes", "torch", "cpu_capability", "cnn",
                                          "detection", "reused_images", "description")})
    except KeyError as e:
        raise AvsearchInputError(f"{path}: not a complete fashion4 file (missing {e})") from None
    widths = {int(s.features[MODALITY].shape[1]) for s in splits.values()}
    aux_widths = {int(s.aux.shape[1]) for s in splits.values()}
    if len(widths) != 1 or len(aux_widths) != 1:
        raise AvsearchInputError(f"{path}: fashion4 splits disagree in feature widths {widths} "
                                 f"or tag widths {aux_widths}")
    return Dataset(name=name, source="fashion4" if path == DATA_FILE else str(path),
                   modalities={MODALITY: widths.pop()}, length=1, num_class=num_class,
                   splits=splits, info=info)


def class_names() -> list[str]:
    """The 10 classes, in label order (Fashion-MNIST's)."""
    return list(CLASS_NAMES)


def rebuild_differs() -> str | None:
    """Why a rebuild on this machine may not give the shipped file bit for bit (another torch,
    vector instruction set or bf16 support than the builder's), or None."""
    import torch

    from avsearch._threads import cpu_has_native_bf16

    here = (torch.__version__, torch.backends.cpu.get_cpu_capability(), cpu_has_native_bf16())
    if here == (TORCH_VERSION, CPU_CAPABILITY, CPU_NATIVE_BF16):
        return None
    bf16 = {True: "with", False: "without"}
    return (f"the shipped file was built with torch {TORCH_VERSION} on a {CPU_CAPABILITY} CPU "
            f"{bf16[CPU_NATIVE_BF16]} native bf16; here torch {here[0]} on a {here[1]} CPU "
            f"{bf16[here[2]]} it")
