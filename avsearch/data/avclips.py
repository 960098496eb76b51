"""``avclips``: the built-in video-text data set: what it is, and its loader.

The builder is :mod:`avsearch.data.avclips_builder`; ``avsearch data build avclips`` runs it.

Each item is a short "video" of real images and two English captions of it:

* **visual** (196-d per step, 10 steps): a clip shows 1, 2 or 3 Fashion-MNIST objects of
  distinct classes (probabilities 1/4, 1/2, 1/4), one after the other, each for a segment
  of at least 2 steps; the first step of every later segment blends the two neighbouring
  objects half and half (a cross-fade). Each step is the object's 28x28 image shifted by up
  to 2 pixels each way and scaled in contrast by 0.7-1.0, then averaged over 2x2 blocks to
  14x14 and scaled to [0, 1].
* **text**: two captions per clip, joined (as SPTCH joins a video's captions), written from
  WordNet 3.0 (Debian's ``wordnet-base``): each object is named by one of its synset's words
  ("sneaker", "gym shoe", "tennis shoe"), its definition ("a canvas shoe with a pliable rubber
  sole"), a word and a hypernym ("a sneaker, a kind of shoe") or a word and its definition,
  sometimes with an adjective read off the image ("dark", "pale": its mean ink); the clip
  sentence is one of several frames ("first ..., then ...", "footage showing ... and ...",
  "... is followed by ..."), so no caption is a fixed template of its class.

Labels are multi-hot over Fashion-MNIST's 10 classes (:data:`CLASSES`): two items are
relevant when they share a class, as on MSR-VTT. Chance: about 0.37 of (query, database)
pairs are relevant (``tests/test_avclips.py`` measures it on the shipped file).

Why pixels: the frames are the images themselves, downsampled, not a pretrained network's
features: nothing could be downloaded, and a fixed random or PCA projection would add a
step that must reproduce bit for bit without adding information. 14x14 keeps the classes
apart (Fashion-MNIST's classes are told apart at this size) while the file stays small, and
the task is not trivial: a clip holds several objects in jittered, cross-faded steps, and a
caption names them in changing words, so a hasher must learn which words go with which
shapes.

Sizes: train 2,000, val 500, test 500 clips; ``retrieval`` (the database) is the train split
(queries: val or test, in either modality). Source images are disjoint across splits (train
clips draw from Fashion-MNIST's training images, val and test from two halves of its test
images) and no image appears in two clips. Provenance is stored per clip: the object classes
in order, their source image indices and each step's source(s).

Storage: ``builtin/avclips.npz`` (uint8 frames, ``round(255 x)``; the captions as JSON),
written with fixed zip timestamps so the builder reproduces it byte for byte;
:data:`DATA_SHA256` is checked on every load. The text modality is tokenized on load with a
vocabulary built from the training captions (:mod:`avsearch.data.text`), as for a folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avsearch.data._npz import read_npz
from avsearch.data.dataset import Dataset, Split
from avsearch.data.text import DEFAULT_MAX_TOKENS, Text, Vocabulary
from avsearch.errors import AvsearchInputError

__all__ = ["DATA_FILE", "DATA_SHA256", "CLASSES", "SIZES", "LENGTH", "SIDE", "load_avclips"]

DATA_FILE = Path(__file__).resolve().parent / "builtin" / "avclips.npz"
# sha256 of DATA_FILE; checked on load. Rebuilding with seed 0 must give the same digest.
DATA_SHA256 = "c29a1e54a6e772b50e4b5430e0bd93ce1cd1ac82a14662958da1487d696b939f"
FORMAT_VERSION = 1

CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle boot")          # Fashion-MNIST's, in its label order
SIZES = {"train": 2000, "val": 500, "test": 500}
LENGTH = 10                              # steps per clip
SIDE = 14                                # frames are SIDE x SIDE (visual width SIDE**2)
SPLIT_NAMES = ("train", "val", "test")


def load_avclips(path: str | Path | None = None, *,
                 expected_sha256: str | None = DATA_SHA256) -> Dataset:
    """Load avclips (the shipped file by default, or one ``avsearch data build avclips``
    wrote): modalities ``visual`` (10 steps, 196-d) and ``text`` (token ids, the vocabulary
    of the training captions).

    Raises:
        AvsearchInputError: the file is missing, corrupt, or fails the checksum.
    """
    path = Path(path) if path is not None else DATA_FILE
    arrays, meta, digest = read_npz(path, "avclips", FORMAT_VERSION,
                                    "avsearch data build avclips --out DIR", expected_sha256)
    if meta.get("name") != "avclips":
        raise AvsearchInputError(f"{path}: not an avclips file (it holds {meta.get('name')!r})")
    try:
        captions = meta["captions"]
        vocabulary = Vocabulary.build(" ".join(c) for c in captions["train"])
        encoded = {s: vocabulary.encode([" ".join(c) for c in captions[s]], DEFAULT_MAX_TOKENS)
                   for s in SPLIT_NAMES}
        width = max(e.shape[1] for e in encoded.values())
        splits: dict[str, Split] = {}
        provenance: dict[str, dict[str, np.ndarray]] = {}
        for s in SPLIT_NAMES:
            labels = arrays[f"{s}/labels"].astype(bool)
            ids = [f"avclips-{s}-{i:05d}" for i in range(len(labels))]
            text = np.pad(encoded[s], ((0, 0), (0, width - encoded[s].shape[1])))
            splits[s] = Split(ids=ids, labels=labels,
                              features={"visual": arrays[f"{s}/visual"].astype(np.float32) / 255,
                                        "text": Text(text, vocabulary)})
            provenance[s] = {k: arrays[f"{s}/{k}"] for k in ("objects", "images", "steps")}
        info: dict[str, Any] = {"path": str(path), "sha256": digest, "provenance": provenance,
                                "captions": captions, "text": {
                                    "source": "captions", "tokens": width,
                                    "vocabulary": len(vocabulary),
                                    "max_tokens": DEFAULT_MAX_TOKENS, "min_count": 1}}
        info.update({k: meta[k] for k in ("seed", "classes", "synsets", "sources",
                                          "description")})
    except KeyError as e:
        raise AvsearchInputError(f"{path}: not a complete avclips file (missing {e})") from None
    train = splits["train"]
    splits["retrieval"] = Split(train.ids, train.labels, train.features)
    visual = train.features["visual"]
    if any(len(sp.labels) != len(sp.ids) or sp.features["visual"].shape[1:] != visual.shape[1:]
           or len(sp.features["text"]) != len(sp.ids) for sp in splits.values()):
        raise AvsearchInputError(f"{path}: avclips arrays disagree in clips, steps or widths")
    return Dataset(name="avclips", source="avclips" if path == DATA_FILE else str(path),
                   modalities={"visual": int(visual.shape[2]), "text": len(vocabulary)},
                   length=int(visual.shape[1]), num_class=len(meta["classes"]),
                   splits=splits, info=info)
