"""Links: eta = g(mu) and its inverse, with the derivatives PIRLS and the exact gradient need."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["Link", "Logit", "Probit", "CLogLog", "Log", "Identity", "Inverse", "LINKS"]

_ETA_MAX = 700.0  # exp(700) is finite; beyond it the log link overflows
_TINY = np.finfo(float).tiny
_SQRT_2PI = float(np.sqrt(2 * np.pi))


class Link(ABC):
    """eta = g(mu) and its inverse, with d mu / d eta and d^2 mu / d eta^2."""

    name: ClassVar[str]

    @abstractmethod
    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        """eta from mu."""

    @abstractmethod
    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        """mu from eta."""

    @abstractmethod
    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        """d mu / d eta (positive)."""

    @abstractmethod
    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        """d^2 mu / d eta^2."""

    @abstractmethod
    def mu_eta3(self, eta: np.ndarray) -> np.ndarray:
        """d^3 mu / d eta^3 (the exact gradient of a Laplace approximation with the observed
        information)."""

    def derivatives(self, eta: np.ndarray, order: int) -> tuple[np.ndarray, ...]:
        """mu and its first ``order`` (2 or 3) derivatives in eta, in one pass."""
        out = (self.linkinv(eta), self.mu_eta(eta), self.mu_eta2(eta))
        return (*out, self.mu_eta3(eta)) if order >= 3 else out

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(self.name)


def _clip(eta: np.ndarray) -> np.ndarray:
    return np.clip(eta, -_ETA_MAX, _ETA_MAX)


class Logit(Link):
    name = "logit"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        mu = np.asarray(mu, dtype=float)
        return np.log(mu / (1 - mu))

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return 1.0 / (1.0 + np.exp(-_clip(eta)))

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            t = np.exp(-np.abs(_clip(eta)))
            return np.maximum(t / (1.0 + t) ** 2, _TINY)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        return self.mu_eta(eta) * np.tanh(-_clip(eta) / 2)  # mu' (1 - 2 mu)

    def mu_eta3(self, eta: np.ndarray) -> np.ndarray:
        d1, t = self.mu_eta(eta), np.tanh(-_clip(eta) / 2)
        return d1 * (t * t - 2 * d1)  # mu' (1 - 2 mu)^2 - 2 mu'^2


class Probit(Link):
    name = "probit"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        return np.asarray(ndtri(np.asarray(mu, dtype=float)), dtype=float)

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        return np.asarray(ndtr(_clip(eta)), dtype=float)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        e = _clip(eta)
        with np.errstate(under="ignore"):
            return np.maximum(np.exp(-0.5 * e * e) / _SQRT_2PI, _TINY)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        return -_clip(eta) * self.mu_eta(eta)

    def mu_eta3(self, eta: np.ndarray) -> np.ndarray:
        e = _clip(eta)
        return (e * e - 1) * self.mu_eta(eta)


class CLogLog(Link):
    name = "cloglog"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        return np.log(-np.log1p(-np.asarray(mu, dtype=float)))

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return -np.expm1(-np.exp(_clip(eta)))

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        e = _clip(eta)
        with np.errstate(over="ignore", under="ignore"):
            return np.maximum(np.exp(e - np.exp(e)), _TINY)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            return self.mu_eta(eta) * (1 - np.exp(_clip(eta)))

    def mu_eta3(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            e = np.exp(_clip(eta))
            return self.mu_eta(eta) * ((1 - e) ** 2 - e)


class Log(Link):
    name = "log"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        return np.log(np.asarray(mu, dtype=float))

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        return np.exp(_clip(eta))  # (finite: eta is clipped; underflow to 0 is silent)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        return np.maximum(self.linkinv(eta), _TINY)

    def derivatives(self, eta: np.ndarray, order: int) -> tuple[np.ndarray, ...]:
        mu = self.linkinv(eta)
        d = np.maximum(mu, _TINY)
        return (mu,) + (d,) * order

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        return self.mu_eta(eta)

    def mu_eta3(self, eta: np.ndarray) -> np.ndarray:
        return self.mu_eta(eta)


class Identity(Link):
    name = "identity"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        return np.asarray(mu, dtype=float)

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        return np.asarray(eta, dtype=float)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        return np.ones(np.shape(eta))

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(eta))

    def mu_eta3(self, eta: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(eta))


class Inverse(Link):
    """mu = 1 / eta (the Gamma family's canonical link, R's default for it)."""

    name = "inverse"

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        return 1.0 / np.asarray(mu, dtype=float)

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 1.0 / np.asarray(eta, dtype=float)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        e = np.asarray(eta, dtype=float)
        with np.errstate(divide="ignore"):
            return -1.0 / (e * e)

    def mu_eta2(self, eta: np.ndarray) -> np.ndarray:
        e = np.asarray(eta, dtype=float)
        with np.errstate(divide="ignore"):
            return 2.0 / (e * e * e)

    def mu_eta3(self, eta: np.ndarray) -> np.ndarray:
        e = np.asarray(eta, dtype=float)
        with np.errstate(divide="ignore"):
            return -6.0 / (e * e * e * e)


LINKS: dict[str, type[Link]] = {c.name: c for c in (Logit, Probit, CLogLog, Log, Identity, Inverse)}
