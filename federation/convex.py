"""L2-regularized multinomial logistic regression split across clients, in float64 numpy.

The strongly convex objective of the LoCoDL experiments (docs/ALGORITHMS.md §5.1):

    F(x) = (1/n) Σ_i f_i(x) + g(x),
    f_i(x) = (1/m_i) Σ_j CE(softmax(W a_j + b), y_j) + (λ(1 − s)/2)‖x‖²,   g(x) = (λs/2)‖x‖²,

with x = [W (C, F) row-major, b (C,)], the layout of ``torch.nn.Linear`` flattened by
:mod:`federation.parameters`, and s = ``shared_fraction`` the part of the L2 weight λ given to the
server's g. Every f_i is μ = λ(1 − s) strongly convex and g is λs strongly convex, so F is
λ-strongly convex with minimizer x*. :meth:`SoftmaxRegression.solve` finds x* by Newton-CG to a
gradient norm of 1e-12, the reference the convergence tests measure against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from federation.datasets import ClientData
from federation.learning_errors import AlgorithmError


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def _log_sum_exp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1)
    return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))


@dataclass(frozen=True, eq=False)
class SoftmaxRegression:
    """The federated objective above over ``clients`` (features (m_i, F), labels (m_i,)).

    ``l2`` is λ > 0; ``shared_fraction`` s ∈ [0, 1) puts λs into g (s = 0 makes g = 0).
    Dimension d = C·(F + 1).
    """

    clients: tuple[ClientData, ...]
    num_classes: int
    l2: float
    shared_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not self.clients:
            raise AlgorithmError("the objective needs at least one client")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise AlgorithmError(f"num_classes must be an int >= 2, got {self.num_classes!r}")
        if not (math.isfinite(self.l2) and self.l2 > 0):
            raise AlgorithmError(f"l2 must be a finite number > 0 (strong convexity), got {self.l2!r}")
        if not (0.0 <= self.shared_fraction < 1.0):
            raise AlgorithmError(f"shared_fraction must be in [0, 1), got {self.shared_fraction!r}")
        widths = {c.features.shape[1] for c in self.clients}
        if len(widths) != 1:
            raise AlgorithmError(f"clients disagree on the feature width: {sorted(widths)}")
        for c in self.clients:
            if c.num_samples == 0:
                raise AlgorithmError(f"client {c.client_id} has no samples")
            if c.labels.max() >= self.num_classes:
                raise AlgorithmError(f"client {c.client_id} has a label >= num_classes")

    # --- sizes and constants -------------------------------------------------------------------
    @property
    def num_clients(self) -> int:
        return len(self.clients)

    @property
    def num_features(self) -> int:
        return int(self.clients[0].features.shape[1])

    @property
    def dimension(self) -> int:
        """d = C·(F + 1): weights then biases."""
        return self.num_classes * (self.num_features + 1)

    @property
    def client_l2(self) -> float:
        """μ of each f_i: λ(1 − s)."""
        return self.l2 * (1.0 - self.shared_fraction)

    @property
    def shared_l2(self) -> float:
        """Strong convexity and smoothness of g: λs."""
        return self.l2 * self.shared_fraction

    @cached_property
    def _augmented(self) -> tuple[np.ndarray, ...]:
        # Features with a trailing 1 so the bias is one more weight column: (m_i, F + 1) float64.
        return tuple(np.hstack([c.features.astype(np.float64), np.ones((c.num_samples, 1))]) for c in self.clients)

    @cached_property
    def _one_hot(self) -> tuple[np.ndarray, ...]:
        return tuple(np.eye(self.num_classes)[c.labels] for c in self.clients)

    @cached_property
    def _stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # All clients' rows in one matrix with per-row weight 1/(n·m_i), so F, ∇F and the
        # Hessian-vector product at ONE point are single matrix products.
        weights = np.concatenate([np.full(a.shape[0], 1.0 / (self.num_clients * a.shape[0])) for a in self._augmented])
        return np.vstack(self._augmented), np.vstack(self._one_hot), weights

    @cached_property
    def client_smoothness(self) -> np.ndarray:
        """(n,) L_i: smoothness constants of the f_i.

        The cross-entropy Hessian per example is (diag p − pp^T) ⊗ ãã^T with ‖diag p − pp^T‖ ≤ 1/2
        (Böhning's bound), so L_i ≤ λ_max(Ã_i^T Ã_i / m_i)/2 + μ.
        """
        return np.array(
            [np.linalg.eigvalsh(a.T @ a / a.shape[0])[-1] / 2.0 + self.client_l2 for a in self._augmented]
        )

    @property
    def smoothness(self) -> float:
        """L = max(max_i L_i, λs): the common smoothness constant of every f_i and g."""
        return float(max(self.client_smoothness.max(), self.shared_l2))

    @property
    def strong_convexity(self) -> float:
        """μ common to every f_i and (when s > 0) g."""
        return self.client_l2 if self.shared_fraction == 0 else min(self.client_l2, self.shared_l2)

    # --- layout --------------------------------------------------------------------------------
    def _split(self, x: np.ndarray) -> np.ndarray:
        """(d,) → (C, F + 1): row c is [W_c, b_c]."""
        classes, width = self.num_classes, self.num_features
        weights = x[: classes * width].reshape(classes, width)
        return np.hstack([weights, x[classes * width :].reshape(classes, 1)])

    def _join(self, matrix: np.ndarray) -> np.ndarray:
        return np.concatenate([matrix[:, :-1].reshape(-1), matrix[:, -1]])

    def _check_points(self, points: np.ndarray, count: int) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        if points.shape != (count, self.dimension):
            raise AlgorithmError(f"points must have shape ({count}, {self.dimension}), got {points.shape}")
        return points

    # --- oracles -------------------------------------------------------------------------------
    def _loss_gradient(self, i: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        a, y = self._augmented[i], self._one_hot[i]
        logits = a @ self._split(x).T
        loss = float(np.mean(_log_sum_exp(logits) - (logits * y).sum(axis=1)))
        grad = (_softmax(logits) - y).T @ a / a.shape[0]
        return loss, self._join(grad)

    def client_gradients(self, points: np.ndarray) -> np.ndarray:
        """(n, d) → (n, d): row i is ∇f_i(points[i])."""
        points = self._check_points(points, self.num_clients)
        out = np.empty_like(points)
        for i in range(self.num_clients):
            out[i] = self._loss_gradient(i, points[i])[1]
        out += self.client_l2 * points
        return out

    def client_gradient(self, i: int, x: np.ndarray) -> np.ndarray:
        """∇f_i(x) for one client i, (d,) → (d,)."""
        x = self._check_points(np.asarray(x)[None, :], 1)[0]
        return self._loss_gradient(i, x)[1] + self.client_l2 * x

    def shared_gradient(self, y: np.ndarray) -> np.ndarray:
        """∇g(y) = λs·y, (d,) → (d,)."""
        return self.shared_l2 * np.asarray(y, dtype=np.float64)

    def objective(self, x: np.ndarray) -> float:
        """F(x) = (1/n)Σ f_i(x) + g(x)."""
        x = self._check_points(np.asarray(x)[None, :], 1)[0]
        a, y, w = self._stacked
        logits = a @ self._split(x).T
        data = float(w @ (_log_sum_exp(logits) - (logits * y).sum(axis=1)))
        return data + 0.5 * self.l2 * float(x @ x)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """∇F(x), (d,) → (d,)."""
        x = self._check_points(np.asarray(x)[None, :], 1)[0]
        a, y, w = self._stacked
        residual = (_softmax(a @ self._split(x).T) - y) * w[:, None]
        return self._join(residual.T @ a) + self.l2 * x

    def _hessian_vector(self, x: np.ndarray, direction: np.ndarray) -> np.ndarray:
        a, _, w = self._stacked
        p = _softmax(a @ self._split(x).T)
        av = a @ self._split(direction).T
        weighted = (p * av - p * (p * av).sum(axis=1, keepdims=True)) * w[:, None]
        return self._join(weighted.T @ a) + self.l2 * direction

    def solve(self, tolerance: float = 1e-12, max_iterations: int = 100) -> np.ndarray:
        """x* by Newton-CG with backtracking, until ‖∇F(x)‖ <= ``tolerance``. Returns (d,) float64.

        F is λ-strongly convex and smooth, so Newton converges superlinearly once close; CG
        solves each Newton system to a relative residual of min(0.5, √‖∇F‖) (Eisenstat–Walker
        forcing), which never asks CG for more than float64 can give.
        Raises AlgorithmError if float64 cannot reach the tolerance.
        """
        x = np.zeros(self.dimension)
        for _ in range(max_iterations):
            grad = self.gradient(x)
            norm = float(np.linalg.norm(grad))
            if norm <= tolerance:
                return x
            step = self._conjugate_gradient(x, -grad, min(0.5, math.sqrt(norm)) * norm)
            # Near x* objective differences fall below float64 resolution and an Armijo test on F
            # cannot see progress, so a full step that shrinks the gradient is taken as is.
            if np.linalg.norm(self.gradient(x + step)) < norm:
                x = x + step
                continue
            value, slope, t = self.objective(x), float(grad @ step), 1.0
            while t > 1e-10 and self.objective(x + t * step) > value + 1e-4 * t * slope:
                t *= 0.5
            x = x + t * step
        raise AlgorithmError(
            f"Newton-CG did not reach gradient norm {tolerance:g} in {max_iterations} iterations "
            f"(last {norm:.3g})"
        )

    def _conjugate_gradient(self, x: np.ndarray, rhs: np.ndarray, tolerance: float) -> np.ndarray:
        solution = np.zeros_like(rhs)
        residual = rhs.copy()
        direction = residual.copy()
        squared = float(residual @ residual)
        for _ in range(2 * self.dimension):
            if math.sqrt(squared) <= tolerance:
                break
            curvature = self._hessian_vector(x, direction)
            alpha = squared / float(direction @ curvature)
            solution += alpha * direction
            residual -= alpha * curvature
            new_squared = float(residual @ residual)
            direction = residual + (new_squared / squared) * direction
            squared = new_squared
        return solution


def softmax_regression(
    clients: Sequence[ClientData], num_classes: int, *, l2: float, shared_fraction: float = 0.5
) -> SoftmaxRegression:
    """Build the objective from client data (e.g. ``make_fedprox_synthetic(...).clients``)."""
    return SoftmaxRegression(tuple(clients), num_classes, float(l2), float(shared_fraction))
