"""Building avclips (:mod:`avsearch.data.avclips` says what the data set is): clips composed
of Fashion-MNIST images and captions written from WordNet's synsets.

Seed 0 and the default sizes give the shipped file byte for byte (with the same numpy and
zlib, and Debian's Fashion-MNIST and WordNet 3.0 files). ``avsearch data build avclips`` runs
:func:`build_avclips`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from avsearch._files import sha256_file
from avsearch.data._npz import write_npz
from avsearch.data.avclips import CLASSES, FORMAT_VERSION, LENGTH, SIDE, SIZES, SPLIT_NAMES
from avsearch.data.fashion_mnist import DEFAULT_ROOT as FASHION_ROOT
from avsearch.data.fashion_mnist import load_fashion_mnist
from avsearch.data.wordnet import DEFAULT_ROOT as WORDNET_ROOT
from avsearch.data.wordnet import hypernym_chain, read_synset
from avsearch.errors import AvsearchInputError

__all__ = ["build_avclips", "SYNSETS", "Lexicon", "lexicon", "caption"]

# WordNet 3.0 noun synsets of Fashion-MNIST's classes (offsets in data.noun), in label order
SYNSETS = (3595614,   # jersey, T-shirt, tee shirt
           4489008,   # trouser, pant
           4021028,   # pullover, slipover
           3236735,   # dress, frock
           3057021,   # coat
           4133789,   # sandal
           4197391,   # shirt
           3472535,   # gym shoe, sneaker, tennis shoe
           2774152,   # bag, handbag, pocketbook, purse
           2872752)   # boot
# words the synsets lack or give in the singular only (Fashion-MNIST's own class names)
EXTRA_WORDS = {0: ("top",), 9: ("ankle boot",)}
PLURAL = {"trouser": "trousers", "pant": "pants"}     # nouns used in the plural
P_OBJECTS = (0.25, 0.5, 0.25)                         # 1, 2 or 3 objects per clip
MIN_SEGMENT = 2
SHIFT = 2                                             # pixels each way
CONTRAST = (0.7, 1.0)
DARK, PALE = 0.45, 0.70                               # mean ink below / above: an adjective
CAPTIONS_PER_CLIP = 2


@dataclass(frozen=True)
class Lexicon:
    """What a caption may say of one class: its names, hypernyms and definition."""

    names: tuple[str, ...]
    hypernyms: tuple[str, ...]
    definition: str


def _clean(definition: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\([^)]*\)", "", definition)).strip(" ,")


def lexicon(root: Path | str | None = None) -> list[Lexicon]:
    """Per class (label order) its words from WordNet: the synset's words (plural where the
    noun is used so) and Fashion-MNIST's extra name, the first words of two hypernyms, and
    the definition without parentheses."""
    out = []
    for c, offset in enumerate(SYNSETS):
        syn = read_synset(offset, root)
        names = [PLURAL.get(w, w) for w in syn.words if w.lower() != "jersey"] \
            + list(EXTRA_WORDS.get(c, ()))
        hypers = [h.words[0] for h in hypernym_chain(syn, 2, root)]
        out.append(Lexicon(tuple(dict.fromkeys(names)), tuple(hypers), _clean(syn.definition)))
    return out


def _article(phrase: str) -> str:
    word = phrase.split()[0]
    if word in PLURAL.values():
        return "a pair of " + phrase
    return ("an " if word[0].lower() in "aeiou" else "a ") + phrase


def _mention(rng: np.random.Generator, lex: Lexicon, ink: float) -> str:
    """One object in words: a name, the definition, or both, maybe with an adjective."""
    name = str(rng.choice(lex.names))
    adjective = ""
    if rng.random() < 0.5:
        if ink < DARK:
            adjective = str(rng.choice(["dark", "dim", "dark-toned"])) + " "
        elif ink > PALE:
            adjective = str(rng.choice(["pale", "light", "bright"])) + " "
    form = int(rng.integers(5))
    if form == 0:
        return _article(adjective + name)
    if form == 1:
        return lex.definition
    if form == 2:
        return f"{_article(adjective + name)}, {lex.definition}"
    if form == 3 and lex.hypernyms:
        return f"{_article(adjective + name)}, a kind of {rng.choice(lex.hypernyms)}"
    return f"what looks like {_article(adjective + name)}"


_VERBS = ("appears", "is shown", "comes into view", "can be seen")
_SINGLE = ("{0} {v}", "a clip of {0}", "we see {0}", "footage showing {0}", "only {0} {v}",
           "a short video in which {0} {v}")
_ORDERED = ("{0}, then {1}", "first {0}; after that {1}", "a clip of {0} followed by {1}",
            "{0} {v}, and later {1} {v2}", "we see {0} and then {1}",
            "in this video {0} is followed by {1}", "{1} {v} after {0}")
_ORDERED3 = ("{0}, then {1}, then {2}", "first {0}; then {1}; finally {2}",
             "{0} {v}, followed by {1} and then {2}", "we see {0}, {1} and then {2}, in that order",
             "a clip of {0}, after which {1} {v} and finally {2}")
_UNORDERED = ("footage showing {0} and {1}", "a clip with {0} and {1} in it",
              "{0} and {1} both {vp}")


def caption(rng: np.random.Generator, mentions: list[str]) -> str:
    """One sentence over the clip's objects in order (unordered frames shuffle them)."""
    v, v2 = rng.choice(_VERBS, 2, replace=False)
    vp = str(rng.choice(["appear", "are shown", "can be seen"]))
    if len(mentions) == 1:
        return str(rng.choice(_SINGLE)).format(mentions[0], v=v)
    if rng.random() < 0.25:
        order = [mentions[i] for i in rng.permutation(len(mentions))]
        head = ", ".join(order[:-1])
        return str(rng.choice(_UNORDERED)).format(head, order[-1], vp=vp)
    frames = _ORDERED if len(mentions) == 2 else _ORDERED3
    return str(rng.choice(frames)).format(*mentions, v=v, v2=v2)


