"""NNI bridge: an avsearch search space as an NNI model space, and NNI's results back.

::

    from avsearch.bridges.nni import to_nni, from_nni
    model_space = to_nni(space, input_stats)   # one LayerChoice per cell, labelled by the cell
    ...                                        # an NNI strategy (see lightning_evaluator)
    choices = from_nni(space, exported)        # {"visual.M1": "FFN", ...}, validated
    Architecture.from_space(space, choices).save("nni.arch")

The model space *is* avsearch's network: a single-path :class:`~avsearch.supernet.Network`
whose cells hold an ``nni.nas.nn.pytorch.LayerChoice`` over the very op modules avsearch
built, so the forward plan, input standardisation, fixed layers and hash layer are avsearch's
own. NNI's one-shot strategies replace the LayerChoices in place (by a softmax(α)-weighted
mixed layer for DARTS, a path-sampling layer for ENAS/random) and ``freeze(sample)`` puts the
chosen op in its place; :func:`to_avsearch_state` and :func:`load_avsearch_state` move
weights (and DARTS's α) between any of these forms and avsearch's ``cells.<cell>.ops.<op>``
keys, so a network NNI searched can be finetuned, exported and evaluated by avsearch.
:func:`lightning_evaluator` trains with avsearch's data and objective under NNI's Lightning
evaluator. Tried with nni 3.0: DARTS, GumbelDARTS, Proxyless and RandomOneShot run as they are;
ENAS needs ``tianshou`` besides.

Needs the ``nni`` extra (``pip install 'avsearch[nni]'``); importing :mod:`avsearch` never
imports this module or nni.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from avsearch.data import Split
from avsearch.errors import ArchError, AvsearchInputError
from avsearch.graph import SearchSpace
from avsearch.inference import feature_encoder
from avsearch.objectives import Objective
from avsearch.supernet import Network, compile_space, key

__all__ = ["to_nni", "from_nni", "to_avsearch_state", "load_avsearch_state", "lightning_evaluator",
           "AvsearchModelSpace", "INSTALL"]

INSTALL = "pip install 'avsearch[nni]'  (nni==3.0, pytorch-lightning==2.0.9.post0, setuptools<81)"

try:
    with warnings.catch_warnings():
        # nni 3.0 warns about every torch.nn class it does not know (torch is newer than it)
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"nni")
        warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated")  # lightning 2.0
        from nni.nas.evaluator.pytorch import DataLoader, Lightning, LightningModule, Trainer
        from nni.nas.nn.pytorch import LayerChoice, ModelSpace
        from nni.nas.space import current_model
    _MISSING: Exception | None = None
except ImportError as _err:  # nni absent, or present without what its NAS needs
    LayerChoice = current_model = DataLoader = Lightning = Trainer = None  # type: ignore[assignment,misc]
    ModelSpace = LightningModule = nn.Module  # type: ignore[assignment,misc]
    _MISSING = _err


def _require_nni() -> None:
    if _MISSING is not None:
        raise AvsearchInputError(f"the NNI bridge needs nni: {INSTALL} ({_MISSING})")


class _ChoiceCell(nn.Module):
    """Stands where avsearch's :class:`~avsearch.supernet.Cell` stands in the network (same
    call: ``cell(inputs, weights)``; the network's weights are ignored, NNI's module decides)
    and runs ``ops``: a LayerChoice in the space, a one-shot strategy's mixed or sampling
    layer in a supernet, the chosen op in a frozen model."""

    def __init__(self, ops: nn.Module):
        super().__init__()
        self.ops = ops

    def forward(self, inputs: list[torch.Tensor], *unused: Any) -> torch.Tensor:
        ops = self.ops
        if type(ops) is LayerChoice:  # the bare space: NNI's dry run uses the default candidate
            ops = ops[getattr(ops, "_dry_run_choice", ops.names[0])]
        return ops(*inputs)


class AvsearchModelSpace(ModelSpace):  # type: ignore[misc,valid-type]
    """An avsearch search space as an NNI model space; build it with :func:`to_nni`.

    ``forward(*features)`` is avsearch's (one (batch, m, width) tensor per modality, codes
    tanh(FC(h)) out). ``avsearch_choices`` is the architecture of a frozen model (None for the
    space or a supernet).
    """

    def __init__(self, space: SearchSpace, input_stats: Mapping[str, tuple[Any, Any]] | None = None):
        super().__init__()
        sample = current_model()  # set when NNI instantiates the space at an architecture
        self.avsearch_space = space
        self.avsearch_choices = from_nni(space, sample) if sample is not None else None
        net = compile_space(space, "single-path")  # builds every candidate of every cell once
        for cell in space.cells:
            ops = dict(net.cells[key(cell)].ops.items())
            # inside NNI's fixed-architecture context LayerChoice returns the chosen op itself
            net.cells[key(cell)] = _ChoiceCell(LayerChoice(ops, label=cell))
        if input_stats is not None:
            net.set_input_stats(input_stats)
        self.net: Network = net

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return self.net(*features)

    def freeze(self, sample: Mapping[str, Any]) -> "AvsearchModelSpace":
        """The network of one architecture; it shares the chosen ops' weights with ``self``."""
        frozen = super().freeze(dict(sample))
        frozen.avsearch_choices = from_nni(self.avsearch_space, sample)
        return frozen


