"""Diagnostic, not part of avsearch: ``avsearch run`` with the training inputs augmented after
``Standardize`` (so in standardised units, for every network the run trains, the baselines
too; evaluation sees the inputs as they are), from the environment: ``AUG_NOISE=σ`` (Gaussian
noise), ``AUG_MASK=k`` (zero one random span of up to k steps per video), ``AUG_SHIFT=k``
(roll time by up to ±k steps per video), ``AUG_DROP=p`` (zero each step with probability p).
Not an augmentation but a change of the input normalisation, in training and evaluation
alike: ``PER_VIDEO=mean`` subtracts each video's mean over time from its standardised
frames (cepstral mean normalisation, per utterance, as speech front ends do against speaker
and channel), ``PER_VIDEO=meanstd`` also divides by the video's std over time.

    AUG_SHIFT=6 python experiments/generality/augment_run.py run --space av_nas --arch mamba \\
        --data avdigits --seed 0 --out OUT --quiet
"""
import os
import sys

import torch

import avsearch.supernet as supernet
from avsearch.cli import main

NOISE = float(os.environ.get("AUG_NOISE", 0))
MASK = int(os.environ.get("AUG_MASK", 0))
SHIFT = int(os.environ.get("AUG_SHIFT", 0))
DROP = float(os.environ.get("AUG_DROP", 0))
PER_VIDEO = os.environ.get("PER_VIDEO", "")
_standardize = supernet.Standardize.forward


def augmented(self, x):
    y = _standardize(self, x)
    if type(self) is not supernet.Standardize or y.dim() != 3 or y.shape[1] < 2:
        return y
    if PER_VIDEO:   # meanstd: what ``--set input_norm=video`` does, here to every network
        y = supernet.normalise_per_video(y, scale=PER_VIDEO == "meanstd")
    if not self.training:
        return y
    b, t, d = y.shape
    if NOISE:
        y = y + NOISE * torch.randn_like(y)
    if DROP:
        y = y * (torch.rand(b, t, 1) >= DROP).to(y.dtype)
    if MASK:
        length = torch.randint(0, MASK + 1, (b, 1))
        start = (torch.rand(b, 1) * (t - length + 1)).long()
        steps = torch.arange(t)[None]
        y = y * (~((steps >= start) & (steps < start + length)))[..., None].to(y.dtype)
    if SHIFT:
        shift = torch.randint(-SHIFT, SHIFT + 1, (b,))
        index = (torch.arange(t)[None] - shift[:, None]) % t
        y = torch.gather(y, 1, index[..., None].expand(b, t, d))
    return y


supernet.Standardize.forward = augmented

if __name__ == "__main__":
    print(f"augmentation: noise {NOISE}, mask {MASK}, shift {SHIFT}, drop {DROP}; "
          f"per-video normalisation: {PER_VIDEO or 'none'}", file=sys.stderr)
    sys.exit(main(sys.argv[1:]))
