"""The graph IR: a search space as a typed, validated networkx DiGraph.

The graph is a specification, never an ``nn.Module`` (NASLib's lesson): ``supernet.compile``
turns it into modules. Nodes are inputs (one per modality), fixed layers (``Linear``,
``Hash``, ... see :data:`FIXED_LAYERS`) and choice cells (a kind, an arity, an ordered list of
candidate ops). Every node produces one tensor whose type (modality, width, sequence or
pooled) is carried on its out edges, so a declaration error is caught where it is made and
names the node.

A space has one output (the codes) and may name auxiliary outputs that objectives read
through ``Network.node_outputs`` (VHMT's reconstructions and teacher codes). A cross-modal
space names a *tower* per modality (``output(..., towers=...)``): the node of that modality's
codes, computed from that modality's input alone (a caption is encoded without its video). A
*given* node (:meth:`SearchSpace.given`) has no inputs: its value comes with each training
pass (``node_outputs(given=...)``: SPTCH's batch of the training graph); only auxiliary
outputs may depend on it, never the codes. A cell may
*follow* another: it has its own weights but no choice of its own, it runs whatever its
leader runs (one decision for several places, as NNI's shared labels).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import networkx as nx

from avsearch.errors import ArchError, SpaceError
from avsearch.ops.registry import OpConfig, UnknownOpError, get_op

__all__ = ["TensorType", "SearchSpace", "FIXED_LAYERS", "AUX_INPUT"]

# A space input of this name is not a feature modality: it reads each item's auxiliary
# semantics (``Split.aux``, LAGNH's detected objects), as (N, 1, width) like an image's features.
AUX_INPUT = "aux"

# Fixed (non-searchable) layers and whether they pool. Linear: (B, L, w_in) -> (B, L, w_out);
# LayerNorm: over features, width kept; FrameHash: VHMT Eq. 9, tanh(LN(FC(e))) per step, to
# the code length; MeanPool: mean over time, width kept (with FrameHash, VHMT Eq. 10 before
# the sign); Hash: AV-NAS Eq. 34, tanh(FC(h)) on a pooled vector; Embed: a text's token ids
# (or token features) to a width, padding kept recognisable (SPTCH's text tower).
FIXED_LAYERS = {"Linear": "seq", "LayerNorm": "seq", "FrameHash": "seq", "MeanPool": "pooled",
                "Hash": "pooled", "Embed": "seq"}
_KEEP_WIDTH = ("LayerNorm", "MeanPool")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class TensorType:
    """What flows along an edge: modality, width (symbolic and resolved) and shape kind."""

    modality: str
    width_expr: str
    width: int
    pooled: bool = False

    def __str__(self) -> str:
        shape = "(B, w)" if self.pooled else "(B, m, w)"
        return f"{self.modality} {shape} w={self.width_expr}={self.width}"


def canonical_string(space: str, config: Mapping[str, Any], choices: Mapping[str, str]) -> str:
    """``space|options as sorted JSON|cell=op;...`` (cells sorted): what an arch_id hashes."""
    body = ";".join(f"{c}={choices[c]}" for c in sorted(choices))
    return f"{space}|{json.dumps(config, sort_keys=True, default=str)}|{body}"


def arch_id_of(space: str, config: Mapping[str, Any], choices: Mapping[str, str]) -> str:
    """The first 16 hex digits of the sha256 of :func:`canonical_string`."""
    return hashlib.sha256(canonical_string(space, config, choices).encode()).hexdigest()[:16]


class SearchSpace:
    """A search space declared node by node.

    Args:
        name: the space's registered name (recorded in every ``.arch``).
        config: the space's options; symbolic widths such as ``"e*d"`` resolve against it.
        op_config: hyper-parameters shared by every op of networks built from this space.

    Example:
        >>> s = SearchSpace("tiny", {"d": 8})
        >>> x = s.input("visual", width=8)
        >>> h = s.choice("M", kind="M", candidates=["Skip", "FFN"], inputs=[x])
        >>> t = s.choice("T", kind="T", candidates=["SelfAttention"], inputs=[h])
        >>> s.output(s.fixed("hash", "Hash", [t], width=4))
        >>> s.count()
        2
    """

    def __init__(self, name: str, config: Mapping[str, Any] | None = None,
                 op_config: OpConfig | None = None):
        self.name = name
        self.config: dict[str, Any] = dict(config or {})
        self.op_config = op_config or OpConfig()
        self.graph = nx.DiGraph(name=name)
        self.presets: dict[str, dict[str, str]] = {}
        self._output: str | None = None
        self.auxiliary: tuple[str, ...] = ()
        self.towers: dict[str, str] = {}
        # per budget name, Budget fields this space runs with instead (a space whose
        # standalone training is costly asks for a cheaper halving stage; run.py applies it)
        self.budgets: dict[str, dict[str, Any]] = {}
        self._plans: dict[tuple, tuple[frozenset[str], frozenset[str]]] = {}

    # ------------------------------------------------------------------ declaration
    def input(self, modality: str, width: int | str, text: bool = False) -> str:
        """Declare the input of one modality; returns its node name (the modality). ``text``:
        it takes a text modality (padded token ids or token features, whose padding its
        ops mask), not frame features."""
        self._new_node(modality)
        self.graph.add_node(modality, role="input", type=self._type(modality, modality, width),
                            text=text)
        return modality

    def given(self, name: str, width: int | str) -> str:
        """Declare a node whose value each pass is given (``Network.node_outputs(given=...)``),
        of type (B, m, ``width``); only auxiliary outputs may depend on it (a training-time
        input such as a batch's rows of a graph over the training set)."""
        self._new_node(name)
        self.graph.add_node(name, role="given", type=self._type(name, name, width))
        return name

    def fixed(self, name: str, layer: str, inputs: Sequence[str], width: int | str) -> str:
        """Declare a fixed layer (one of :data:`FIXED_LAYERS`) mapping its input to ``width``."""
        self._new_node(name)
        if layer not in FIXED_LAYERS:
            raise SpaceError(f"space {self.name!r}, node {name!r}: unknown fixed layer {layer!r} "
                             f"(known: {', '.join(FIXED_LAYERS)})")
        (src,) = self._check_inputs(name, inputs, 1)
        in_type = self.type_of(src)
        if layer == "Hash" and not in_type.pooled:
            raise SpaceError(f"space {self.name!r}, node {name!r}: the hash layer needs a pooled "
                             f"input, got {in_type}")
        if layer == "MeanPool" and in_type.pooled:
            raise SpaceError(f"space {self.name!r}, node {name!r}: MeanPool needs a sequence, "
                             f"got {in_type}")
        pooled = in_type.pooled or FIXED_LAYERS[layer] == "pooled"
        out = self._type(name, in_type.modality, width, pooled)
        if layer in _KEEP_WIDTH and out.width != in_type.width:
            raise SpaceError(f"space {self.name!r}, node {name!r}: {layer} keeps the width, "
                             f"{out.width} != input width {in_type.width}")
        self.graph.add_node(name, role="fixed", layer=layer, type=out)
        self._connect(inputs, name)
        return name

    def choice(self, name: str, kind: str, candidates: Sequence[str], inputs: Sequence[str],
               follows: str | None = None) -> str:
        """Declare a choice cell: one of ``candidates`` (registered ops of ``kind``) is picked.

        The cell's arity is ``len(inputs)``; every candidate must have that arity and the same
        output shape (sequence or pooled). Binary cells need inputs of equal width and shape,
        unless every candidate reads its last input as context (``register_op(context=True)``);
        a cell of context ops may have three inputs (two operands and the context).

        ``follows`` names an earlier cell with the same candidate names (its kind may differ):
        this cell then has no choice of its own (it is not in :attr:`cells`, the count or an
        architecture) and runs the op its leader runs, with its own weights.
        """
        self._new_node(name)
        if follows is not None:
            if follows not in self.graph or self.node(follows)["role"] != "choice" \
                    or self.node(follows)["follows"] is not None:
                raise SpaceError(f"space {self.name!r}, cell {name!r}: follows {follows!r}, which "
                                 f"is not a cell with a choice of its own")
            if tuple(candidates) != self.candidates(follows):
                raise SpaceError(f"space {self.name!r}, cell {name!r}: a cell that follows "
                                 f"{follows!r} needs its candidates {list(self.candidates(follows))}"
                                 f" in that order, got {list(candidates)}")
        if not candidates:
            raise SpaceError(f"space {self.name!r}, cell {name!r}: no candidates")
        if len(set(candidates)) != len(candidates):
            raise SpaceError(f"space {self.name!r}, cell {name!r}: duplicate candidates "
                             f"{list(candidates)}")
        srcs = self._check_inputs(name, inputs, None)
        types = [self.type_of(s) for s in srcs]
        pooled, context = set(), set()
        for op in candidates:
            try:
                spec = get_op(op, kind)
            except UnknownOpError as err:
                raise SpaceError(f"space {self.name!r}, cell {name!r}: candidate {op!r}: {err}") from None
            if spec.arity != len(srcs):
                raise SpaceError(f"space {self.name!r}, cell {name!r}: candidate {op!r} takes "
                                 f"{spec.arity} input(s), the cell has {len(srcs)}")
            pooled.add(spec.pooled)
            context.add(spec.context)
        if len(srcs) == 3 and context != {True}:
            raise SpaceError(f"space {self.name!r}, cell {name!r}: three inputs need candidates "
                             f"that read the last one as context")
        # a context input (read, not combined) may have any width; operands must agree
        operands = types[:-1] if context == {True} else types
        if len({(t.width, t.pooled) for t in operands}) > 1:
            raise SpaceError(f"space {self.name!r}, cell {name!r}: inputs differ in width or shape: "
                             + "; ".join(f"{s}: {t}" for s, t in zip(srcs, types)))
        if any(t.pooled for t in types):
            raise SpaceError(f"space {self.name!r}, cell {name!r}: choice cells take sequences; "
                             f"an input of {srcs} is already pooled")
        if len(pooled) > 1:
            raise SpaceError(f"space {self.name!r}, cell {name!r}: candidates mix pooled and "
                             f"sequence outputs: {list(candidates)}")
        modality = "+".join(sorted({t.modality for t in types}))
        out = TensorType(modality, types[0].width_expr, types[0].width, pooled.pop())
        self.graph.add_node(name, role="choice", kind=kind, candidates=tuple(candidates), type=out,
                            follows=follows)
        self._connect(srcs, name)
        return name

    def output(self, node: str, auxiliary: Sequence[str] = (),
               towers: Mapping[str, str] | None = None) -> None:
        """Mark the space's output (the hash codes) and validate the whole graph.

        ``auxiliary`` names further nodes that objectives read (``Network.node_outputs``), e.g.
        a reconstruction; ``Network.forward`` computes only what the output needs.
        ``towers`` (cross-modal spaces): per modality the node of its codes, which must be
        pooled and depend on that modality's input alone; ``node`` is one of them.
        """
        if self._output is not None:
            raise SpaceError(f"space {self.name!r}: output already set to {self._output!r}")
        for n in (node, *auxiliary):
            if n not in self.graph:
                raise SpaceError(f"space {self.name!r}: output {n!r} is not a node")
        if not self.type_of(node).pooled:
            raise SpaceError(f"space {self.name!r}: output {node!r} must be pooled (B, bits), "
                             f"got {self.type_of(node)}")
        ends = {node, *auxiliary, *(towers or {}).values()}
        dangling = [n for n in self.graph if n not in ends and self.graph.out_degree(n) == 0]
        if dangling:
            raise SpaceError(f"space {self.name!r}: node(s) {dangling} feed nothing; every node "
                             f"must lead to the output {node!r} or an auxiliary output")
        towers = dict(towers or {})
        for modality, tower in towers.items():
            if modality not in self.modalities or tower not in self.graph \
                    or not self.type_of(tower).pooled:
                raise SpaceError(f"space {self.name!r}: tower {modality}={tower!r} must be a "
                                 f"modality and a pooled node")
            sources = {a for a in nx.ancestors(self.graph, tower)
                       if self.node(a)["role"] in ("input", "given")}
            if sources != {modality}:
                raise SpaceError(f"space {self.name!r}: tower {tower!r} must depend on input "
                                 f"{modality!r} alone, it reads {sorted(sources)}")
        if towers and node not in towers.values():
            raise SpaceError(f"space {self.name!r}: output {node!r} is none of the towers")
        given = [a for a in nx.ancestors(self.graph, node) if self.node(a)["role"] == "given"]
        if given:
            raise SpaceError(f"space {self.name!r}: the codes {node!r} depend on given node(s) "
                             f"{given}, which only a training pass has")
        self._output = node
        self.towers = towers
        self.auxiliary = tuple(dict.fromkeys(a for a in (*auxiliary, *towers.values())
                                             if a != node))

    def preset(self, name: str, choices: Mapping[str, str]) -> None:
        """Record a named expert architecture (e.g. Eqs. 6-8); validated against the space."""
        self.validate(choices)
        self.presets[name] = dict(choices)

    # ------------------------------------------------------------------ queries
    @property
    def output_node(self) -> str:
        if self._output is None:
            raise SpaceError(f"space {self.name!r} has no output; call output(node)")
        return self._output

    @property
    def modalities(self) -> list[str]:
        return [n for n in self.order if self.graph.nodes[n]["role"] == "input"]

    @property
    def text_inputs(self) -> list[str]:
        """The modalities declared as text (:meth:`input`), in input order."""
        return [m for m in self.modalities if self.graph.nodes[m].get("text", False)]

    @property
    def input_widths(self) -> dict[str, int]:
        """The width of each modality's input, in input order: what a data set must give."""
        return {m: self.type_of(m).width for m in self.modalities}

    @property
    def order(self) -> list[str]:
        """Nodes in a deterministic topological order (declaration order breaks ties)."""
        rank = {n: i for i, n in enumerate(self.graph.nodes)}
        return list(nx.lexicographical_topological_sort(self.graph, key=rank.__getitem__))

    @property
    def cells(self) -> list[str]:
        """The choice cells with a choice of their own (an architecture's keys), in
        topological order; cells that follow another are not among them."""
        return [n for n in self.order if self.graph.nodes[n]["role"] == "choice"
                and self.graph.nodes[n]["follows"] is None]

    @property
    def followers(self) -> dict[str, str]:
        """Cells that follow another: {follower: leader}."""
        return {n: self.graph.nodes[n]["follows"] for n in self.order
                if self.graph.nodes[n]["role"] == "choice" and self.graph.nodes[n]["follows"]}

    def leader(self, cell: str) -> str:
        """The cell whose choice ``cell`` runs: itself, or the cell it follows."""
        return self.graph.nodes[cell]["follows"] or cell

    @property
    def targets(self) -> tuple[str, ...]:
        """The output and the auxiliary outputs."""
        return (self.output_node, *self.auxiliary)

    def node(self, name: str) -> dict[str, Any]:
        return self.graph.nodes[name]

    @property
    def given_nodes(self) -> list[str]:
        """The nodes declared with :meth:`given`, in topological order."""
        return [n for n in self.order if self.graph.nodes[n]["role"] == "given"]

    def inputs_of(self, name: str) -> list[str]:
        """A node's inputs in argument order (x before y for binary cells)."""
        preds = self.graph.in_edges(name, data="arg")
        return [src for src, _, _ in sorted(preds, key=lambda e: e[2])]

    def type_of(self, name: str) -> TensorType:
        return self.graph.nodes[name]["type"]

    def candidates(self, cell: str) -> tuple[str, ...]:
        return self.graph.nodes[cell]["candidates"]

    def count(self) -> int:
        """The exact number of architectures: the product of the cells' candidate counts."""
        return math.prod(len(self.candidates(c)) for c in self.cells)

    def sample(self, rng: random.Random | int | None = None) -> dict[str, str]:
        """A uniformly random architecture (one candidate per cell)."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        return {c: rng.choice(self.candidates(c)) for c in self.cells}

    def validate(self, choices: Mapping[str, str]) -> dict[str, str]:
        """Check that ``choices`` picks one known candidate for every cell and nothing else."""
        cells = self.cells
        missing = [c for c in cells if c not in choices]
        extra = [str(c) for c in choices if c not in cells]
        problems = ([f"no choice for cell(s) {', '.join(missing)}"] if missing else []) + \
                   ([f"unknown cell(s) {', '.join(extra)}"] if extra else [])
        if problems:
            raise ArchError(f"space {self.name!r}: {'; '.join(problems)}")
        for c in cells:
            if choices[c] not in self.candidates(c):
                raise ArchError(f"space {self.name!r}, cell {c!r}: {choices[c]!r} is not a "
                                f"candidate (choose from {', '.join(self.candidates(c))})")
        return {c: choices[c] for c in cells}

    def inactive(self, choices: Mapping[str, str]) -> dict[str, str]:
        """The nodes an architecture does not compute, each ``"absent"`` or ``"unused"``.

        Absent: a cell whose op is registered ``absent`` (e.g. VHMT's ``none`` teacher), and
        every node all of whose inputs are absent; a network gives zeros of the node's shape
        for them. Unused: a node that feeds only absent nodes and is no output. A fixed
        network holds no layers for either.
        """
        choices = self.validate(choices)
        absent_cells = frozenset(
            c for c in self.order if self.node(c)["role"] == "choice"
            and get_op(choices[self.leader(c)], self.node(c)["kind"]).absent)
        absent, needed = self.evaluation_plan(absent_cells, self.targets)
        return {n: "absent" if n in absent else "unused" for n in self.order
                if self.node(n)["role"] not in ("input", "given")
                and (n in absent or n not in needed)}

    def evaluation_plan(self, absent_cells: frozenset[str],
                        targets: Sequence[str]) -> tuple[frozenset[str], frozenset[str]]:
        """(absent nodes, nodes to evaluate) to compute ``targets`` when ``absent_cells`` run
        only absent ops (see :meth:`inactive`); the second set includes absent nodes that a
        target needs as zeros. Cached: networks call it on every forward."""
        cache_key = (absent_cells, tuple(targets))
        if cache_key not in self._plans:
            absent: set[str] = set()
            for n in self.order:
                ins = self.inputs_of(n)
                if n in absent_cells or (ins and all(i in absent for i in ins)):
                    absent.add(n)
            needed: set[str] = set()
            for n in reversed(self.order):
                if n in targets or any(s in needed and s not in absent
                                       for s in self.graph.successors(n)):
                    needed.add(n)
            self._plans[cache_key] = (frozenset(absent), frozenset(needed))
        return self._plans[cache_key]

    def canonical(self, choices: Mapping[str, str]) -> str:
        """A canonical string of an architecture: space, options, and cell=op in sorted order."""
        return canonical_string(self.name, self.config, self.validate(choices))

    def arch_id(self, choices: Mapping[str, str]) -> str:
        """A stable id: the first 16 hex digits of the canonical string's sha256."""
        return arch_id_of(self.name, self.config, self.validate(choices))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: options, cells with their candidates, presets, the count."""
        return {
            "space": self.name,
            "config": self.config,
            "modalities": self.input_widths,
            "cells": [{"name": c, "kind": self.node(c)["kind"], "width": self.type_of(c).width,
                       "candidates": list(self.candidates(c))} for c in self.cells],
            "followers": self.followers,
            "output": self.output_node,
            "auxiliary": list(self.auxiliary),
            "towers": self.towers,
            "presets": self.presets,
            "combinations": self.count(),
        }

    # ------------------------------------------------------------------ helpers
    def _new_node(self, name: str) -> None:
        if self._output is not None:
            raise SpaceError(f"space {self.name!r}: cannot add {name!r} after output() was set")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise SpaceError(f"space {self.name!r}: bad node name {name!r} (use identifiers "
                             f"joined by dots, e.g. 'visual.M1')")
        if name in self.graph:
            raise SpaceError(f"space {self.name!r}: node {name!r} declared twice")

    def _check_inputs(self, name: str, inputs: Iterable[str], arity: int | None) -> list[str]:
        srcs = [inputs] if isinstance(inputs, str) else list(inputs)
        for s in srcs:
            if s not in self.graph:
                raise SpaceError(f"space {self.name!r}, node {name!r}: input {s!r} is not declared")
        if not srcs or len(srcs) > 3 or (arity is not None and len(srcs) != arity):
            want = arity if arity is not None else "1 to 3"
            raise SpaceError(f"space {self.name!r}, node {name!r}: takes {want} input(s), "
                             f"got {len(srcs)}")
        return srcs

    def _connect(self, srcs: Sequence[str], dst: str) -> None:
        # Edges only point to nodes declared later, so the graph is acyclic by construction.
        for i, s in enumerate(srcs):
            self.graph.add_edge(s, dst, arg=i, type=self.type_of(s))

    def _type(self, node: str, modality: str, width: int | str, pooled: bool = False) -> TensorType:
        return TensorType(modality, str(width), self._resolve(node, width), pooled)

    def _resolve(self, node: str, width: int | str) -> int:
        """Resolve a symbolic width: an int, a config key, or a product such as ``e*d``."""
        value = 1
        for factor in str(width).replace(" ", "").split("*"):
            if factor.isdigit():
                value *= int(factor)
            elif factor in self.config and isinstance(self.config[factor], int):
                value *= self.config[factor]
            else:
                raise SpaceError(f"space {self.name!r}, node {node!r}: width {width!r}: "
                                 f"{factor!r} is not an integer option of the space")
        if value < 1:
            raise SpaceError(f"space {self.name!r}, node {node!r}: width {width!r} = {value} < 1")
        return value
