"""Empirical privacy audits: lower bounds on epsilon that a correct mechanism must not exceed.

- Clopper-Pearson multi-trial audit of one release (Jagielski, Ullman, Oprea 2020; Nasr et al.
  2021): run the mechanism N times on x = +C e_1 and on x' = -C e_1, threshold the projection on
  e_1, bound the false-positive and false-negative rates from above with one-sided Clopper-Pearson
  intervals, and turn them into epsilon_lb = max(log((1 - delta - FNR_ub)/FPR_ub),
  log((1 - delta - FPR_ub)/FNR_ub)). With Bonferroni over a fixed threshold grid (or a threshold
  picked on a held-out half), epsilon_lb exceeds the true epsilon with probability <= 1 - confidence.
- One-run canary audit (Steinke, Nasr, Jagielski 2023): m canaries each included with
  probability 1/2; the auditor guesses IN for the top k+ scores and OUT for the bottom k-; with r
  guesses, v correct, the p-value of (epsilon, delta)-DP is beta + 2 m delta alpha (the delta
  term kept, unlike some public code).

docs/ALGORITHMS.md §3.7 lists the reference values these reproduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from privacy.errors import AuditError

METHODS = ("bonferroni", "holdout")


@dataclass(frozen=True)
class ClopperPearsonAudit:
    """Result of a multi-trial audit. ``flagged``: the lower bound exceeds the claimed epsilon."""

    epsilon_lower_bound: float
    claimed_epsilon: float
    threshold: float
    false_positive_upper: float
    false_negative_upper: float
    runs_per_side: int
    thresholds_tested: int
    confidence: float
    method: str

    @property
    def flagged(self) -> bool:
        return self.epsilon_lower_bound > self.claimed_epsilon


@dataclass(frozen=True)
class OneRunAudit:
    """Result of a one-run canary audit (m canaries, r guesses, v correct)."""

    epsilon_lower_bound: float
    canaries: int
    guesses: int
    correct: int
    delta: float
    significance: float


def clopper_pearson_upper(failures: np.ndarray | int, trials: int, significance: float) -> np.ndarray:
    """One-sided upper Clopper-Pearson bound on a binomial rate: P[rate > bound] <= significance."""
    k = np.asarray(failures, dtype=np.float64)
    if trials < 1 or np.any(k < 0) or np.any(k > trials):
        raise AuditError(f"need 0 <= failures <= trials and trials >= 1, got trials={trials}")
    if not 0 < significance < 1:
        raise AuditError(f"significance must be in (0, 1), got {significance}")
    return np.where(k < trials, stats.beta.ppf(1 - significance, k + 1, trials - k), 1.0)


def _epsilon_from_rates(fpr_upper: np.ndarray, fnr_upper: np.ndarray, delta: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.maximum(1 - delta - fnr_upper, 0.0)) - np.log(fpr_upper)
        second = np.log(np.maximum(1 - delta - fpr_upper, 0.0)) - np.log(fnr_upper)
    best = np.fmax(first, second)
    return np.where(np.isfinite(best), best, -np.inf)


def _counts(target: np.ndarray, neighbour: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False positives (neighbour > t) and false negatives (target <= t) per threshold t."""
    target_sorted = np.sort(target)
    neighbour_sorted = np.sort(neighbour)
    false_negative = np.searchsorted(target_sorted, thresholds, side="right")
    false_positive = neighbour_sorted.size - np.searchsorted(neighbour_sorted, thresholds, side="right")
    return false_positive, false_negative


