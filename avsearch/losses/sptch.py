"""SPTCH's losses (paper 003, Eqs. 1-2 and 6-16), as pure functions on tensors.

SPTCH hashes videos and their captions into one Hamming space without labels. A
*collaboration graph* S over the training items (Eqs. 1-2) is what every similarity term
preserves; Algorithm 1 alternates two phases per epoch:

* the semantic hashing network (GCNs over S, decoders) minimises
  ``L_c = L_rc + α1 L_sc + α2 L_bc`` (Eq. 9): reconstruction (Eq. 6), similarity of the
  latent representations to S (Eq. 7) and quantisation towards its codes B (Eq. 8);
* the two transformer encoders minimise ``L_f = L_mf + β1 L_bf + β2 L_sf`` (Eq. 16):
  inter- and intra-modal contrast between each item's video, caption and their augmented
  views (Eqs. 11-13), closeness to the first phase's codes B (Eq. 14), and similarity of
  the codes to S (Eq. 15).

Conventions the paper leaves open, chosen here and tested (``tests/test_sptch_losses.py``):

* every squared Frobenius norm ``‖M‖²_F`` is divided by the number of entries of M (a mean
  squared error), so a term's scale does not grow with the batch or the code length;
* contrast uses cosine similarity (rows L2-normalised), and the contrast set A(i) of Eqs.
  11-12 is every item of the other set, its own positive included: the anchor itself is not
  in that set, so Eq. 10's ``a ≠ i`` removes nothing (this is the InfoNCE of CLIP);
* Eq. 2 sets the ``floor(θ2 · N)`` smallest entries of each row to −1 (the lowest index
  first among ties); the graph is then ``tanh(S)``, as the paper says;
* ``cos(A, B)`` is the matrix of cosine similarities between the rows of A and of B.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["masked_mean", "token_counts", "tfidf", "collaboration_features", "drop_positions",
           "cosine_matrix", "collaboration_graph", "mse", "reconstruction_loss",
           "similarity_loss", "quantization_loss", "cross_nce", "multimodal_contrastive",
           "semantic_hashing_loss", "encoder_loss"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, D) mean of ``x`` (N, L, D) over the positions where ``mask`` (N, L) is true."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def token_counts(ids: torch.Tensor, vocabulary: int) -> torch.Tensor:
    """(N, vocabulary) float counts of each token id in each row of ``ids`` (N, L); the
    padding id 0 is not counted."""
    counts = torch.zeros(ids.shape[0], vocabulary, dtype=torch.float32, device=ids.device)
    counts.scatter_add_(1, ids.long(), (ids != 0).to(torch.float32))
    return counts


def tfidf(counts: torch.Tensor, document_frequency: torch.Tensor | None = None,
          documents: int | None = None) -> torch.Tensor:
    """TF-IDF rows of token ``counts`` (N, V), L2-normalised: ``tf · (ln((1 + n) / (1 + df))
    + 1)`` (the smoothed idf of scikit-learn's ``TfidfTransformer``). ``document_frequency``
    (V,) and ``documents`` n default to those of ``counts`` itself; pass the training
    split's to weigh other items alike.

    SPTCH builds its text similarities S^t from a pretrained transformer's caption features;
    none can be downloaded here, so for token ids the collaboration graph uses these
    label-free bag-of-words vectors (precomputed text features use :func:`masked_mean`).
    """
    if document_frequency is None:
        document_frequency, documents = (counts > 0).sum(0).to(counts.dtype), counts.shape[0]
    idf = torch.log((1.0 + documents) / (1.0 + document_frequency)) + 1.0
    return F.normalize(counts * idf, dim=-1)


def collaboration_features(split, document_frequency: tuple[torch.Tensor, int] | None = None,
                           chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor,
                                                       tuple[torch.Tensor, int] | None]:
    """One vector per item of a video-text ``split`` (a :class:`~avsearch.data.Split` with
    one frame modality and one text modality): X^v, the mean of its frames, standardised per
    dimension over the split (centred, so cosines of non-negative features are not all near
    1); X^t, the caption's :func:`tfidf` with ``document_frequency`` = (df, n) (default the
    split's own: pass the training split's for others), or the mean of its real precomputed
    token features. Returns float32 (X^v, X^t, the (df, n) used; None for features)."""
    from avsearch.data.text import is_text, padding_mask

    names = list(split.features)
    texts = [i for i, m in enumerate(names) if is_text(split.features[m])]
    if len(names) != 2 or len(texts) != 1:
        raise ValueError(f"a video-text split has one frame and one text modality, got {names}")
    t = texts[0]
    video, text = [], []
    for start in range(0, len(split), chunk):
        xs = split.take(np.arange(start, min(start + chunk, len(split))))
        video.append(torch.from_numpy(xs[1 - t].mean(1)))
        x = torch.from_numpy(xs[t])
        if x.ndim == 2:
            text.append(token_counts(x, split.features[names[t]].width))
        else:
            text.append(masked_mean(x, torch.from_numpy(np.asarray(padding_mask(xs[t])))))
    xv, xt = torch.cat(video), torch.cat(text)
    xv = (xv - xv.mean(0)) / xv.std(0).clamp_min(1e-6)
    df = None
    if split.features[names[t]].ndim == 2:
        df = document_frequency or ((xt > 0).sum(0).float(), len(xt))
        xt = tfidf(xt, *df)
    return xv.float(), xt.float(), df


def drop_positions(x: torch.Tensor, ratio: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A view of a text batch with ``floor(ratio · n_i)`` of each item's n_i real positions
    dropped (at least one kept): set to the padding (id 0, or a zero row), so
    :func:`~avsearch.data.text.padding_mask` sees them as gone. SPTCH's augmentation of a
    caption; frames are dropped with ``avsearch.objectives.random_drop_masks``."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must lie in [0, 1), got {ratio}")
    real = x != 0 if x.ndim == 2 else (x != 0).any(-1)
    n = real.sum(1)
    drop = torch.floor(ratio * n.to(torch.float64)).long().clamp(max=(n - 1).clamp_min(0))
    scores = torch.rand(real.shape, generator=generator, device="cpu").to(x.device)
    scores = scores.masked_fill(~real, 2.0)               # padding is never drawn
    order = scores.argsort(1).argsort(1)                  # rank of each position's score
    dropped = order < drop.unsqueeze(1)
    return x.masked_fill(dropped if x.ndim == 2 else dropped.unsqueeze(-1), 0)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """(N, M) cosine similarities between the rows of ``a`` (N, k) and ``b`` (M, k)."""
    a = F.normalize(a, dim=-1)
    return a @ (a if b is None else F.normalize(b, dim=-1)).T


def collaboration_graph(video: torch.Tensor, text: torch.Tensor, theta1: float = 0.6,
                        theta2: float = 0.1) -> torch.Tensor:
    """SPTCH's multi-modal collaboration graph (Eqs. 1-2), (N, N).

    ``S = θ1 cos(Xv, Xv) + (1 − θ1) cos(Xt, Xt)``; in each row the ``floor(θ2 · N)``
    smallest entries become −1 (noise: weak similarities say little); then ``tanh``.

    Args:
        video: (N, d_v) one feature vector per video (frame features averaged over time).
        text: (N, d_t) one feature vector per caption.
        theta1: weight of the video similarities, in [0, 1].
        theta2: share of each row set to −1, in [0, 1).
    """
    if video.shape[0] != text.shape[0]:
        raise ValueError(f"{video.shape[0]} videos but {text.shape[0]} texts")
    if not (0.0 <= theta1 <= 1.0 and 0.0 <= theta2 < 1.0):
        raise ValueError("theta1 must lie in [0, 1] and theta2 in [0, 1)")
    s = theta1 * cosine_matrix(video) + (1.0 - theta1) * cosine_matrix(text)
    k = int(math.floor(theta2 * s.shape[1]))
    if k:
        smallest = torch.argsort(s, dim=1, stable=True)[:, :k]
        s = s.scatter(1, smallest, -1.0)
    return torch.tanh(s)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``‖a − b‖²_F`` divided by the number of entries."""
    return (a - b).pow(2).mean()


