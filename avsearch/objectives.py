"""Training objectives: what a batch is and how its loss is computed.

An objective owns both halves because they go together: the supervised InfoNCE of AV-NAS
(Eqs. 36-37) needs anchor/positive/negative batches, a self-supervised loss needs views of
unlabelled videos. The training loop only asks for ``batches`` and a ``loss``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from avsearch.data import Split
from avsearch.data.sampler import ClassBatchSampler, TripletSampler
from avsearch.errors import AvsearchInputError
from avsearch.options import (AT_LEAST_ONE, COUNT, NON_NEGATIVE, POSITIVE, PRIOR, Check,
                              Configurable, Option, check_names, one_of, option)
from avsearch.registry import Registry
from avsearch.spaces.lagnh import ADVERSARY, LOGITS, SEMANTICS
from avsearch.spaces.vhmt import (SAMPLER, STUDENT_LATENT, STUDENT_RECON, TEACHER_CODES,
                                  TEACHER_RECON)
from avsearch.spaces.sptch import (JOINT_PROJ, PROJECTIONS, SH_GRAPH, SH_TEXT, SH_VIDEO,
                                   TEXT_LATENT, TEXT_RECON, VIDEO_LATENT, VIDEO_RECON)

__all__ = ["Objective", "SupCon", "InfoNCE", "VHMT", "AutoSSVH", "LAGNH", "SPTCH", "LabelFreeSelection", "SELECTION",
           "info_nce", "unlabelled_batches", "get_objective", "objective_options", "list_objectives",
           "OBJECTIVES"]

# the objectives by name (``--objective``); the built-ins are this module's classes
OBJECTIVES: Registry[type["Objective"]] = Registry("objective")


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             tau: float = 0.1) -> torch.Tensor:
    """Eq. 36 averaged over anchors: −log e^{s(a,p)/τ} / (e^{s(a,p)/τ} + Σ_i e^{s(a,n_i)/τ}).

    Args:
        anchor, positive: (B, bits); negatives: (B, n, bits). s is cosine similarity.
    """
    a = F.normalize(anchor, dim=-1)
    p = F.normalize(positive, dim=-1)
    n = F.normalize(negatives, dim=-1)
    logits = torch.cat([(a * p).sum(-1, keepdim=True), torch.einsum("bd,bnd->bn", a, n)], 1) / tau
    return F.cross_entropy(logits, logits.new_zeros(len(a), dtype=torch.long))


@dataclass(eq=False)
class Objective(Configurable, abc.ABC):
    """What the training loop needs from an objective: what a batch is and its loss.

    Lifecycle: the objective is built with its options (:func:`~avsearch.options.option`
    fields, checked then); ``check_space`` refuses a space it cannot train before a run writes
    anything; the trainer calls ``begin_stage`` as each stage starts or resumes, ``batches``
    once per epoch and ``loss`` once per step. Model selection reads ``criterion``: validation
    mAP@100 unless the objective selects by a label-free ``score`` of its own.

    ``batches`` and ``loss`` are abstract; every other member has the default written here.
    """

    kind: ClassVar[str] = "objective"
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""             # one line for ``avsearch objectives``
    supervised: ClassVar[bool] = True       # reads labels (a self-supervised one never does)
    # trains parameters of its own in :meth:`update` (LAGNH's discriminator), which the
    # processes of a torchrun run do not yet keep identical: such a run refuses it
    own_parameters: ClassVar[bool] = False
    # its loss can be computed from each process's share of a batch (a torchrun run); SPTCH's
    # cannot: its graph and its two views relate every item of the batch to every other
    shardable: ClassVar[bool] = True
    # space options the objective needs unless the user sets them (AutoSSVH's sampler cell)
    space_defaults: ClassVar[Mapping[str, str]] = {}
    criteria: ClassVar[tuple[str, ...]] = ()   # label-free selection keys ``score`` returns

    seed: int = 0

    @abc.abstractmethod
    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        """Index arrays into ``split`` (training data), deterministic in (seed, epoch)."""

    @abc.abstractmethod
    def loss(self, encode: Callable[[np.ndarray], torch.Tensor], batch: np.ndarray) -> torch.Tensor:
        """The loss of one batch; ``encode(indices)`` returns the network's tanh codes."""

    def check_space(self, space) -> None:
        """Raise :class:`AvsearchInputError` for a space this objective cannot train (default:
        it trains any space)."""

    def begin_stage(self, name: str, phase: str) -> None:
        """A stage ``name`` of ``phase`` (``search``, ``halving``, ``finetune``, ``baseline``)
        starts or resumes (default: nothing; state tied to the network a stage trains, as
        AutoSSVH's warm-up and hash centres, resets here)."""

    def criterion(self, data) -> str:
        """The key the trainer selects models on for ``data`` (default ``map@100``)."""
        return "map@100"

    def update(self) -> None:
        """After every weight step: the objective's own parameters (LAGNH's discriminator)
        take their step, on what the last loss saw (default: it has none)."""

    def state_dict(self) -> dict[str, Any] | None:
        """The objective's own trained state (parameters, their optimizer), which the trainer
        checkpoints with a stage in progress; None: it has none."""
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`'s value when a stage resumes."""

    def score(self, net: torch.nn.Module, split: Split, device: torch.device,
              limit: int | None = None) -> dict[str, float]:
        """Validation scores under the keys of ``criteria`` (an objective without
        ``criteria`` has none)."""
        raise NotImplementedError(f"objective {self.name!r} has no label-free score")


@OBJECTIVES.register("supcon")
@dataclass(eq=False)
class SupCon(Objective):
    """Supervised contrastive loss over every in-batch pair (Khosla et al., 2020;
    :func:`avsearch.losses.supcon.supcon_loss`), τ = 0.1, cosine similarity on tanh codes.

    Batches come from :class:`~avsearch.data.sampler.ClassBatchSampler`: ``per_class``
    videos of a class together, so every video has in-batch positives whatever the number
    of classes. The default recipe's loss: at the budgets a CPU runs it learns codes that
    AV-NAS's InfoNCE (``--recipe paper``) reaches far later (``experiments/generality``).
    """

    name = "supcon"
    summary = "supervised contrastive over all in-batch pairs: the default recipe's loss"

    tau: float = option(0.1, "temperature of the cosine similarities", POSITIVE)
    per_class: int = option(4, "videos of a class that a batch holds together",
                            Check(lambda v: v >= 2, "an integer >= 2"))

    def __post_init__(self) -> None:
        super().__post_init__()
        self._samplers: dict[int, ClassBatchSampler] = {}   # per split (DARTS trains on two)

    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        if id(split) not in self._samplers:
            self._samplers[id(split)] = ClassBatchSampler(split.labels, self.per_class, self.seed)
        return self._samplers[id(split)].epoch(batch_size, epoch=epoch)

    def loss(self, encode: Callable[[np.ndarray], torch.Tensor], batch: np.ndarray) -> torch.Tensor:
        from avsearch.losses.supcon import supcon_loss

        codes = encode(batch)
        labels = torch.as_tensor(encode.split.labels[batch], device=codes.device)
        return supcon_loss(codes, labels, self.tau)


@OBJECTIVES.register("infonce")
@dataclass(eq=False)
class InfoNCE(Objective):
    """Supervised InfoNCE (Eq. 37): 1 positive from the anchor's class, 4 negatives from 4
    distinct other classes (the paper's sampler), τ = 0.1, cosine similarity on tanh codes."""

    name = "infonce"
    summary = "supervised InfoNCE of AV-NAS (Eq. 37): the default for labelled data"

    negatives: int = option(4, "negatives per anchor, each from another class", AT_LEAST_ONE)
    tau: float = option(0.1, "temperature of the cosine similarities", POSITIVE)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._samplers: dict[int, TripletSampler] = {}  # per split (DARTS trains on two)

    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        if id(split) not in self._samplers:
            if not split.labels.any():
                raise AvsearchInputError("the training data has no labels; the supervised InfoNCE "
                                         "objective needs them")
            self._samplers[id(split)] = TripletSampler(split.labels, negatives=self.negatives,
                                                       seed=self.seed)
        return self._samplers[id(split)].epoch(batch_size, epoch=epoch)

    def loss(self, encode: Callable[[np.ndarray], torch.Tensor], batch: np.ndarray) -> torch.Tensor:
        # Encode each distinct video once: negatives of one anchor are often others' anchors.
        uniq, inverse = np.unique(batch, return_inverse=True)
        f = encode(uniq)
        f = f[torch.as_tensor(inverse.reshape(batch.shape), device=f.device)]
        return info_nce(f[:, 0], f[:, 1], f[:, 2:], self.tau)


def check_nodes(objective: str, space, nodes: Iterator[str] | tuple[str, ...]) -> None:
    """Refuse a space an objective cannot train: it needs one modality and these nodes."""
    if len(space.modalities) != 1:
        raise AvsearchInputError(f"objective {objective!r} takes one modality; space "
                                 f"{space.name!r} has {', '.join(space.modalities)} (select one "
                                 f"or join them: data NAME:MODALITY or NAME:A+B)", "objective")
    missing = [n for n in nodes if n not in space.graph]
    if missing:
        raise AvsearchInputError(f"objective {objective!r} reads node(s) {', '.join(missing)}, "
                                 f"which space {space.name!r} does not have (the vhmt and tam "
                                 f"spaces do)", "objective")


def random_drop_masks(x: torch.Tensor, ratio: float, views: int = 2) -> list[torch.Tensor]:
    """``views`` masks like ``x`` (B, T, D): 1 on M = ``frames_to_drop(T, ratio)`` frames of
    every video, drawn uniformly (torch's generator), 0 elsewhere; a view is x · (1 − mask)."""
    from avsearch.ops.frame_sampler import frames_to_drop

    m = frames_to_drop(x.shape[1], ratio)
    masks = []
    for _ in range(views):
        picks = torch.rand(x.shape[:2], device=x.device).topk(m, dim=1).indices
        mask = torch.zeros(x.shape[:2], device=x.device).scatter_(1, picks, 1.0)
        masks.append(mask.unsqueeze(-1).expand_as(x))
    return masks


# Model-selection criteria (the key the trainer maximises) and what each reads, for metrics.json.
SELECTION = {"map@100": "validation mAP@100 (reads the labels of the val and retrieval splits)",
             "neg_loss": "minus the objective's loss on the val split (reads no labels)"}


def select_option() -> Any:
    """The ``select`` option of a :class:`LabelFreeSelection` objective (its last option)."""
    return option("auto", "what selects models: loss (the objective's own, on validation "
                          "videos), map (labelled validation mAP@100), auto (loss when the "
                          "training split has no labels)", one_of("auto", "loss", "map"))


@dataclass(eq=False)
class LabelFreeSelection(Objective):
    """Model selection for a self-supervised objective (VHMT and AutoSSVH).

    ``select`` (an option, :func:`select_option`): ``loss`` selects epochs, SPOS's fitness and
    ENAS's reward by the objective's own loss on the validation videos (``neg_loss``, labels
    unread); ``map`` by labelled validation mAP@100; ``auto`` (default) is ``loss`` when the
    training split has no labels (self-supervised data) and ``map`` otherwise.
    """

    supervised = False
    criteria = ("neg_loss",)        # the keys :meth:`score` returns
    score_batch: ClassVar[int] = 256
    # ``select``: each subclass declares it as its last option, ``select: str = select_option()``

    def criterion(self, data) -> str:
        """The key a trainer selects on for ``data``: ``neg_loss`` or ``map@100``."""
        unlabelled = not data.split("train").labels.any()
        return "neg_loss" if self.select == "loss" or (self.select == "auto" and unlabelled) \
            else "map@100"

    def _prepare(self, split: Split) -> None:
        """Anything :meth:`loss` needs for a split it did not train on."""

    @torch.no_grad()
    def score(self, net: torch.nn.Module, split: Split, device: torch.device,
              limit: int | None = None) -> dict[str, float]:
        """``{"neg_loss": −loss}`` over the first ``limit`` videos of ``split`` in fixed batches.

        The network runs in eval mode; views drop frames uniformly at random (not by a
        sampler cell, whose choice would otherwise be scored by how easy its views are),
        drawn from a generator seeded by the objective's seed and restored afterwards, so
        every epoch and path is scored on the same views and training's random stream is
        untouched. Terms that change during training (AutoSSVH's P2Set, whose centres are
        recomputed every epoch) are left out, so scores of different epochs compare.
        """
        from avsearch.inference import feature_encoder

        n = len(split) if limit is None else min(limit, len(split))
        starts = list(range(0, n, self.score_batch))
        if len(starts) > 1 and n - starts[-1] < 2:   # contrastive terms need 2 videos a batch
            starts.pop()
        self._prepare(split)
        was_training = net.training
        net.eval()
        encode = feature_encoder(net, split, device)
        total = 0.0
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            for i, start in enumerate(starts):
                batch = np.arange(start, starts[i + 1] if i + 1 < len(starts) else n)
                total += float(self.loss(encode, batch)) * len(batch)
        net.train(was_training)
        return {"neg_loss": -total / n}


def unlabelled_batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """Every video once per epoch in a random order fixed by (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return iter([order[i:i + batch_size] for i in range(0, n, batch_size)])


@OBJECTIVES.register("vhmt")
@dataclass(eq=False)
class VHMT(LabelFreeSelection):
    """VHMT's self-supervised objective, Eq. 18: reconstruction (Eq. 19) of the input frames by
    the student's and the teacher's decoders, debiased contrastive between student and teacher
    codes (Eqs. 20-22, τ = 0.5, ρ = 0.1), and local structure preservation (Eqs. 23-26) with a
    similarity built once per training split from K-means after PCA (faiss).

    Labels are not used. It reads the nodes ``student.recon``, ``teacher.recon``,
    ``teacher.codes`` and ``student.latent`` (the ``vhmt`` and ``tam`` spaces have them).

    Without a teacher (the ``none`` teacher, Table 3's Exp. X) the student is Siamese: its
    teacher's codes would be zeros, whose cosine with every code is 0, so the contrastive term
    would only push codes apart. Instead two views of each video, each dropping the space's
    ``drop_ratio`` of its frames at random (masked to zero, as ConMH's masked views, which
    the paper cites for its Siamese baselines), go through the student: both views'
    reconstructions of the whole video, the contrast between the two views' codes (over all
    2N anchors), and the structure term on the views' mean latent.
    K-means uses M = N/20 centroids, at most the paper's 2000 (its FCVID training set has about
    20 videos per centroid), so small data sets get a comparable clustering.
    """

    name = "vhmt"
    summary = ("VHMT (Eq. 18): reconstruction, student-teacher contrastive, K-means structure; "
               "self-supervised")
    nodes: ClassVar[tuple[str, ...]] = (STUDENT_RECON, TEACHER_RECON, TEACHER_CODES, STUDENT_LATENT)

    alpha: float = option(1.0, "weight of the reconstruction term (Eq. 19)", NON_NEGATIVE)
    beta: float = option(1.0, "weight of the debiased contrastive term (Eqs. 20-22)",
                         NON_NEGATIVE)
    gamma: float = option(0.1, "weight of the structure term (Eqs. 23-26)", NON_NEGATIVE)
    tau: float = option(0.5, "temperature of the contrastive term", POSITIVE)
    rho: float = option(0.1, "positive-class prior of the debiasing", PRIOR)
    select: str = select_option()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._similarity: dict[int, object] = {}   # per split (training, and val when scored)

    def check_space(self, space) -> None:
        check_nodes(self.name, space, self.nodes)

    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        self._prepare(split)
        return unlabelled_batches(len(split), batch_size, self.seed, epoch)

    def _prepare(self, split: Split) -> None:
        if self.gamma and id(split) not in self._similarity:
            self._similarity[id(split)] = self._structure(split)

    def _structure(self, split: Split):
        from avsearch.losses.vhmt import structure_similarity

        if len(split.features) != 1:
            raise AvsearchInputError(f"the vhmt objective takes one modality, the data has "
                                     f"{len(split.features)} ({', '.join(split.features)})")
        means = np.concatenate([split.take(np.arange(i, min(i + 2048, len(split))))[0].mean(1)
                                for i in range(0, len(split), 2048)])
        return structure_similarity(means, clusters=int(np.clip(len(split) // 20, 6, 2000)),
                                    seed=self.seed)

    def loss(self, encode, batch: np.ndarray) -> torch.Tensor:
        from avsearch.losses.vhmt import vhmt_loss

        net = encode.net
        modality = net.space.modalities[0]
        similarity = None
        if self.gamma:
            similarity = self._similarity[id(encode.split)].batch(batch, device=encode.device)
        if not net.absent(TEACHER_CODES):
            out = encode.nodes(batch, (*self.nodes, "codes", modality))
            recon, pair = [out[STUDENT_RECON], out[TEACHER_RECON]], (out["codes"], out[TEACHER_CODES])
            target, embeddings, symmetric = out[modality], out[STUDENT_LATENT].mean(1), False
        else:   # Exp. X: the Siamese student, two masked views (see the class docstring)
            target = encode.nodes(batch, [modality])[modality]
            views = [encode.nodes(batch, (STUDENT_RECON, "codes", STUDENT_LATENT),
                                  given={modality: target * (1 - mask)})
                     for mask in random_drop_masks(target, net.space.op_config.drop_ratio)]
            recon, pair = [v[STUDENT_RECON] for v in views], tuple(v["codes"] for v in views)
            embeddings = sum(v[STUDENT_LATENT] for v in views).mean(1) / len(views)
            symmetric = True
        total, _ = vhmt_loss(recon=recon, target=target, student_codes=pair[0],
                             teacher_codes=pair[1], embeddings=embeddings, similarity=similarity,
                             alpha=self.alpha, beta=self.beta, gamma=self.gamma, tau=self.tau,
                             rho=self.rho, symmetric=symmetric)
        return total


@OBJECTIVES.register("autossvh")
@dataclass(eq=False)
class AutoSSVH(LabelFreeSelection):
    """AutoSSVH's self-supervised objective, Eq. 17: frame reconstruction of the dropped
    frames (Eq. 13), view contrastive between two views (Eqs. 14-15), and P2Set (Eq. 16)
    against voted hash centres (Eqs. 10-12) after a warm-up of ``warmup_epochs`` epochs.

    Each batch is seen as two views. A view drops M = ``drop_ratio``·T frames, chosen by the
    space's ``sampler`` cell (AutoSSVH's adversarial Grade-Net sampler, or random; the
    ``vhmt`` and ``tam`` spaces get that cell with ``samplers=random,adversarial`` under this
    objective); a space without one drops frames uniformly at random. The dropped frames are
    set to zero — the standardised mean frame, a mask token as in ConMH, whose masked
    auto-encoder AutoSSVH follows — and stay in place, so the encoders see T frames (Eq. 5
    removes them instead; VHMT's downsampling schedules need the full length). Each view's
    decoder reconstructs its dropped frames (Eq. 13, weighted by the sampler's mask, so its
    gradient tells the sampler which frames were hard). The sampler's gradient passes the
    gradient reversal layer, so it ascends the loss the hashing network descends (Eq. 19).

    Teacher-student spaces: view 1 goes through the student, view 2 through the teacher (when
    the architecture has one), so VC contrasts the student's code of one view with the
    teacher's code of the other — the teacher shapes the student as in VHMT's Eq. 20, and
    the teacher's cells matter to what is searched. Without a teacher both views go through
    the student, as in AutoSSVH. P2Set's centres come from the student's codes (the network
    that is deployed) of the whole training split, recomputed at the first batch of every
    epoch after the warm-up, and apply to both views.

    Warm-up: epochs count from 1 (as the trainer counts), and P2Set is off for epochs
    1..``warmup_epochs`` of a stage whose network starts untrained (a search stage, a random
    candidate, a preset trained from scratch): centres voted by an untrained network are
    noise. The finetune of a network derived from this run's search continues trained
    weights and does not warm up again. Centres belong to the stage that computed them (its
    network), so every stage computes its own.

    Defaults: α = 1, β = 0.2 (§4.2's UCF101/HMDB51 setting, the smaller data sets), τ₁ = 0.5,
    τ₂ = 0.2 and ρ = 0.1 (the authors' code), clusterings of 250, 400 and 600 centres (§4.2)
    capped at N/5 for training sets under 3,000 videos, and a warm-up of 1 epoch (the paper:
    50-100 of several hundred epochs; our budgets train a few): P2Set from epoch 2 on.
    """

    name = "autossvh"
    summary = ("AutoSSVH (Eq. 17): two sampled views, reconstruction of dropped frames, view "
               "contrastive, P2Set; self-supervised")
    # what the objective reads: the sampler cell, and (codes, reconstruction) per branch
    sampler: ClassVar[str] = SAMPLER
    branches: ClassVar[tuple] = (("codes", STUDENT_RECON), (TEACHER_CODES, TEACHER_RECON))
    # options of the space the objective adds unless the user set them
    space_defaults = {"samplers": "random,adversarial"}

    alpha: float = option(1.0, "weight of the view contrastive term (Eqs. 14-15)", NON_NEGATIVE)
    beta: float = option(0.2, "weight of P2Set (Eq. 16)", NON_NEGATIVE)
    tau1: float = option(0.5, "temperature of the view contrastive term", POSITIVE)
    tau2: float = option(0.2, "temperature of P2Set", POSITIVE)
    rho: float = option(0.1, "positive-class prior of the debiasing", PRIOR)
    warmup_epochs: int = option(1, "epochs of a stage trained from scratch before P2Set", COUNT)
    granularities: tuple[int, ...] = option(
        (250, 400, 600), "K-means clusterings' sizes whose centres vote (§4.2)",
        Check(lambda g: len(g) > 0 and all(k >= 2 for k in g),
              "cluster counts >= 2, e.g. 250,400,600"))
    select: str = select_option()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._epoch: dict[int, int] = {}          # per training split: the epoch in progress
        self._centres: dict[int, tuple[int, object]] = {}   # per split: (epoch, HashCentres)
        self._warm = False        # the stage in progress continues a network already trained
        self._searched = False    # a search stage ran in this run (its weights are inherited)

    def begin_stage(self, name: str, phase: str) -> None:
        """A stage starts (or resumes): drop the previous stage's centres (another network's),
        and warm up unless the stage finetunes what this run's search trained."""
        self._centres.clear()
        self._warm = phase == "finetune" and self._searched
        self._searched = self._searched or phase == "search"

    def p2set_on(self, split: Split) -> bool:
        """Whether P2Set is part of the loss in the epoch in progress on ``split``, a training
        split (one the trainer draws batches from; not the val split :meth:`score` reads)."""
        return bool(self.beta) and id(split) in self._epoch and (
            self._warm or self._epoch[id(split)] > self.warmup_epochs)

    def check_space(self, space) -> None:
        check_nodes(self.name, space, [self.branches[0][1]])

    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        self._epoch[id(split)] = epoch
        return unlabelled_batches(len(split), batch_size, self.seed, epoch)

    def _drop_masks(self, encode, batch: np.ndarray, x: torch.Tensor) -> list[torch.Tensor]:
        """Two views' drop masks, (B, T, D) each: from the sampler cell in training, or
        uniformly random (at the space's ``drop_ratio``) without one or in eval mode (the
        label-free score)."""
        space = encode.net.space
        if self.sampler in space.graph and encode.net.training:
            return [encode.nodes(batch, [self.sampler])[self.sampler] for _ in range(2)]
        return random_drop_masks(x, space.op_config.drop_ratio)

    def _hash_centres(self, encode):
        """The P2Set centres of this epoch: voted from the student's codes of the whole split."""
        from avsearch.inference import encode_split
        from avsearch.losses.autossvh import hash_centres

        split, epoch = encode.split, self._epoch.get(id(encode.split), 0)
        cached = self._centres.get(id(split))
        if cached is None or cached[0] != epoch:
            codes = encode_split(encode.net, split, encode.device, relaxed=True)
            sizes = tuple(dict.fromkeys(min(g, max(2, len(split) // 5)) for g in self.granularities))
            cached = (epoch, hash_centres(codes, sizes, seed=self.seed + epoch))
            self._centres[id(split)] = cached
        return cached[1]

    def loss(self, encode, batch: np.ndarray) -> torch.Tensor:
        from avsearch.losses.autossvh import p2set_loss, view_contrastive

        net = encode.net
        modality = net.space.modalities[0]
        x = encode.nodes(batch, [modality])[modality]
        masks = self._drop_masks(encode, batch, x)
        teacher = self.branches[1][0] in net.space.graph and not net.absent(self.branches[1][0])
        codes, fr = [], 0.0
        for view, mask in enumerate(masks):
            code_node, recon_node = self.branches[1 if view and teacher else 0]
            out = encode.nodes(batch, [code_node, recon_node], given={modality: x * (1 - mask)})
            drop = mask[..., 0]
            err = (out[recon_node] - x).pow(2).mean(-1)                # per frame, Eq. 13
            fr = fr + (drop * err).sum() / drop.detach().sum().clamp_min(1)
            codes.append(out[code_node])
        total = fr + self.alpha * view_contrastive(codes[0], codes[1], tau=self.tau1, rho=self.rho)
        if self.p2set_on(encode.split):
            centres = self._hash_centres(encode).to(x.device)
            targets = centres.targets(batch).repeat(2, 1)
            total = total + self.beta * p2set_loss(torch.cat(codes), centres.centres, targets,
                                                   self.tau2)
        return total


@OBJECTIVES.register("lagnh")
@dataclass(eq=False)
class LAGNH(LabelFreeSelection):
    """LAGNH's objective, Eq. 12: L = L_GAN + λ1·L_recons + λ2·L_quan + λ3·L_cl
    (:mod:`avsearch.losses.lagnh`: Eqs. 8-11, each a mean over its entries).

    It reads the ``lagnh`` space's nodes: the codes Z (the output), ``semantics`` (the tags y
    as the network saw them: S^a = YYᵀ of Eq. 9 and Eq. 11's targets), ``aux.logits`` (Eq. 11's
    classifier on Z) and ``prior`` (what the discriminator sees). Labels are never read; the
    auxiliary semantics are, as a network input. A network without auxiliary semantics
    (``semantics`` absent: the ``no_aux`` preset) has no L_recons and no L_cl; one without a
    discriminator (``prior`` absent) no L_GAN.

    The discriminator (Table 1) belongs to the objective: one per training stage (built at the
    stage's first step from a seed of (run seed, stage)), stepped after every weight step
    (:meth:`update`: Adam at ``disc_lr``, the code's 1e-4) on the Z that step's loss saw
    (detached) against as many draws from N(0, I), and checkpointed with the stage
    (:meth:`state_dict`), so a resumed run continues it. L_GAN is a training term only: the
    label-free score (``select=loss``) leaves it out, since the discriminator changes between
    epochs and would make their scores incomparable. The authors' code takes five generator
    steps per discriminator step; here every weight step is followed by one of each.
    """

    name = "lagnh"
    summary = ("LAGNH (Eq. 12): adversarial prior, auxiliary-graph reconstruction, quantisation, "
               "multilabel on the tags; reads auxiliary semantics, no labels")
    nodes: ClassVar[tuple[str, ...]] = (SEMANTICS, ADVERSARY, LOGITS)
    own_parameters = True

    lambda1: float = option(100.0, "weight λ1 of the reconstruction of k·S^a (Eq. 9)", NON_NEGATIVE)
    lambda2: float = option(1.0, "weight λ2 of the quantisation term (Eq. 8)", NON_NEGATIVE)
    lambda3: float = option(1.0, "weight λ3 of the multilabel term (Eq. 11)", NON_NEGATIVE)
    k: float = option(1.0, "scale k of the reconstructed auxiliary graph (Eq. 9)", POSITIVE)
    gan: float = option(1.0, "weight of L_GAN (Eq. 12: 1)", NON_NEGATIVE)
    disc_lr: float = option(1e-4, "Adam learning rate of the discriminator", POSITIVE)
    select: str = select_option()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._stage = ""
        self._disc: torch.nn.Module | None = None
        self._opt: torch.optim.Optimizer | None = None
        self._fake: torch.Tensor | None = None     # the Z the last loss showed the discriminator
        self._resumed: dict[str, Any] | None = None   # a checkpoint's state, until it is built

    def check_space(self, space) -> None:
        missing = [n for n in self.nodes if n not in space.graph]
        if missing:
            raise AvsearchInputError(f"objective {self.name!r} reads node(s) {', '.join(missing)}, "
                                     f"which space {space.name!r} does not have (the lagnh space "
                                     f"does)", "objective")

    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        return unlabelled_batches(len(split), batch_size, self.seed, epoch)

    def begin_stage(self, name: str, phase: str) -> None:
        self._stage, self._disc, self._opt, self._fake, self._resumed = name, None, None, None, None

    def _discriminator(self, bits: int, device: torch.device) -> torch.nn.Module:
        import zlib

        from avsearch.losses.lagnh import Discriminator

        if self._disc is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(self._stage.encode()))
                self._disc = Discriminator(bits).to(device)
            self._opt = torch.optim.Adam(self._disc.parameters(), lr=self.disc_lr)
            if self._resumed is not None:   # on the device first: Adam's state follows it
                self._disc.load_state_dict(self._resumed["discriminator"])
                self._opt.load_state_dict(self._resumed["optimizer"])
                self._resumed = None
        return self._disc

    def loss(self, encode, batch: np.ndarray) -> torch.Tensor:
        from avsearch.losses.lagnh import (generator_loss, multilabel_loss, quantization_loss,
                                           reconstruction_loss)

        net = encode.net
        out = encode.nodes(batch, ("codes", *self.nodes))
        z = out["codes"]
        total = self.lambda2 * quantization_loss(z)
        if not net.absent(SEMANTICS):
            y = out[SEMANTICS][:, 0]
            total = total + self.lambda1 * reconstruction_loss(z, y, self.k) \
                + self.lambda3 * multilabel_loss(out[LOGITS][:, 0], y)
        if net.training and self.gan and not net.absent(ADVERSARY):
            fake = out[ADVERSARY][:, 0]
            disc = self._discriminator(fake.shape[-1], fake.device)
            total = total + self.gan * generator_loss(disc(fake))
            self._fake = fake.detach()
        return total

    def update(self) -> None:
        """The discriminator's step (Eq. 10, max over D) on the last loss's Z."""
        from avsearch.losses.lagnh import discriminator_loss

        if self._fake is None or self._disc is None:
            return
        fake, self._fake = self._fake, None
        real = torch.randn(fake.shape, device=fake.device, dtype=fake.dtype)
        self._opt.zero_grad(set_to_none=True)
        discriminator_loss(self._disc(real), self._disc(fake)).backward()
        self._opt.step()

    def state_dict(self) -> dict[str, Any] | None:
        if self._disc is None:
            return self._resumed
        return {"bits": self._disc.net[0].in_features,
                "discriminator": {k: v.detach().cpu() for k, v in self._disc.state_dict().items()},
                "optimizer": self._opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Kept until the stage's first step builds the discriminator on its device."""
        self._disc, self._opt, self._resumed = None, None, state


@OBJECTIVES.register("sptch")
@dataclass(eq=False)
class SPTCH(LabelFreeSelection):
    """SPTCH's label-free objective (paper 003, Algorithm 1; :mod:`avsearch.losses.sptch`).

    Before the first step on a split, its collaboration features and graph are built once
    (Algorithm 1, lines 1-2): X^v, the mean of a video's frame features, standardised per
    dimension over the split (centred, so the cosines of Eq. 1 are not all near 1 for
    non-negative features); X^t, a caption's TF-IDF vector with the *training* split's document
    frequencies (token ids; the paper's pretrained text transformer is not available here), or
    the mean of its real precomputed token features; S = tanh(Eq. 2(θ1 cos X^v + (1 − θ1) cos
    X^t)) over the whole split, (N, N). A batch reads its rows and columns of S.

    Every step runs both phases of Algorithm 1 on its batch, in the one training step:

    1. the semantic hashing network (the space's ``sh.*`` nodes, given X^v, X^t and S) gives
       H^v, H^t, the reconstructions, and H = tanh(FC([H^v; H^t; V^j])); loss L_c (Eq. 9);
    2. the towers encode the batch and an augmented view of it (``frame_drop`` of a video's
       frames and ``token_drop`` of a caption's tokens set to padding, masked out by the
       towers); loss L_f (Eq. 16) against B = sign(H) of phase 1, detached.

    The two losses reach disjoint parameters (the semantic hashing network reads the given
    features, not the towers; B is detached), so one backward of L_c + L_f gives each network
    its own phase's gradient: the alternation of Algorithm 1 per step rather than per epoch,
    and one optimizer (the recipe's learning rate for both, where the paper has 1e-3 for the
    GCN and 1e-4 for the transformers). Labels are never read.
    """

    name = "sptch"
    summary = ("SPTCH (Eqs. 6-16): collaboration graph, semantic hashing network, inter- and "
               "intra-modal contrast with frame/token dropping; video-text, self-supervised")
    shardable = False

    alpha1: float = option(0.2, "weight α1 of the latents' similarity to S (Eq. 7)", NON_NEGATIVE)
    alpha2: float = option(0.2, "weight α2 of the quantisation of H (Eq. 8)", NON_NEGATIVE)
    beta1: float = option(1.0, "weight β1 of the towers' closeness to B (Eq. 14)", NON_NEGATIVE)
    beta2: float = option(1.0, "weight β2 of the towers' similarity to S (Eq. 15)", NON_NEGATIVE)
    contrast: float = option(1.0, "weight of the contrastive loss L_mf (Eq. 13; 0: Table 1's "
                                  "ablation without it)", NON_NEGATIVE)
    theta1: float = option(0.6, "weight θ1 of the video similarities in S (Eq. 1)",
                           Check(lambda v: 0 <= v <= 1, "in [0, 1]"))
    theta2: float = option(0.1, "share θ2 of each row of S set to -1 (Eq. 2)", PRIOR)
    tau: float = option(0.2, "temperature of the contrastive terms", POSITIVE)
    frame_drop: float = option(0.5, "share of a video's frames a view drops", PRIOR)
    token_drop: float = option(0.2, "share of a caption's tokens a view drops", PRIOR)
    select: str = select_option()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._graphs: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._df: tuple[torch.Tensor, int] | None = None   # the training split's document freq.

    def check_space(self, space) -> None:
        missing = [n for n in (SH_GRAPH, SH_VIDEO, SH_TEXT, *PROJECTIONS) if n not in space.graph]
        if missing or len(space.towers) != 2 or len(space.text_inputs) != 1:
            raise AvsearchInputError(f"objective {self.name!r} trains a video tower and a text "
                                     f"tower beside a semantic hashing network (the sptch space); "
                                     f"space {space.name!r} has "
                                     + (f"no node(s) {', '.join(missing)}" if missing else
                                        "not one video and one text tower"), "objective")

    def batches(self, split: Split, epoch: int, batch_size: int) -> Iterator[np.ndarray]:
        self._prepare(split)
        return unlabelled_batches(len(split), batch_size, self.seed, epoch)

    def _prepare(self, split: Split) -> None:
        if id(split) not in self._graphs:
            from avsearch.losses.sptch import collaboration_graph

            xv, xt = self._features(split)
            self._graphs[id(split)] = (collaboration_graph(xv, xt, self.theta1, self.theta2),
                                       xv, xt)

    def _features(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """(X^v, X^t) of every item of ``split`` (:func:`~avsearch.losses.sptch.
        collaboration_features`); the first split prepared, the training split, fixes the
        TF-IDF's document frequencies."""
        from avsearch.losses.sptch import collaboration_features

        xv, xt, df = collaboration_features(split, self._df)
        self._df = self._df or df
        return xv, xt

    def loss(self, encode, batch: np.ndarray) -> torch.Tensor:
        from avsearch.losses.sptch import drop_positions, encoder_loss, semantic_hashing_loss

        net, device = encode.net, encode.device
        space = net.space
        graph, xv, xt = self._graphs[id(encode.split)]
        rows = torch.as_tensor(batch, dtype=torch.long)
        s = graph[rows][:, rows].to(device)
        fv, ft = xv[rows].to(device), xt[rows].to(device)
        # phase 1: the semantic hashing network (Eq. 9)
        names = [VIDEO_LATENT, TEXT_LATENT, VIDEO_RECON, TEXT_RECON,
                 *(p for p in PROJECTIONS if p != JOINT_PROJ or not net.absent(JOINT_PROJ))]
        sh = encode.nodes(batch, names, given={SH_GRAPH: s, SH_VIDEO: fv[:, None],
                                               SH_TEXT: ft[:, None]})
        h = torch.tanh(sum(sh[p][:, 0] for p in PROJECTIONS if p in sh))
        total = semantic_hashing_loss(s, (sh[VIDEO_RECON][:, 0], fv, sh[TEXT_RECON][:, 0], ft),
                                      sh[VIDEO_LATENT][:, 0], sh[TEXT_LATENT][:, 0], h,
                                      self.alpha1, self.alpha2)
        # phase 2: the towers on the batch and its augmented view (Eq. 16), against B
        text = space.text_inputs[0]
        video = next(m for m in space.modalities if m != text)
        x = encode.nodes(batch, [video, text])
        vview = x[video] * (1 - random_drop_masks(x[video], self.frame_drop, views=1)[0]) \
            if self.frame_drop else x[video]
        tview = drop_positions(x[text], self.token_drop) if self.token_drop else x[text]
        towers = (space.towers[video], space.towers[text])
        z = encode.nodes(batch, towers, given={video: torch.cat([x[video], vview]),
                                               text: torch.cat([x[text], tview])})
        n = len(batch)
        zv, zt = z[towers[0]], z[towers[1]]
        codes = torch.where(h >= 0, 1.0, -1.0).detach()
        return total + encoder_loss(s, codes, zv[:n], zt[:n], zv[n:], zt[n:], self.tau,
                                    self.beta1, self.beta2, self.contrast)


def objective_options(name: str) -> dict[str, Option]:
    """An objective's options: name, type, default, help."""
    return OBJECTIVES.get(name).options()


def list_objectives() -> dict[str, str]:
    """Registered objectives and their one-line summaries, in registration order (the
    recipes' supervised losses first)."""
    return {n: cls.summary for n, cls in OBJECTIVES.items(sort=False).items()}


def get_objective(name: str, seed: int = 0, **options: Any) -> Objective:
    """An objective with its options (strings from the command line, or typed values), read
    and checked."""
    cls = OBJECTIVES.get(name)
    check_names(cls.options(), options, cls.owner(), cls.parameter())
    return cls(seed=seed, **options)