def clopper_pearson_epsilon(
    target_scores: np.ndarray,
    neighbour_scores: np.ndarray,
    delta: float,
    claimed_epsilon: float,
    *,
    thresholds: np.ndarray | None = None,
    confidence: float = 0.95,
    method: str = "bonferroni",
) -> ClopperPearsonAudit:
    """epsilon lower bound from scores of runs on x (``target_scores``, expected higher) and x'.

    ``bonferroni``: the bound holds simultaneously over ``thresholds`` (a grid fixed before seeing
    the scores; required), each threshold using significance (1 - confidence)/(2 * len(grid)).
    ``holdout``: the best threshold of the first half of each side's runs (over ``thresholds``, or
    over all observed values if none are given) is evaluated once on the second half.
    """
    target = np.asarray(target_scores, dtype=np.float64).ravel()
    neighbour = np.asarray(neighbour_scores, dtype=np.float64).ravel()
    if target.size < 2 or target.size != neighbour.size:
        raise AuditError("need the same number (>= 2) of runs on each side")
    if not 0 < delta < 1 or not 0 < confidence < 1:
        raise AuditError(f"need delta and confidence in (0, 1), got {delta}, {confidence}")
    if method not in METHODS:
        raise AuditError(f"method must be one of {METHODS}, got {method!r}")
    significance = 1 - confidence
    if method == "bonferroni":
        if thresholds is None:
            raise AuditError("the Bonferroni audit needs a threshold grid fixed in advance")
        grid = np.unique(np.asarray(thresholds, dtype=np.float64))
        runs = target.size
        fp, fn = _counts(target, neighbour, grid)
        per_bound = significance / (2 * grid.size)
        fpr_upper = clopper_pearson_upper(fp, runs, per_bound)
        fnr_upper = clopper_pearson_upper(fn, runs, per_bound)
        epsilons = _epsilon_from_rates(fpr_upper, fnr_upper, delta)
        best = int(np.argmax(epsilons))
        return ClopperPearsonAudit(
            max(0.0, float(epsilons[best])), float(claimed_epsilon), float(grid[best]),
            float(fpr_upper[best]), float(fnr_upper[best]), runs, grid.size, confidence, method,
        )
    half = target.size // 2
    select_target, test_target = target[:half], target[half:]
    select_neighbour, test_neighbour = neighbour[:half], neighbour[half : half + test_target.size]
    grid = np.unique(np.concatenate((select_target, select_neighbour)) if thresholds is None else thresholds)
    fp, fn = _counts(select_target, select_neighbour, grid)
    with np.errstate(divide="ignore"):
        point = _epsilon_from_rates((fp + 1) / (half + 1), (fn + 1) / (half + 1), delta)
    chosen = float(grid[int(np.argmax(point))])
    fp, fn = _counts(test_target, test_neighbour, np.array([chosen]))
    runs = test_target.size
    fpr_upper = clopper_pearson_upper(fp, runs, significance / 2)
    fnr_upper = clopper_pearson_upper(fn, runs, significance / 2)
    epsilon = float(_epsilon_from_rates(fpr_upper, fnr_upper, delta)[0])
    return ClopperPearsonAudit(
        max(0.0, epsilon), float(claimed_epsilon), chosen, float(fpr_upper[0]), float(fnr_upper[0]),
        runs, 1, confidence, method,
    )


