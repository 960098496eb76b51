"""Building avdigits (:mod:`avsearch.data.avdigits` says what the data set is): speech
synthesis with espeak-ng, the log-mel front end, the composition of videos, and the file.

Seed 0 and the default shape give the shipped file byte for byte when espeak-ng is
:data:`~avsearch.data.avdigits.ESPEAK_VERSION` (and numpy, scipy's FFT and zlib compute the
same bits as on the machine that built it). ``avsearch data build avdigits`` runs
:func:`build_avdigits`.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from avsearch.data._npz import write_npz
from avsearch.data.avdigits import (DEFAULT, ESPEAK_VERSION, FORMAT_VERSION, IMAGE_SIDE, LENGTH,
                                    N_MELS, SPLIT_NAMES, VARIANTS, Shape, class_names,
                                    get_shape)
from avsearch.errors import AvsearchInputError

__all__ = ["build_avdigits", "espeak_version"]

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SPLIT = (0.6, 0.2, 0.2)
NOISE_DBFS = (-50.0, -44.0)         # background noise RMS
WORD_DBFS = (-24.0, -20.0)          # class word RMS
DISTRACTOR_DB = (12.0, 18.0)        # distractor word: this much below the class word

# audio front end
SAMPLE_RATE = 22050                 # espeak-ng's native rate
STEP_SAMPLES = 1764                 # 80 ms per time step -> 2.0 s per clip
HOP = 147                           # 12 STFT frames per step
N_FFT = 1024
F_MIN, F_MAX = 100.0, 8000.0
DB_FLOOR, DB_RANGE = -100.0, 90.0   # feature = clip((dB - DB_FLOOR) / DB_RANGE, 0, 1)

# English accents (espeak-ng base voices)
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-029", "en-us-nyc")


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

    return write_npz(Path(out_dir) / shape.file_name, arrays)
