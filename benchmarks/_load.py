"""What a benchmark reports beside wall time on a shared machine: the CPU time its child
processes used and the machine's load average, so a reader can tell a slow setting from a
busy machine (``Meter``)."""
from __future__ import annotations

import os
import resource
import time
from typing import Any


class Meter:
    """``with Meter() as m: ...`` then ``m.record``: wall seconds, the CPU seconds (user +
    system) of the child processes that ended inside, and the 1-minute load average at the
    start and the end (against ``os.cpu_count()`` cores)."""

    def __enter__(self) -> "Meter":
        self._t0 = time.perf_counter()
        self._cpu0 = self._children()
        self._load0 = os.getloadavg()[0]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.record = {"wall_s": round(time.perf_counter() - self._t0, 2),
                       "cpu_s": round(self._children() - self._cpu0, 2),
                       "load_1min": [round(self._load0, 2), round(os.getloadavg()[0], 2)],
                       "cores": os.cpu_count()}

    @staticmethod
    def _children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
