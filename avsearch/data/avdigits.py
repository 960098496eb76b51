"""``avdigits``: the built-in audio-visual data set, and its builder.

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

import io
import json
import os
import re
import shutil
import subprocess
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avsearch._files import sha256_file
from avsearch.data.dataset import SPLITS, Dataset, Split
from avsearch.errors import AvsearchInputError

__all__ = ["DATA_FILE", "DATA_SHA256", "ESPEAK_VERSION", "Shape", "DEFAULT", "SHAPES",
           "get_shape", "load_avdigits", "build_avdigits", "espeak_version"]

DATA_FILE = Path(__file__).resolve().parent / "builtin" / "avdigits.npz"
# sha256 of DATA_FILE; checked on load. Rebuilding with seed 0 must give the same digest.
DATA_SHA256 = "1728412a28e0bb409ea4eab2bf220deb57a26ab6cdf3e7b37d60569f769f3e30"
# espeak-ng version that synthesised the shipped file (another version may sound different).
ESPEAK_VERSION = "1.51"
FORMAT_VERSION = 1

LENGTH = 25
VISUAL_DIGITS = (0, 1, 2, 3, 4)
SPOKEN_DIGITS = (5, 6, 7, 8, 9)
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZES = {"train": 3000, "val": 600, "test": 600}
VOICE_SPLIT = {"train": 64, "val": 16, "test": 16}
PROSODIES = 2                       # speed/pitch settings per (voice, digit)
IMAGE_SPLIT = (0.6, 0.2, 0.2)
WINDOW = (6, 12)                    # steps the class digit is on screen (inclusive range)
IMAGE_SIDE = 8                      # load_digits' images are 8x8
NOISE_DBFS = (-50.0, -44.0)         # background noise RMS
WORD_DBFS = (-24.0, -20.0)          # class word RMS
DISTRACTOR_DB = (12.0, 18.0)        # distractor word: this much below the class word
P_DISTRACTOR_FRAME = 0.5            # a step outside the window shows a faint other digit
P_DISTRACTOR_WORD = 0.5

# audio front end
SAMPLE_RATE = 22050                 # espeak-ng's native rate
STEP_SAMPLES = 1764                 # 80 ms per time step -> 2.0 s per clip
HOP = 147                           # 12 STFT frames per step
N_FFT = 1024
N_MELS = 40
F_MIN, F_MAX = 100.0, 8000.0
DB_FLOOR, DB_RANGE = -100.0, 90.0   # feature = clip((dB - DB_FLOOR) / DB_RANGE, 0, 1)

# English accents (espeak-ng base voices) and voice variants (files under voices/!v).
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
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
    if not path.is_file():
        raise AvsearchInputError(f"{path}: avdigits data file not found (reinstall avsearch, "
                                 f"or rebuild it: build_avdigits, the command 'avsearch data "
                                 f"build avdigits')")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise AvsearchInputError(f"{path}: checksum mismatch (sha256 {digest[:16]}..., expected "
                                 f"{expected_sha256[:16]}...): the avdigits file is corrupt or "
                                 f"not the shipped one")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise AvsearchInputError(f"{path}: not a readable avdigits file ({e})") from None
    if "meta" not in arrays:
        raise AvsearchInputError(f"{path}: not an avdigits file (no 'meta' array; write one with "
                                 f"avsearch data build avdigits)")
    try:
        meta = json.loads(str(arrays.pop("meta").item()))
    except ValueError as e:
        raise AvsearchInputError(f"{path}: not a readable avdigits file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise AvsearchInputError(f"{path}: avdigits format {found!r}, "
                                 f"this avsearch reads format {FORMAT_VERSION}")

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



# ============================================================================ building
def _espeak() -> str:
    """Path of ``espeak-ng``, or a clear error naming the Debian package."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AvsearchInputError("espeak-ng not found: building avdigits needs it "
                                 "(Debian/Ubuntu: apt-get install espeak-ng)")
    return exe


