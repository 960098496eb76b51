"""The graph IR: a search space as a typed, validated networkx DiGraph.

The graph is a specification, never an ``nn.Module`` (NASLib's lesson): ``supernet.compile``
turns it into modules. Nodes are inputs (one per modality), fixed layers (``Linear``,
``Hash``) and choice cells (a kind, an arity, an ordered list of candidate ops). Every node
produces one tensor whose type (modality, width, sequence or pooled) is carried on its out
edges, so a declaration error is caught where it is made and names the node.
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

__all__ = ["TensorType", "SearchSpace", "FIXED_LAYERS"]

# Fixed (non-searchable) layers and whether they pool. Linear: (B, L, w_in) -> (B, L, w_out);
# Hash: Eq. 34, tanh(FC(h)) on a pooled vector.
FIXED_LAYERS = {"Linear": "seq", "Hash": "pooled"}
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

    # ------------------------------------------------------------------ declaration
    def input(self, modality: str, width: int | str) -> str:
        """Declare the input of one modality; returns its node name (the modality)."""
        self._new_node(modality)
        self.graph.add_node(modality, role="input", type=self._type(modality, modality, width))
        return modality

    def fixed(self, name: str, layer: str, inputs: Sequence[str], width: int | str) -> str:
        """Declare a fixed layer (``Linear`` or ``Hash``) mapping its one input to ``width``."""
        self._new_node(name)
        if layer not in FIXED_LAYERS:
            raise SpaceError(f"space {self.name!r}, node {name!r}: unknown fixed layer {layer!r} "
                             f"(known: {', '.join(FIXED_LAYERS)})")
        (src,) = self._check_inputs(name, inputs, 1)
        in_type = self.type_of(src)
        if layer == "Hash" and not in_type.pooled:
            raise SpaceError(f"space {self.name!r}, node {name!r}: the hash layer needs a pooled "
                             f"input, got {in_type}")
        pooled = in_type.pooled or FIXED_LAYERS[layer] == "pooled"
        out = self._type(name, in_type.modality, width, pooled)
        self.graph.add_node(name, role="fixed", layer=layer, type=out)
        self._connect(inputs, name)
        return name

    def choice(self, name: str, kind: str, candidates: Sequence[str], inputs: Sequence[str]) -> str:
        """Declare a choice cell: one of ``candidates`` (registered ops of ``kind``) is picked.

        The cell's arity is ``len(inputs)``; every candidate must have that arity and the same
        output shape (sequence or pooled). Binary cells need inputs of equal width and shape.
        """
        self._new_node(name)
        if not candidates:
            raise SpaceError(f"space {self.name!r}, cell {name!r}: no candidates")
        if len(set(candidates)) != len(candidates):
            raise SpaceError(f"space {self.name!r}, cell {name!r}: duplicate candidates "
                             f"{list(candidates)}")
        srcs = self._check_inputs(name, inputs, None)
        types = [self.type_of(s) for s in srcs]
        if len({(t.width, t.pooled) for t in types}) > 1:
            raise SpaceError(f"space {self.name!r}, cell {name!r}: inputs differ in width or shape: "
                             + "; ".join(f"{s}: {t}" for s, t in zip(srcs, types)))
        if types[0].pooled:
            raise SpaceError(f"space {self.name!r}, cell {name!r}: choice cells take sequences; "
                             f"input {srcs[0]!r} is already pooled")
        pooled = set()
        for op in candidates:
            try:
                spec = get_op(op, kind)
            except UnknownOpError as err:
                raise SpaceError(f"space {self.name!r}, cell {name!r}: candidate {op!r}: {err}") from None
            if spec.arity != len(srcs):
                raise SpaceError(f"space {self.name!r}, cell {name!r}: candidate {op!r} takes "
                                 f"{spec.arity} input(s), the cell has {len(srcs)}")
            pooled.add(spec.pooled)
        if len(pooled) > 1:
            raise SpaceError(f"space {self.name!r}, cell {name!r}: candidates mix pooled and "
                             f"sequence outputs: {list(candidates)}")
        modality = "+".join(sorted({t.modality for t in types}))
        out = TensorType(modality, types[0].width_expr, types[0].width, pooled.pop())
        self.graph.add_node(name, role="choice", kind=kind, candidates=tuple(candidates), type=out)
        self._connect(srcs, name)
        return name

    def output(self, node: str) -> None:
        """Mark the space's single output (the hash codes) and validate the whole graph."""
        if self._output is not None:
            raise SpaceError(f"space {self.name!r}: output already set to {self._output!r}")
        if node not in self.graph:
            raise SpaceError(f"space {self.name!r}: output {node!r} is not a node")
        if not self.type_of(node).pooled:
            raise SpaceError(f"space {self.name!r}: output {node!r} must be pooled (B, bits), "
                             f"got {self.type_of(node)}")
        dangling = [n for n in self.graph if n != node and self.graph.out_degree(n) == 0]
        if dangling:
            raise SpaceError(f"space {self.name!r}: node(s) {dangling} feed nothing; "
                             f"every node must lead to the output {node!r}")
        self._output = node

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
    def order(self) -> list[str]:
        """Nodes in a deterministic topological order (declaration order breaks ties)."""
        rank = {n: i for i, n in enumerate(self.graph.nodes)}
        return list(nx.lexicographical_topological_sort(self.graph, key=rank.__getitem__))

    @property
    def cells(self) -> list[str]:
        """The choice cells in topological order."""
        return [n for n in self.order if self.graph.nodes[n]["role"] == "choice"]

    def node(self, name: str) -> dict[str, Any]:
        return self.graph.nodes[name]

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

    def canonical(self, choices: Mapping[str, str]) -> str:
        """A canonical string of an architecture: space, options, and cell=op in sorted order."""
        choices = self.validate(choices)
        body = ";".join(f"{c}={choices[c]}" for c in sorted(choices))
        return f"{self.name}|{json.dumps(self.config, sort_keys=True, default=str)}|{body}"

    def arch_id(self, choices: Mapping[str, str]) -> str:
        """A stable id: the first 16 hex digits of the canonical string's sha256."""
        return hashlib.sha256(self.canonical(choices).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: options, cells with their candidates, presets, the count."""
        return {
            "space": self.name,
            "config": self.config,
            "modalities": {m: self.type_of(m).width for m in self.modalities},
            "cells": [{"name": c, "kind": self.node(c)["kind"], "width": self.type_of(c).width,
                       "candidates": list(self.candidates(c))} for c in self.cells],
            "presets": self.presets,
            "combinations": self.count(),
        }

    def to_dot(self, choices: Mapping[str, str] | None = None,
               probabilities: Mapping[str, Mapping[str, float]] | None = None) -> str:
        """Graphviz DOT source of the space, or of one architecture when ``choices`` is given."""
        from avsearch.draw import space_to_dot
        return space_to_dot(self, choices, probabilities)

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
        if not srcs or len(srcs) > 2 or (arity is not None and len(srcs) != arity):
            want = arity if arity is not None else "1 or 2"
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
