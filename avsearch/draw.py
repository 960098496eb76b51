"""Diagrams of spaces and architectures (Graphviz).

The DOT source is generated here and never needs the ``dot`` binary; rendering to SVG, PNG or
PDF does. Colours follow the DARTS diagrams (green inputs, yellow output, pastel cells) with
one colour per cell kind, and every dotted name prefix (``visual.``, ``audio.``, ``teacher.``)
becomes a cluster, so each encoder (or teacher, student) is drawn as one box. Auxiliary outputs
are pale yellow; a cell that follows another says so; in an architecture, the nodes it does not
compute (an absent choice such as VHMT's ``none`` teacher and what depends on it) are dashed.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import graphviz

from avsearch._files import atomic_write
from avsearch.errors import AvsearchInputError

if TYPE_CHECKING:
    from avsearch.graph import SearchSpace

__all__ = ["space_to_dot", "render", "FORMATS"]

FORMATS = ("svg", "png", "pdf", "dot")
KIND_COLOURS = {"M": "lightblue", "U": "lavender", "D": "mistyrose", "I": "lightsalmon",
                "F": "khaki", "T": "lightcyan", "S": "thistle",
                "ET": "peachpuff", "DT": "navajowhite", "ES": "paleturquoise", "DS": "powderblue",
                "FS": "pink"}
INPUT_COLOUR, OUTPUT_COLOUR, FIXED_COLOUR, OTHER_COLOUR = "darkseagreen2", "palegoldenrod", "gray92", "white"
AUX_COLOUR = "lightyellow"


def _candidate_lines(ops: tuple[str, ...]) -> list[str]:
    """One line per candidate; consecutive ``a/x``, ``a/y`` share a line ``a/ x · y``."""
    groups: list[tuple[str, list[str] | None]] = []
    for op in ops:
        head, sep, tail = op.partition("/")
        if sep and groups and groups[-1][0] == head and groups[-1][1] is not None:
            groups[-1][1].append(tail)
        else:
            groups.append((head, [tail]) if sep else (op, None))
    return [html.escape(head if tails is None else f"{head}/ " + " · ".join(tails))
            for head, tails in groups]


def _cell_label(space: "SearchSpace", cell: str, choice: str | None,
                probs: Mapping[str, float] | None) -> str:
    """An HTML label: the cell name, then its candidates (space) or its chosen op (arch)."""
    kind = space.node(cell)["kind"]
    title = f"<B>{html.escape(cell)}</B> <FONT POINT-SIZE=\"9\">{html.escape(kind)}</FONT>"
    leader = space.leader(cell)
    follows = (f"<BR/><FONT POINT-SIZE=\"9\">follows {html.escape(leader)}</FONT>"
               if leader != cell else "")
    if choice is not None:
        extra = f" ({probs[choice]:.2f})" if probs and choice in probs else ""
        return f"<{title}<BR/>{html.escape(choice)}{extra}{follows}>"
    if follows:
        return f"<{title}{follows}>"
    ops = "<BR/>".join(_candidate_lines(space.candidates(cell)))
    return f"<{title}<BR/><FONT POINT-SIZE=\"10\">{ops}</FONT>>"


def space_to_dot(space: "SearchSpace", choices: Mapping[str, str] | None = None,
                 probabilities: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """DOT source of ``space`` (every cell with its candidates) or of one architecture.

    With ``probabilities`` (softmax(α) per cell) the edge into each cell is labelled with the
    chosen op's probability and drawn thicker the more certain the choice.
    """
    if choices is not None:
        choices = space.validate(choices)
    title = space.name if choices is None else f"{space.name} — {space.arch_id(choices)}"
    g = graphviz.Digraph(space.name,
                         graph_attr=dict(rankdir="TB", label=title, labelloc="t", fontname="Helvetica",
                                         nodesep="0.25", ranksep="0.3"),
                         node_attr=dict(shape="box", style="rounded,filled", fontname="Helvetica",
                                        fontsize="11"),
                         edge_attr=dict(fontname="Helvetica", fontsize="9", color="gray40"))
    clusters: dict[str, list[tuple[str, dict[str, str]]]] = {}
    inactive = space.inactive(choices) if choices is not None else {}
    for node in space.order:
        attrs = space.node(node)
        role, ttype = attrs["role"], space.type_of(node)
        if role == "input":
            label, fill = f"{node}\\n{ttype.width}-d", INPUT_COLOUR
        elif role == "given":   # a training pass's input (SPTCH's graph), never the codes'
            label, fill = f"{node}\\ngiven in training", INPUT_COLOUR
        elif role == "fixed":
            label = f"{node}\\n{attrs['layer']} → {ttype.width_expr}"
            fill = (OUTPUT_COLOUR if node == space.output_node or node in space.towers.values() else
                    AUX_COLOUR if node in space.auxiliary else FIXED_COLOUR)
        else:
            choice = choices[space.leader(node)] if choices is not None else None
            probs = probabilities.get(node) if probabilities else None
            label = _cell_label(space, node, choice, probs)
            fill = KIND_COLOURS.get(attrs["kind"], OTHER_COLOUR)
        kw = dict(label=label, fillcolor=fill)
        if node in inactive:   # not computed by this architecture: zeros, or not at all
            kw.update(style="rounded,dashed", fillcolor="white", fontcolor="gray50", color="gray50")
            if role == "fixed":
                kw["label"] = f"{label}\\n({inactive[node]})"
        prefix = node.split(".")[0] if "." in node else (node if role == "input" else "")
        clusters.setdefault(prefix, []).append((node, kw))
    modalities = set(space.modalities)
    for prefix, nodes in clusters.items():
        if not prefix or [n for n, _ in nodes] == [prefix]:   # an input with no encoder of its own
            for node, kw in nodes:
                g.node(node, **kw)
            continue
        with g.subgraph(name=f"cluster_{prefix}") as sub:
            sub.attr(label=f"{prefix} tower" if prefix in space.towers else
                     f"{prefix} encoder" if prefix in modalities else prefix,
                     style="rounded,dashed", color="gray60")
            for node, kw in nodes:
                sub.node(node, **kw)
    for src, dst, data in space.graph.edges(data=True):
        kw = {}
        if len(space.inputs_of(dst)) >= 2:  # binary cells: mark which input is x, y (and z)
            kw["headlabel"] = "xyz"[data["arg"]]
        probs = probabilities.get(dst) if probabilities and choices is not None else None
        if probs and choices[dst] in probs:
            p = probs[choices[dst]]
            kw.update(label=f"{p:.2f}", penwidth=f"{0.6 + 3.4 * p:.2f}")
        g.edge(src, dst, **kw)
    return g.source


def render(dot_source: str, output: str | Path) -> Path:
    """Write ``dot_source`` to ``output``; the extension picks SVG, PNG, PDF or DOT."""
    output = Path(output)
    fmt = output.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise AvsearchInputError(f"{output}: unknown drawing format {fmt!r} "
                                 f"(use one of .{', .'.join(FORMATS)})")
    if fmt == "dot":
        atomic_write(output, dot_source)
        return output
    try:
        data = graphviz.Source(dot_source).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise AvsearchInputError(f"{output}: rendering .{fmt} needs Graphviz's 'dot' program, "
                                 f"which is not installed (Debian/Ubuntu: apt-get install graphviz); "
                                 f"write a .dot file instead") from None
    atomic_write(output, data)
    return output
