"""The lasso path by coordinate descent on the Gram matrix (numba), and its NumPy twin.

For standardised data ``X (n, p)``, ``y (n,)``, the lasso at penalty ``lam``
minimises ``(1/2n) |y - X b|^2 + lam |b|_1``. With ``G = X'X / n`` and
``c = X'y / n`` one coordinate update is ``b_j = S(c_j - sum_{k != j} G_jk b_k,
lam) / G_jj`` (``S`` the soft threshold); warm starts down a decreasing grid of
penalties give the whole path. ``recovery.causal.learn`` runs it a few thousand
times per learned graph (every target, every half-sample), hence numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simulators._config import NJIT

__all__ = ["lasso_path", "lasso_path_reference"]


@njit(**NJIT)
def lasso_path(G, c, lams, tol, max_iter):
    """Coefficients along a decreasing penalty grid.

    Parameters
    ----------
    G : (p, p) float64
        ``X'X / n`` of the standardised candidates.
    c : (p,) float64
        ``X'y / n``.
    lams : (L,) float64
        Penalties, decreasing.
    tol : float
        Stop a penalty's sweeps when no coefficient moves more than this.
    max_iter : int
        Most sweeps per penalty.

    Returns
    -------
    B : (L, p) float64
        Coefficients at each penalty.
    """
    p = c.shape[0]
    L = lams.shape[0]
    B = np.zeros((L, p))
    b = np.zeros(p)
    for li in range(L):
        lam = lams[li]
        for _ in range(max_iter):
            move = 0.0
            for j in range(p):
                if G[j, j] <= 0.0:
                    continue
                r = c[j]
                for k in range(p):
                    if k != j:
                        r -= G[j, k] * b[k]
                if r > lam:
                    nb = (r - lam) / G[j, j]
                elif r < -lam:
                    nb = (r + lam) / G[j, j]
                else:
                    nb = 0.0
                d = abs(nb - b[j])
                if d > move:
                    move = d
                b[j] = nb
            if move < tol:
                break
        B[li] = b
    return B


def lasso_path_reference(G, c, lams, tol=1e-10, max_iter=10_000):
    """:func:`lasso_path`, plainly in NumPy (for the test that holds them equal)."""
    p = len(c)
    b = np.zeros(p)
    out = []
    for lam in lams:
        for _ in range(max_iter):
            old = b.copy()
            for j in range(p):
                if G[j, j] <= 0:
                    continue
                r = c[j] - G[j] @ b + G[j, j] * b[j]
                b[j] = np.sign(r) * max(abs(r) - lam, 0.0) / G[j, j]
            if np.abs(b - old).max() < tol:
                break
        out.append(b.copy())
    return np.array(out).reshape(len(lams), p)