def to_nni(space: SearchSpace, input_stats: Mapping[str, tuple[Any, Any]] | None = None) -> AvsearchModelSpace:
    """``space`` as an NNI model space: avsearch's network with one ``LayerChoice`` per cell.

    Args:
        space: any avsearch search space.
        input_stats: per modality the training data's (mean, std), standardising the inputs
            as avsearch's networks do (``Dataset.split("train").moments()``).

    Each LayerChoice is labelled with the cell's name (``"visual.M1"``) and holds the ops
    ``get_op(name, kind).build(name, width, space.op_config)`` under their op names, in the
    space's candidate order (so DARTS's α has avsearch's layout).
    """
    if space.followers:   # NNI's LayerChoice has no way to run another choice's candidate
        raise AvsearchInputError(f"space {space.name!r} has cells that follow another cell's "
                                 f"choice ({', '.join(space.followers)}); the NNI bridge cannot "
                                 f"express them yet")
    _require_nni()
    return AvsearchModelSpace(space, input_stats)


def from_nni(space: SearchSpace, sample_or_exported: Any) -> dict[str, str]:
    """The avsearch architecture of an NNI sample, export or frozen model, validated.

    Accepts ``{cell: op}`` (a sample, or a one-shot strategy's ``export()``), ``{cell: {op:
    probability}}`` (``export_probs()``, argmax taken, ties to the earlier candidate), or a
    frozen :class:`AvsearchModelSpace`. NNI's own bookkeeping keys (``__arch__``) are ignored;
    anything else that is not a cell of ``space`` is an :class:`~avsearch.errors.ArchError`.
    """
    if isinstance(sample_or_exported, nn.Module):
        choices = getattr(sample_or_exported, "avsearch_choices", None)
        if choices is None:
            raise ArchError("from_nni: this NNI model is not a frozen avsearch model space "
                            "(freeze it at an architecture first)")
        return space.validate(choices)
    if not isinstance(sample_or_exported, Mapping):
        raise ArchError(f"from_nni: expected a dict of cell -> op, got {type(sample_or_exported).__name__}")
    choices: dict[str, str] = {}
    for label, value in sample_or_exported.items():
        if isinstance(label, str) and label.startswith("__"):
            continue
        if isinstance(value, Mapping):  # export_probs(): {op: probability}
            order = {op: i for i, op in enumerate(space.candidates(label))} if label in space.cells else {}
            value = max(value, key=lambda op: (value[op], -order.get(op, 0)))
        choices[label] = value
    return space.validate(choices)


# ------------------------------------------------------------------------------ weights
def _key_map(model: AvsearchModelSpace) -> dict[str, str]:
    """NNI state-dict key -> avsearch key, for the model in whatever form it is now."""
    if not isinstance(model, AvsearchModelSpace):
        raise TypeError(f"expected a model from avsearch.bridges.nni.to_nni, got {type(model).__name__}")
    space, net = model.avsearch_space, model.net
    out = {f"net.{k}": k for k in net.state_dict() if not k.startswith("cells.")}
    for cell in space.cells:
        k = key(cell)
        ops = net.cells[k].ops
        if LayerChoice is not None and isinstance(ops, LayerChoice):  # space or supernet
            for op in ops.names:
                for p in ops[op].state_dict():
                    out[f"net.cells.{k}.ops.{op}.{p}"] = f"cells.{k}.ops.{op}.{p}"
            if isinstance(getattr(ops, "_arch_alpha", None), torch.Tensor):  # DARTS and kin
                out[f"net.cells.{k}.ops._arch_alpha"] = f"alpha.{k}"
        else:  # frozen: the chosen op sits in the LayerChoice's place
            if model.avsearch_choices is None:
                raise ArchError(f"cell {cell!r} holds a single op but the model records no choices")
            op = model.avsearch_choices[cell]
            for p in ops.state_dict():
                out[f"net.cells.{k}.ops.{p}"] = f"cells.{k}.ops.{op}.{p}"
    return out


