"""Building fashion4 (:mod:`avsearch.data.fashion4` says what the data set is): the split of
Fashion-MNIST's images, the composites, the feature CNN, the detector's tags, and the file.

Seed 0 and :data:`DEFAULT` give the shipped file byte for byte when torch is
:data:`~avsearch.data.fashion4.TORCH_VERSION` on a CPU of
:data:`~avsearch.data.fashion4.CPU_CAPABILITY`. What that rests on: every random draw comes
from numpy generators spawned from the seed (image split, composition, crops, batches) or a
torch generator seeded from them (the CNN's initial weights); the CNN trains and runs on one
thread with ``torch.use_deterministic_algorithms(True)`` (restored afterwards), in float32, in
a fixed order of fixed batches; the file's bytes depend only on its arrays
(:func:`avsearch.data._npz.write_npz`). ``avsearch data build fashion4`` runs
:func:`build_fashion4`.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from avsearch.data._npz import write_npz
from avsearch.data.fashion4 import FORMAT_VERSION, SIZES, class_names
from avsearch.data.fashion_mnist import load_fashion_mnist

__all__ = ["Shape", "DEFAULT", "FeatureCNN", "build_fashion4"]

SIDE = 28                       # a Fashion-MNIST image; a composite is 2 x 2 of them
CLASS_COUNT_P = (0.35, 0.45, 0.20)   # P(1, 2 or 3 distinct classes in a composite)
JITTER = 3                      # detector boxes shifted by up to this many pixels
THRESHOLD = 0.5                 # a class is detected at this softmax probability
QUADRANTS = ((0, 0), (0, SIDE), (SIDE, 0), (SIDE, SIDE))   # (row, column) of each quadrant


@dataclass(frozen=True)
class Shape:
    """What a build makes; :data:`DEFAULT` is the shipped file, a small one a quick test.

    ``sizes`` are the items of train / val / test / retrieval; ``pool`` the single images per
    class the CNN trains on; ``epochs``, ``batch`` and ``lr`` its Adam recipe.
    """

    name: str = "fashion4"
    sizes: tuple[int, int, int, int] = tuple(SIZES.values())   # type: ignore[assignment]
    pool: int = 1000
    epochs: int = 5
    batch: int = 100
    lr: float = 2e-3

    @property
    def split_sizes(self) -> dict[str, int]:
        return dict(zip(SIZES, self.sizes))


DEFAULT = Shape()


class FeatureCNN(nn.Module):
    """The stand-in for VGG16: three 3x3 conv layers (32, 64, 128 channels; batch norm, ReLU;
    2x2 max-pooling after the first two), global average pooling, ``fc7`` (128 → 128, ReLU)
    and a 10-way classifier. Fully convolutional up to the pooling, so it reads a 28x28 single image
    (training, detection) and a 56x56 composite (features) alike."""

    def __init__(self, classes: int = 10, width: int = 128):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.fc7 = nn.Linear(width, width)
        self.classifier = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 of (B, 1, H, W) images in [0, 1], before its ReLU: (B, width). (After it, a
        quarter of this small network's units never fire, which would leave fewer informative
        dimensions than the 128 bits hashing asks of them.)"""
        return self.fc7(self.trunk(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.features(x)))


@contextlib.contextmanager
def _deterministic_torch(seed: int) -> Iterator[None]:
    """One thread, deterministic algorithms, torch's global generator seeded; all restored."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _as_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W) as float32 (B, 1, H, W) in [0, 1]."""
    return torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]


def _split_images(rng: np.random.Generator, labels: np.ndarray, shape: Shape
                  ) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """The CNN's pool (``shape.pool`` per class) and, per split and class, its own images:
    the rest of each class, shared out in proportion to the split's size."""
    sizes = np.array(shape.sizes, dtype=np.float64)
    pool, per_split = [], {s: [] for s in SIZES}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        pool.append(idx[:shape.pool])
        rest = idx[shape.pool:]
        cuts = np.round(np.cumsum(sizes) / sizes.sum() * len(rest)).astype(int)
        for s, part in zip(SIZES, np.split(rest, cuts[:-1])):
            per_split[s].append(part)
    return np.sort(np.concatenate(pool)), per_split


