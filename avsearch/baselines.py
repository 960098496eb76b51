"""Hashing baselines: LSH and ITQ on mean-pooled features, a trained MLP and temporal CNN.

Both work on one vector per video: the mean over time of each modality, concatenated across
modalities (:func:`mean_pool`). They set the floor a searched architecture has to beat and
check the evaluation pipeline end to end without any training.

* :class:`LSH` — sign random projections (Charikar 2002): centre on the training mean, project
  on ``bits`` seeded Gaussian directions, take the sign.
* :class:`ITQ` — Iterative Quantisation (Gong & Lazebnik, CVPR 2011): centre, PCA to ``bits``
  dimensions, then alternate B = sign(V·R) and the orthogonal Procrustes update of R for
  ``n_iter`` (50) iterations from a seeded random rotation.
* :class:`PCAH` — PCA hashing (as in Wang, Kumar & Chang, CVPR 2010 and the ITQ paper's
  baseline): the sign of the centred projection on the top ``bits`` principal directions.
* :class:`SH` — Spectral Hashing (Weiss, Torralba & Fergus, NIPS 2008): PCA, a uniform
  distribution fitted to each principal direction's range, and the ``bits`` one-dimensional
  Laplacian eigenfunctions of smallest eigenvalue, thresholded at zero.

Image data (one feature vector per item) gets all four, as the image-hashing papers report
them (:func:`unsupervised_baselines`); sequences LSH and ITQ. No well-kept Python
implementation of PCAH or SH exists among our dependencies (scikit-learn has neither), so
they are written here after the papers and tested on hand-computed cases.

Codes are int8 ±1 with sign(0) = +1 (:func:`avsearch.codes.binarize`, reference-facts §1).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from avsearch.codes import binarize
from avsearch.data import SPLITS, Dataset, Split
from avsearch.supernet import Standardize
from avsearch.errors import AvsearchInputError

if TYPE_CHECKING:
    from avsearch.train import Trainer

__all__ = ["mean_pool", "LSH", "ITQ", "PCAH", "SH", "PooledMLP", "TemporalCNN", "student_cnn",
           "student_cnn_space", "pooled", "unsupervised_baselines", "run_baselines", "CCAHash",
           "run_cross_modal_baselines"]


def mean_pool(split_take_output: list[np.ndarray]) -> np.ndarray:
    """One vector per video: each modality's mean over time, concatenated in list order.

    Args:
        split_take_output: what ``Split.take`` returns, one (N, T, D_m) array per modality.

    Returns:
        float32 (N, Σ D_m).
    """
    if not split_take_output:
        raise AvsearchInputError("mean_pool needs at least one modality")
    pooled = []
    for m, x in enumerate(split_take_output):
        x = np.asarray(x)
        if x.ndim != 3:
            raise AvsearchInputError(f"modality {m}: expected (N, T, D), got shape {x.shape}")
        pooled.append(x.mean(axis=1, dtype=np.float64).astype(np.float32))
    n = {p.shape[0] for p in pooled}
    if len(n) != 1:
        raise AvsearchInputError(f"modalities disagree on the number of videos: {sorted(n)}")
    return np.concatenate(pooled, axis=1)


def _features(x: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """``x`` as a finite 2-D float array (of width ``dim`` when given)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise AvsearchInputError(f"{name} must be a non-empty (N, D) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise AvsearchInputError(f"{name} has {x.shape[1]} features, the model was fitted on "
                                 f"{dim}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise AvsearchInputError(f"{name} contains NaN or infinite values")
    return x


def _check_bits(bits: int) -> int:
    if int(bits) != bits or bits < 1:
        raise AvsearchInputError(f"bits must be a positive integer, got {bits!r}")
    return int(bits)


class LSH:
    """Sign random projections, centred on the training mean.

    ``b = sign((x − μ)·W)``, W (D, bits) i.i.d. N(0, 1) drawn from ``numpy.random.
    default_rng(seed)``: the same seed, data width and bits give the same codes. Any number of
    bits works, more than D included.

    Attributes (after ``fit``): ``mean_`` (D,), ``projection_`` (D, bits).
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.projection_: np.ndarray | None = None

    def fit(self, train_features: np.ndarray, bits: int, seed: int = 0) -> LSH:
        """Store the training mean and draw the projection. Returns self."""
        x = _features(train_features, "train_features")
        bits = _check_bits(bits)
        self.mean_ = x.mean(axis=0, dtype=np.float64)
        rng = np.random.default_rng(seed)
        self.projection_ = rng.standard_normal((x.shape[1], bits))
        return self

    def encode(self, features: np.ndarray) -> np.ndarray:
        """int8 ±1 codes (N, bits), sign(0) = +1."""
        if self.projection_ is None:
            raise AvsearchInputError(f"{type(self).__name__}.encode before fit")
        x = _features(features, "features", self.projection_.shape[0])
        return binarize((x - self.mean_) @ self.projection_)


class ITQ:
    """Iterative Quantisation (Gong & Lazebnik 2011) on PCA-projected, centred features.

    Fit: centre on the training mean; project on the top ``bits`` principal directions
    (eigenvectors of the covariance, largest eigenvalue first), V = (X − μ)·P; start from a
    random orthogonal R (QR of a seeded Gaussian matrix) and alternate, ``n_iter`` times,
    B = sign(V·R) and R = argmin over orthogonal R of ||B − V·R||_F² (orthogonal Procrustes:
    R = U·Wᵀ with Vᵀ·B = U·S·Wᵀ). Each half-step can only lower the quantisation loss, so
    ``loss_history_`` (n_iter + 1 values, from the initial R to the final one) is
    non-increasing.

    ``bits`` must not exceed the feature width D: PCA cannot give more directions than that,
    and padding with arbitrary ones would not be ITQ — :class:`AvsearchInputError` (a
    ValueError) is raised instead; use :class:`LSH` for longer codes.

    Attributes (after ``fit``): ``mean_`` (D,), ``pca_`` (D, bits), ``rotation_`` (bits, bits),
    ``loss_history_`` (list of floats).
    """

    def __init__(self, n_iter: int = 50) -> None:
        if n_iter < 0:
            raise AvsearchInputError(f"n_iter must be >= 0, got {n_iter}")
        self.n_iter = int(n_iter)
        self.mean_: np.ndarray | None = None
        self.pca_: np.ndarray | None = None
        self.rotation_: np.ndarray | None = None
        self.loss_history_: list[float] = []

    def fit(self, train_features: np.ndarray, bits: int, seed: int = 0) -> ITQ:
        """Fit the PCA projection and the ITQ rotation. Returns self."""
        x = _features(train_features, "train_features")
        bits = _check_pca_bits(_check_bits(bits), x.shape[1], "ITQ")
        self.mean_, self.pca_, v = _pca(x, bits)
        rng = np.random.default_rng(seed)
        r, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
        losses = []
        for _ in range(self.n_iter):
            z = v @ r
            b = binarize(z, np.float64)
            losses.append(float(np.sum((b - z) ** 2)))
            u, _, wt = np.linalg.svd(v.T @ b)
            r = u @ wt
        z = v @ r
        losses.append(float(np.sum((binarize(z, np.float64) - z) ** 2)))
        self.rotation_ = r
        self.loss_history_ = losses
        return self

    def encode(self, features: np.ndarray) -> np.ndarray:
        """int8 ±1 codes (N, bits), sign(0) = +1."""
        if self.rotation_ is None:
            raise AvsearchInputError("ITQ.encode before fit")
        x = _features(features, "features", self.pca_.shape[0])
        return binarize(((x - self.mean_) @ self.pca_) @ self.rotation_)


def _check_pca_bits(bits: int, dim: int, name: str) -> int:
    """``bits`` when PCA can give that many directions (bits <= D), else an input error."""
    if bits > dim:
        raise AvsearchInputError(f"{name} needs bits <= feature dimension: {bits} bits from "
                                 f"{dim} features (PCA has only {dim} directions); use LSH")
    return bits


def _pca(x: np.ndarray, n: int, signed: bool = False
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean (D,), components (D, n), projections (N, n) float64)``: the top ``n``
    eigenvectors of the covariance, largest eigenvalue first, of the centred data.

    ``signed``: each component's largest-magnitude entry is made positive (scikit-learn's
    ``svd_flip`` convention), so that codes that depend on a direction's sign (PCAH, SH) do
    not depend on the eigensolver's."""
    mean = x.mean(axis=0, dtype=np.float64)
    xc = x - mean.astype(x.dtype)
    cov = (xc.T @ xc).astype(np.float64) / max(len(x) - 1, 1)   # (D, D): float32 GEMM is enough
    _, evecs = np.linalg.eigh(cov)                               # ascending eigenvalues
    comps = evecs[:, ::-1][:, :n].copy()
    if signed:
        big = comps[np.argmax(np.abs(comps), axis=0), np.arange(comps.shape[1])]
        comps *= np.where(big < 0, -1.0, 1.0)
    return mean, comps, (xc @ comps.astype(xc.dtype)).astype(np.float64)


class PCAH(LSH):
    """PCA hashing: ``b = sign((x − μ)·P)``, P the top ``bits`` principal directions (sign
    convention of :func:`_pca`): :class:`LSH` with the principal directions for its random
    ones. ``bits`` must not exceed the feature width D.

    Attributes (after ``fit``): ``mean_`` (D,), ``projection_`` (D, bits).
    """

    def fit(self, train_features: np.ndarray, bits: int, seed: int = 0) -> PCAH:
        """Fit the projection (``seed`` is unused: PCAH draws nothing). Returns self."""
        x = _features(train_features, "train_features")
        bits = _check_pca_bits(_check_bits(bits), x.shape[1], "PCAH")
        self.mean_, self.projection_, _ = _pca(x, bits, signed=True)
        return self


class SH:
    """Spectral Hashing (Weiss, Torralba & Fergus, NIPS 2008), as in the paper's Sec. 3-4.

    Fit: PCA to ``min(bits, D)`` directions (sign convention of :func:`_pca`); on each
    direction i the data's range [a_i, b_i] (a uniform distribution, the paper's approximation);
    the one-dimensional eigenfunctions of the Laplacian on that interval are
    ``Φ_k(v) = cos(kπ (v − a_i) / (b_i − a_i))`` (the paper's sin(π/2 + ...)) with eigenvalue
    growing as ``(k / (b_i − a_i))²``; the ``bits`` pairs (i, k ≥ 1) of smallest eigenvalue
    are kept, in that order (ties: lower direction, then lower k). Encode: bit j =
    sign(Φ_{k_j}(v_{i_j})), sign(0) = +1. Any number of bits works (a long direction gives
    several). Nothing is random (``seed`` is unused).

    Attributes (after ``fit``): ``mean_`` (D,), ``pca_`` (D, n), ``low_`` and ``range_`` (n,),
    ``modes_`` (bits, 2): the (direction, k) of every bit.
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.pca_: np.ndarray | None = None
        self.low_: np.ndarray | None = None
        self.range_: np.ndarray | None = None
        self.modes_: np.ndarray | None = None

    def fit(self, train_features: np.ndarray, bits: int, seed: int = 0) -> SH:
        """Fit the principal directions, their ranges and the chosen modes. Returns self."""
        x = _features(train_features, "train_features")
        bits = _check_bits(bits)
        self.mean_, self.pca_, v = _pca(x, min(bits, x.shape[1]), signed=True)
        self.low_ = v.min(axis=0)
        self.range_ = np.maximum(v.max(axis=0) - self.low_, np.finfo(np.float64).tiny)
        # direction i can contribute at most ceil((bits + 1) · R_i / max R) modes: no mode of
        # a shorter direction beyond that beats the longest direction's first bits + 1
        most = np.ceil((bits + 1) * self.range_ / self.range_.max()).astype(int)
        cand = [(float((k / r) ** 2), i, k) for i, (r, m) in enumerate(zip(self.range_, most))
                for k in range(1, m + 1)]
        cand.sort()
        self.modes_ = np.array([(i, k) for _, i, k in cand[:bits]], dtype=np.int64)
        return self

    def encode(self, features: np.ndarray) -> np.ndarray:
        """int8 ±1 codes (N, bits), sign(0) = +1."""
        if self.modes_ is None:
            raise AvsearchInputError("SH.encode before fit")
        x = _features(features, "features", self.pca_.shape[0])
        v = ((x - self.mean_) @ self.pca_).astype(np.float64)
        i, k = self.modes_[:, 0], self.modes_[:, 1]
        return binarize(np.cos(np.pi * k * (v[:, i] - self.low_[i]) / self.range_[i]))


PCA_BASED = ("ITQ", "PCAH")     # need bits <= feature width


def unsupervised_baselines(images: bool) -> dict[str, Any]:
    """The hashing baselines a run reports beside its network, unfitted, by name: LSH and ITQ;
    for image data also PCAH and SH, the image-hashing papers' usual baselines."""
    models: dict[str, Any] = {"LSH": LSH(), "ITQ": ITQ()}
    if images:
        models.update(PCAH=PCAH(), SH=SH())
    return models


# ---------------------------------------------------------------- the trained baselines
class _PerModality(torch.nn.Module):
    """Standardised inputs, one per modality, in the data's order (as a searched network's)."""

    def __init__(self, modalities: dict[str, int], per_video: bool = False):
        super().__init__()
        self.modalities = list(modalities)
        self.inputs = torch.nn.ModuleList(Standardize(w, per_video) for w in modalities.values())

    def set_input_stats(self, stats: dict[str, tuple[Any, Any]]) -> None:
        """The training split's (mean, std) per modality, as :meth:`Network.set_input_stats`."""
        with torch.no_grad():
            for norm, m in zip(self.inputs, self.modalities):
                norm.set(*stats[m])


class PooledMLP(_PerModality):
    """The time-averaged MLP hash network: each modality's mean over time, concatenated,
    FC → ReLU → FC → tanh. Trained with the same loss and loop as a searched network, it
    shows what searching over *sequence* models buys over ignoring time."""

    def __init__(self, modalities: dict[str, int], bits: int, hidden: int = 256):
        super().__init__(modalities)
        self.net = torch.nn.Sequential(torch.nn.Linear(sum(modalities.values()), hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, bits))

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        pooled = [norm(x).mean(1) for norm, x in zip(self.inputs, features)]
        return torch.tanh(self.net(torch.cat(pooled, dim=-1)))


class TemporalCNN(_PerModality):
    """A two-layer temporal convolutional hash network: per modality two Conv1d(kernel 3)
    + ReLU layers over time, max-pooled over time, concatenated, FC → tanh.

    The strong simple baseline of issue 12: trained with the run's loss and recipe in
    seconds, it is the bar a searched sequence network has to clear.
    """

    def __init__(self, modalities: dict[str, int], bits: int, hidden: int = 128,
                 per_video: bool = False):
        super().__init__(modalities, per_video)
        self.convs = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Conv1d(w, hidden, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv1d(hidden, hidden, 3, padding=1), torch.nn.ReLU())
            for w in modalities.values())
        self.fc = torch.nn.Linear(hidden * len(modalities), bits)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        pooled = [conv(norm(x).transpose(1, 2)).amax(-1)
                  for norm, conv, x in zip(self.inputs, self.convs, features)]
        return torch.tanh(self.fc(torch.cat(pooled, dim=-1)))


