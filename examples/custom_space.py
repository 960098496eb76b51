"""Declare your own search space in a few lines, without touching the library.

Run: python examples/custom_space.py
It registers a small one-modality space, prints its size, samples an architecture, builds
the supernet and a derived network, and writes the space's diagram as DOT text.
"""
from __future__ import annotations

import random

import torch

import avsearch
from avsearch import Option, SearchSpace, compile_space, register_space
from avsearch.draw import space_to_dot


@register_space("tiny_rnnfree", "two sequence cells and a pooled head over one modality",
                options={"d": Option(32, int, "model width"), "bits": Option(16, int, "code length")})
def tiny_rnnfree(d: int, bits: int) -> SearchSpace:
    space = SearchSpace("tiny_rnnfree", {"d": d, "bits": bits})
    x = space.input("frames", width="d")
    h = space.choice("mix", kind="M", candidates=["Skip", "Conv_k", "SelfAttention"], inputs=[x])
    h = space.choice("norm", kind="U", candidates=["Skip", "LayerNorm"], inputs=[h])
    h = space.choice("res", kind="D", candidates=["Add", "Hadamard"], inputs=[h, x])
    h = space.choice("head", kind="T", candidates=["SelfAttention", "SelfSSM"], inputs=[h])
    space.output(space.fixed("hash", "Hash", [h], width="bits"))
    return space


if __name__ == "__main__":
    space = avsearch.get_space("tiny_rnnfree", d=32)
    print(f"{space.name}: {space.count()} architectures, cells {space.cells}")
    arch = space.sample(random.Random(0))
    print("sampled:", arch, "id", space.arch_id(arch))

    supernet = compile_space(space, "mixed")
    frames = torch.randn(4, 25, 32)
    print("supernet codes:", supernet(frames).shape, "derived:", supernet.derive())

    derived = compile_space(space, "fixed", arch)
    derived.inherit(supernet.weight_state_dict())  # prune → finetune keeps W*
    print("derived codes:", derived.codes(frames)[0].tolist())
    print(space_to_dot(space, arch)[:200], "...")
