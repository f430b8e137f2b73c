"""Maximum-likelihood fits of BG/NBD, MBG/NBD and Gamma-Gamma: the papers' likelihoods in NumPy, SciPy's L-BFGS-B.

Why not pymc-marketing's ``model.fit(method="map")`` (the library path, used
until 2026-11-23 and still the tests' reference): measured on 2 cores, its
cost is PyTensor's, not the optimisation's. Importing ``pymc_marketing.clv``
takes 3.7-4.1 CPU-s; every MAP fit builds a PyMC model with the data as
constants and compiles five functions (initial point, logp, dlogp, the
unobserved variables, the trace), 0.5-1 CPU-s of graph rewrites each, plus C
compilation on a cold PyTensor cache: 98 s wall for the first BG/NBD fit, 43 s
for MBG/NBD and 33 s for Gamma-Gamma (load average 2). ``fit_clv`` at 5,000
persons took 114 s wall, 14.7 CPU-s + 6.4 CPU-s of compiler, for four fits whose
optimisation itself took 0.5 s; the target is 4 s. PyTensor's Python linker
(``FAST_COMPILE``) skips the compiler but evaluates some element-wise ops in
Python scalar loops (2 s for one 2,357-row fit), and the import stays.

So the same likelihoods (``pymc_marketing.clv.distributions.BetaGeoNBD`` /
``ModifiedBetaGeoNBD`` ``logp``, ``GammaGammaModel``'s potential; Fader, Hardie
& Lee 2005 eq. 6; Batislam et al. 2007; Fader & Hardie 2013 eq. 1a) are written
here with their analytic gradients and maximised by SciPy's L-BFGS-B (the
optimiser ``pymc.find_MAP`` runs) over the log parameters from the same start
(every parameter 1, as ``HalfFlat``'s initial point), with flat priors, so the
estimates are the maximum-likelihood ones. Customers with identical
statistics are fitted once, weighted by their count (one-time buyers differ
only in ``T``). ``tests/clv`` checks the estimates against pymc-marketing's MAP,
lifetimes and the published CDNOW values, and the gradients against finite
differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from include.clv.errors import BoundaryFitError, ClvFitError

#: Log-parameter bounds: a parameter beyond exp(+-30) means the likelihood has no interior maximum.
_LOG_BOUND = 30.0
#: The boundary probe: each parameter moved this factor towards 0 and towards infinity, the others kept.
BOUNDARY_PROBE_FACTOR = 1000.0
#: Half the 95% chi-square(1) quantile: a log-likelihood within this of the maximum is inside the 95%
#: likelihood-ratio interval, so the data cannot tell the probed value from the estimate.
LIKELIHOOD_INTERVAL = 1.92


@dataclass(frozen=True)
class FitResult:
    """Estimates of one maximum-likelihood fit and how the optimiser got there."""

    params: dict[str, float]
    log_likelihood: float
    iterations: int
    evaluations: int


def compress(columns: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of ``columns`` and their counts: the likelihood of n identical customers is n times one."""
    stacked = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return [unique[:, i] for i in range(unique.shape[1])], counts.astype(float)


