"""Rényi-DP curves of the mechanisms fedvault uses, as pure functions of their parameters.

Each function returns ``(len(orders),) float64`` RDP epsilons, one per order alpha > 1, for ONE
release. The discrete mechanisms' bounds hold at integer orders; at a fractional order alpha they
are evaluated at ceil(alpha), which is sound because Rényi divergence is non-decreasing in alpha.
"""

from __future__ import annotations

import math

import numpy as np
from opacus.accountants.analysis import rdp as opacus_rdp
from scipy import special

from privacy.errors import AccountingError


def _orders(orders) -> np.ndarray:
    values = np.asarray(orders, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 1):
        raise AccountingError("orders must be a non-empty 1-D array of finite numbers > 1")
    return values


def _integer_orders(orders: np.ndarray) -> np.ndarray:
    return np.ceil(orders - 1e-12)


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise AccountingError(f"{name} must be finite and > 0, got {value}")
    return value


def gaussian_rdp(noise_multiplier: float, orders) -> np.ndarray:
    """Gaussian mechanism, sensitivity 1: alpha / (2 sigma^2) (Mironov 2017)."""
    sigma = _positive(noise_multiplier, "noise_multiplier")
    return _orders(orders) / (2.0 * sigma * sigma)


def discrete_gaussian_rdp(sigma: float, l2_sensitivity: float, orders) -> np.ndarray:
    """Discrete Gaussian on integer vectors: alpha Delta_2^2 / (2 sigma^2).

    Canonne, Kamath, Steinke 2020: N_Z(0, sigma^2) per coordinate is (Delta_2^2 / (2 sigma^2))-zCDP
    for integer queries of L2 sensitivity Delta_2, the same curve as the continuous Gaussian.
    """
    sigma = _positive(sigma, "sigma")
    sensitivity = _positive(l2_sensitivity, "l2_sensitivity")
    return _orders(orders) * sensitivity * sensitivity / (2.0 * sigma * sigma)


def skellam_rdp(mu: float, l2_sensitivity: float, l1_sensitivity: float, orders) -> np.ndarray:
    """Skellam mechanism Sk(mu) per coordinate, integer alpha (Agarwal, Kairouz, Liu 2021, Thm 3.5):

    eps(alpha) <= alpha D2^2 / (2 mu) + min(((2 alpha - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu)).
    """
    mu = _positive(mu, "mu")
    d2 = _positive(l2_sensitivity, "l2_sensitivity")
    d1 = _positive(l1_sensitivity, "l1_sensitivity")
    alpha = _integer_orders(_orders(orders))
    surcharge = np.minimum(((2 * alpha - 1) * d2 * d2 + 6 * d1) / (4 * mu * mu), 3 * d1 / (2 * mu))
    return alpha * d2 * d2 / (2 * mu) + surcharge


def ddgauss_tau(local_sigma: float, clients: int) -> float:
    """tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma_l^2 k / (k+1)) in integer units (gamma = 1)."""
    sigma = _positive(local_sigma, "local_sigma")
    k = np.arange(1, int(clients), dtype=np.float64)
    return float(10.0 * np.exp(-2.0 * math.pi**2 * sigma * sigma * k / (k + 1)).sum())


