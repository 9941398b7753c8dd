"""A quadratic emulator of the simulator's summaries over the uncertain parameters.

The summaries are smooth in the log-factors ``z`` of the uncertain parameters
(exponentials and Arrhenius factors over a box of a few tens of percent), so a
quadratic in ``z`` with the squares and the products of parameters that act on
the same characteristics fits them to within a small share of their noise once the box is narrowed
around the posterior. It is cheap and differentiable, which is what lets NUTS
sample the posterior instead of a likelihood-free sampler that needs a
simulation per proposal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Box", "QuadraticEmulator", "latin_hypercube"]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in ``z`` (log-factors): ``centre +- half``."""

    centre: np.ndarray
    half: np.ndarray

    @property
    def low(self) -> np.ndarray:
        return self.centre - self.half

    @property
    def high(self) -> np.ndarray:
        return self.centre + self.half

    def scaled(self, z: np.ndarray) -> np.ndarray:
        """``z`` in box units: -1 .. 1 inside."""
        return (np.asarray(z) - self.centre) / self.half

    def inside(self, z: np.ndarray, margin: float = 1.0) -> np.ndarray:
        return (np.abs(self.scaled(z)) <= margin).all(axis=-1)

    def intersect(self, other: "Box") -> "Box":
        lo = np.maximum(self.low, other.low)
        hi = np.minimum(self.high, other.high)
        hi = np.maximum(hi, lo + 1e-9)
        return Box((lo + hi) / 2, (hi - lo) / 2)


def latin_hypercube(box: Box, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points ``(n, k)`` of a Latin hypercube filling ``box``."""
    k = len(box.centre)
    u = (np.argsort(rng.random((n, k)), axis=0) + rng.random((n, k))) / n
    return box.low + u * (2 * box.half)


class QuadraticEmulator:
    """Least-squares quadratic in box-scaled ``z``: ``y ~ phi(x) @ coef``.

    Parameters
    ----------
    box : Box
        Where the design points lie; ``x = (z - centre) / half``.
    interacts : ndarray of bool (k, k)
        Which pairs of parameters get a product term (physics that acts on the
        same characteristics); the rest are taken as additive in ``z``.
    ridge : float
        Relative ridge penalty, keeps the fit stable with few design points.
    """

    def __init__(self, box: Box, interacts: np.ndarray, *, ridge: float = 1e-6):
        self.box = box
        k = len(box.centre)
        self.k = k
        self.pairs = np.array([(i, j) for i in range(k) for j in range(i + 1, k)
                               if interacts[i, j]], dtype=np.int64).reshape(-1, 2)
        self.ridge = ridge

    @property
    def n_terms(self) -> int:
        return 1 + 2 * self.k + len(self.pairs)

    def features(self, z: np.ndarray) -> np.ndarray:
        x = self.box.scaled(np.atleast_2d(z))
        cols = [np.ones((len(x), 1)), x, x * x]
        if len(self.pairs):
            cols.append(x[:, self.pairs[:, 0]] * x[:, self.pairs[:, 1]])
        return np.hstack(cols)

    def fit(self, z: np.ndarray, y: np.ndarray) -> "QuadraticEmulator":
        """Fit to design points ``z (n, k)`` and outputs ``y (n, m)``.

        Sets ``coef_ (n_terms, m)`` and ``resid_var_ (m,)``, the residual
        variance per output (degrees of freedom counted), which calibration
        adds to the likelihood's noise: what the emulator cannot follow is
        not evidence.
        """
        phi = self.features(z)
        lam = self.ridge * len(phi)
        a = phi.T @ phi + lam * np.eye(phi.shape[1])
        self.coef_ = np.linalg.solve(a, phi.T @ y)
        resid = y - phi @ self.coef_
        dof = max(len(phi) - phi.shape[1], 1)
        self.resid_var_ = (resid ** 2).sum(axis=0) / dof
        return self

    def predict(self, z: np.ndarray) -> np.ndarray:
        return self.features(z) @ self.coef_

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        """``d predict / d z`` at one point: ``(m, k)``."""
        z = np.asarray(z, dtype=np.float64)
        x = self.box.scaled(z)
        k = len(x)
        d = np.zeros((self.n_terms, k))
        d[1:1 + k] = np.eye(k)
        d[1 + k:1 + 2 * k] = np.diag(2 * x)
        for r, (i, j) in enumerate(self.pairs):
            d[1 + 2 * k + r, i] = x[j]
            d[1 + 2 * k + r, j] = x[i]
        return (self.coef_.T @ d) / self.box.half[None, :]

    def tensor(self, z):
        """The prediction as a PyTensor expression of a vector ``z``."""
        import pytensor.tensor as pt

        x = (z - self.box.centre) / self.box.half
        cols = [pt.ones((1,)), x, x * x]
        if len(self.pairs):
            cols.append(x[self.pairs[:, 0]] * x[self.pairs[:, 1]])
        return pt.dot(pt.concatenate(cols), self.coef_)
