"""Diagnostic, not part of avsearch (which now has ``--recipe-set`` for this): ``avsearch run``
under the default recipe with some of its fields replaced, from the environment: ``LR``
(peak learning rate), ``WARMUP`` (share of the steps), ``WD`` (weight decay), ``CLIP``
(global gradient norm; 0: no clipping).

    CLIP=0 python experiments/generality/recipe_run.py run --space av_nas --arch transformer \\
        --no-baselines --data DIR/avdigits-v30.npz --seed 0 --out OUT --quiet
"""
import dataclasses
import os
import sys

import avsearch.recipe as recipe
from avsearch.cli import main

FIELDS = {"LR": "lr", "WARMUP": "warmup", "WD": "weight_decay", "CLIP": "clip"}
changes = {field: float(os.environ[env]) for env, field in FIELDS.items() if env in os.environ}
recipe.RECIPES["default"] = dataclasses.replace(recipe.RECIPES["default"], **changes)

if __name__ == "__main__":
    print(f"recipe: {recipe.RECIPES['default']}", file=sys.stderr)
    sys.exit(main(sys.argv[1:]))