def student_cnn_space(modalities: dict[str, int], bits: int):
    """The space of the self-supervised runs' CNN baseline (:func:`student_cnn`): VHMT with
    temporal-convolution students, for checking an objective can train it before building."""
    from avsearch.spaces import get_space

    return get_space("vhmt", bits=bits, modalities=modalities, student_blocks="TCN",
                     student_depths="2", student_decoder_depths="1")


def student_cnn(modalities: dict[str, int], bits: int) -> torch.nn.Module:
    """The self-supervised runs' CNN baseline: a VHMT student whose encoder is the temporal
    CNN's two convolutions (``TCN_2``), with one Mamba decoder block and no teacher, so that
    a VHMT or AutoSSVH objective can train it (its loss reads the student's reconstruction,
    codes and latent frames)."""
    from avsearch.supernet import compile_space

    space = student_cnn_space(modalities, bits)
    return compile_space(space, "fixed", {
        "student.encoder": "TCN_2", "student.decoder": "Mamba_1", "teacher.encoder": "none",
        "teacher.decoder": space.candidates("teacher.decoder")[0]})   # no teacher: no effect


def pooled(split: Split, chunk: int = 2048) -> np.ndarray:
    """:func:`mean_pool` over a whole split, read in chunks so big data sets stream."""
    parts = [mean_pool(split.take(np.arange(i, min(i + chunk, len(split)))))
             for i in range(0, len(split), chunk)]
    return np.concatenate(parts)


