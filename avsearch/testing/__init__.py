"""Conformance suites for what users add to avsearch, shipped in the package (as
``optuna.testing``): a strategy, a space or an objective in another repository subclasses a
suite in its own tests and is checked as avsearch's own are. They need pytest.

* :class:`StrategyTests` (:mod:`avsearch.testing.strategies`): determinism, a complete
  architecture, the budget, resuming a killed run, a one-modality and a user's space.
* :class:`SpaceTests` (:mod:`avsearch.testing.spaces`): the declaration, codes of shape
  (batch, bits) in every mode, weights that move from a supernet to a derived network.
* :class:`ObjectiveTests` (:mod:`avsearch.testing.objectives`): options, batches, a finite
  loss that trains the network, model selection.

:mod:`avsearch.testing.helpers` has the tiny data sets they run on.
"""
from __future__ import annotations

from avsearch.testing.objectives import ObjectiveTests
from avsearch.testing.spaces import SpaceTests
from avsearch.testing.strategies import StrategyTests

__all__ = ["StrategyTests", "SpaceTests", "ObjectiveTests"]
