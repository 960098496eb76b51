"""Encoding videos to codes and evaluating retrieval: shared by training, ``eval`` and ``encode``."""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from avsearch._threads import cpu_has_native_bf16
from avsearch.codes import binarize
from avsearch.data import Dataset, Split
from avsearch.errors import AvsearchInputError
from avsearch.graph import AUX_INPUT, SearchSpace
from avsearch.metrics import protocol_for, retrieval_metrics

__all__ = ["resolve_device", "resolve_precision", "PRECISIONS", "autocast",
           "Encoder", "feature_encoder", "network_inputs", "anchor_inputs", "iter_codes",
           "encode_split", "evaluate", "cross_modal_evaluate", "cross_modal_metrics", "flat_metrics"]

# databases at least this large are ranked through faiss's flat binary index (same numbers;
# its SIMD scan ranked about twice as fast as the metrics kernel on 200k codes, one thread)
INDEX_THRESHOLD = 100_000


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is bad input."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AvsearchInputError(f"device {name!r}: CUDA is not available on this machine",
                                 "device")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AvsearchInputError(f"device {name!r}: expected auto, cpu or cuda", "device") from None


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The dtype a network's forward pass autocasts to (None: float32 throughout).

    ``auto``: bf16 on CUDA, float32 on a CPU. ``bf16`` on a CPU needs native bf16 arithmetic
    (AVX-512 BF16 or AMX): there matmuls run several times faster (benchmarks/bench_step.py),
    while the scan, norms, softmax and losses stay float32 under autocast's own rules."""
    if name not in PRECISIONS:
        raise AvsearchInputError(f"precision {name!r}: expected {', '.join(PRECISIONS)}",
                                 "precision")
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return None
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise AvsearchInputError("precision bf16: this CPU has no native bf16 arithmetic "
                                 "(AVX-512 BF16 or AMX); use fp32", "precision")
    return torch.bfloat16


