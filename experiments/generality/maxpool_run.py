"""Diagnostic, not part of avsearch: ``avsearch run`` with the T cell's mean over time (the
av_nas space's ``MeanPool``, Eq. 33) replaced by a max over time, as the temporal CNN pools.

    python experiments/generality/maxpool_run.py run --space av_nas --arch transformer \\
        --no-baselines --data DIR/avdigits-v30.npz --seed 0 --out OUT --quiet
"""
import sys

import avsearch.ops.basic as basic
from avsearch.cli import main

basic.MeanPool.forward = lambda self, x: x.amax(dim=1)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
