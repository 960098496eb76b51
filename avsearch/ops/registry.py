"""The operation registry: candidate ops by name, resolved per cell kind.

One name can mean different modules in different cells: Table 1 of AV-NAS lists
``SelfAttention`` both as an M op (the bare attention core, so that Eq. 6 holds) and as a
T op (a full Transformer block that also pools over time). An op is therefore registered
for a set of cell kinds; ``"*"`` serves every kind that has no entry of its own.

Names may carry an integer parameter: ``Conv_<k>`` registers the family ``Conv_3``,
``Conv_4``, ... and the factory receives ``k``. A family may instead give its own ``pattern``
(a regular expression): its factory receives the named groups as strings (None where a group
did not take part), e.g. VHMT's teacher encoders ``8-4-2/haar``.

Candidates of one cell can share weights (a depth choice whose depth-3 candidate is the first
3 layers of the depth-16 one): a factory with a ``shared`` parameter receives a dict common to
all candidates of its cell, takes the modules it shares from it (creating them when absent)
and registers them as its own submodules. A shared tensor then appears under every
candidate's key, so a derived network, holding one candidate, inherits it by name.

An op registered with ``absent=True`` stands for "no module here" (VHMT's student-only
``none`` teacher): its module returns zeros of the input's shape, which is what it adds to a
mixed cell's sum; a network running it alone skips it and every node that depends only on it
(see :meth:`avsearch.graph.SearchSpace.inactive`).
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from torch import nn

from avsearch.registry import Registry

__all__ = ["OpConfig", "OpSpec", "register_op", "get_op", "has_op", "list_ops", "UnknownOpError",
           "OPS"]


@dataclass(frozen=True)
class OpConfig:
    """Hyper-parameters shared by every op of a network (Table 1's column).

    ``width`` is not here: it is a property of the edge an op sits on and is passed apart.
    """

    heads: int = 4              # attention heads; must divide every attention width
    d_state: int = 16           # SSM state size N (Mamba's default)
    dt_rank: int | None = None  # rank of the Δ projection; None = ceil(width / 16)
    ssm_conv: int = 4           # causal conv width inside CrossSSM and Mamba blocks
    dropout: float = 0.1        # Table 1: FFN/MLP dropout, attention-probability dropout
    conv_kernel: int = 3        # k of the single ``Conv_k`` candidate
    ffn_mult: int = 4           # FFN hidden = ffn_mult * width (Table 1: FC_4d)
    max_len: int = 512          # longest sequence a learned positional embedding covers
    # positions added to the input of an M cell's SelfAttention (AttentionCore): "none" (the
    # authors' code), "learned" or "sinusoidal" (Vaswani et al. 2017 §3.5); see
    # ops/attention.py's ATTENTION_POSITIONS
    attention_positions: str = "none"
    # how the network's inputs are normalised: "train" (the training set's mean and std per
    # feature) or "video" (then each video's own over time; supernet.Standardize)
    input_norm: str = "train"
    # VHMT (paper 001): the TAM variant of the teacher's blocks (Table 4), and the teacher
    # settings of spaces that fix them rather than search them (the ``tam`` space)
    tam_variant: str = "MHA+TRE"
    tam_depths: tuple[int, ...] = (8, 4, 2)  # E_T: TAM blocks per teacher stage (Eq. 5)
    tam_downsample: str = "haar"             # between stages: haar, db4, sym8, maxpool, avgpool
    tam_decoder_depth: int = 1               # D_T (Eq. 6)
    # AutoSSVH (paper 002): the share M/M₀ of frames a sampler cell drops per view (the
    # authors' code: mask_prob = 0.75)
    drop_ratio: float = 0.75
    # LAGNH (paper 004): training items every forward pass sees beside its batch, as rows
    # after the batch's (the graph's anchor nodes; 0: none, see :mod:`avsearch.supernet`)
    anchors: int = 0
    # LAGNH's Gaussian kernel (Eq. 3): 2σ² as a multiple of the anchors' mean squared distance
    bandwidth: float = 1.0


# factory(width, config, **name_params) -> module
OpFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class OpSpec:
    """A registered op: its name, the cell kinds it serves, arity and output shape."""

    name: str
    kinds: frozenset[str]
    arity: int
    pooled: bool
    factory: OpFactory = field(repr=False)
    pattern: re.Pattern | None = field(default=None, repr=False)
    absent: bool = False
    integer_params: bool = True   # a ``<k>`` family; False: a family with its own pattern
    context: bool = False         # a binary op whose second input is only read (any width)

    def build(self, name: str, width: int, config: OpConfig,
              shared: dict[str, nn.Module] | None = None) -> nn.Module:
        params = {}
        if self.pattern is not None:
            match = self.pattern.fullmatch(name)
            assert match is not None
            params = match.groupdict()
            if self.integer_params:
                params = {k: int(v) for k, v in params.items()}
        if "shared" in inspect.signature(self.factory).parameters:
            params["shared"] = {} if shared is None else shared
        return self.factory(width, config, **params)


class UnknownOpError(KeyError):
    """Raised when an op name is not registered for a cell kind."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


# name -> the specs registered under it (one per set of kinds; a family under its ``<k>`` name)
OPS: Registry[list[OpSpec]] = Registry("op", error=UnknownOpError, builtins=[
    f"avsearch.ops.{m}" for m in ("basic", "attention", "ssm", "frame_sampler", "vhmt",
                                     "lagnh", "sptch")])


def _pattern(name: str) -> re.Pattern | None:
    if "<" not in name:
        return None
    return re.compile(re.sub(r"<(\w+)>", r"(?P<\1>[1-9][0-9]*)", name))


def register_op(name: str, *, kinds: Iterable[str] | str = "*", arity: int = 1,
                pooled: bool = False, absent: bool = False,
                pattern: re.Pattern | str | None = None,
                context: bool = False) -> Callable[[OpFactory], OpFactory]:
    """Register ``factory(width, config, **params) -> nn.Module`` as candidate ``name``.

    Args:
        name: the op's name as a space lists it; ``<k>`` marks an integer parameter.
        pattern: for a family whose names ``<k>`` cannot describe, the names it matches (a
            regular expression with named groups, the factory's string parameters); ``name``
            is then only how :func:`list_ops` shows the family.
        kinds: the cell kind (``"M"``) or kinds (``("D", "F")``) this module serves;
            ``"*"`` for all.
        arity: 1 for ``forward(x)``, 2 for ``forward(x, y)``.
        pooled: True when the module maps (B, L, w) to (B, w).
        absent: True for a "nothing here" candidate whose module returns zeros (module
            docstring); a network running it alone skips it and what depends only on it.
        context: for a binary op, True when ``y`` is context it reads (LAGNH's auxiliary
            semantics beside the features), not a second operand: ``y`` may then have any
            width, and the output has ``x``'s.
    """
    kinds = frozenset([kinds] if isinstance(kinds, str) else kinds)

    def deco(factory: OpFactory) -> OpFactory:
        spec = OpSpec(name, kinds, arity, pooled, factory,
                      _pattern(name) if pattern is None else re.compile(pattern), absent,
                      integer_params=pattern is None, context=context)
        specs = OPS.registered(name) or []
        for other in specs:
            if other.kinds & kinds:
                raise ValueError(f"op {name!r} is already registered for kinds "
                                 f"{sorted(other.kinds & kinds)}")
        OPS.register(name, [*specs, spec])
        return factory

    return deco


def _candidates(name: str) -> list[OpSpec]:
    """The specs ``name`` may mean: registered under it, or a family that matches it."""
    everything = OPS.items()
    return [s for s in everything.get(name, ()) if s.pattern is None] + [
        s for specs in everything.values() for s in specs
        if s.pattern is not None and s.pattern.fullmatch(name)]


def get_op(name: str, kind: str) -> OpSpec:
    """The op registered as ``name`` for cell ``kind`` (a kind's own entry beats ``"*"``)."""
    specs = _candidates(name)
    for spec in specs:
        if kind in spec.kinds:
            return spec
    for spec in specs:
        if "*" in spec.kinds:
            return spec
    if specs:
        served = sorted({k for s in specs for k in s.kinds})
        raise UnknownOpError(f"op {name!r} is not available in {kind} cells (it serves {served})")
    raise OPS.unknown(name)


def has_op(name: str, kind: str) -> bool:
    try:
        get_op(name, kind)
    except UnknownOpError:
        return False
    return True


def list_ops(pattern: str | None = None) -> list[str]:
    """Names of all registered ops (families shown with their ``<param>``), or those that match
    a shell-style ``pattern`` (``list_ops("*SSM*")``)."""
    return OPS.names(pattern)
