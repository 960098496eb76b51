"""Diagnostic, not part of avsearch: ``avsearch run`` with the T cell's SelfAttention pooled by
a learned CLS token (prepended before the positions, read after the final LayerNorm; one of
the two pools of the authors' code) instead of the mean. Only for presets whose T cell is
SelfAttention (it replaces ``MeanPool`` everywhere).

    python experiments/generality/cls_run.py run --space av_nas --arch transformer \\
        --no-baselines --data DIR/avdigits-v30.npz --seed 0 --out OUT --quiet
"""
import sys

import torch
from torch import nn

import avsearch.ops.attention as attention
import avsearch.ops.basic as basic
from avsearch.cli import main

_init = attention.TransformerStage.__init__


def _cls_init(self, width, config):
    _init(self, width, config)
    self.cls = nn.Parameter(0.02 * torch.randn(width))


def _cls_forward(self, x):
    x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1)
    return self.norm(self.block(self.pos(x)))


attention.TransformerStage.__init__ = _cls_init
attention.TransformerStage.forward = _cls_forward
basic.MeanPool.forward = lambda self, x: x[:, 0]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