def _compose(rng: np.random.Generator, n: int, images: list[np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """``n`` composites from one split's images (``images[c]``: its images of class c): the
    (n, 4) source image per quadrant (-1 blank), the (n, 10) labels, and how many images were
    reused because a class ran out."""
    source = np.full((n, 4), -1, dtype=np.int32)
    labels = np.zeros((n, 10), dtype=np.uint8)
    next_of = [0] * 10
    reused = 0
    for i in range(n):
        k = int(rng.choice(3, p=CLASS_COUNT_P)) + 1
        classes = rng.choice(10, size=k, replace=False)
        filled = min(4, k + int(rng.integers(0, 2)))
        shown = list(classes) + [int(rng.choice(classes)) for _ in range(filled - k)]
        for q, c in zip(rng.permutation(4)[:filled], shown):
            pool = images[int(c)]
            reused += next_of[c] >= len(pool)
            source[i, q] = pool[next_of[c] % len(pool)]
            next_of[c] += 1
        labels[i, classes] = 1
    return source, labels, reused


def _canvas(all_images: np.ndarray, source: np.ndarray) -> np.ndarray:
    """uint8 (n, 56, 56) composites from their (n, 4) source images."""
    out = np.zeros((len(source), 2 * SIDE, 2 * SIDE), dtype=np.uint8)
    for q, (r, c) in enumerate(QUADRANTS):
        shown = source[:, q] >= 0
        out[shown, r:r + SIDE, c:c + SIDE] = all_images[source[shown, q]]
    return out


def _train_cnn(images: np.ndarray, labels: np.ndarray, shape: Shape,
               rng: np.random.Generator, progress: bool) -> tuple[FeatureCNN, list[float]]:
    """The CNN trained on single images (Adam, cross-entropy); the mean loss of each epoch."""
    from tqdm.auto import tqdm

    net = FeatureCNN()
    opt = torch.optim.Adam(net.parameters(), lr=shape.lr)
    x, y = _as_input(images), torch.from_numpy(labels)
    losses = []
    net.train()
    for epoch in range(shape.epochs):
        order = rng.permutation(len(x))
        total = 0.0
        steps = range(0, len(order), shape.batch)
        for start in tqdm(steps, desc=f"CNN epoch {epoch + 1}/{shape.epochs}", unit="batch",
                          disable=not progress):
            rows = torch.from_numpy(order[start:start + shape.batch])
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[rows]), y[rows])
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        losses.append(total / len(x))
    return net.eval(), losses


@torch.no_grad()
def _features(net: FeatureCNN, canvas: np.ndarray, bar: Any, batch: int = 250) -> np.ndarray:
    """fc7 of whole composites, float32 (n, 128); ``bar`` (tqdm) counts them."""
    out = []
    for s in range(0, len(canvas), batch):
        out.append(net.features(_as_input(canvas[s:s + batch])).numpy())
        bar.update(len(out[-1]))
    return np.concatenate(out)


@torch.no_grad()
def _detect(net: FeatureCNN, canvas: np.ndarray, source: np.ndarray,
            rng: np.random.Generator, bar: Any, batch: int = 500) -> np.ndarray:
    """(n, 10) uint8 tags: a class is detected when the CNN gives it probability >= THRESHOLD
    on some non-blank quadrant's box, shifted by up to JITTER pixels (zeros outside)."""
    padded = np.pad(canvas, ((0, 0), (JITTER, JITTER), (JITTER, JITTER)))
    items, quads = np.nonzero(source >= 0)              # row-major: item by item, q in order
    shifts = rng.integers(-JITTER, JITTER + 1, size=(len(items), 2))
    crops = np.empty((len(items), SIDE, SIDE), dtype=np.uint8)
    for j, (i, q) in enumerate(zip(items, quads)):
        r = QUADRANTS[q][0] + JITTER + shifts[j, 0]
        c = QUADRANTS[q][1] + JITTER + shifts[j, 1]
        crops[j] = padded[i, r:r + SIDE, c:c + SIDE]
    probs = np.zeros((len(crops), 10), dtype=np.float32)
    for s in range(0, len(crops), batch):
        probs[s:s + batch] = torch.softmax(net(_as_input(crops[s:s + batch])), dim=1).numpy()
    bar.update(len(source))
    tags = np.zeros((len(source), 10), dtype=np.uint8)
    hit = probs >= THRESHOLD
    for j in np.flatnonzero(hit.any(axis=1)):
        tags[items[j], hit[j]] = 1
    return tags