def bgnbd_loglik(params: np.ndarray, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer BG/NBD log-likelihood and its gradient in (r, alpha, a, b).

    ``D1 + r log(alpha) - (r + x) log(alpha + T) + [x > 0] log(1 + exp(L4))`` with
    ``L4 = log(a) - log(b + x - 1) + (r + x)(log(alpha + T) - log(alpha + t_x))``:
    pymc-marketing's ``BetaGeoNBD.logp`` rearranged so that ``exp`` cannot overflow.
    """
    r, alpha, a, b = params
    repeat = x > 0
    log_aT, log_at = np.log(alpha + T), np.log(alpha + tx)
    with np.errstate(divide="ignore", invalid="ignore"):
        l4 = np.where(repeat, np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) + (r + x) * (log_aT - log_at),
                      -np.inf)
    ll = (special.gammaln(r + x) - special.gammaln(r) + special.gammaln(a + b) + special.gammaln(b + x)
          - special.gammaln(b) - special.gammaln(a + b + x) + r * np.log(alpha) - (r + x) * log_aT
          + np.logaddexp(0.0, l4))
    s = special.expit(l4)  # 0 for one-time buyers
    psi_ab, psi_abx = special.digamma(a + b), special.digamma(a + b + x)
    grad = np.stack([
        special.digamma(r + x) - special.digamma(r) + np.log(alpha) - log_aT + s * (log_aT - log_at),
        r / alpha - (r + x) / (alpha + T) + s * (r + x) * (1 / (alpha + T) - 1 / (alpha + tx)),
        psi_ab - psi_abx + s / a,
        psi_ab + special.digamma(b + x) - special.digamma(b) - psi_abx - s / np.where(repeat, b + x - 1, 1.0),
    ])
    return ll, grad


def mbgnbd_loglik(params: np.ndarray, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer MBG/NBD log-likelihood and its gradient in (r, alpha, a, b).

    pymc-marketing's ``ModifiedBetaGeoNBD.logp``: ``a1 + a2 + a3 + log(1 + exp(a4))``
    with ``a4 = log(a) - log(b + x) + (r + x)(log(alpha + T) - log(alpha + t_x))``.
    """
    r, alpha, a, b = params
    log_aT, log_at = np.log(alpha + T), np.log(alpha + tx)
    l4 = np.log(a) - np.log(b + x) + (r + x) * (log_aT - log_at)
    ll = (special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha) + special.gammaln(a + b)
          + special.gammaln(b + x + 1) - special.gammaln(b) - special.gammaln(a + b + x + 1) - (r + x) * log_aT
          + np.logaddexp(0.0, l4))
    s = special.expit(l4)
    psi_ab, psi_abx = special.digamma(a + b), special.digamma(a + b + x + 1)
    grad = np.stack([
        special.digamma(r + x) - special.digamma(r) + np.log(alpha) - log_aT + s * (log_aT - log_at),
        r / alpha - (r + x) / (alpha + T) + s * (r + x) * (1 / (alpha + T) - 1 / (alpha + tx)),
        psi_ab - psi_abx + s / a,
        psi_ab + special.digamma(b + x + 1) - special.digamma(b) - psi_abx - s / (b + x),
    ])
    return ll, grad


