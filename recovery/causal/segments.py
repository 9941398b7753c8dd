"""The step graph composed over each segment between two inspections.

Between two inspections the state is hidden, and only what happens over the
whole *segment* can be learned from data. :func:`compose_segments` (behind
:meth:`CausalGraph.segments <recovery.causal.graph.CausalGraph.segments>`)
walks the segment's steps and tracks, for every modelled characteristic, what
its value depends on: which characteristics at the segment's start (the support
of the carry-over matrix), which levers, which factories' drift and which
catalogue faults (with signs). Within-step edges are kept apart, as edges
between the values at the segment's end (:attr:`Segment.within`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from simulators.definition import Process
from simulators.kinds import KINDS
from recovery.causal._roles import _chars_of_role, _noise_targets

if TYPE_CHECKING:
    from recovery.causal.graph import CausalGraph, Edge

__all__ = ["Segment", "compose_segments"]


@dataclass(frozen=True)
class Segment:
    """What the step graph implies between two consecutive inspections.

    Characteristic axes index :attr:`CausalGraph.modeled` (the continuous
    characteristics; crack is handled apart, see ``docs/causal-model.md``).

    Attributes
    ----------
    index : int
        0-based segment number; segment ``q`` ends at inspection ``q``.
    start, end : int
        Steps: the segment covers steps ``start + 1 .. end`` (``start = 0``
        for the first one).
    acted : ndarray (d,) bool
        Some step of the segment acts on the characteristic (it may change,
        with noise); otherwise it passes through unchanged.
    carry : ndarray (d, d) bool
        ``carry[c, c2]``: the value of ``c`` at the end depends on ``c2`` at the start.
    levers : ndarray (d, n_levers) bool
        Lever reaches the characteristic at the end of the segment.
    drift : ndarray (n_factories, d) bool
        The factory's drift shifts the characteristic over this segment.
    faults : tuple[int, ...]
        Indices (into ``process.faults``) of faults at steps of this segment.
    signatures : tuple[dict[str, int], ...]
        For each of ``faults``: characteristic -> sign (+1, -1, 0 either) at the end.
    within : ndarray (d, d) bool
        ``within[c, c2]``: the value of ``c`` at the end depends on the value of
        ``c2`` at the end (a within-step edge of one of the segment's steps);
        acyclic. Not part of ``carry``.
    """

    index: int
    start: int
    end: int
    acted: np.ndarray
    carry: np.ndarray
    levers: np.ndarray
    drift: np.ndarray
    faults: tuple[int, ...]
    signatures: tuple[dict[str, int], ...]
    within: np.ndarray | None = None

    @property
    def steps(self) -> range:
        return range(self.start + 1, self.end + 1)



def compose_segments(graph: CausalGraph) -> tuple[Segment, ...]:
    """Compose ``graph``'s step graph over each segment between inspections.

    Parameters
    ----------
    graph : CausalGraph

    Returns
    -------
    tuple of Segment
        One per inspection, in order.

    Raises
    ------
    ValueError
        The process does not end with an inspection (the model has nothing
        to learn the last steps from).
    """
    p = graph.process
    if not p.inspections or p.inspection_steps[-1] != p.n_steps:
        raise ValueError(f"process '{p.name}': the causal model needs an inspection at the "
                         f"last step ({p.n_steps}); the steps after the last gauge cannot be learned")
    mod = graph.modeled
    mi = graph.modeled_index
    by_step: dict[int, list[Edge]] = {}
    for e in graph.edges:
        by_step.setdefault(e.step, []).append(e)
    out = []
    start = 0
    for q, end in enumerate(p.inspection_steps):
        reach = _Reach.at_start(mod)
        faults_here = [i for i, f in enumerate(p.faults) if start < f.step <= end]
        for k in range(start + 1, end + 1):
            _walk_step(p, graph.acts, k, by_step.get(k, []), reach, mod, mi)
            _add_faults(p, k, faults_here, reach.flt, mi)
        acted, carry, levers, drift = _support(p, mod, mi, reach)
        out.append(Segment(q, start, end, acted, carry, levers, drift, tuple(faults_here),
                           _signatures(p, mod, mi, faults_here, reach.flt), reach.within))
        start = end
    _set_afresh_where_first_gauged(p, out, mi)
    return tuple(out)


@dataclass
class _Reach:
    """What each modelled characteristic's current value depends on, from the segment's start.

    ``dep[c]``: characteristics at the start; ``lev[c]``: lever indices;
    ``dri[c]``: factory indices whose drift shifts it; ``flt[c]``: fault index
    -> sign; ``acted``: characteristics some step so far acts on; ``within``:
    the segment's within-step edges (see :attr:`Segment.within`).
    """

    dep: dict[str, set[str]]
    lev: dict[str, set[int]]
    dri: dict[str, set[int]]
    flt: dict[str, dict[int, int]]
    acted: set[str]
    within: np.ndarray

    @classmethod
    def at_start(cls, mod: tuple[str, ...]) -> "_Reach":
        d = len(mod)
        return cls({c: {c} for c in mod}, {c: set() for c in mod}, {c: set() for c in mod},
                   {c: {} for c in mod}, set(), np.zeros((d, d), dtype=bool))


def _walk_step(p: Process, acts: frozenset, k: int, incoming: list[Edge], reach: _Reach,
               mod: tuple[str, ...], mi: dict[str, int]) -> None:
    """Advance ``reach`` over step ``k``: every characteristic the step acts on
    now depends on what its parents depended on before the step."""
    s = p.step(k)
    fidx = {f.id: i for i, f in enumerate(p.factories)}
    new = {}
    for c in mod:
        if (k, c) not in acts:
            continue
        reach.acted.add(c)
        # computed from the values before the step; applied together below
        new[c] = _into(p, s, c, incoming, reach, mi, fidx)
    for c, (nd, nlv, ndr, nfl) in new.items():
        reach.dep[c], reach.lev[c], reach.dri[c], reach.flt[c] = nd, nlv, ndr, nfl


def _into(p: Process, s, c: str, incoming: list[Edge], reach: _Reach, mi: dict[str, int],
          fidx: dict[str, int]) -> tuple[set[str], set[int], set[int], dict[int, int]]:
    """What ``c`` depends on after step ``s`` (start characteristics, levers,
    drifting factories, fault signs), from the edges into it."""
    nd, nlv, ndr, nfl = set(), set(), set(), {}
    for e in incoming:
        if e.target != c:
            continue
        if e.kind == "lever":
            nlv.add(p.lever_index[e.source])
        elif e.kind == "within":
            # between values at the segment's end; the model solves
            # these apart (Segment.within), not through the carry-over
            if e.source in mi:
                reach.within[mi[c], mi[e.source]] = True
        elif e.source in mi:
            nd |= reach.dep[e.source]
            nlv |= reach.lev[e.source]
            ndr |= reach.dri[e.source]
            # A fault's signature follows carry-over only: what it does
            # through another characteristic's reads is second order.
            if e.kind == "carry":
                for fi, sg in reach.flt[e.source].items():
                    nfl[fi] = _merge_sign(nfl.get(fi), sg)
    if c in _noise_targets(p, s) and KINDS[s.kind].params and s.params.get("batch_sigma", 0) > 0:
        ndr.add(fidx[s.factory])
    return nd, nlv, ndr, nfl


def _add_faults(p: Process, k: int, faults_here: list[int], flt: dict[str, dict[int, int]],
                mi: dict[str, int]) -> None:
    """Mark the characteristics a fault at step ``k`` pushes, with its signs."""
    s = p.step(k)
    for fi in faults_here:
        f = p.faults[fi]
        if f.step != k:
            continue
        for role, sign in KINDS[s.kind].fault_effects.items():
            for c in _chars_of_role(p, role, s.target):
                if c in mi:
                    flt[c][fi] = _merge_sign(flt[c].get(fi), sign)


def _support(p: Process, mod: tuple[str, ...], mi: dict[str, int], reach: _Reach
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The segment's ``acted``, ``carry``, ``levers`` and ``drift`` masks (see :class:`Segment`)."""
    d, nl, nf = len(mod), len(p.levers), len(p.factories)
    acted_v = np.array([c in reach.acted for c in mod])
    carry = np.zeros((d, d), dtype=bool)
    levers = np.zeros((d, nl), dtype=bool)
    drift = np.zeros((nf, d), dtype=bool)
    for c in mod:
        i = mi[c]
        if not acted_v[i]:
            carry[i, i] = True
            continue
        for c2 in reach.dep[c]:
            carry[i, mi[c2]] = True
        for j in reach.lev[c]:
            levers[i, j] = True
        for fi in reach.dri[c]:
            drift[fi, i] = True
    return acted_v, carry, levers, drift


def _signatures(p: Process, mod: tuple[str, ...], mi: dict[str, int], faults_here: list[int],
                flt: dict[str, dict[int, int]]) -> tuple[dict[str, int], ...]:
    """Each fault's signature at the segment's end: characteristic -> sign."""
    sigs = []
    for fi in faults_here:
        sig = {c: flt[c][fi] for c in mod if fi in flt[c]}
        for role in KINDS[p.step(p.faults[fi].step).kind].fault_effects:
            for c in _chars_of_role(p, role, p.step(p.faults[fi].step).target):
                if c not in mi:
                    sig[c] = 1  # crack: a fault can only add cracks
        sigs.append(sig)
    return tuple(sigs)


def _set_afresh_where_first_gauged(p: Process, out: list[Segment], mi: dict[str, int]) -> None:
    """A characteristic that no step kind acts on before it is first gauged (role
    "other": a partner's own measurement) would have no noise at all, and with
    one bar per batch and a perfect gauge a zero covariance. It comes into
    being in the segment that first gauges it: that segment sets it afresh (no
    carry-over), with its own batch-level noise learned from the data."""
    d = len(mi)
    seen = np.zeros(d, dtype=bool)
    for q, seg in enumerate(out):
        for c in p.inspections[q].measures:
            i = mi.get(c)
            if i is not None and not seen[i] and not seg.acted[i]:
                seg.acted[i] = True
                seg.carry[i] = False
        seen |= out[q].acted
        for c in p.inspections[q].measures:
            if c in mi:
                seen[mi[c]] = True


def _merge_sign(old: int | None, new: int) -> int:
    if old is None or old == new:
        return new
    return 0
