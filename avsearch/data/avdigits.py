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
(both); LSH / ITQ (64 bits) on mean-pooled features get test mAP@100 of about 0.03; a small
two-layer temporal conv net on both streams, trained for under a minute on a CPU, gets 0.90
test accuracy and 0.89 test mAP@100 with its 64 sign bits.

Sizes: train 3,000, val 600, test 600 videos (classes balanced: 120 / 24 / 24 per class);
``retrieval`` (the database) is the train split, as in AV-NAS (queries = val or test).

Disjointness: the 1,797 source images are split per digit 60/20/20 into train/val/test pools
and every frame of a video (class image and distractors) comes from its split's pool. Voices
are espeak-ng variants (96 of them, e.g. ``klatt3``, ``f2``, ``Alicia``), each with a fixed
English accent (``en-us``, ``en-gb-scotland``, ...); 64/16/16 variants go to train/val/test.
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
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avsearch.data.dataset import Dataset, Split, register_builtin
from avsearch.errors import AvsearchInputError

__all__ = ["DATA_FILE", "DATA_SHA256", "ESPEAK_VERSION", "load_avdigits", "build_avdigits",
           "build_command"]

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
NOISE_DBFS = (-50.0, -44.0)         # background noise RMS
WORD_DBFS = (-24.0, -20.0)          # class word RMS
DISTRACTOR_DB = (12.0, 18.0)        # distractor word: this much below the class word
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

SPLIT_NAMES = ("train", "val", "test")
MODALITIES = {"visual": 64, "audio": 40}


def class_names() -> list[str]:
    """The 25 class names, ``"v{visual digit}-a{spoken digit}"``, in label order."""
    return [f"v{v}-a{a}" for v in VISUAL_DIGITS for a in SPOKEN_DIGITS]