def gamma_gamma_loglik(params: np.ndarray, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer Gamma-Gamma log-likelihood of the mean spend ``z`` of ``x`` purchases, and its gradient in (p, q, v).

    The potential of pymc-marketing's ``GammaGammaModel`` (Fader & Hardie 2013, eq. 1a).
    """
    p, q, v = params
    px = p * x
    log_xzv = np.log(x * z + v)
    ll = (special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q) + q * np.log(v)
          + (px - 1) * np.log(z) + px * np.log(x) - (px + q) * log_xzv)
    psi_pxq = special.digamma(px + q)
    grad = np.stack([
        x * (psi_pxq - special.digamma(px) + np.log(z) + np.log(x) - log_xzv),
        psi_pxq - special.digamma(q) + np.log(v) - log_xzv,
        q / v - (px + q) / (x * z + v),
    ])
    return ll, grad


def maximise(loglik: Callable[..., tuple[np.ndarray, np.ndarray]], names: tuple[str, ...], data: list[np.ndarray],
             weights: np.ndarray, label: str) -> FitResult:
    """Maximise ``sum(weights * loglik(params, *data))`` over positive parameters (flat priors).

    Optimises the log parameters with L-BFGS-B from all parameters = 1 and
    scales the objective by the total weight (the mean log-likelihood), so the
    tolerances do not depend on the number of customers.

    A maximum is accepted only if it is interior. L-BFGS-B stops on a flat
    likelihood as readily as on a peak: on one year of a shop where nobody who
    bought twice has stopped yet, BG/NBD's likelihood keeps rising as the
    dropout parameter ``a`` goes to 0, and the optimiser stops at ``a`` = 1e-5
    with a small gradient (measured on ``tests/clv/simulate.py``'s
    ``wholesale_invoice_shop``; P(alive) is then 1 for every customer). So
    each parameter is probed :data:`BOUNDARY_PROBE_FACTOR` times smaller and
    larger, the others kept: a probe whose log-likelihood is within
    :data:`LIKELIHOOD_INTERVAL` of the maximum lies inside the 95%
    likelihood-ratio interval of that parameter (the profile likelihood is at
    least as high as the probe's), so the interval reaches three orders of
    magnitude beyond the estimate towards 0 or infinity: the data cannot
    place the parameter, and the fit is at a boundary.

    Raises
    ------
    BoundaryFitError
        When a parameter runs to the bounds (exp(+-30)) or below 1e-6, or a
        boundary probe finds the likelihood as high (no interior maximum).
    ClvFitError
        When the optimiser stops without converging.
    """
    total = float(weights.sum())

    def mean_loglik(theta: np.ndarray) -> tuple[float, np.ndarray]:
        params = np.exp(theta)
        ll, grad = loglik(params, *data)
        value = -float(weights @ ll) / total
        gradient = -(grad @ weights) / total * params  # chain rule for params = exp(theta)
        if not np.isfinite(value) or not np.isfinite(gradient).all():
            return np.inf, np.zeros_like(theta)
        return value, gradient

    result = optimize.minimize(mean_loglik, np.zeros(len(names)), jac=True, method="L-BFGS-B",
                               bounds=[(-_LOG_BOUND, _LOG_BOUND)] * len(names),
                               options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-9})
    params = {k: float(v) for k, v in zip(names, np.exp(result.x), strict=True)}
    shown = {k: float(f"{v:.4g}") for k, v in params.items()}
    if not np.isfinite(result.fun):
        raise ClvFitError(f"{label} did not converge ({result.message}): no finite likelihood, parameters {shown}",
                          f"{label} did not converge")
    at_bound = [n for n, x in zip(names, result.x, strict=True) if abs(x) > _LOG_BOUND - 1]
    # A parameter that vanishes (below 1e-6) means the data carry no heterogeneity for it (identical customers).
    vanished = [n for n, v in params.items() if v <= 1e-6]
    if at_bound or vanished:
        which = ", ".join(f"{n} -> {'0' if params[n] < 1 else 'infinity'}" for n in at_bound or vanished)
        raise BoundaryFitError(f"{label} has no interior maximum ({which}): parameters {shown}",
                               f"{label} has no interior maximum ({which})")
    if not result.success and np.abs(result.jac).max() > 1e-5:
        raise ClvFitError(f"{label} did not converge ({result.message}): parameters {shown}",
                          f"{label} did not converge")
    best = -result.fun * total
    step = np.log(BOUNDARY_PROBE_FACTOR)
    for i, name in enumerate(names):
        for direction, towards in ((-1.0, "0"), (1.0, "infinity")):
            probe = result.x.copy()
            probe[i] += direction * step
            value, _ = mean_loglik(probe)
            if np.isfinite(value) and -value * total >= best - LIKELIHOOD_INTERVAL:
                raise BoundaryFitError(
                    f"{label} has no interior maximum ({name} -> {towards}): the likelihood with {name} "
                    f"{BOUNDARY_PROBE_FACTOR:,.0f} times {'smaller' if direction < 0 else 'larger'} is within "
                    f"{LIKELIHOOD_INTERVAL} of the maximum ({-value * total - best:+.3f}); parameters {shown}",
                    f"{label} has no interior maximum ({name} -> {towards})")
    return FitResult(params=params, log_likelihood=best, iterations=int(result.nit),
                     evaluations=int(result.nfev))