def detection_quality(tags: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Precision and recall of the tags against the labels (over all (item, class) pairs) and
    the share of items whose tags equal their labels."""
    tags, labels = tags.astype(bool), labels.astype(bool)
    hits = np.count_nonzero(tags & labels)
    return {"precision": round(hits / max(1, np.count_nonzero(tags)), 4),
            "recall": round(hits / max(1, np.count_nonzero(labels)), 4),
            "exact": round(float(np.mean((tags == labels).all(axis=1))), 4)}


def build_fashion4(out_dir: str | Path, seed: int = 0, *, shape: Shape = DEFAULT,
                   root: str | Path | None = None, progress: bool = False) -> Path:
    """Build ``fashion4.npz`` (``fashion4-NAME.npz`` for another shape) in ``out_dir``,
    written atomically; an old file is replaced.

    Args:
        out_dir: folder for the file (created if missing).
        seed: everything random derives from it; 0 with :data:`DEFAULT` gives the shipped file.
        shape: sizes and the CNN's recipe; a small one makes a quick test build.
        root: Fashion-MNIST's folder (default Debian's, ``/usr/share/datasets/fashion-mnist``).
        progress: show progress bars.

    Raises:
        AvsearchInputError: Fashion-MNIST's files are missing (the message names the Debian
            package) or unreadable.
    """
    from tqdm.auto import tqdm

    if shape.name == DEFAULT.name and shape != DEFAULT:
        raise ValueError("a shape other than the shipped one needs a name of its own "
                         "(dataclasses.replace(DEFAULT, name=..., ...))")
    train_x, train_y = load_fashion_mnist("train", root)
    test_x, test_y = load_fashion_mnist("test", root)
    all_images = np.concatenate([train_x, test_x])
    all_labels = np.concatenate([train_y, test_y])
    rng_split, rng_compose, rng_cnn, rng_detect = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))

    pool, per_split = _split_images(rng_split, all_labels, shape)
    with _deterministic_torch(int(rng_cnn.integers(2 ** 31))):
        net, losses = _train_cnn(all_images[pool], all_labels[pool], shape, rng_cnn, progress)
        arrays: dict[str, np.ndarray] = {}
        tags_all, labels_all, reused = [], [], 0
        bar = tqdm(total=2 * sum(shape.sizes), desc="features and detections", unit="item",
                   disable=not progress)
        for s, n in shape.split_sizes.items():
            source, labels, r = _compose(rng_compose, n, per_split[s])
            canvas = _canvas(all_images, source)
            feats = _features(net, canvas, bar)
            tags = _detect(net, canvas, source, rng_detect, bar)
            arrays.update({f"{s}/features": feats.astype(np.float16), f"{s}/labels": labels,
                           f"{s}/tags": tags, f"{s}/source": source})
            tags_all.append(tags)
            labels_all.append(labels)
            reused += r
        bar.close()
        with torch.no_grad():   # the classifier's accuracy on every 20th image outside its pool
            held = np.sort(np.concatenate([np.concatenate(per_split[s]) for s in SIZES]))[::20]
            accuracy = float((net(_as_input(all_images[held])).argmax(1).numpy()
                              == all_labels[held]).mean())
    meta = {
        "format": FORMAT_VERSION, "seed": int(seed),
        "name": "fashion4" if shape.name == DEFAULT.name else f"fashion4-{shape.name}",
        "classes": class_names(), "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cnn": {"pool_per_class": shape.pool, "epochs": shape.epochs, "batch": shape.batch,
                "lr": shape.lr, "epoch_loss": [round(v, 6) for v in losses],
                "accuracy_single_images": round(accuracy, 4), "accuracy_images": len(held)},
        "detection": {"threshold": THRESHOLD, "jitter": JITTER,
                      **detection_quality(np.concatenate(tags_all), np.concatenate(labels_all))},
        "reused_images": int(reused), "shape": asdict(shape),
        "description": "2x2 composites of Fashion-MNIST images; features: fc7 before its ReLU "
                       "(128-d, float16) "
                       "of a CNN trained on a disjoint pool of single images; tags: that CNN's "
                       f"detections (p >= {THRESHOLD}) on jittered quadrant boxes",
    }
    arrays["cnn/pool"] = pool.astype(np.int32)
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return write_npz(Path(out_dir) / f"{meta['name']}.npz", arrays)
