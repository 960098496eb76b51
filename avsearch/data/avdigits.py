"""``avdigits``: the built-in audio-visual data set: what it is, its shapes, and its loader.

The builder (speech synthesis, composition) is :mod:`avsearch.data.avdigits_builder`.

Each video is 25 time steps of two streams, composed from real recordings:

* **visual** (64-d per step): one 8x8 handwritten digit image from scikit-learn's bundled
  ``load_digits`` (UCI optical digits, 1,797 images), scaled to [0, 1].
* **audio** (40-d per step): the log-mel spectrum of one 80 ms segment of a 2.0 s clip in which
  Debian's ``espeak-ng`` speaks a digit word. Per segment: 12 STFT frames (Hann window 1024,
  hop 147 at 22,050 Hz), 40 triangular HTK-mel bands from 100 Hz to 8 kHz, log power in dB,
  averaged over the segment's frames, then mapped to [0, 1] by ``(dB + 100) / 90`` clipped.

Classes (25): every pair (visual digit v in 0-4, spoken digit a in five-nine); class
``5 * v + (a - 5)``, named ``"v{v}-a{a}"``. The visual stream alone only identifies v, the
audio stream alone only a, so either modality alone is right on the class about 1 time in 5 at
best, and only the fused streams identify it (numbers in the tests). Labels are one-hot.

Temporal structure (so that *where* things happen matters a little):

* visual: the class digit is on screen for a window of 6-12 consecutive steps at a random
  position (one source image, each frame shifted by up to one pixel and scaled in contrast
  0.8-1.0). The other steps show either nothing or, with probability 1/2, a faint (contrast
  0.35) image of another digit (two distractor images per video). Every frame gets Gaussian
  pixel noise (sigma 0.06).
* audio: the class word at -24 to -20 dBFS RMS at a random position, over white background
  noise at -50 to -44 dBFS; with probability 1/2 a second, 12-18 dB quieter word of another
  digit (same voice) at another position, never overlapping.

Mean pooling over time mixes the class digit with the distractors and loses the order of a
word's sounds; a model that looks at the steps in time order can tell them apart (by contrast,
loudness, and the spectral sequence of the word). Measured on the shipped file (val): nearest
class mean on mean-pooled, standardised features gets 0.16 (visual), 0.07 (audio), 0.29
(both) (``tests/test_avdigits.py::test_neither_modality_alone_reaches_the_fused_result``
computes them); LSH / ITQ (64 bits) on mean-pooled features get test mAP@100 of about 0.03
(the baselines of ``make demo``, README). How far a model that reads the steps in order gets
is what the temporal CNN baseline of every labelled ``avsearch run`` reports
(``metrics.json``, ``baselines.CNN``).

Sizes: train 3,000, val 600, test 600 videos (classes balanced: 120 / 24 / 24 per class);
``retrieval`` (the database) is the train split, as in AV-NAS (queries = val or test).

Disjointness: the 1,797 source images are split per digit 60/20/20 into train/val/test pools
and every frame of a video (class image and distractors) comes from its split's pool. Voices
are espeak-ng variants (96 of the 97 listed, e.g. ``klatt3``, ``f2``, ``Alicia``), each with a
fixed English accent (``en-us``, ``en-gb-scotland``, ...); 64/16/16 variants go to
train/val/test.
Each (voice, digit) is synthesised at 2 speed/pitch settings (speed 140-220 wpm, pitch 25-75).
Provenance is stored per video: the source image of every step (``-1`` = no image) and the
voice, plus the utterance table (voice, digit, speed, pitch) in the metadata.

Storage: ``builtin/avdigits.npz`` (about 8 MB), both streams quantised to uint8
(``round(255 x)``), written as a zip with fixed timestamps so that the builder reproduces it
byte for byte; :data:`DATA_SHA256` is checked on every load, which needs only numpy.
``avsearch data build avdigits --out DIR [--seed N]`` rebuilds it (needs ``espeak-ng`` and
scikit-learn, which brings scipy; about a minute on two cores); seed 0 gives the shipped file
when the espeak-ng version is :data:`ESPEAK_VERSION` (and numpy, scipy's FFT and zlib compute
the same bits as on the machine that built it).

Variants: everything above is one :class:`Shape` (:data:`DEFAULT`). The builder takes any
shape (which digits are shown and spoken, split sizes, length, window, image side, mel bands,
distractor probabilities, voices per split), and :data:`SHAPES` names a few, built with
``avsearch data build avdigits --variant NAME`` into ``avdigits-NAME.npz`` and loaded with
``--data PATH.npz`` (the file's sha256 is recorded, not checked): data sets of other shapes on
which to check that defaults tuned on avdigits still hold. Each variant draws from its own
random streams (the seed combined with its name), the default from the seed alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.data._npz import read_npz
from avsearch.data.dataset import SPLITS, Dataset, Split
from avsearch.errors import AvsearchInputError

__all__ = ["DATA_FILE", "DATA_SHA256", "ESPEAK_VERSION", "Shape", "DEFAULT", "SHAPES",
           "get_shape", "class_names", "load_avdigits"]

DATA_FILE = Path(__file__).resolve().parent / "builtin" / "avdigits.npz"
# sha256 of DATA_FILE; checked on load. Rebuilding with seed 0 must give the same digest.
DATA_SHA256 = "1728412a28e0bb409ea4eab2bf220deb57a26ab6cdf3e7b37d60569f769f3e30"
# espeak-ng version that synthesised the shipped file (another version may sound different).
ESPEAK_VERSION = "1.51"
FORMAT_VERSION = 1

LENGTH = 25
VISUAL_DIGITS = (0, 1, 2, 3, 4)
SPOKEN_DIGITS = (5, 6, 7, 8, 9)
SIZES = {"train": 3000, "val": 600, "test": 600}
VOICE_SPLIT = {"train": 64, "val": 16, "test": 16}
PROSODIES = 2                       # speed/pitch settings per (voice, digit)
WINDOW = (6, 12)                    # steps the class digit is on screen (inclusive range)
IMAGE_SIDE = 8                      # load_digits' images are 8x8
N_MELS = 40                         # mel bands of the audio stream
P_DISTRACTOR_FRAME = 0.5            # a step outside the window shows a faint other digit
P_DISTRACTOR_WORD = 0.5

# espeak-ng voice variants (files under voices/!v): the voices of every split
VARIANTS = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Demonic", "Denis", "Diogo",
    "Gene", "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Mario", "Michael", "Mike", "Nguyen",
    "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot", "adam",
    "anika", "anikaRobot", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris",
    "caleb", "croak", "david", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5", "fast",
    "grandma", "grandpa", "gustave", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "linda", "m1", "m2", "m3", "m4",
    "m5", "m6", "m7", "m8", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul",
    "pedro", "quincy", "rob", "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4",
    "robosoft5", "robosoft6", "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph2",
    "steph3", "travis", "victor", "zac",
)

SPLIT_NAMES = tuple(s for s in SPLITS if s != "retrieval")   # retrieval is the train split


@dataclass(frozen=True)
class Shape:
    """The shape of an avdigits-like data set; :data:`DEFAULT` is the shipped one.

    Class ``len(spoken) * i + j`` is (visual digit ``visual[i]``, spoken digit ``spoken[j]``).
    Split sizes must be multiples of the class count (classes balanced in every split).
    """

    name: str = "default"
    visual: tuple[int, ...] = VISUAL_DIGITS      # digits shown
    spoken: tuple[int, ...] = SPOKEN_DIGITS      # digits spoken
    sizes: tuple[int, int, int] = tuple(SIZES[s] for s in SPLIT_NAMES)  # type: ignore
    voices: tuple[int, int, int] = tuple(VOICE_SPLIT[s] for s in SPLIT_NAMES)  # type: ignore
    prosodies: int = PROSODIES                   # speed/pitch settings per (voice, digit)
    length: int = LENGTH                         # time steps of 80 ms
    window: tuple[int, int] = WINDOW             # class digit on screen for this many steps
    side: int = IMAGE_SIDE                       # frames resampled to side x side (visual width)
    mels: int = N_MELS                           # mel bands (audio width)
    p_distractor_frame: float = P_DISTRACTOR_FRAME
    p_distractor_word: float = P_DISTRACTOR_WORD
    summary: str = "the shipped avdigits"

    def __post_init__(self):
        problems = []
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            problems.append("the name must be letters, digits, '-' or '_' (it names the file)")
        for attr in ("visual", "spoken"):
            digits = getattr(self, attr)
            if not digits or len(set(digits)) != len(digits) or not set(digits) <= set(range(10)):
                problems.append(f"{attr} must be distinct digits 0-9, got {digits}")
        n = max(self.num_class, 1)
        if len(self.sizes) != 3 or any(s <= 0 or s % n for s in self.sizes):
            problems.append(f"sizes {self.sizes} must be 3 positive multiples of {n} classes")
        if len(self.voices) != 3 or min(self.voices) < 1 or sum(self.voices) > len(VARIANTS):
            problems.append(f"voices {self.voices}: 3 counts >= 1, at most {len(VARIANTS)} in all")
        if not 1 <= self.window[0] <= self.window[1] <= self.length:
            problems.append(f"window {self.window} must lie within 1..length {self.length}")
        if self.prosodies < 1 or self.side < 2 or not 1 <= self.mels <= 64:
            problems.append("prosodies >= 1, side >= 2 and 1 <= mels <= 64")
        if not (0 <= self.p_distractor_frame <= 1 and 0 <= self.p_distractor_word <= 1):
            problems.append("distractor probabilities must lie in [0, 1]")
        if problems:
            raise ValueError(f"avdigits shape {self.name!r}: " + "; ".join(problems))

    @property
    def num_class(self) -> int:
        return len(self.visual) * len(self.spoken)

    @property
    def split_sizes(self) -> dict[str, int]:
        return dict(zip(SPLIT_NAMES, self.sizes))

    @property
    def split_voices(self) -> dict[str, int]:
        return dict(zip(SPLIT_NAMES, self.voices))

    @property
    def modalities(self) -> dict[str, int]:
        return {"visual": self.side ** 2, "audio": self.mels}

    @property
    def file_name(self) -> str:
        return "avdigits.npz" if self.name == DEFAULT.name else f"avdigits-{self.name}.npz"


DEFAULT = Shape()
# Named variants (`avsearch data build avdigits --variant NAME`): other class counts, fewer
# training videos, other lengths and widths. Each builds in under a minute on 2 cores.
SHAPES: dict[str, Shape] = {s.name: s for s in (
    DEFAULT,
    Shape(name="v30", visual=(0, 1, 2, 3, 4, 5), sizes=(1200, 450, 450),
          summary="30 classes (shown 0-5 x spoken five-nine), 40 training videos per class, "
                  "450 val / 450 test; the shape of issue 12's unshipped data set"),
    Shape(name="few", visual=(6, 7, 8, 9), spoken=(0, 1, 2, 3, 4), sizes=(300, 200, 200),
          voices=(24, 8, 8), length=16, window=(4, 8),
          summary="20 classes (shown 6-9 x spoken zero-four), 15 training videos per class "
                  "from 24 voices, 16 steps"),
    Shape(name="long", visual=(5, 6, 7, 8, 9), spoken=(0, 1, 2, 3, 4), sizes=(1000, 250, 250),
          length=40, window=(8, 16), side=12, mels=32, p_distractor_frame=0.7,
          p_distractor_word=0.7,
          summary="25 classes (shown 5-9 x spoken zero-four) at 40 steps, 12x12 frames (144-d) "
                  "and 32 mel bands, more distractors"),
)}


def get_shape(name: str) -> Shape:
    """The registered variant ``name``.

    Raises:
        AvsearchInputError: no such variant (the message lists them).
    """
    if name not in SHAPES:
        raise AvsearchInputError(f"no avdigits variant {name!r} (variants: "
                                 f"{', '.join(SHAPES)})")
    return SHAPES[name]


def class_names(shape: Shape = DEFAULT) -> list[str]:
    """The class names, ``"v{visual digit}-a{spoken digit}"``, in label order."""
    return [f"v{v}-a{a}" for v in shape.visual for a in shape.spoken]


# ============================================================================ loading
def load_avdigits(path: str | Path | None = None, *,
                  expected_sha256: str | None = DATA_SHA256) -> Dataset:
    """Load the avdigits data set (the shipped file by default), or a built variant.

    The data set's name is the file's (``avdigits``, ``avdigits-v30``, ...); its widths and
    length come from the arrays; ``info`` records the file's path and sha256, and a variant's
    name and shape. ``source`` is ``"avdigits"`` for the shipped file, else the path.

    Args:
        path: an avdigits ``.npz`` file; default the one shipped in the package.
        expected_sha256: digest the file must have (default: the shipped file's); ``None``
            skips the check (e.g. a file built with another seed or shape).

    Raises:
        AvsearchInputError: the file is missing, corrupt, or fails the checksum.
    """
    path = Path(path) if path is not None else DATA_FILE
    arrays, meta, digest = read_npz(path, "avdigits", FORMAT_VERSION,
                                    "avsearch data build avdigits", expected_sha256)

    splits: dict[str, Split] = {}
    provenance: dict[str, dict[str, np.ndarray]] = {}
    try:
        num_class = len(meta["classes"])
        dataset_name = str(meta.get("name", "avdigits"))
        for name in SPLIT_NAMES:
            label = arrays[f"{name}/label"].astype(np.int64)
            labels = np.zeros((len(label), num_class), dtype=bool)
            labels[np.arange(len(label)), label] = True
            features = {"visual": arrays[f"{name}/visual"].astype(np.float32) / 255.0,
                        "audio": arrays[f"{name}/audio"].astype(np.float32) / 255.0}
            ids = [f"{dataset_name}-{name}-{i:05d}" for i in range(len(label))]
            splits[name] = Split(ids=ids, labels=labels, features=features)
            provenance[name] = {"image": arrays[f"{name}/image"],
                                "voice": arrays[f"{name}/voice"],
                                "utterance": arrays[f"{name}/utterance"]}
        info: dict[str, Any] = {"path": str(path), "sha256": digest, "provenance": provenance,
                                "variant": meta.get("variant", DEFAULT.name)}
        info.update({k: meta[k] for k in ("seed", "espeak_ng", "classes", "voices",
                                          "utterances", "split_voices", "description")})
        if "shape" in meta:
            info["shape"] = meta["shape"]
    except KeyError as e:
        raise AvsearchInputError(f"{path}: not a complete avdigits file (missing {e})") from None
    train = splits["train"]
    splits["retrieval"] = Split(ids=train.ids, labels=train.labels, features=train.features)
    length = int(train.features["visual"].shape[1])
    modalities = {m: int(f.shape[-1]) for m, f in train.features.items()}
    if any(f.shape[:2] != (len(split), length) for split in splits.values()
           for f in split.features.values()):
        raise AvsearchInputError(f"{path}: avdigits arrays disagree in videos or steps")
    return Dataset(name=dataset_name, source="avdigits" if path == DATA_FILE else str(path),
                   modalities=modalities, length=length, num_class=num_class, splits=splits,
                   info=info)
