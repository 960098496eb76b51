"""``python -m avsearch``, the ``avsearch`` command (what ``torchrun -m avsearch run ...`` runs)."""
import sys

from avsearch.cli import console

sys.exit(console())