class CCAHash:
    """Cross-modal hashing by CCA then a quantiser (Gong, Ke, Isard & Lazebnik, IJCV 2014,
    "A multi-view embedding space...", and Gong et al., TPAMI 2013, §5: CCA-ITQ): both
    modalities are projected on their top ``bits`` canonical directions, into one space, and
    one quantiser, fitted on both modalities' projections of the training items, hashes
    either: ``"itq"`` (:class:`ITQ`'s rotation) or ``"lsh"`` (:class:`LSH`).

    CCA in closed form: with the covariances C_vv, C_tt (each regularised by ``reg`` times
    its mean variance on the diagonal) and C_vt, the SVD of C_vv^{-1/2} C_vt C_tt^{-1/2} =
    U S Wᵀ gives the directions A = C_vv^{-1/2} U, B = C_tt^{-1/2} W and the canonical
    correlations S (``correlations_``). scikit-learn's ``CCA`` is iterative (NIPALS): on
    avclips, 64 components took 8.6 s and stopped at its iteration limit; this is one SVD.
    No well-kept implementation of CMFH or CVH exists for Python.
    """

    def __init__(self, quantiser: str = "itq", reg: float = 1e-3):
        if quantiser not in ("itq", "lsh"):
            raise AvsearchInputError(f"quantiser must be itq or lsh, got {quantiser!r}")
        self.quantiser, self.reg = quantiser, reg
        self.means_: tuple[np.ndarray, np.ndarray] | None = None
        self.directions_: tuple[np.ndarray, np.ndarray] | None = None
        self.correlations_: np.ndarray | None = None
        self.hasher_: ITQ | LSH | None = None

    def fit(self, video: np.ndarray, text: np.ndarray, bits: int, seed: int = 0) -> "CCAHash":
        xv = _features(video, "video features").astype(np.float64)
        xt = _features(text, "text features", None).astype(np.float64)
        if len(xv) != len(xt):
            raise AvsearchInputError(f"{len(xv)} videos but {len(xt)} texts")
        bits = _check_pca_bits(_check_bits(bits), min(xv.shape[1], xt.shape[1]), "CCA")
        self.means_ = (xv.mean(0), xt.mean(0))
        xv, xt = xv - self.means_[0], xt - self.means_[1]
        n = max(len(xv) - 1, 1)

        def inverse_sqrt(c: np.ndarray) -> np.ndarray:
            c = c + self.reg * np.trace(c) / len(c) * np.eye(len(c))
            w, v = np.linalg.eigh(c)
            return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T

        wv, wt = inverse_sqrt(xv.T @ xv / n), inverse_sqrt(xt.T @ xt / n)
        u, s, vt = np.linalg.svd(wv @ (xv.T @ xt / n) @ wt)
        self.directions_ = (wv @ u[:, :bits], wt @ vt.T[:, :bits])
        self.correlations_ = s[:bits]
        both = np.concatenate([xv @ self.directions_[0], xt @ self.directions_[1]])
        self.hasher_ = (ITQ() if self.quantiser == "itq" else LSH()).fit(both, bits, seed)
        return self

    def encode(self, features: np.ndarray, modality: int) -> np.ndarray:
        """int8 ±1 codes of video (``modality`` 0) or text (1) features."""
        if self.hasher_ is None:
            raise AvsearchInputError("CCAHash.encode before fit")
        a = self.directions_[modality]
        x = _features(features, "features", a.shape[0]).astype(np.float64)
        return self.hasher_.encode((x - self.means_[modality]) @ a)