def _segments(rng: np.random.Generator, k: int) -> np.ndarray:
    """Segment lengths of k objects over LENGTH steps, each at least MIN_SEGMENT."""
    return MIN_SEGMENT + rng.multinomial(LENGTH - MIN_SEGMENT * k, [1.0 / k] * k)


def _frame(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """One step of an object: shifted, contrast-scaled, float64 in [0, 1] at 28x28."""
    dy, dx = rng.integers(-SHIFT, SHIFT + 1, size=2)
    out = np.zeros((28, 28))
    src = image.astype(np.float64) / 255.0
    ys, xs = slice(max(dy, 0), 28 + min(dy, 0)), slice(max(dx, 0), 28 + min(dx, 0))
    yt, xt = slice(max(-dy, 0), 28 + min(-dy, 0)), slice(max(-dx, 0), 28 + min(-dx, 0))
    out[ys, xs] = src[yt, xt]
    return out * rng.uniform(*CONTRAST)


def _pool(frame: np.ndarray) -> np.ndarray:
    f = 28 // SIDE
    return frame.reshape(SIDE, f, SIDE, f).mean(axis=(1, 3)).reshape(-1)


def _ink(image: np.ndarray) -> float:
    on = image[image > 0]
    return float(on.mean()) / 255.0 if on.size else 0.0


def build_avclips(out_dir: str | Path, seed: int = 0, *, sizes: Mapping[str, int] | None = None,
                  images_root: Path | str | None = None, wordnet_root: Path | str | None = None,
                  progress: bool = False) -> Path:
    """Build avclips into ``out_dir/avclips.npz`` (written atomically; an old file is
    replaced) and return its path. ``sizes`` (train/val/test clips) defaults to
    :data:`~avsearch.data.avclips.SIZES`; other sizes make a smaller or larger set.

    Raises:
        AvsearchInputError: Fashion-MNIST's or WordNet's files are missing (the message names
            the Debian package), or the sizes are not positive or exceed the images.
    """
    from tqdm import tqdm

    sizes = dict(SIZES if sizes is None else sizes)
    if set(sizes) != set(SPLIT_NAMES) or any(int(n) < 1 for n in sizes.values()):
        raise AvsearchInputError(f"avclips sizes must give train, val and test as positive "
                                 f"numbers, got {sizes}")
    lex = lexicon(wordnet_root)
    fm_train, y_train = load_fashion_mnist("train", images_root)
    fm_test, y_test = load_fashion_mnist("test", images_root)
    image_rng, clip_rng, text_rng = (np.random.default_rng(s)
                                     for s in np.random.SeedSequence(seed).spawn(3))
    half = image_rng.permutation(len(fm_test))
    pools = {"train": (fm_train, y_train, np.arange(len(fm_train))),
             "val": (fm_test, y_test, np.sort(half[:len(half) // 2])),
             "test": (fm_test, y_test, np.sort(half[len(half) // 2:]))}
    arrays: dict[str, np.ndarray] = {}
    captions: dict[str, list[list[str]]] = {}
    for s in SPLIT_NAMES:
        images, labels, rows = pools[s]
        by_class = [list(image_rng.permutation(rows[labels[rows] == c])) for c in range(10)]
        n = int(sizes[s])
        visual = np.zeros((n, LENGTH, SIDE * SIDE), np.uint8)
        multi = np.zeros((n, len(CLASSES)), np.uint8)
        objects = np.full((n, 3), -1, np.int16)
        sources = np.full((n, 3), -1, np.int32)
        steps = np.full((n, LENGTH, 2), -1, np.int32)
        texts = []
        for i in tqdm(range(n), desc=f"clips {s}", unit="clip", disable=not progress):
            k = int(clip_rng.choice(3, p=P_OBJECTS)) + 1
            classes = clip_rng.choice(len(CLASSES), k, replace=False)
            picked = []
            for c in classes:
                if not by_class[c]:
                    raise AvsearchInputError(f"avclips: {n} {s} clips need more "
                                             f"{CLASSES[c]!r} images than the split has")
                picked.append(int(by_class[c].pop()))
            t = 0
            for j, length in enumerate(_segments(clip_rng, k)):
                for step in range(int(length)):
                    frame = _frame(clip_rng, images[picked[j]])
                    steps[i, t, 0] = picked[j]
                    if step == 0 and j > 0:           # cross-fade from the previous object
                        frame = 0.5 * frame + 0.5 * _frame(clip_rng, images[picked[j - 1]])
                        steps[i, t, 1] = picked[j - 1]
                    visual[i, t] = np.round(np.clip(_pool(frame), 0, 1) * 255).astype(np.uint8)
                    t += 1
            multi[i, classes] = 1
            objects[i, :k], sources[i, :k] = classes, picked
            texts.append([caption(text_rng, [_mention(text_rng, lex[c], _ink(images[p]))
                                             for c, p in zip(classes, picked)])
                          for _ in range(CAPTIONS_PER_CLIP)])
        arrays.update({f"{s}/visual": visual, f"{s}/labels": multi, f"{s}/objects": objects,
                       f"{s}/images": sources, f"{s}/steps": steps})
        captions[s] = texts
    fashion = Path(images_root) if images_root is not None else FASHION_ROOT
    wordnet = Path(wordnet_root) if wordnet_root is not None else WORDNET_ROOT
    meta = {"format": FORMAT_VERSION, "name": "avclips", "seed": int(seed),
            "classes": list(CLASSES), "synsets": list(SYNSETS), "sizes": sizes,
            "sources": {"fashion-mnist": {p.name: sha256_file(p)
                                          for p in sorted(fashion.glob("*-ubyte.gz"))},
                        "wordnet data.noun": sha256_file(wordnet / "data.noun")},
            "description": "clips of 1-3 Fashion-MNIST objects (10 steps, 14x14) with two "
                           "captions each written from WordNet 3.0",
            "captions": captions}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return write_npz(Path(out_dir) / "avclips.npz", arrays)