def espeak_version() -> str:
    """The version of the espeak-ng that a build would use (an error when there is none)."""
    return _espeak_info(_espeak())[0]


def _espeak_info(exe: str) -> tuple[str, Path | None]:
    """espeak-ng's version string and its data folder."""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"text-to-speech:\s*(\S+)", out)
    d = re.search(r"Data at:\s*(.+)$", out.strip(), re.M)
    return (m.group(1) if m else out.strip()), (Path(d.group(1).strip()) if d else None)


def _synthesize(exe: str, voice: str, speed: int, pitch: int, word: str) -> np.ndarray:
    """One word as float64 samples in [-1, 1] at :data:`SAMPLE_RATE`, silence trimmed."""
    raw = subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout",
                          word], capture_output=True, check=True).stdout
    if raw[:4] != b"RIFF" or raw[36:40] != b"data":
        raise RuntimeError(f"espeak-ng gave no WAV for voice {voice!r}")
    rate = int.from_bytes(raw[24:28], "little")
    if rate != SAMPLE_RATE:
        raise RuntimeError(f"espeak-ng voice {voice!r} gave {rate} Hz, expected {SAMPLE_RATE}")
    x = np.frombuffer(raw[44:44 + (len(raw) - 44) // 2 * 2], dtype="<i2") / 32768.0
    a = np.abs(x)
    loud = np.flatnonzero(a > 0.02 * a.max())
    margin = SAMPLE_RATE // 100
    x = x[max(loud[0] - margin, 0): loud[-1] + margin]
    return x / np.sqrt(np.mean(x ** 2))          # unit RMS


def _mel_filterbank(n_mels: int = N_MELS) -> np.ndarray:
    """(N_FFT // 2 + 1, n_mels) triangular HTK-mel filters, each summing to 1."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    edges = hz(np.linspace(mel(F_MIN), mel(F_MAX), n_mels + 2))
    freqs = np.arange(N_FFT // 2 + 1) * SAMPLE_RATE / N_FFT
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return (tri / tri.sum(axis=1, keepdims=True)).T.astype(np.float32)


_WINDOW = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
_WINDOW_POWER = float(np.sum(_WINDOW.astype(np.float64))) ** 2      # periodic Hann, |sum|^2


def _logmel_steps(clip: np.ndarray, fbank: np.ndarray, length: int = LENGTH) -> np.ndarray:
    """(length, n_mels) features in [0, 1] of a clip of length * STEP_SAMPLES + N_FFT - HOP.

    The clip carries (N_FFT - HOP) // 2 samples of padding before the first step, so that the
    12 frames of a step are centred inside it.
    """
    from scipy import fft     # a build-time dependency (scikit-learn needs it); ~8x numpy's

    n_frames = length * STEP_SAMPLES // HOP
    frames = np.lib.stride_tricks.sliding_window_view(clip.astype(np.float32), N_FFT)
    spec = fft.rfft(frames[::HOP][:n_frames] * _WINDOW, axis=1)           # complex64
    power = (spec.real ** 2 + spec.imag ** 2) @ fbank
    db = 10.0 * np.log10(power.astype(np.float64) / _WINDOW_POWER + 1e-12)
    db = db.reshape(length, STEP_SAMPLES // HOP, fbank.shape[1]).mean(axis=1)
    return np.clip((db - DB_FLOOR) / DB_RANGE, 0.0, 1.0)


def _quantize(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` whose bytes depend only on ``arrays`` (fixed zip timestamps and modes)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift an 8x8 image by (dy, dx) pixels, filling with zeros."""
    p = np.pad(img, 1)
    return p[1 - dy: 9 - dy, 1 - dx: 9 - dx]


def _resampler(side: int) -> np.ndarray | None:
    """(side, 8) area-weighted resampling of an 8-pixel axis to ``side`` pixels (rows sum to
    1: output pixel i averages the input over its footprint), or None for side 8."""
    if side == IMAGE_SIDE:
        return None
    edges = np.linspace(0.0, IMAGE_SIDE, side + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(IMAGE_SIDE)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _compose_visual(rng: np.random.Generator, images: np.ndarray, target: int,
                    distractors: Sequence[int], shape: Shape = DEFAULT,
                    resample: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(length, side ** 2) frames and the (length,) source image per frame (-1: none).

    Frames are composed at 8x8 (shift, contrast), resampled to side x side by ``resample``
    (:func:`_resampler`), then get pixel noise.
    """
    length = shape.length
    width = int(rng.integers(shape.window[0], shape.window[1] + 1))
    start = int(rng.integers(0, length - width + 1))
    frames = np.zeros((length, IMAGE_SIDE, IMAGE_SIDE))
    source = np.full(length, -1, dtype=np.int16)
    for t in range(length):
        dy, dx = (int(s) for s in rng.integers(-1, 2, size=2))
        if start <= t < start + width:
            frames[t] = _shift(images[target], dy, dx) * rng.uniform(0.8, 1.0)
            source[t] = target
        elif rng.random() < shape.p_distractor_frame:
            d = distractors[int(rng.integers(len(distractors)))]
            frames[t] = _shift(images[d], dy, dx) * 0.35
            source[t] = d
    if resample is not None:
        frames = resample @ frames @ resample.T
    frames += rng.normal(0.0, 0.06, size=frames.shape)
    return frames.reshape(length, -1), source


def _compose_audio(rng: np.random.Generator, target: np.ndarray,
                   distractor: np.ndarray | None, length: int = LENGTH) -> tuple[np.ndarray, bool]:
    """A clip (noise, the target word, maybe a quieter distractor word); whether it kept it.

    The distractor is left out when the two words do not fit in the clip together."""
    n = length * STEP_SAMPLES
    clip = rng.normal(0.0, 10.0 ** (rng.uniform(*NOISE_DBFS) / 20.0), size=n + N_FFT - HOP)
    level = 10.0 ** (rng.uniform(*WORD_DBFS) / 20.0)
    target = target[:n]
    words = [(target, level)]
    if distractor is not None and len(target) + len(distractor) <= n:
        words.append((distractor, level * 10.0 ** (-rng.uniform(*DISTRACTOR_DB) / 20.0)))
        if rng.random() < 0.5:
            words.reverse()
    free = n - sum(len(w) for w, _ in words)
    gaps = np.diff(np.concatenate([[0], np.sort(rng.integers(0, free + 1, size=len(words)))]))
    pos = (N_FFT - HOP) // 2            # frame k is centred on sample k * HOP + HOP / 2
    for (w, g), gap in zip(words, gaps):
        pos += int(gap)
        clip[pos: pos + len(w)] += g * w
        pos += len(w)
    return clip, len(words) == 2


def _seed_sequence(seed: int, shape: Shape) -> np.random.SeedSequence:
    """The default shape's streams derive from the seed alone (the shipped file); a variant's
    from the seed and its name, so variants do not share image and voice splits."""
    if shape.name == DEFAULT.name:
        return np.random.SeedSequence(seed)
    return np.random.SeedSequence([seed, zlib.crc32(shape.name.encode())])


def _description(shape: Shape) -> str:
    """The metadata's one-line description of the features and the class formula."""
    frames = ("8x8 sklearn digits" if shape.side == IMAGE_SIDE else
              f"8x8 sklearn digits resampled (area) to {shape.side}x{shape.side}")

    def minus(name: str, digits: tuple[int, ...]) -> str:
        if digits != tuple(range(digits[0], digits[0] + len(digits))):
            return f"position of the {name} in {list(digits)}"
        return name if digits[0] == 0 else f"({name} - {digits[0]})"
    return (f"visual: {frames} in [0,1] (uint8/255); audio: {shape.mels} log-mel "
            f"bands per 80 ms step, (dB - {DB_FLOOR}) / {DB_RANGE} (uint8/255); "
            f"class = {len(shape.spoken)} * {minus('visual digit', shape.visual)} + "
            f"{minus('spoken digit', shape.spoken)}")


def build_avdigits(out_dir: str | Path, seed: int = 0, *, shape: Shape | str = DEFAULT,
                   progress: bool = False, workers: int = 2) -> Path:
    """Build ``shape.file_name`` (``avdigits.npz``, or ``avdigits-NAME.npz`` for a variant) in
    ``out_dir`` (written atomically; an old file is replaced).

    Args:
        out_dir: folder for the file (created if missing).
        seed: everything random derives from it (and a variant's name); seed 0 and the default
            shape give the shipped file.
        shape: a :class:`Shape` or the name of one in :data:`SHAPES`; a small one makes a quick
            test build. Only :data:`DEFAULT` may be named ``"default"``.
        progress: show progress bars.
        workers: espeak-ng processes run at once (the result does not depend on it).

    Raises:
        AvsearchInputError: espeak-ng or scikit-learn is missing, or no variant has that name.
    """
    shape = get_shape(shape) if isinstance(shape, str) else shape
    if shape.name == DEFAULT.name and shape != DEFAULT:
        raise ValueError("a shape other than the shipped one needs a name of its own "
                         "(dataclasses.replace(DEFAULT, name=..., ...))")
    exe = _espeak()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AvsearchInputError("building avdigits needs scikit-learn for its bundled digit "
                                 "images (pip install scikit-learn)") from None
    from tqdm.auto import tqdm

    sizes, voices = shape.split_sizes, shape.split_voices
    version, data_dir = _espeak_info(exe)
    if version != ESPEAK_VERSION:
        warnings.warn(f"espeak-ng {version} differs from {ESPEAK_VERSION}, which built the "
                      f"shipped avdigits file: the audio (and the file) may differ",
                      stacklevel=2)
    if data_dir is not None and (data_dir / "voices" / "!v").is_dir():
        missing = [v for v in VARIANTS if not (data_dir / "voices" / "!v" / v).is_file()]
        if missing:   # espeak-ng silently falls back to the plain accent for unknown variants
            raise AvsearchInputError(f"espeak-ng at {data_dir} lacks voice variants "
                                     f"{', '.join(missing[:5])}: install espeak-ng-data")

    probe = f"{ACCENTS[0]}+{VARIANTS[0]}"
    if not np.array_equal(_synthesize(exe, probe, 175, 50, WORDS[7]),
                          _synthesize(exe, probe, 175, 50, WORDS[7])):
        raise AvsearchInputError(f"espeak-ng {version} is not deterministic (voice {probe} "
                                 f"gave two different recordings of one word)")

    digits = load_digits()
    images = digits.images / 16.0
    targets = digits.target
    ss = _seed_sequence(seed, shape)
    rng_split, rng_voice, rng_prosody, rng_video = (np.random.default_rng(s)
                                                    for s in ss.spawn(4))

    # --- source images: per digit 60/20/20 into train / val / test pools
    pools: dict[str, list[np.ndarray]] = {s: [] for s in SPLIT_NAMES}
    for d in range(10):
        idx = rng_split.permutation(np.flatnonzero(targets == d))
        a = int(round(IMAGE_SPLIT[0] * len(idx)))
        b = a + int(round(IMAGE_SPLIT[1] * len(idx)))
        for s, part in zip(SPLIT_NAMES, (idx[:a], idx[a:b], idx[b:])):
            pools[s].append(np.sort(part))

    # --- voices: variant -> accent, then variants split disjointly
    order = rng_voice.permutation(len(VARIANTS))
    accents = rng_voice.integers(0, len(ACCENTS), size=len(VARIANTS))
    voice_names: list[str] = []
    split_voices: dict[str, list[int]] = {}
    pos = 0
    for s in SPLIT_NAMES:
        split_voices[s] = []
        for i in order[pos: pos + voices[s]]:
            split_voices[s].append(len(voice_names))
            voice_names.append(f"{ACCENTS[accents[i]]}+{VARIANTS[i]}")
        pos += voices[s]

    # --- utterance table: (voice, digit, speed, pitch), voices in table order
    utterances: list[tuple[int, int, int, int]] = []
    for v in range(len(voice_names)):
        for d in range(10):
            for _ in range(shape.prosodies):
                utterances.append((v, d, int(rng_prosody.integers(140, 221)),
                                   int(rng_prosody.integers(25, 76))))

    def synth(u: tuple[int, int, int, int]) -> np.ndarray:
        return _synthesize(exe, voice_names[u[0]], u[2], u[3], WORDS[u[1]])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        waves = list(tqdm(pool.map(synth, utterances), total=len(utterances),
                          desc="espeak-ng", unit="word", disable=not progress))
    by_key: dict[tuple[int, int], list[int]] = {}
    for k, (v, d, _, _) in enumerate(utterances):
        by_key.setdefault((v, d), []).append(k)

    # --- videos
    fbank = _mel_filterbank(shape.mels)
    resample = _resampler(shape.side)
    arrays: dict[str, np.ndarray] = {}
    n_class, n_spoken, length = shape.num_class, len(shape.spoken), shape.length
    for s in SPLIT_NAMES:
        n = sizes[s]
        labels = rng_video.permutation(np.arange(n) % n_class)
        visual = np.zeros((n, length, shape.side ** 2), dtype=np.uint8)
        audio = np.zeros((n, length, shape.mels), dtype=np.uint8)
        image = np.zeros((n, length), dtype=np.int16)
        voice = np.zeros(n, dtype=np.int16)
        utter = np.full((n, 2), -1, dtype=np.int16)
        by_digit = pools[s]
        for i in tqdm(range(n), desc=f"videos {s}", unit="video", disable=not progress):
            c = int(labels[i])
            vd, ad = shape.visual[c // n_spoken], shape.spoken[c % n_spoken]
            # visual
            target = int(rng_video.choice(by_digit[vd]))
            others = [d for d in range(10) if d != vd]
            distractors = [int(rng_video.choice(by_digit[int(rng_video.choice(others))]))
                           for _ in range(2)]
            frames, source = _compose_visual(rng_video, images, target, distractors, shape,
                                             resample)
            visual[i], image[i] = _quantize(frames), source
            # audio
            v = int(rng_video.choice(split_voices[s]))
            tk = int(rng_video.choice(by_key[(v, ad)]))
            dk = -1
            if rng_video.random() < shape.p_distractor_word:
                dd = int(rng_video.choice([d for d in range(10) if d != ad]))
                dk = int(rng_video.choice(by_key[(v, dd)]))
            clip, kept = _compose_audio(rng_video, waves[tk], waves[dk] if dk >= 0 else None,
                                        length)
            audio[i] = _quantize(_logmel_steps(clip, fbank, length))
            voice[i], utter[i] = v, (tk, dk if kept else -1)
        arrays.update({f"{s}/visual": visual, f"{s}/audio": audio,
                       f"{s}/label": labels.astype(np.uint8), f"{s}/image": image,
                       f"{s}/voice": voice, f"{s}/utterance": utter})

    meta = {
        "format": FORMAT_VERSION, "name": "avdigits", "seed": int(seed), "espeak_ng": version,
        "classes": class_names(shape), "voices": voice_names,
        "split_voices": {s: [voice_names[v] for v in split_voices[s]] for s in SPLIT_NAMES},
        "utterances": [list(u) for u in utterances],
        "description": _description(shape),
    }
    if shape.name != DEFAULT.name:      # the shipped file's metadata stays as it was
        meta.update(name=f"avdigits-{shape.name}", variant=shape.name, shape=asdict(shape))
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / shape.file_name
    tmp = out_dir / f".{shape.file_name}.{os.getpid()}.tmp"
    try:
        _write_npz(tmp, arrays)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final