def audit_release(
    release: Callable[[np.ndarray], np.ndarray],
    clip: int,
    dimension: int,
    runs: int,
    delta: float,
    claimed_epsilon: float,
    noise_std: float,
    *,
    confidence: float = 0.95,
    method: str = "bonferroni",
    grid_size: int = 64,
) -> ClopperPearsonAudit:
    """Audit a release function on integer vectors: ``runs`` releases of x = +clip e_1 and of
    x' = -clip e_1 (``(dimension,) int64``), scored by their first coordinate.

    ``release`` takes ``(k * dimension,) int64`` (k stacked inputs; the mechanisms add i.i.d.
    noise per coordinate, so one call releases k inputs) and returns the noised coordinates.
    The Bonferroni grid spans [-clip, clip + 6 noise_std] (fixed before any run).
    """
    if isinstance(clip, bool) or not isinstance(clip, int) or clip < 1:
        raise AuditError(f"clip must be a positive int (integer units), got {clip!r}")
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise AuditError(f"dimension must be a positive int, got {dimension!r}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 2:
        raise AuditError(f"runs must be an int >= 2, got {runs!r}")
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise AuditError(f"noise_std must be finite and >= 0, got {noise_std}")
    scores = []
    for sign in (1, -1):
        stacked = np.zeros((runs, dimension), dtype=np.int64)
        stacked[:, 0] = sign * clip
        noised = np.asarray(release(stacked.ravel()))
        if noised.shape != (runs * dimension,):
            raise AuditError(f"release returned shape {noised.shape}, expected {(runs * dimension,)}")
        scores.append(noised.reshape(runs, dimension)[:, 0])
    grid = np.unique(np.round(np.linspace(-clip, clip + 6 * noise_std, grid_size)))
    return clopper_pearson_epsilon(
        scores[0], scores[1], delta, claimed_epsilon, thresholds=grid, confidence=confidence, method=method
    )


# --- one-run audit ---------------------------------------------------------------------------------


def one_run_p_value(canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """p-value of observing >= ``correct`` right guesses out of ``guesses`` under (epsilon, delta)-DP
    (Steinke, Nasr, Jagielski 2023, Thm 3.1): with B ~ Bin(r, e^eps/(1 + e^eps)),
    beta = P[B >= v], alpha = max_{1<=i<=v} (P[B >= v - i] - beta)/i, p = beta + 2 m delta alpha."""
    _check_counts(canaries, guesses, correct)
    if not (epsilon >= 0 and math.isfinite(epsilon)) or not 0 <= delta < 1:
        raise AuditError(f"need epsilon >= 0 and delta in [0, 1), got {epsilon}, {delta}")
    q = float(special.expit(epsilon))
    beta = float(stats.binom.sf(correct - 1, guesses, q))
    if delta == 0 or correct == 0:
        return min(beta, 1.0)
    i = np.arange(1, correct + 1)
    alpha = float(np.max((stats.binom.sf(correct - i - 1, guesses, q) - beta) / i))
    return min(beta + 2 * canaries * delta * alpha, 1.0)


def _check_counts(canaries: int, guesses: int, correct: int) -> None:
    for name, value in (("canaries", canaries), ("guesses", guesses), ("correct", correct)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise AuditError(f"{name} must be a non-negative int, got {value!r}")
    if not correct <= guesses <= canaries or canaries < 1:
        raise AuditError(f"need 0 <= correct <= guesses <= canaries, got {correct}, {guesses}, {canaries}")


def one_run_epsilon_lower_bound(
    canaries: int, guesses: int, correct: int, delta: float, significance: float = 0.05
) -> float:
    """Largest epsilon that (canaries, guesses, correct) rejects at ``significance`` (0 if none)."""
    _check_counts(canaries, guesses, correct)
    if not 0 < significance < 1:
        raise AuditError(f"significance must be in (0, 1), got {significance}")

    def excess(epsilon: float) -> float:
        return significance - one_run_p_value(canaries, guesses, correct, epsilon, delta)

    if guesses == 0 or excess(0.0) <= 0:
        return 0.0
    high = 1.0
    while excess(high) > 0:
        high *= 2
        if high > 1e4:
            raise AuditError("epsilon lower bound diverges")
    return float(optimize.brentq(excess, high / 2 if excess(high / 2) > 0 else 0.0, high, xtol=1e-9))


def canary_audit(
    scores: np.ndarray,
    included: np.ndarray,
    guesses_in: int,
    guesses_out: int,
    delta: float,
    significance: float = 0.05,
) -> OneRunAudit:
    """One-run audit from canary scores (higher = more likely IN) and their true inclusion bits:
    guess IN for the top ``guesses_in`` scores, OUT for the bottom ``guesses_out``."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    included = np.asarray(included).ravel()
    if scores.size != included.size or scores.size == 0:
        raise AuditError("scores and included must be non-empty and of equal length")
    if included.dtype != bool:
        raise AuditError("included must be a boolean array")
    if guesses_in < 0 or guesses_out < 0 or guesses_in + guesses_out > scores.size:
        raise AuditError("need guesses_in, guesses_out >= 0 with guesses_in + guesses_out <= canaries")
    order = np.argsort(scores, kind="stable")
    correct = int(included[order[scores.size - guesses_in :]].sum()) if guesses_in else 0
    correct += int((~included[order[:guesses_out]]).sum())
    guesses = guesses_in + guesses_out
    epsilon = one_run_epsilon_lower_bound(scores.size, guesses, correct, delta, significance)
    return OneRunAudit(epsilon, scores.size, guesses, correct, float(delta), float(significance))


def canary_audit_over_guesses(
    scores: np.ndarray,
    included: np.ndarray,
    guess_counts: tuple[int, ...],
    delta: float,
    significance: float = 0.05,
) -> OneRunAudit:
    """The best of several one-run audits, each guessing IN for its top ``k`` and OUT for its
    bottom ``k`` scores (``k`` in ``guess_counts``, fixed before seeing the scores).

    Each audit runs at ``significance / len(guess_counts)`` (Bonferroni), so the returned lower
    bound, the largest of them, is wrong with probability at most ``significance`` overall; the
    result records that overall significance.
    """
    counts = tuple(int(k) for k in guess_counts)
    if not counts or any(k < 1 for k in counts):
        raise AuditError(f"guess_counts must be non-empty positive ints, got {guess_counts!r}")
    if not 0 < significance < 1:
        raise AuditError(f"significance must be in (0, 1), got {significance}")
    each = significance / len(counts)
    audits = [canary_audit(scores, included, k, k, delta, each) for k in counts]
    best = max(audits, key=lambda audit: audit.epsilon_lower_bound)
    return OneRunAudit(best.epsilon_lower_bound, best.canaries, best.guesses, best.correct, best.delta,
                       float(significance))
