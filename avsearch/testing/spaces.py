"""The space conformance suite: what every search space must satisfy, as pytest tests.

Subclass it in a test module (a class named ``Test...``), name your space and give options
that make it small::

    from avsearch.testing import SpaceTests

    class TestMine(SpaceTests):
        space_name = "mine"                        # registered with @register_space
        space_options = {"d": 8, "bits": 8}

It checks the declaration (an exact count, samples and presets that validate, a stable
arch id, an ``.arch`` file round trip), that every preset and a random architecture give
codes of shape (batch, bits) in every mode (mixed, single path, fixed), and that a derived
network inherits its weights, all of them, from the mixed and the single-path supernets.
"""
from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
import torch

from avsearch.arch import Architecture
from avsearch.graph import SearchSpace
from avsearch.spaces import get_space
from avsearch.supernet import Network, compile_space

__all__ = ["SpaceTests"]


class SpaceTests:
    """The conformance tests of a space (module docstring)."""

    space_name: str = ""
    space_options: dict[str, Any] = {}
    batch, length = 2, 8            # the videos the networks run on

    @pytest.fixture(scope="class")
    @classmethod
    def space(cls) -> SearchSpace:
        return get_space(cls.space_name, **cls.space_options)

    @pytest.fixture(scope="class")
    @classmethod
    def supernets(cls, space) -> dict[str, Network]:
        torch.manual_seed(0)
        return {mode: compile_space(space, mode) for mode in ("mixed", "single-path")}

    def architectures(self, space: SearchSpace) -> dict[str, dict[str, str]]:
        """Every preset, and one random architecture."""
        return {**space.presets, "sample": space.sample(random.Random(0))}

    def features(self, space: SearchSpace) -> list[torch.Tensor]:
        """Random inputs: frame features, and for a text input token ids (the last position
        of the first item padding)."""
        generator = torch.Generator().manual_seed(1)
        out = []
        for m, width in space.input_widths.items():
            if m in space.text_inputs:
                ids = torch.randint(1, max(2, width), (self.batch, self.length), generator=generator)
                ids[0, -1] = 0
                out.append(ids)
            else:
                out.append(torch.randn(self.batch, self.length, width, generator=generator))
        return out

    def assert_codes(self, codes: torch.Tensor, space: SearchSpace, what: str) -> None:
        bits = space.type_of(space.output_node).width
        assert codes.shape == (self.batch, bits), what
        assert torch.isfinite(codes).all() and codes.abs().max() <= 1, what

    def test_declaration(self, space):
        assert space.count() == math.prod(len(space.candidates(c)) for c in space.cells)
        assert space.cells and space.modalities
        sample = space.sample(random.Random(0))
        assert space.validate(sample) == sample
        assert space.arch_id(sample) == space.arch_id(dict(reversed(list(sample.items()))))
        json.dumps(space.describe())
        for name, choices in space.presets.items():
            assert space.validate(choices) == choices, name

    def test_arch_file_round_trip(self, space, tmp_path):
        for name, choices in self.architectures(space).items():
            Architecture.from_space(space, choices).save(tmp_path / f"{name}.arch")
            loaded = Architecture.load(tmp_path / f"{name}.arch")
            assert loaded.choices == choices and loaded.arch_id == space.arch_id(choices), name

    @torch.no_grad()
    def test_every_mode_gives_codes_of_batch_by_bits(self, space, supernets):
        x = self.features(space)
        mixed, single = supernets["mixed"].eval(), supernets["single-path"].eval()
        self.assert_codes(mixed(*x), space, "mixed")
        for name, choices in self.architectures(space).items():
            single.set_path(choices)
            self.assert_codes(single(*x), space, f"single-path {name}")
            self.assert_codes(compile_space(space, "fixed", choices).eval()(*x), space,
                              f"fixed {name}")

    def test_weights_move_from_supernet_to_fixed_network(self, space, supernets):
        for mode, supernet in supernets.items():
            state = supernet.weight_state_dict()
            for name, choices in self.architectures(space).items():
                derived = compile_space(space, "fixed", choices)
                derived.inherit(state)
                own = derived.state_dict()
                assert own, name
                for key, value in own.items():
                    assert torch.equal(value, state[key]), f"{mode} -> fixed {name}: {key}"
