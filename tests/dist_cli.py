"""``avsearch`` with the testing data sets registered (``avsearch-testing-av``, ...): what the
distributed tests start under ``torchrun``, as a script (``torchrun tests/dist_cli.py run ...``)."""
import sys

import avsearch.testing.helpers  # noqa: F401  (registers the tiny data sets)
from avsearch.cli import main

sys.exit(main())