def ddgauss_rdp(
    local_sigma: float, clients: int, l2_sensitivity: float, l1_sensitivity: float, dimension: int, orders
) -> np.ndarray:
    """Distributed discrete Gaussian: n clients each add N_Z(0, sigma_l^2) to d coordinates.

    Kairouz, Liu, Steinke 2021 (Thm 1, as in google-research/federated distributed_dp): with
    l2 = D2 / (sqrt(n) sigma_l), l1 = D1 / (sqrt(n) sigma_l) and tau as in :func:`ddgauss_tau`,
    eps(alpha) = min(alpha l2^2 / 2 + tau d, alpha (l2^2 + 2 l1 tau + tau^2 d) / 2,
    alpha (l2 + sqrt(d) tau)^2 / 2), integer alpha.
    """
    if isinstance(clients, bool) or int(clients) != clients or clients < 1:
        raise AccountingError(f"clients must be a positive int, got {clients}")
    if isinstance(dimension, bool) or int(dimension) != dimension or dimension < 1:
        raise AccountingError(f"dimension must be a positive int, got {dimension}")
    sigma = _positive(local_sigma, "local_sigma")
    scale = math.sqrt(clients) * sigma
    l2 = _positive(l2_sensitivity, "l2_sensitivity") / scale
    l1 = _positive(l1_sensitivity, "l1_sensitivity") / scale
    tau = ddgauss_tau(sigma, int(clients))
    d = float(dimension)
    alpha = _integer_orders(_orders(orders))
    term_1 = alpha * l2 * l2 / 2 + tau * d
    term_2 = alpha * (l2 * l2 + 2 * l1 * tau + tau * tau * d) / 2
    term_3 = alpha * (l2 + math.sqrt(d) * tau) ** 2 / 2
    return np.minimum(np.minimum(term_1, term_2), term_3)


def poisson_subsampled_gaussian_rdp(sampling_rate: float, noise_multiplier: float, orders) -> np.ndarray:
    """Poisson-subsampled Gaussian (Mironov, Talwar, Zhang 2019), via Opacus' analysis."""
    q = float(sampling_rate)
    if not 0 < q <= 1:
        raise AccountingError(f"sampling_rate must be in (0, 1], got {q}")
    sigma = _positive(noise_multiplier, "noise_multiplier")
    values = _orders(orders)
    return np.asarray(
        opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=[float(a) for a in values]),
        dtype=np.float64,
    )


def poisson_subsampled_rdp(sampling_rate: float, base_rdp_at, orders) -> np.ndarray:
    """Upper bound on the RDP of any mechanism under Poisson subsampling (Zhu & Wang 2019, Thm 6).

    ``base_rdp_at(j)`` gives the base mechanism's RDP at integer order j >= 2. For integer alpha:
    (alpha - 1) eps'(alpha) <= log((1-q)^(alpha-1) (alpha q - q + 1) + C(alpha,2) q^2 (1-q)^(alpha-2)
    e^eps(2) + 3 sum_{l=3}^alpha C(alpha,l) q^l (1-q)^(alpha-l) e^((l-1) eps(l))), and never more
    than the base mechanism's own eps(alpha).
    """
    q = float(sampling_rate)
    if not 0 < q <= 1:
        raise AccountingError(f"sampling_rate must be in (0, 1], got {q}")
    values = _orders(orders)
    alphas = _integer_orders(values).astype(np.int64)
    top = int(alphas.max())
    base = np.array([np.nan, np.nan] + [float(base_rdp_at(j)) for j in range(2, top + 1)])
    if q == 1.0:
        return base[alphas]
    log_q, log_1q = math.log(q), math.log1p(-q)
    bound = {}
    for alpha in sorted(set(int(a) for a in alphas)):
        l = np.arange(3, alpha + 1, dtype=np.float64)
        log_comb = special.gammaln(alpha + 1) - special.gammaln(l + 1) - special.gammaln(alpha - l + 1)
        log_terms = np.concatenate((
            [(alpha - 1) * log_1q + math.log(alpha * q - q + 1),
             math.log(special.comb(alpha, 2)) + 2 * log_q + (alpha - 2) * log_1q + base[2]],
            log_comb + l * log_q + (alpha - l) * log_1q + (l - 1) * base[3 : alpha + 1],
        ))
        weights = np.concatenate(([1.0, 1.0], np.full(l.size, 3.0)))
        subsampled = float(special.logsumexp(log_terms, b=weights)) / (alpha - 1)
        bound[alpha] = min(subsampled, base[alpha])
    return np.array([bound[int(a)] for a in alphas], dtype=np.float64)