def run_cross_modal_baselines(data: Dataset, bits: int, seed: int) -> dict[str, dict[str, Any]]:
    """CCA-LSH and CCA-ITQ (:class:`CCAHash`) on a video-text data set's pooled features
    (:func:`avsearch.losses.sptch.collaboration_features`: the mean standardised frame, a
    caption's TF-IDF with the training split's document frequencies), evaluated per direction
    as a cross-modal network is (:func:`avsearch.inference.cross_modal_metrics`)."""
    from avsearch.inference import cross_modal_metrics
    from avsearch.losses.sptch import collaboration_features

    text = data.text[0]
    video = next(m for m in data.modalities if m != text)
    xv, xt, df = collaboration_features(data.split("train"))
    feats = {}
    for name in ("val", "test"):
        for part in (data.split(name), data.database(name)):
            if id(part) not in feats:
                v, t, _ = collaboration_features(part, df)
                feats[id(part)] = (v.numpy(), t.numpy())
    out: dict[str, dict[str, Any]] = {}
    for quantiser in ("lsh", "itq"):
        name = f"CCA-{quantiser.upper()}"
        try:
            model = CCAHash(quantiser).fit(xv.numpy(), xt.numpy(), bits, seed)
        except AvsearchInputError:
            continue   # more bits than a modality's features have canonical directions
        out[name] = {}
        for split in ("val", "test"):
            q, db = data.split(split), data.database(split)
            codes = [{video: model.encode(feats[id(part)][0], 0), text: model.encode(feats[id(part)][1], 1)}
                     for part in (q, db)]
            out[name][split] = cross_modal_metrics(codes[0], q.labels, codes[1], db.labels,
                                                   data.images)
    return out