# ============================================================================ loading
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_avdigits(path: str | Path | None = None, *,
                  expected_sha256: str | None = DATA_SHA256) -> Dataset:
    """Load the avdigits data set (the shipped file by default).

    Args:
        path: an avdigits ``.npz`` file; default the one shipped in the package.
        expected_sha256: digest the file must have (default: the shipped file's); ``None``
            skips the check (e.g. a file built with another seed).

    Raises:
        AvsearchInputError: the file is missing, corrupt, or fails the checksum.
    """
    path = Path(path) if path is not None else DATA_FILE
    if not path.is_file():
        raise AvsearchInputError(f"{path}: avdigits data file not found (reinstall avsearch, "
                                 f"or rebuild it: avsearch data build avdigits --out DIR)")
    digest = _sha256(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise AvsearchInputError(f"{path}: checksum mismatch (sha256 {digest[:16]}..., expected "
                                 f"{expected_sha256[:16]}...): the avdigits file is corrupt or "
                                 f"not the shipped one")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta").item()))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise AvsearchInputError(f"{path}: not a readable avdigits file ({e})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise AvsearchInputError(f"{path}: avdigits format {meta.get('format')!r}, "
                                 f"this avsearch reads format {FORMAT_VERSION}")

    num_class = len(meta["classes"])
    splits: dict[str, Split] = {}
    provenance: dict[str, dict[str, np.ndarray]] = {}
    try:
        for name in SPLIT_NAMES:
            label = arrays[f"{name}/label"].astype(np.int64)
            labels = np.zeros((len(label), num_class), dtype=bool)
            labels[np.arange(len(label)), label] = True
            features = {"visual": arrays[f"{name}/visual"].astype(np.float32) / 255.0,
                        "audio": arrays[f"{name}/audio"].astype(np.float32) / 255.0}
            ids = [f"avdigits-{name}-{i:05d}" for i in range(len(label))]
            splits[name] = Split(ids=ids, labels=labels, features=features)
            provenance[name] = {"image": arrays[f"{name}/image"],
                                "voice": arrays[f"{name}/voice"],
                                "utterance": arrays[f"{name}/utterance"]}
    except KeyError as e:
        raise AvsearchInputError(f"{path}: not a complete avdigits file (missing {e})") from None
    train = splits["train"]
    splits["retrieval"] = Split(ids=train.ids, labels=train.labels, features=train.features)
    info: dict[str, Any] = {"path": str(path), "sha256": digest, "provenance": provenance}
    info.update({k: meta[k] for k in ("seed", "espeak_ng", "classes", "voices", "utterances",
                                      "split_voices", "description")})
    return Dataset(name="avdigits", source="avdigits", modalities=dict(MODALITIES),
                   length=LENGTH, num_class=num_class, splits=splits, info=info)


register_builtin("avdigits", load_avdigits)


# ============================================================================ building
def _espeak() -> str:
    """Path of ``espeak-ng``, or a clear error naming the Debian package."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AvsearchInputError("espeak-ng not found: building avdigits needs it "
                                 "(Debian/Ubuntu: apt-get install espeak-ng)")
    return exe


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


def _mel_filterbank() -> np.ndarray:
    """(N_FFT // 2 + 1, N_MELS) triangular HTK-mel filters, each summing to 1."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    edges = hz(np.linspace(mel(F_MIN), mel(F_MAX), N_MELS + 2))
    freqs = np.arange(N_FFT // 2 + 1) * SAMPLE_RATE / N_FFT
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return (tri / tri.sum(axis=1, keepdims=True)).T.astype(np.float32)


_WINDOW = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
_WINDOW_POWER = float(np.sum(_WINDOW.astype(np.float64))) ** 2      # periodic Hann, |sum|^2


def _logmel_steps(clip: np.ndarray, fbank: np.ndarray) -> np.ndarray:
    """(LENGTH, N_MELS) features in [0, 1] of a clip of LENGTH * STEP_SAMPLES + N_FFT - HOP.

    The clip carries (N_FFT - HOP) // 2 samples of padding before the first step, so that the
    12 frames of a step are centred inside it.
    """
    from scipy import fft     # a build-time dependency (scikit-learn needs it); ~8x numpy's

    n_frames = LENGTH * STEP_SAMPLES // HOP
    frames = np.lib.stride_tricks.sliding_window_view(clip.astype(np.float32), N_FFT)
    spec = fft.rfft(frames[::HOP][:n_frames] * _WINDOW, axis=1)           # complex64
    power = (spec.real ** 2 + spec.imag ** 2) @ fbank
    db = 10.0 * np.log10(power.astype(np.float64) / _WINDOW_POWER + 1e-12)
    db = db.reshape(LENGTH, STEP_SAMPLES // HOP, N_MELS).mean(axis=1)
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


def _compose_visual(rng: np.random.Generator, images: np.ndarray, target: int,
                    distractors: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(LENGTH, 64) frames and the (LENGTH,) source image per frame (-1: none)."""
    width = int(rng.integers(6, 13))
    start = int(rng.integers(0, LENGTH - width + 1))
    frames = np.zeros((LENGTH, 8, 8))
    source = np.full(LENGTH, -1, dtype=np.int16)
    for t in range(LENGTH):
        dy, dx = (int(s) for s in rng.integers(-1, 2, size=2))
        if start <= t < start + width:
            frames[t] = _shift(images[target], dy, dx) * rng.uniform(0.8, 1.0)
            source[t] = target
        elif rng.random() < 0.5:
            d = distractors[int(rng.integers(len(distractors)))]
            frames[t] = _shift(images[d], dy, dx) * 0.35
            source[t] = d
    frames += rng.normal(0.0, 0.06, size=frames.shape)
    return frames.reshape(LENGTH, 64), source


def _compose_audio(rng: np.random.Generator, target: np.ndarray,
                   distractor: np.ndarray | None) -> tuple[np.ndarray, bool]:
    """A clip (noise, the target word, maybe a quieter distractor word); whether it kept it."""
    n = LENGTH * STEP_SAMPLES
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


def build_avdigits(out_dir: str | Path, seed: int = 0, *, sizes: dict[str, int] | None = None,
                   voices: dict[str, int] | None = None, prosodies: int = PROSODIES,
                   progress: bool = False, workers: int = 2) -> Path:
    """Build ``avdigits.npz`` in ``out_dir`` (written atomically; an old file is replaced).

    Args:
        out_dir: folder for ``avdigits.npz`` (created if missing).
        seed: everything random derives from it; seed 0 gives the shipped file.
        sizes: videos per split (default :data:`SIZES`; multiples of 25 keep classes balanced).
        voices: voice variants per split (default :data:`VOICE_SPLIT`); small values make a
            quick test build.
        prosodies: speed/pitch settings synthesised per (voice, digit).
        progress: show progress bars.
        workers: espeak-ng processes run at once (the result does not depend on it).

    Raises:
        AvsearchInputError: espeak-ng or scikit-learn is missing.
    """
    exe = _espeak()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AvsearchInputError("building avdigits needs scikit-learn for its bundled digit "
                                 "images (pip install scikit-learn)") from None
    from tqdm.auto import tqdm

    sizes = dict(SIZES if sizes is None else sizes)
    voices = dict(VOICE_SPLIT if voices is None else voices)
    if sum(voices.values()) > len(VARIANTS):
        raise AvsearchInputError(f"avdigits has {len(VARIANTS)} voices, asked for "
                                 f"{sum(voices.values())}")
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
    ss = np.random.SeedSequence(seed)
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
            for _ in range(prosodies):
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
    fbank = _mel_filterbank()
    arrays: dict[str, np.ndarray] = {}
    n_class = len(VISUAL_DIGITS) * len(SPOKEN_DIGITS)
    for s in SPLIT_NAMES:
        n = sizes[s]
        labels = rng_video.permutation(np.arange(n) % n_class)
        visual = np.zeros((n, LENGTH, 64), dtype=np.uint8)
        audio = np.zeros((n, LENGTH, N_MELS), dtype=np.uint8)
        image = np.zeros((n, LENGTH), dtype=np.int16)
        voice = np.zeros(n, dtype=np.int16)
        utter = np.full((n, 2), -1, dtype=np.int16)
        by_digit = pools[s]
        for i in tqdm(range(n), desc=f"videos {s}", unit="video", disable=not progress):
            c = int(labels[i])
            vd, ad = VISUAL_DIGITS[c // len(SPOKEN_DIGITS)], SPOKEN_DIGITS[c % len(SPOKEN_DIGITS)]
            # visual
            target = int(rng_video.choice(by_digit[vd]))
            others = [d for d in range(10) if d != vd]
            distractors = [int(rng_video.choice(by_digit[int(rng_video.choice(others))]))
                           for _ in range(2)]
            frames, source = _compose_visual(rng_video, images, target, distractors)
            visual[i], image[i] = _quantize(frames), source
            # audio
            v = int(rng_video.choice(split_voices[s]))
            tk = int(rng_video.choice(by_key[(v, ad)]))
            dk = -1
            if rng_video.random() < P_DISTRACTOR_WORD:
                dd = int(rng_video.choice([d for d in range(10) if d != ad]))
                dk = int(rng_video.choice(by_key[(v, dd)]))
            clip, kept = _compose_audio(rng_video, waves[tk], waves[dk] if dk >= 0 else None)
            audio[i] = _quantize(_logmel_steps(clip, fbank))
            voice[i], utter[i] = v, (tk, dk if kept else -1)
        arrays.update({f"{s}/visual": visual, f"{s}/audio": audio,
                       f"{s}/label": labels.astype(np.uint8), f"{s}/image": image,
                       f"{s}/voice": voice, f"{s}/utterance": utter})

    meta = {
        "format": FORMAT_VERSION, "name": "avdigits", "seed": int(seed), "espeak_ng": version,
        "classes": class_names(), "voices": voice_names,
        "split_voices": {s: [voice_names[v] for v in split_voices[s]] for s in SPLIT_NAMES},
        "utterances": [list(u) for u in utterances],
        "description": ("visual: 8x8 sklearn digits in [0,1] (uint8/255); audio: 40 log-mel "
                        f"bands per 80 ms step, (dB - {DB_FLOOR}) / {DB_RANGE} (uint8/255); "
                        "class = 5 * visual digit + (spoken digit - 5)"),
    }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / "avdigits.npz"
    tmp = out_dir / f".avdigits.npz.{os.getpid()}.tmp"
    try:
        _write_npz(tmp, arrays)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def build_command(out: Path, seed: int = 0) -> int:
    """``avsearch data build avdigits --out DIR [--seed N]``: build, report, return 0.

    Raises:
        AvsearchInputError: espeak-ng (or scikit-learn) is missing.
    """
    exe = _espeak()
    version, _ = _espeak_info(exe)
    print(f"building avdigits (seed {seed}) with espeak-ng {version} into {out}", flush=True)
    if version != ESPEAK_VERSION:
        print(f"warning: the shipped file was built with espeak-ng {ESPEAK_VERSION}; "
              f"with {version} the audio may differ", file=sys.stderr)
    existed = (Path(out) / "avdigits.npz").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the version warning is printed above
        path = build_avdigits(out, seed, progress=True)
    digest = _sha256(path)
    print(f"{'replaced' if existed else 'wrote'} {path} ({path.stat().st_size / 1e6:.1f} MB, "
          f"sha256 {digest})")
    if seed == 0:
        same = digest == DATA_SHA256
        print("identical to the shipped file" if same else
              "differs from the shipped file (another espeak-ng, numpy or zlib?)")
    return 0