def reconstruction_loss(rec_video: torch.Tensor, video: torch.Tensor, rec_text: torch.Tensor,
                        text: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ``‖X̃v − Xv‖² + ‖X̃t − Xt‖²``."""
    return mse(rec_video, video) + mse(rec_text, text)


def similarity_loss(graph: torch.Tensor,
                    pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Eqs. 7 and 15: ``Σ ‖S − cos(A, B)‖²`` over the given (A, B) pairs of (N, k) rows."""
    return sum((mse(graph, cosine_matrix(a, b)) for a, b in pairs), graph.new_zeros(()))


def quantization_loss(codes: torch.Tensor, *relaxed: torch.Tensor) -> torch.Tensor:
    """Eqs. 8 and 14: ``Σ ‖B − H‖²`` over the relaxed codes H given (B is not trained)."""
    codes = codes.detach()
    return sum((mse(codes, h) for h in relaxed), codes.new_zeros(()))


def cross_nce(anchors: torch.Tensor, others: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    """One line of Eqs. 11-12: ``1/N Σ_i −log(e^{a_i·o_i/τ} / Σ_a e^{a_i·o_a/τ})`` with
    cosine similarity; item i's positive is ``others[i]``."""
    logits = cosine_matrix(anchors, others) / tau
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))


def multimodal_contrastive(zv: torch.Tensor, zt: torch.Tensor, zv_aug: torch.Tensor,
                           zt_aug: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    """Eq. 13, ``L_mf = L_ve + L_te + L_va + L_ta``:

    * inter-modal (Eq. 11): each video against the captions, on the originals and on the
      augmented views; and each caption against the videos (``L_te``);
    * intra-modal (Eq. 12): each original against the augmented views of its own modality.
    """
    inter_v = cross_nce(zv, zt, tau) + cross_nce(zv_aug, zt_aug, tau)
    inter_t = cross_nce(zt, zv, tau) + cross_nce(zt_aug, zv_aug, tau)
    return inter_v + inter_t + cross_nce(zv, zv_aug, tau) + cross_nce(zt, zt_aug, tau)


def semantic_hashing_loss(graph: torch.Tensor, rec: tuple[torch.Tensor, torch.Tensor,
                                                          torch.Tensor, torch.Tensor],
                          hv: torch.Tensor, ht: torch.Tensor, h: torch.Tensor,
                          alpha1: float = 0.2, alpha2: float = 0.2) -> torch.Tensor:
    """Eq. 9, ``L_c = L_rc + α1 L_sc + α2 L_bc``: ``rec`` = (X̃v, Xv, X̃t, Xt); ``hv``, ``ht``
    the latent representations of each modality, ``h`` the composite one; its codes are
    ``B = sign(h)`` (sign(0) = +1)."""
    codes = torch.where(h >= 0, 1.0, -1.0).to(h.dtype)
    return (reconstruction_loss(*rec)
            + alpha1 * similarity_loss(graph, [(hv, hv), (ht, ht), (h, h)])
            + alpha2 * quantization_loss(codes, h))


def encoder_loss(graph: torch.Tensor, codes: torch.Tensor, zv: torch.Tensor, zt: torch.Tensor,
                 zv_aug: torch.Tensor, zt_aug: torch.Tensor, tau: float = 0.2,
                 beta1: float = 1.0, beta2: float = 1.0, contrast: float = 1.0) -> torch.Tensor:
    """Eq. 16, ``L_f = L_mf + β1 L_bf + β2 L_sf``: ``codes`` are the first phase's ±1 codes
    B of the batch; ``zv``, ``zt`` the encoders' relaxed codes, ``*_aug`` those of the
    augmented views; ``contrast`` weighs L_mf (0: Table 1's ablation without it)."""
    return (contrast * multimodal_contrastive(zv, zt, zv_aug, zt_aug, tau)
            + beta1 * quantization_loss(codes, zv, zt)
            + beta2 * similarity_loss(graph, [(zv, zt), (zv, zv), (zt, zt)]))
