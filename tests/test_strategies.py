"""The strategy contract: every registered strategy passes avsearch.testing's conformance
suite by registering (the suite's docstring says what it checks); a user's strategy in
another repository subclasses the same suite."""
from __future__ import annotations

import pytest

from avsearch.strategies import list_strategies
from avsearch.testing import StrategyTests


class TestRegisteredStrategies(StrategyTests):
    @pytest.fixture(scope="class", params=sorted(list_strategies()))
    @classmethod
    def strategy(cls, request) -> str:
        return request.param
