"""Propose causal edges from a line's history (``recovery learn-graph``, issue 22).

The method
----------
Each part gives one value per characteristic: its sample mean at the first
inspection that gauges it. A characteristic *comes into being* at a step (the
station that produces it, else the first step that acts on it, see
``CausalGraph``); that fixes the order in time.

1. **Candidates.** The parents a characteristic may have are those that came
   into being at an earlier step, and those of the same step that precede it
   in the step's order: no edge points back in time. The order within a step
   comes from an expert (``within_order="listing"``: the order of the step's
   ``produces`` list, else of the file) or from the data
   (``"data"``: DirectLiNGAM's pairwise likelihood-ratio measure, Hyvärinen and
   Smith (2013), which needs non-Gaussian noise; with Gaussian noise the data cannot
   tell a direction, and the listing is the better guess).
2. **Sparse regression.** For each characteristic, the lasso path of its
   standardised value on its standardised candidates; the number of parents
   ``q`` is the one BIC picks on all parts.
3. **Stability selection** (Meinshausen and Bühlmann 2010). On ``subsamples``
   random halves of the parts (complementary pairs), the first ``q``
   candidates to enter the lasso path are selected; an edge is proposed when
   its selection frequency reaches ``threshold`` (> 0.5). Under the paper's
   exchangeability assumption the expected number of false edges into a
   characteristic with ``p`` candidates is at most ``q**2 / ((2 threshold - 1) p)``;
   :attr:`LearnedGraph.error_bound` is their sum over the graph (the
   per-family error rate), and ``error_bound / len(edges)`` bounds the
   expected share of false edges among those proposed. The bound holds for
   any selection procedure no worse than random guessing, so it is loose: on
   generated lines of 20 characteristics it stated 8.6-14.9 expected false
   edges where 0-3 were found (BENCHMARKS.md, issue 22). Tighter bounds exist
   under extra assumptions (Shah and Samworth 2013, unimodal selection
   frequencies); they are not used here, since nothing checks those
   assumptions on a partner's data.
4. **Weights.** Each proposed edge's weight is the least-squares coefficient
   of the characteristic on its proposed parents, in physical units (target
   unit per source unit), with a 94% normal interval.

The result writes the expert-edits format (:meth:`LearnedGraph.to_edits_toml`):
an edge within a step is ``within = true``; an engineer reads, prunes and gives
it to ``recovery fit --edits``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recovery.causal._lasso import lasso_path
from recovery.causal.graph import CausalGraph
from simulators.definition import Process

__all__ = ["LearnedEdge", "LearnedGraph", "part_table", "learn_graph", "LearnGraphError"]

#: z of a two-sided 94% normal interval (the project's interval width)
_Z94 = 1.8808


class LearnGraphError(ValueError):
    """The data cannot support a learned graph (too few parts, nothing gauged)."""


@dataclass(frozen=True, slots=True)
class LearnedEdge:
    """One proposed edge.

    Attributes
    ----------
    source, target : str
        Characteristic names.
    step : int
        The step at which the target comes into being (the edit's ``step``).
    within : bool
        Both come into being at ``step``: the source's value after the step.
    weight, low, high : float
        Least-squares coefficient and its 94% interval (target unit per source unit).
    selected_frequency : float
        Share of half-samples that selected the edge.
    """

    source: str
    target: str
    step: int
    within: bool
    weight: float
    low: float
    high: float
    selected_frequency: float

    def to_dict(self) -> dict:
        return {"from": self.source, "to": self.target, "weight": self.weight, "low": self.low,
                "high": self.high, "selected_frequency": self.selected_frequency,
                "step": self.step, "within": self.within}


@dataclass(frozen=True)
class LearnedGraph:
    """What :func:`learn_graph` proposes.

    Attributes
    ----------
    method : str
        One line naming the method and its settings.
    n_parts : int
        Parts used (those gauged on every characteristic learned).
    seconds : float
    edges : tuple of LearnedEdge
    error_bound : float
        Upper bound on the expected number of false edges (see the module docstring).
    threshold : float
    subsamples : int
    order : dict
        Step -> the order of its characteristics used for within-step edges.
    process : str
        Process name.
    """

    method: str
    n_parts: int
    seconds: float
    edges: tuple[LearnedEdge, ...]
    error_bound: float
    threshold: float
    subsamples: int
    order: dict
    process: str = ""

    def to_dict(self) -> dict:
        """The JSON contract of ``recovery learn-graph --json``."""
        return {"method": self.method, "n_parts": self.n_parts, "seconds": round(self.seconds, 3),
                "edges": [e.to_dict() for e in self.edges],
                "expected_false_edges_bound": self.error_bound,
                "threshold": self.threshold, "subsamples": self.subsamples,
                "within_order": {str(k): v for k, v in self.order.items()}}

    def to_edits_toml(self) -> str:
        """The proposal in the expert-edits format (``recovery fit --edits``)."""
        out = [f"# Proposed by recovery learn-graph for process '{self.process}': {self.method}.",
               f"# {len(self.edges)} edges from {self.n_parts} parts; expected false edges <= "
               f"{self.error_bound:.2f} (Meinshausen-Buehlmann bound).",
               "# Read, prune, and give to: recovery fit --edits THIS_FILE", ""]
        for e in self.edges:
            out += ["[[add_edge]]", f"step = {e.step}", f'source = "{e.source}"', f'target = "{e.target}"']
            if e.within:
                out.append("within = true")
            out += [f'reason = "learn-graph: selected in {100 * e.selected_frequency:.0f}% of half-samples; '
                    f'weight {e.weight:.4g} [{e.low:.4g}, {e.high:.4g}]"', ""]
        return "\n".join(out)


def part_table(history: pd.DataFrame, process: Process) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per part: each characteristic's sample mean at the first inspection that gauges it.

    Parameters
    ----------
    history : DataFrame
        Step data in the schema.
    process : Process

    Returns
    -------
    table : DataFrame
        Index batch id, one column per gauged characteristic (in file order);
        parts missing any of them are dropped.
    birth : dict
        Characteristic -> the step at which it comes into being.
    """
    g = CausalGraph.from_process(process)
    first_gauge: dict[str, int] = {}
    for ins in process.inspections:
        for c in ins.measures:
            first_gauge.setdefault(c, ins.step)
    names = [c.name for c in process.characteristics if c.name in first_gauge and c.role != "crack"]
    birth = {}
    for c in names:
        acts = [k for (k, n) in g.acts if n == c and k <= first_gauge[c]]
        birth[c] = min(acts) if acts else first_gauge[c]
    meas = history[(history["kind"].astype(str) == "measurement")
                   & history["variable"].astype(str).isin(names)]
    want = meas["step"].astype(int).to_numpy() == meas["variable"].astype(str).map(first_gauge).to_numpy()
    meas = meas[want]
    table = meas.pivot_table(index=meas["batch_id"].astype(str), columns=meas["variable"].astype(str),
                             values="value", aggfunc="mean")
    table = table.reindex(columns=names).dropna(axis=0, how="any")
    return table, birth


def learn_graph(history: pd.DataFrame, process: Process, *, subsamples: int = 50, threshold: float = 0.8,
                within_order: str = "listing", n_lambda: int = 30, seed: int | np.random.Generator = 0
                ) -> LearnedGraph:
    """Propose edges between a process's characteristics from its history.

    Parameters
    ----------
    history : DataFrame
        Step data in the schema.
    process : Process
    subsamples : int
        Half-samples for stability selection (rounded up to an even number:
        complementary pairs).
    threshold : float
        Selection frequency an edge needs, in (0.5, 1].
    within_order : {"listing", "data"}
        Where the order inside a step comes from (see the module docstring).
    n_lambda : int
        Penalties on each lasso path.
    seed : int or Generator

    Returns
    -------
    LearnedGraph

    Raises
    ------
    LearnGraphError
        Fewer than 20 complete parts, or an invalid setting.
    """
    t0 = time.perf_counter()
    if not 0.5 < threshold <= 1.0:
        raise LearnGraphError(f"threshold must be in (0.5, 1], got {threshold}")
    if within_order not in ("listing", "data"):
        raise LearnGraphError(f"within_order must be 'listing' or 'data', got {within_order!r}")
    if subsamples < 2:
        raise LearnGraphError(f"subsamples must be >= 2, got {subsamples}")
    rng = np.random.default_rng(seed)
    table, birth = part_table(history, process)
    n, names = len(table), list(table.columns)
    if n < 20:
        raise LearnGraphError(f"learn-graph needs at least 20 parts gauged on every characteristic "
                              f"(first gauge of each); the data hold {n}")
    X = table.to_numpy(dtype=np.float64)
    sd = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    Z[:, sd == 0] = 0.0
    order = _within_order(process, names, birth, Z, within_order)
    rank = {c: i for step in order for i, c in enumerate(order[step])}
    halves = _halves(n, (subsamples + 1) // 2, rng)
    edges, bound = [], 0.0
    for t, c in enumerate(names):
        cand = [j for j, s in enumerate(names)
                if birth[s] < birth[c] or (birth[s] == birth[c] and rank[s] < rank[c])]
        cand = [j for j in cand if sd[j] > 0]
        if not cand or sd[t] == 0:
            continue
        q = _bic_size(Z[:, cand], Z[:, t], n_lambda)
        if q == 0:
            continue
        freq = np.zeros(len(cand))
        for rows in halves:
            freq[_first_to_enter(Z[np.ix_(rows, cand)], Z[rows, t], q, n_lambda)] += 1.0
        freq /= len(halves)
        bound += min(q * q / ((2.0 * threshold - 1.0) * len(cand)), float(len(cand)))
        chosen = [cand[k] for k in np.flatnonzero(freq >= threshold - 1e-12)]
        if not chosen:
            continue
        w, se = _ols(X[:, chosen], X[:, t])
        for k, j in enumerate(chosen):
            edges.append(LearnedEdge(names[j], c, birth[c], birth[names[j]] == birth[c], float(w[k]),
                                     float(w[k] - _Z94 * se[k]), float(w[k] + _Z94 * se[k]),
                                     float(freq[cand.index(j)])))
    method = (f"lasso (BIC size) with stability selection, {len(halves)} half-samples, "
              f"threshold {threshold:g}, within-step order from the "
              f"{'data (pairwise LiNGAM measure)' if within_order == 'data' else 'listing'}")
    return LearnedGraph(method, n, time.perf_counter() - t0, tuple(edges), float(bound), threshold,
                        len(halves), order, process.name)


def _halves(n: int, pairs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``2 pairs`` half-samples of ``range(n)``, in complementary pairs."""
    out = []
    for _ in range(pairs):
        perm = rng.permutation(n)
        out += [np.sort(perm[: n // 2]), np.sort(perm[n // 2: 2 * (n // 2)])]
    return out


def _path(Zc: np.ndarray, z: np.ndarray, n_lambda: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lasso path of ``z`` on ``Zc``: penalties, coefficients (L, p), and ``G``, ``c``."""
    m = len(z)
    Zc = Zc - Zc.mean(axis=0)
    z = z - z.mean()
    G = Zc.T @ Zc / m
    c = Zc.T @ z / m
    lmax = max(float(np.abs(c).max()), 1e-12)
    lams = lmax * np.geomspace(1.0, 0.01, n_lambda)
    B = lasso_path(np.ascontiguousarray(G), np.ascontiguousarray(c), lams, 1e-7, 1000)
    return B, G, c


def _bic_size(Zc: np.ndarray, z: np.ndarray, n_lambda: int) -> int:
    """Number of candidates the BIC-best point of the lasso path keeps."""
    m = len(z)
    B, G, c = _path(Zc, z, n_lambda)
    zz = float(((z - z.mean()) ** 2).mean())
    best, size = math.inf, 0
    for b in B:
        rss = max(zz - 2.0 * b @ c + b @ G @ b, 1e-12)
        k = int((np.abs(b) > 0).sum())
        bic = m * math.log(rss) + k * math.log(m)
        if bic < best - 1e-9:
            best, size = bic, k
    return size


def _first_to_enter(Zc: np.ndarray, z: np.ndarray, q: int, n_lambda: int) -> np.ndarray:
    """Indices of the first ``q`` candidates to enter the lasso path (ties: larger |b| at entry)."""
    B, _, _ = _path(Zc, z, n_lambda)
    nz = np.abs(B) > 0
    entry = np.where(nz.any(axis=0), nz.argmax(axis=0), len(B))
    at_entry = np.abs(B[np.minimum(entry, len(B) - 1), np.arange(B.shape[1])])
    order = np.lexsort((-at_entry, entry))
    order = order[entry[order] < len(B)]
    return order[:q]


def _ols(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slopes (with an intercept) and their standard errors."""
    n, k = X.shape
    A = np.column_stack([X, np.ones(n)])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    s2 = float(resid @ resid) / max(n - k - 1, 1)
    cov = s2 * np.linalg.pinv(A.T @ A)
    return coef[:k], np.sqrt(np.maximum(np.diag(cov)[:k], 0.0))


def _within_order(process: Process, names: list[str], birth: dict[str, int], Z: np.ndarray,
                  how: str) -> dict[int, list[str]]:
    """Per step, the order of the characteristics that come into being there."""
    listing = {c: i for i, c in enumerate(names)}
    for s in process.steps:          # a station's own listing wins over the file's order
        for i, c in enumerate(s.produces):
            if c in listing:
                listing[c] = -len(names) + i
    out: dict[int, list[str]] = {}
    for c in sorted(names, key=lambda c: listing[c]):
        out.setdefault(birth[c], []).append(c)
    if how == "data":
        idx = {c: i for i, c in enumerate(names)}
        for step, group in out.items():
            if len(group) > 1:
                out[step] = _lingam_order(Z[:, [idx[c] for c in group]], group)
    return out


def _entropy(u: np.ndarray) -> float:
    """Maximum-entropy approximation of the differential entropy of a standardised
    variable (Hyvärinen 1998), as DirectLiNGAM uses it."""
    k1, k2, gamma = 79.047, 7.4129, 0.37457
    return float((1 + np.log(2 * np.pi)) / 2 - k1 * (np.mean(np.log(np.cosh(u))) - gamma) ** 2
                 - k2 * np.mean(u * np.exp(-u * u / 2)) ** 2)


def _lingam_order(Z: np.ndarray, group: list[str]) -> list[str]:
    """Greedy causal order by DirectLiNGAM's pairwise measure (the likelihood ratio of
    Hyvärinen and Smith 2013 in its entropy form): positive for ``x -> y``. The most
    exogenous variable goes first, then it is regressed out of the rest."""
    Z = Z.copy()
    left = list(range(len(group)))
    out = []
    while left:
        if len(left) == 1:
            out.append(left.pop())
            break
        score = {}
        for i in left:
            s = 0.0
            for j in left:
                if i == j:
                    continue
                x = (Z[:, i] - Z[:, i].mean()) / max(Z[:, i].std(), 1e-12)
                y = (Z[:, j] - Z[:, j].mean()) / max(Z[:, j].std(), 1e-12)
                rho = float((x * y).mean())
                rx, ry = x - rho * y, y - rho * x          # x given y, y given x
                # > 0 when x -> y: the entropy difference of the two directions
                r = (_entropy(y) + _entropy(rx / max(rx.std(), 1e-12))) \
                    - (_entropy(x) + _entropy(ry / max(ry.std(), 1e-12)))
                s += min(0.0, r) ** 2          # DirectLiNGAM's pairwise penalty on i being a cause
            score[i] = s
        first = min(left, key=lambda i: score[i])
        out.append(first)
        left.remove(first)
        x = Z[:, first] - Z[:, first].mean()
        for j in left:
            y = Z[:, j]
            Z[:, j] = y - (x @ (y - y.mean())) / max(x @ x, 1e-12) * x
    return [group[i] for i in out]
