"""Zero-inflation: p(y) = pi 1[y = 0] + (1 - pi) f(y; mu), logit(pi) = X_zi beta_zi (glmmTMB's
``ziformula``).

The mixture's log-likelihood is not of exponential-family form in eta. PIRLS still finds the
modes of the penalized deviance: the working residual is the score over a weight, the observed
information -d^2 l / d eta^2 = q (w_obs - (1 - q) s^2) for a zero (s, w_obs: the count part's
score and observed information; q the posterior probability that the zero comes from the count
part), the count part's for the others. That weight is also the Laplace approximation's
curvature. It is negative for zeros the zero-inflation explains well; PIRLS weighs by it all the
same (Newton's method) while the system stays positive definite, else by the count part's Fisher
weight times q in those rows (``Observed.working``). ``curvature`` and
``extra_derivatives`` give the exact gradient its derivatives in eta and in the extras.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import expit

from .base import Family, Observed, pirls_weights

__all__ = ["ZeroInflatedObserved", "zi_loglik"]


def zi_loglik(family: Family, y: np.ndarray, mu: np.ndarray, wt: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """log p(y | mu) of the zero-inflated model, times the prior weights (arrays broadcast: mu
    may hold one column per draw)."""
    logf = -0.5 * family.minus2loglik(y, mu, np.ones_like(mu))
    with np.errstate(divide="ignore"):
        zero = np.logaddexp(np.log(pi), np.log1p(-pi) + logf)
        other = np.log1p(-pi) + logf
    return wt * np.where(y == 0, zero, other)


@dataclass(frozen=True, eq=False)
class ZeroInflatedObserved(Observed):
    """The count family bound to the response, with the zero-inflation probabilities ``pi``
    (one per row). ``deviance`` is -2 log p(y | mu) in full, so ``constant`` is 0."""

    pi: np.ndarray

    @classmethod
    def of(cls, family: Family, y: np.ndarray, wt: np.ndarray, eta_zi: np.ndarray) -> ZeroInflatedObserved:
        return cls(family, y, wt, expit(eta_zi))

    @cached_property
    def zero(self) -> np.ndarray:
        return np.asarray(self.y == 0)

    @cached_property
    def _ones(self) -> np.ndarray:
        """Unit weights (the count part's, per row: made once, not at every evaluation)."""
        return np.ones_like(self.y)

    @cached_property
    def _logs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """log pi and log(1 - pi) (zero rows, all rows) and -2 log f(y; y) per row."""
        with np.errstate(divide="ignore"):
            log_pi = np.log(self.pi[self.zero])
            log_1mpi = np.log1p(-self.pi)
        return log_pi, log_1mpi, self.family.minus2loglik(self.y, self.y, self._ones)

    @property
    def constant(self) -> float:
        return 0.0

    def _count_log(self, mu: np.ndarray) -> np.ndarray:
        """log f(y; mu) per row, unit weight: the deviance residual and the saturated constant
        (no log-gamma function an evaluation)."""
        return -0.5 * (self.family.dev_resid(self.y, mu, self._ones) + self._logs[2])

    def _posterior(self, logf: np.ndarray) -> np.ndarray:
        """q: the probability that a zero comes from the count part (1 for non-zeros)."""
        log_pi, log_1mpi, _ = self._logs
        q = np.ones_like(logf)
        z = self.zero
        q[z] = expit(log_1mpi[z] + logf[z] - log_pi)
        return q

    def _with_posterior(self, eta: np.ndarray) -> tuple[np.ndarray, ...]:
        """``_eta_derivatives`` and q at eta (kept for the last eta as well)."""
        memo = self.__dict__.get("_memo_q")
        if memo is not None and np.array_equal(memo[0], eta):
            return memo[1]
        parts = self._eta_derivatives(eta)
        out = (*parts, self._posterior(self._count_log(parts[0])))
        self.__dict__["_memo_q"] = (np.array(eta, dtype=float), out)
        return out

    def loglik(self, mu: np.ndarray) -> np.ndarray:
        """log p(y | mu) per row, times the prior weights."""
        log_pi, log_1mpi, _ = self._logs
        out = log_1mpi + self._count_log(mu)
        z = self.zero
        out[z] = np.logaddexp(log_pi, out[z])
        return self.wt * out

    def deviance(self, mu: np.ndarray) -> float:
        return float(-2.0 * self.loglik(mu).sum())

    def working(
        self, eta: np.ndarray, newton: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """As ``Observed.working``: the observed information -d^2 log p / d eta^2 where it is
        positive (or, ``newton``, not small), else the count part's Fisher weight times q."""
        mu, d1, _, L1, L2, _, q = self._with_posterior(eta)
        w_obs = -(q * L2 + q * (1.0 - q) * L1 * L1)
        fisher = q * d1 * d1 / self.family.variance(mu)
        return mu, d1, *pirls_weights(self.wt * q * L1, self.wt * w_obs, self.wt * fisher, newton)

    def curvature(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # log p = log(pi + (1 - pi) f) for a zero: with L the count part's log f and q the
        # posterior above, dq/deta = q (1 - q) L' (for the others q = 1 and log p = log(1 - pi) + L)
        _, _, _, L1, L2, L3, q = self._with_posterior(eta)
        c = q * (1.0 - q)
        r = q * L1
        w = -(q * L2 + c * L1 * L1)
        dw = -(q * L3 + 3.0 * c * L1 * L2 + c * (1.0 - 2.0 * q) * L1**3)
        return self.wt * r, self.wt * w, self.wt * dw

    def extra_derivatives(self, eta: np.ndarray, dispersion: bool) -> np.ndarray:
        """As ``Observed.extra_derivatives``, with a last column for the zero-inflation's linear
        predictor (logit pi; dq / dlogit pi = -q (1 - q)): its coefficients' derivatives are
        X_zi' times it."""
        mu, d1, d2, L1, L2, _, q = self._with_posterior(eta)
        c = q * (1.0 - q)
        out = np.zeros((len(self.y), 3, int(dispersion) + 1))
        if dispersion:
            # dq / dlog dispersion = q (1 - q) L_p
            lp, l1p, l2p = self._dispersion_eta(mu, d1, d2)
            out[:, 0, 0] = q * lp
            out[:, 1, 0] = q * l1p + c * lp * L1
            out[:, 2, 0] = -(q * l2p + c * lp * L2 + (1.0 - 2.0 * q) * c * lp * L1 * L1 + 2.0 * c * L1 * l1p)
        out[:, 0, -1] = 1.0 - self.pi - q
        out[:, 1, -1] = -c * L1
        out[:, 2, -1] = c * L2 + c * (1.0 - 2.0 * q) * L1 * L1
        return out * self.wt[:, None, None]
