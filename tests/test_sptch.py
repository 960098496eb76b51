"""The sptch space (paper 003): two towers whose codes depend on their own item alone, padding
masked out, and the semantic hashing network's graph a training-time input only."""
from __future__ import annotations

import pytest
import torch

from avsearch.errors import SpaceError
from avsearch.graph import SearchSpace
from avsearch.spaces import get_space
from avsearch.supernet import compile_space

SMALL = {"d": 8, "bits": 8, "heads": 2, "d_state": 4, "depths": "1,2", "gcn_depths": "1",
         "modalities": {"visual": 6, "text": 11}, "dropout": 0.0}


@pytest.fixture(scope="module")
def space():
    return get_space("sptch", **SMALL)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(4, 5, 6, generator=g)
    text = torch.randint(1, 11, (4, 7), generator=g)
    text[1, 4:] = 0
    return video, text


@pytest.mark.parametrize("block", ["Transformer_2", "Mamba_2"])
def test_a_code_depends_on_its_own_item_alone(space, block):
    choices = {**space.sample(0), "visual.encoder": block, "text.encoder": block}
    net = compile_space(space, "fixed", choices).eval()
    video, text = _batch()
    other_video, other_text = _batch(1)
    with torch.no_grad():
        both = net.node_outputs(video, text, names=["visual.codes", "text.codes"])
        # alone, or beside other items, the same code; the caption's never reads the video
        assert torch.allclose(net.tower("visual", video[2:3]), both["visual.codes"][2:3], atol=1e-6)
        assert torch.allclose(net.tower("text", text[1:2]), both["text.codes"][1:2], atol=1e-6)
        swapped = net.node_outputs(other_video, text, names=["text.codes"])["text.codes"]
        assert torch.equal(swapped, both["text.codes"])
        mixed = torch.cat([other_text[:2], text[2:]])
        assert torch.allclose(net.tower("text", mixed)[2:], both["text.codes"][2:], atol=1e-6)


@pytest.mark.parametrize("block", ["Transformer_2", "Mamba_2"])
def test_padding_is_masked_out(space, block):
    """A caption padded to any length has the code of the caption without padding, and a
    video with a dropped (zeroed) frame the code of the video without it (attention)."""
    net = compile_space(space, "fixed", {**space.sample(0), "text.encoder": block,
                                          "visual.encoder": block}).eval()
    ids = torch.tensor([[3, 5, 7, 2]])
    padded = torch.tensor([[3, 5, 7, 2, 0, 0, 0]])
    with torch.no_grad():
        assert torch.allclose(net.tower("text", ids), net.tower("text", padded), atol=1e-6)
        assert not torch.allclose(net.tower("text", ids), net.tower("text", ids[:, :3]), atol=1e-4)


def test_graph_is_a_training_input_only(space):
    net = compile_space(space, "fixed", space.sample(0)).eval()
    video, text = _batch()
    with torch.no_grad():
        net(video, text)   # the codes need no graph
        with pytest.raises(ValueError, match="given with each training pass"):
            net.node_outputs(video, text)
        given = {"sh.graph": torch.eye(4), "sh.visual": video.mean(1, keepdim=True),
                 "sh.text": torch.rand(4, 1, 11)}
        out = net.node_outputs(video, text, given=given)
    assert out["sh.visual.recon"].shape == (4, 1, 6) and out["sh.text.recon"].shape == (4, 1, 11)


def test_towers_are_checked():
    s = SearchSpace("t", {"d": 4})
    v, t = s.input("v", 4), s.input("t", 4)
    both = s.fixed("t.codes", "MeanPool", [s.choice("mix", "D", ["Add"], [v, t])], 4)
    codes = s.fixed("v.codes", "MeanPool", [v], 4)
    with pytest.raises(SpaceError, match="must depend on input 't' alone"):
        s.output(codes, towers={"v": codes, "t": both})
    s2 = SearchSpace("t2", {"d": 4})
    g = s2.given("g", 4)
    with pytest.raises(SpaceError, match="given node"):
        s2.output(s2.fixed("codes", "MeanPool", [g], 4))


def test_presets(space):
    full = get_space("sptch")
    assert full.count() == 6 * 6 * 3 * 3 * 3
    assert full.presets["paper"]["visual.encoder"] == "Transformer_4"
    two = compile_space(full, "fixed", full.presets["two_tower"])
    assert not any(k.startswith("cells.sh__joint") for k in two.state_dict())   # no graphs
    assert two.absent("sh.visual.gcn") and two.absent("sh.joint.proj")
