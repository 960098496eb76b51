"""Diagrams: DOT text without Graphviz, clusters per encoder, probabilities as edge weights."""
from __future__ import annotations

import re
import shutil

import pytest

import avsearch
from avsearch.draw import render, space_to_dot


def test_space_dot_lists_every_cell_and_candidate():
    space = avsearch.get_space("av_nas")
    dot = space_to_dot(space)
    assert 'subgraph cluster_visual' in dot and 'subgraph cluster_audio' in dot
    for cell in space.cells:
        assert re.search(rf'^\t+"?{re.escape(cell)}"? \[label=<', dot, re.M), cell
    m1 = re.search(r'"visual\.M1" \[label=<(.*?)> fillcolor', dot).group(1)
    for op in space.candidates("visual.M1"):
        assert op in m1


def test_arch_dot_shows_choices_and_probability_widths():
    space = avsearch.get_space("av_nas")
    choices = space.presets["mamba"]
    probs = {c: {op: (0.9 if op == choices[c] else 0.1 / (len(space.candidates(c)) - 1))
                 for op in space.candidates(c)} for c in space.cells}
    probs["T"] = {"SelfAttention": 0.3, "SelfSSM": 0.7}
    dot = space_to_dot(space, choices, probs)
    assert "CrossSSM (0.90)" in dot and "FFN" not in dot
    assert re.search(r'\tF -> T \[label=0\.70 penwidth=2\.98\]', dot)
    assert space.arch_id(choices) in dot


def test_render_dot_needs_no_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    out = render(space_to_dot(avsearch.get_space("av_nas")), tmp_path / "s.dot")
    assert out.read_text().startswith("digraph av_nas {")


def test_render_unknown_format(tmp_path):
    with pytest.raises(avsearch.AvsearchInputError, match="unknown drawing format 'gif'"):
        render("digraph {}", tmp_path / "x.gif")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")
def test_render_svg(tmp_path):
    out = render(space_to_dot(avsearch.get_space("av_nas")), tmp_path / "s.svg")
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "visual.M1" in text and "SelfSSM" in text
