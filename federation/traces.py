"""Convergence traces of the float64 optimization experiments (LoCoDL and its baselines).

A :class:`Trace` is what a benchmark plots and a test asserts on: at recorded iterations, the
cumulative uplink bits per client, F(x) − F*, ‖x − x*‖ and (for LoCoDL) the control-variate
invariant residual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from federation.learning_errors import AlgorithmError


@dataclass(frozen=True)
class Trace:
    """Recorded points of one run; all arrays have the same length (one entry per record).

    ``uplink_bits`` is cumulative per client; ``suboptimality`` and ``distance`` are NaN when no
    reference optimum was given; ``invariant`` is NaN for methods without one.
    """

    method: str
    iterations: np.ndarray
    communications: np.ndarray
    uplink_bits: np.ndarray
    suboptimality: np.ndarray
    distance: np.ndarray
    invariant: np.ndarray

    def bits_to_reach(self, threshold: float) -> float | None:
        """Uplink bits per client at the first record with F − F* <= ``threshold`` (None if never)."""
        reached = np.flatnonzero(self.suboptimality <= threshold)
        return float(self.uplink_bits[reached[0]]) if reached.size else None

    def iterations_to_reach(self, threshold: float) -> int | None:
        reached = np.flatnonzero(self.suboptimality <= threshold)
        return int(self.iterations[reached[0]]) if reached.size else None

    @property
    def final_suboptimality(self) -> float:
        return float(self.suboptimality[-1])

    def to_json(self) -> dict[str, Any]:
        def clean(values: np.ndarray) -> list[float | None]:
            return [None if not math.isfinite(v) else float(v) for v in values]

        return {
            "method": self.method,
            "iterations": [int(i) for i in self.iterations],
            "communications": [int(c) for c in self.communications],
            "uplink_bits": clean(self.uplink_bits),
            "suboptimality": clean(self.suboptimality),
            "distance": clean(self.distance),
            "invariant": clean(self.invariant),
        }


class TraceRecorder:
    """Accumulates records during a run and builds the :class:`Trace`."""

    def __init__(
        self,
        method: str,
        problem: Any,
        optimum: np.ndarray | None,
        optimal_value: float | None,
        record_every: int,
        stop_below: float | None = None,
    ) -> None:
        if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 1:
            raise AlgorithmError(f"record_every must be an int >= 1, got {record_every!r}")
        if stop_below is not None and optimal_value is None:
            raise AlgorithmError("stop_below needs optimal_value")
        self._method = method
        self._problem = problem
        self._optimum = None if optimum is None else np.asarray(optimum, dtype=np.float64)
        self._optimal_value = optimal_value
        self._record_every = record_every
        self._stop_below = stop_below
        self._rows: list[tuple[int, int, float, float, float, float]] = []
        self.stopped = False

    def due(self, iteration: int, *, force: bool = False) -> bool:
        return force or iteration % self._record_every == 0

    def record(
        self, iteration: int, bits: float, model: np.ndarray, *, invariant: float = math.nan,
        communications: int = 0,
    ) -> None:
        model = np.asarray(model, dtype=np.float64)
        if not np.all(np.isfinite(model)):
            raise AlgorithmError(f"{self._method} diverged at iteration {iteration} (non-finite iterate)")
        gap = math.nan
        if self._optimal_value is not None:
            gap = self._problem.objective(model) - self._optimal_value
        distance = math.nan if self._optimum is None else float(np.linalg.norm(model - self._optimum))
        self._rows.append((iteration, communications, float(bits), gap, distance, float(invariant)))
        if self._stop_below is not None and gap <= self._stop_below:
            self.stopped = True

    def finish(self) -> Trace:
        columns = list(zip(*self._rows))
        return Trace(
            method=self._method,
            iterations=np.array(columns[0], dtype=np.int64),
            communications=np.array(columns[1], dtype=np.int64),
            uplink_bits=np.array(columns[2], dtype=np.float64),
            suboptimality=np.array(columns[3], dtype=np.float64),
            distance=np.array(columns[4], dtype=np.float64),
            invariant=np.array(columns[5], dtype=np.float64),
        )