def autocast(device: torch.device, precision: str = "auto"):
    """Autocast to ``precision`` (:func:`resolve_precision`) on ``device``: bf16 on CUDA by
    default (one device abstraction for every stage), float32 on a CPU unless asked."""
    dtype = resolve_precision(precision, device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def network_inputs(space: SearchSpace | None, split: Split, index: np.ndarray) -> list[np.ndarray]:
    """What a network of ``space`` takes for the items ``index`` of ``split``: float32 (n, T, D)
    features per modality (:meth:`Split.take`), then, when the space reads them (an input
    named :data:`~avsearch.graph.AUX_INPUT`), the items' auxiliary semantics as (n, 1, A).
    A network of no space (a baseline) takes the features."""
    xs = split.take(index)
    if space is not None and AUX_INPUT in space.modalities:
        if split.aux is None:
            raise AvsearchInputError(f"space {space.name!r} reads auxiliary semantics, which this "
                                     f"data has none of (an SSVH folder's <role>_tags files)")
        xs.append(np.asarray(split.aux[np.asarray(index, dtype=np.int64)], np.float32)[:, None])
    return xs


def anchor_inputs(space: SearchSpace, split: Split, seed: int) -> list[np.ndarray] | None:
    """The anchor bank of a space with ``op_config.anchors`` = m > 0 (see
    :mod:`avsearch.supernet`): :func:`network_inputs` of m items of ``split`` (the training
    split), drawn without replacement by ``seed``; None for a space without anchors."""
    m = space.op_config.anchors
    if not m:
        return None
    if m > len(split):
        raise AvsearchInputError(f"space {space.name!r}: anchors={m} is more than the "
                                 f"{len(split)} training items", "space_options")
    rows = np.sort(np.random.default_rng([seed, m]).choice(len(split), m, replace=False))
    xs = network_inputs(space, split, rows)
    if any(x.shape[1] != 1 for x in xs):
        raise AvsearchInputError(f"space {space.name!r} takes images (one feature vector per "
                                 f"item); this data has {xs[0].shape[1]} steps per item")
    return xs


class Encoder:
    """Runs a network on videos of one split: ``encode(indices)`` gives the tanh codes
    (float32); ``encode.nodes(indices, names)`` gives named node outputs (a self-supervised
    objective's reconstructions and teacher codes; ``"codes"`` is the output; a modality's
    name gives the standardised input the network saw).

    The last batch's input tensors are kept, so an objective that evaluates one batch
    several times (views) reads it once.
    """

    def __init__(self, net: torch.nn.Module, split: Split, device: torch.device,
                 modality: str | None = None, precision: str = "auto"):
        self.net, self.split, self.device = net, split, device
        self.precision = precision   # what the forward passes autocast to (resolve_precision)
        # a cross-modal network's tower (``space.towers``): that modality's codes, from its
        # input alone; None: the network's output
        self.modality = modality
        self._last: tuple[bytes, list[torch.Tensor]] | None = None

    def _inputs(self, index: np.ndarray) -> list[torch.Tensor]:
        tag = np.asarray(index, dtype=np.int64).tobytes()
        if self._last is None or self._last[0] != tag:
            self._last = (tag, [torch.from_numpy(x).to(self.device, non_blocking=True)
                                for x in network_inputs(getattr(self.net, "space", None), self.split,
                                                       index)])
        return self._last[1]

    def __call__(self, index: np.ndarray) -> torch.Tensor:
        xs = self._inputs(index)
        with autocast(self.device, self.precision):
            if self.modality is not None:
                return self.net.tower(self.modality,
                                      xs[self.net.space.modalities.index(self.modality)]).float()
            return self.net(*xs).float()

    def nodes(self, index: np.ndarray, names: Iterable[str],
              given: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The named nodes' outputs (float32), computing only what they need; ``given``
        replaces nodes' values (see ``Network.node_outputs``)."""
        names = list(names)
        space = self.net.space
        graph_names = [space.output_node if n == "codes" else n for n in names]
        missing = [n for n in graph_names if n not in space.graph]
        if missing:
            raise AvsearchInputError(
                f"the objective needs node(s) {', '.join(missing)}, which space "
                f"{space.name!r} does not have")
        xs = self._inputs(index)
        with autocast(self.device, self.precision):
            out = self.net.node_outputs(*xs, names=graph_names, given=given)
        return {n: out[g].float() if out[g].is_floating_point() else out[g]   # token ids stay
                for n, g in zip(names, graph_names)}


def feature_encoder(net: torch.nn.Module, split: Split, device: torch.device,
                    modality: str | None = None, precision: str = "auto") -> Encoder:
    """An :class:`Encoder` of ``net`` over ``split`` (of one tower's ``modality``)."""
    return Encoder(net, split, device, modality, precision)


@torch.no_grad()
def iter_codes(net: torch.nn.Module, split: Split, device: torch.device, batch_size: int = 512,
               limit: int | None = None, progress: Iterable | None = None,
               relaxed: bool = False, modality: str | None = None) -> Iterator[np.ndarray]:
    """:func:`encode_split` one batch at a time, so a caller that packs or indexes the codes
    (``avsearch index build``) never holds a whole split's codes or features."""
    was_training = net.training
    net.eval()
    n = len(split) if limit is None else min(limit, len(split))
    encode = feature_encoder(net, split, device, modality)
    starts = range(0, n, batch_size)
    try:
        for start in (progress(starts) if progress else starts):
            f = encode(np.arange(start, min(start + batch_size, n)))
            yield (f if relaxed else binarize(f)).cpu().numpy()
    finally:
        net.train(was_training)


def encode_split(net: torch.nn.Module, split: Split, device: torch.device, batch_size: int = 512,
                 limit: int | None = None, progress: Iterable | None = None,
                 relaxed: bool = False, modality: str | None = None) -> np.ndarray:
    """int8 ±1 codes (sign with sign(0) = +1, Eq. 35) of the first ``limit`` videos of
    ``split``, in eval mode; ``relaxed``: the float32 tanh codes before the sign;
    ``modality``: a cross-modal network's codes of that tower (``space.towers``)."""
    chunks = list(iter_codes(net, split, device, batch_size, limit, progress, relaxed, modality))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32 if relaxed else np.int8)


def evaluate(net: torch.nn.Module, data: Dataset, split: str, device: torch.device,
             ks: tuple[int, ...] | None = None, normalisation: str | None = None,
             limit: int | None = None, pr_curve: bool = False,
             db_codes: np.ndarray | None = None,
             index_threshold: int | None = INDEX_THRESHOLD) -> dict[str, Any]:
    """Retrieval metrics with queries from ``split`` against its database
    (:meth:`~avsearch.data.Dataset.database`: the retrieval split, or for val one free of
    test videos).

    ``ks`` and ``normalisation`` default to the data's protocol
    (:func:`avsearch.metrics.protocol_for`): for images MAP@1000 as the image-hashing papers
    compute it, with its topK-precision curve; for videos mAP@5..100 normalised by K. The
    result names the protocol.

    A database of at least ``index_threshold`` items (None or 0: never) is ranked through
    faiss's flat binary index (:mod:`avsearch.index`), with ties broken by database index as
    in the metrics' own kernel, so the numbers are the same; the PR curve needs every pair's
    distance, so with ``pr_curve`` the kernel ranks.
    """
    queries, db = data.split(split), data.database(split)
    if len(getattr(getattr(net, "space", None), "towers", ())) > 1:
        return cross_modal_evaluate(net, data, split, device, ks, normalisation, limit, pr_curve)
    q_codes = encode_split(net, queries, device, limit=limit)
    if db_codes is None:
        db_codes = encode_split(net, db, device, limit=limit)
    n_q, n_db = len(q_codes), len(db_codes)
    search = None
    if index_threshold and not pr_curve and n_db >= index_threshold:
        import faiss

        from avsearch.index import BinaryIndex   # faiss; imported only for large databases
        faiss.omp_set_num_threads(torch.get_num_threads())   # a run's share of the cores
        search = BinaryIndex.build(db_codes, "flat").rank
    protocol = protocol_for(data.images)
    metrics = retrieval_metrics(q_codes, queries.labels[:n_q], db_codes, db.labels[:n_db],
                                ks=protocol.ks if ks is None else ks,
                                normalisation=normalisation or protocol.normalisation,
                                pr_curve=pr_curve, search=search, curve_ks=protocol.curve_ks)
    return {**flat_metrics(metrics), "protocol": protocol.name}


def cross_modal_evaluate(net: torch.nn.Module, data: Dataset, split: str, device: torch.device,
                         ks: tuple[int, ...] | None = None, normalisation: str | None = None,
                         limit: int | None = None, pr_curve: bool = False) -> dict[str, Any]:
    """:func:`evaluate` of a cross-modal network (``space.towers``): per direction (each
    modality's queries against the other modality's codes of the database: video→text and
    text→video) mAP@K, P@K, R@K, GmAP and, with ``pr_curve``, the PR curve, under the data's
    protocol and the same ranking (ties by database index); and ``map@all``, the mAP over the
    whole database (K = its size, AP over the relevant items). The directions are under
    ``directions["<query>-><database>"]``; the top-level scalars are their means, which model
    selection reads (``map@100``)."""
    queries, db = data.split(split), data.database(split)
    towers = list(net.space.towers)
    q_codes = {m: encode_split(net, queries, device, limit=limit, modality=m) for m in towers}
    db_codes = {m: encode_split(net, db, device, limit=limit, modality=m) for m in towers}
    n_q, n_db = len(q_codes[towers[0]]), len(db_codes[towers[0]])
    return cross_modal_metrics(q_codes, queries.labels[:n_q], db_codes, db.labels[:n_db],
                               data.images, ks, normalisation, pr_curve)


def cross_modal_metrics(q_codes: dict[str, np.ndarray], q_labels: np.ndarray,
                        db_codes: dict[str, np.ndarray], db_labels: np.ndarray,
                        images: bool = False, ks: tuple[int, ...] | None = None,
                        normalisation: str | None = None, pr_curve: bool = False) -> dict[str, Any]:
    """:func:`cross_modal_evaluate`'s numbers from codes per modality (queries and database
    alike; a cross-modal baseline's too)."""
    from itertools import permutations

    protocol = protocol_for(images)
    n_db = len(next(iter(db_codes.values())))
    directions = {}
    for q, d in permutations(q_codes, 2):
        args = (q_codes[q], q_labels, db_codes[d], db_labels)
        flat = flat_metrics(retrieval_metrics(*args, ks=protocol.ks if ks is None else ks,
                                              normalisation=normalisation or protocol.normalisation,
                                              pr_curve=pr_curve, curve_ks=protocol.curve_ks))
        whole = retrieval_metrics(*args, ks=(n_db,), normalisation="retrieved", pr_curve=False)
        flat["map@all"] = float(whole["map"][n_db])
        directions[f"{q}->{d}"] = flat
    first = next(iter(directions.values()))
    out: dict[str, Any] = {k: float(np.mean([m[k] for m in directions.values()]))
                           for k, v in first.items() if isinstance(v, float)}
    out.update({k: v for k, v in first.items() if not isinstance(v, (float, dict))})
    return {**out, "directions": directions, "protocol": protocol.name}


def flat_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``{"map@100": …, "p@100": …, "r@100": …, "gmap": …}`` plus the facts a reader needs
    (normalisation, sizes) and the PR curve when it was computed."""
    out: dict[str, Any] = {}
    for name, short in (("map", "map"), ("precision", "p"), ("recall", "r")):
        out.update({f"{short}@{k}": float(v) for k, v in metrics[name].items()})
    out["gmap"] = float(metrics["gmap"])
    for key in ("normalisation", "n_queries", "n_database", "bits", "tie_break", "pr_curve",
                "topk_precision"):
        if metrics.get(key) is not None:
            out[key] = metrics[key]
    return out
