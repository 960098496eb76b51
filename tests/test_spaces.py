"""Every registered space through avsearch.testing's conformance suite: every preset and a
random architecture, in every mode (mixed, single path, fixed), give codes of shape
(batch, bits), and a derived network inherits all its weights from the supernets."""
from __future__ import annotations

from avsearch.spaces import list_spaces
from avsearch.testing import SpaceTests
from avsearch.testing.strategies import USER_SPACE

VHMT_SMALL = {"d": 8, "d_dec": 8, "bits": 8, "heads": 2, "d_state": 4}


class TestAVNAS(SpaceTests):
    space_name = "av_nas"
    space_options = {"d": 8, "e": 2, "heads": 2, "d_state": 4, "bits": 8,
                     "modalities": {"visual": 12, "audio": 10}}


class TestAVNASOneModality(SpaceTests):
    space_name = "av_nas"
    space_options = {"d": 8, "e": 2, "heads": 2, "d_state": 4, "bits": 8,
                     "modalities": {"visual": 8}, "conv_kernels": "3,5"}


class TestVHMT(SpaceTests):
    space_name = "vhmt"
    space_options = {**VHMT_SMALL, "modalities": {"visual": 12}}


class TestVHMTWithSampler(SpaceTests):
    space_name = "vhmt"
    space_options = {**VHMT_SMALL, "modalities": {"visual": 8}, "samplers": "random,adversarial"}


class TestTAM(SpaceTests):
    space_name = "tam"
    space_options = {**VHMT_SMALL, "modalities": {"visual": 12}}


class TestUserSpace(SpaceTests):
    """The strategy suite's space, declared outside avsearch's spaces/ (no presets)."""
    space_name = USER_SPACE


def test_every_registered_space_runs_the_conformance_suite():
    checked = {cls.space_name for cls in SpaceTests.__subclasses__() if cls.__module__ == __name__}
    assert checked == set(list_spaces())


class TestLAGNH(SpaceTests):
    """Images: sequences of one step, with auxiliary semantics as the second input."""
    space_name = "lagnh"
    space_options = {"d": 8, "bits": 8, "modalities": {"visual": 12}, "aux": 5, "anchors": 3,
                     "hiddens": "4,1024", "depths": "1,2"}
    length = 1


class TestSPTCH(SpaceTests):
    """Two towers (frames, token ids) and the semantic hashing network beside them; depths
    {1, 4} keep the paper preset (Transformer_4) in reach."""
    space_name = "sptch"
    space_options = {"d": 8, "bits": 8, "heads": 2, "d_state": 4, "depths": "1,4",
                     "gcn_depths": "2", "modalities": {"visual": 12, "text": 20}}