def run_baselines(data: Dataset, bits: int, seed: int, trainer: "Trainer", device: torch.device,
                  input_stats: dict[str, tuple[Any, Any]] | None = None,
                  per_video: bool = False) -> dict[str, dict[str, Any]]:
    """LSH and ITQ (and for images PCAH and SH), the MLP and the temporal CNN on ``data``: val
    and test metrics under the data's protocol (database = :meth:`Dataset.database`).
    ``per_video``: the CNN normalises its inputs per video too, as the run's network does
    (``input_norm=video``); the MLP does not, since its input, the mean over time, is what
    that normalisation takes out.

    The MLP and the CNN train for the budget's finetune epochs through ``trainer`` (same loss,
    recipe, sampler, selection on validation, checkpoint and resume as the searched network).
    Under a self-supervised objective, whose loss reads nodes of a VHMT-like network, the CNN
    is :func:`student_cnn` and trains with that objective (when the objective can train a
    VHMT student: not LAGNH's); the MLP is left out.
    """
    from avsearch.inference import evaluate, flat_metrics
    from avsearch.metrics import protocol_for, retrieval_metrics

    feats = {name: pooled(data.split(name)) for name in SPLITS}
    labels = {name: data.split(name).labels for name in feats}
    protocol = protocol_for(data.images)
    out: dict[str, dict[str, Any]] = {}
    for name, model in unsupervised_baselines(data.images).items():
        if name in PCA_BASED and bits > feats["train"].shape[1]:
            continue  # PCA cannot give more bits than feature dimensions
        model.fit(feats["train"], bits, seed)
        out[name] = {}
        for split in ("val", "test"):
            db = data.database(split)      # for val, one without test items where need be
            db_feats = feats["retrieval"] if db is data.split("retrieval") else pooled(db)
            metrics = retrieval_metrics(model.encode(feats[split]), labels[split],
                                        model.encode(db_feats), db.labels, ks=protocol.ks,
                                        normalisation=protocol.normalisation, pr_curve=False,
                                        curve_ks=protocol.curve_ks)
            out[name][split] = {**flat_metrics(metrics), "protocol": protocol.name}
    widths = dict(data.modalities)
    if trainer.objective.supervised:
        nets = (("MLP", "baseline-mlp", lambda: PooledMLP(widths, bits)),
                ("CNN", "baseline-cnn", lambda: TemporalCNN(widths, bits, per_video=per_video)))
    else:   # a VHMT student, when the objective can train one (LAGNH's reads other nodes)
        try:
            trainer.objective.check_space(student_cnn_space(widths, bits))
            nets = (("CNN", "baseline-cnn", lambda: student_cnn(widths, bits)),)
        except AvsearchInputError:
            nets = ()
    for name, stage, build in nets:
        torch.manual_seed(seed)
        net = build()
        if input_stats is not None:
            net.set_input_stats(input_stats)
        net = net.to(device)
        opt = trainer.weight_optimizer(net.parameters())
        trainer.stage(stage, net, {"w": opt}, trainer.budget.finetune_epochs, phase="baseline")
        out[name] = {split: evaluate(net, data, split, device) for split in ("val", "test")}
    return out