def to_avsearch_state(model: AvsearchModelSpace) -> dict[str, torch.Tensor]:
    """The model's weights under avsearch's keys (``cells.<cell>.ops.<op>.<param>``, inputs,
    fixed layers) plus DARTS's α as ``alpha.<cell>`` when the model is a differentiable
    supernet: what ``compile_space(space, mode, ...)`` networks load or ``inherit``."""
    state = model.state_dict()
    return {avs: state[nni_key] for nni_key, avs in _key_map(model).items()}


def load_avsearch_state(model: AvsearchModelSpace, state: Mapping[str, torch.Tensor]) -> None:
    """Load avsearch weights (e.g. ``Network.state_dict()``) into the NNI model.

    Every weight of the model must be in ``state`` (as in ``Network.inherit``); α is loaded
    when both have it and otherwise left as it is.
    """
    mapping = _key_map(model)
    missing = [avs for avs in mapping.values() if avs not in state and not avs.startswith("alpha.")]
    if missing:
        raise ArchError(f"cannot load avsearch weights into the NNI model: {len(missing)} missing, "
                        f"e.g. {missing[0]!r}")
    own = model.state_dict()
    model.load_state_dict({**own, **{n: state[a] for n, a in mapping.items() if a in state}})


# ------------------------------------------------------------------------------ training
class _EpochBatches(torch.utils.data.Dataset):
    """One stream's index batches of the current epoch, as a map-style data set (no batching
    by the loader: every item is already a batch)."""

    def __init__(self, batches: Callable[[int], Sequence[tuple[np.ndarray, ...]]], stream: int):
        self.batches, self.stream, self.epoch = batches, stream, 1
        self._cache: tuple[int, Sequence[tuple[np.ndarray, ...]]] | None = None

    def _current(self) -> Sequence[tuple[np.ndarray, ...]]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self.batches(self.epoch))
        return self._cache[1]

    def __len__(self) -> int:
        return len(self._current())

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return self.stream, torch.from_numpy(np.asarray(self._current()[i][self.stream]))


class _ObjectiveModule(LightningModule):  # type: ignore[misc,valid-type]
    """NNI's Lightning training module for an avsearch objective: a batch is ``(stream,
    indices)``, its loss ``objective.loss`` of the indexed videos of ``streams[stream]``."""

    def __init__(self, streams: Sequence[Split], objective: Objective,
                 optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 datasets: Sequence[_EpochBatches]):
        super().__init__()
        self.streams, self.objective, self.make_optimizer = list(streams), objective, optimizer
        self.datasets = list(datasets)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return self.model(*features)

    def _loss(self, batch: tuple[Any, torch.Tensor]) -> torch.Tensor:
        stream, index = batch
        encode = feature_encoder(self.model, self.streams[int(stream)], self.device)
        return self.objective.loss(encode, index.cpu().numpy())

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):  # noqa: D102  (multi-trial use; one-shot skips it)
        self.log("val_loss", self._loss(batch))

    def on_train_epoch_start(self) -> None:
        for ds in self.datasets:  # avsearch epochs count from 1
            ds.epoch = self.trainer.current_epoch + 1

    def configure_optimizers(self):  # noqa: D102  (NNI's DARTS removes α from these groups)
        return self.make_optimizer(self.model.parameters())


def lightning_evaluator(streams: Sequence[Split],
                        batches: Callable[[int], Sequence[tuple[np.ndarray, ...]]],
                        objective: Objective, *, epochs: int = 1,
                        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
                        **trainer_kwargs: Any) -> "Lightning":
    """An NNI Lightning evaluator that trains on avsearch data with an avsearch objective.

    Args:
        streams: the splits batches index into; stream 0 is the training data (NNI's train
            loader: the weights' step), stream 1, when given, the validation loader (the
            architecture's step of DARTS and ENAS), e.g. :func:`avsearch.strategies.held_out_split`'s two parts.
        batches: ``batches(epoch)`` (from 1) -> per step one index array per stream, as
            avsearch's trainer draws them (``objective.batches(split, epoch, batch_size)``).
        objective: the loss, e.g. ``get_objective("infonce")``.
        epochs: Lightning's ``max_epochs``.
        optimizer: ``optimizer(parameters)`` for the weights; default Adam 1e-3, as avsearch's
            strategies use.
        trainer_kwargs: more ``pytorch_lightning.Trainer`` arguments (callbacks, accelerator...).
    """
    _require_nni()
    datasets = [_EpochBatches(batches, s) for s in range(len(streams))]
    loaders = [DataLoader(ds, batch_size=None, shuffle=False) for ds in datasets]
    module = _ObjectiveModule(streams, objective, optimizer or (lambda p: torch.optim.Adam(p, lr=1e-3)),
                              datasets)
    options = dict(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0)
    options.update(trainer_kwargs)
    return Lightning(module, Trainer(**options), train_dataloaders=loaders[0],
                     val_dataloaders=loaders[1] if len(loaders) > 1 else None)
