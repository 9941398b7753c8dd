"""The causal graph of a process: derived from the process definition, edited by engineers.

Step level
----------
A step of kind ``K`` *acts on* the characteristics whose roles are in
``KINDS[K].acts_on`` (for bending and re-bending: its ``target`` bend angle).
For every characteristic ``c`` it acts on, the graph holds

- a **carry** edge ``c(k-1) -> c(k)`` unless the kind *sets* ``c``
  (forming sets everything, heat treatment sets yield strength and residual
  stress, grinding sets roughness, bending sets its target angle, cutting sets
  length: the new value does not depend on the old one);
- a **reads** edge ``r(k-1) -> c(k)`` for every further role ``r`` the kind
  ``needs`` when it needs more than one (bending reads yield strength and
  diameter to compute springback);
- a **lever** edge ``lever -> c(k)`` for every lever set at step ``k``.

A ``station`` step (``simulators.stations``) *produces* the characteristics it
lists under ``produces`` (no carry edge: they come into being there, with the
step's own noise) and *acts on* those under ``acts_on`` (a carry edge).

A characteristic a step does not act on passes through unchanged.

Within a step
-------------
Characteristics made at the same step may depend on each other: a
**within** edge ``a(k) -> b(k)`` says that ``b``'s value after step ``k``
depends on ``a``'s value after step ``k`` (not before it). Within edges come
from expert edits or ``recovery learn-graph``; those of one step form a DAG, and
a cycle is refused with the cycle named. At segment level they are edges
between the values at the segment's end (:attr:`Segment.within`): the model
holds them as a linear structural equation inside the segment,
``x_q = (I - W_q)^-1 (A_q x_{q-1} + u_q + w_q)``, so the step's noise, a shift
of one characteristic and an intervention on it all propagate along them.

Segment level
-------------
Between two inspections the state is hidden, and only what happens over the
whole *segment* can be learned from data. :meth:`CausalGraph.segments`
composes the step graph over each segment: which characteristics at the
segment's end depend on which at its start (the support of the carry-over
matrix), which levers reach which characteristics, which factories' drift
reaches them, and each catalogue fault's signature (the characteristics it
pushes, with signs) at the segment's end.

Expert edits
------------
Engineers add or remove step-level edges and set priors in a TOML file
(``examples/expert_edits.toml``; the format is in :mod:`recovery.causal.edits`).
Every edit is recorded in :attr:`CausalGraph.log` and printed by
``recovery fit``; an added edge keeps the old value's carry-over (it adds an
influence, it does not erase one). The model never drops an expert edge; when
the data contradict an expert prior, the fit report says so.

Module layout
-------------
This module holds the graph itself (:class:`Edge`, :class:`CausalGraph`, its
building and its words); :mod:`recovery.causal.edits` the edit file and its
checks, :mod:`recovery.causal.segments` the segment composition. Their public
names are re-exported here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from simulators.definition import Process
from simulators.kinds import KINDS
from recovery.causal._roles import _chars_of_role, _primary
from recovery.causal.edits import (EdgeRef, ExpertEditError, ExpertEdits, ExpertPrior,
                                   _refuse_within_cycles, find_cycle, load_edits, parse_edits)
from recovery.causal.segments import Segment, compose_segments

__all__ = [
    "Edge", "EdgeRef", "ExpertPrior", "ExpertEdits", "ExpertEditError", "Segment",
    "CausalGraph", "SETS", "load_edits", "find_cycle",
]

#: Roles a kind *sets*: the new value does not depend on the old one, so the
#: carry-over edge is cut. Other acted-on roles keep their carry-over edge.
SETS: dict[str, tuple[str, ...]] = {
    "forming": ("diameter", "ovality", "straightness", "yield_strength", "residual_stress",
                "coating_thickness", "roughness", "bend_angle", "length", "crack"),
    "heat_treatment": ("yield_strength", "residual_stress"),
    "grinding": ("roughness",),
    "bending": ("bend_angle",),
    "cutting": ("length",),
}

EdgeKind = Literal["carry", "reads", "lever", "within"]


@dataclass(frozen=True, slots=True)
class Edge:
    """A step-level causal edge ``source -> target`` at ``step``.

    Attributes
    ----------
    step : int
        1-based step at which the effect happens.
    source : str
        A characteristic (its value before the step; for a ``within`` edge, after
        it) or a lever of this step.
    target : str
        The characteristic after the step.
    kind : {"carry", "reads", "lever", "within"}
    origin : {"process", "expert"}
    reason : str
        Why (expert edges).
    """

    step: int
    source: str
    target: str
    kind: EdgeKind
    origin: str = "process"
    reason: str = ""


@dataclass(frozen=True)
class CausalGraph:
    """The process's causal graph with the engineers' edits applied.

    Build it with :meth:`from_process`; it is immutable.

    Attributes
    ----------
    process : Process
    acts : frozenset of (int, str)
        (step, characteristic) pairs where the step changes the characteristic.
    edges : tuple of Edge
    edits : ExpertEdits
    log : tuple of str
        One line per applied edit, for the fit report.
    """

    process: Process
    acts: frozenset
    edges: tuple[Edge, ...]
    edits: ExpertEdits = field(default_factory=ExpertEdits)
    log: tuple[str, ...] = ()

    # ---- construction ----------------------------------------------------
    @classmethod
    def from_process(cls, process: Process, edits: ExpertEdits | str | Path | None = None) -> "CausalGraph":
        """Derive the graph from the process definition and apply expert edits.

        Parameters
        ----------
        process : Process
        edits : ExpertEdits or path, optional

        Returns
        -------
        CausalGraph

        Raises
        ------
        ExpertEditError
            An edit names an unknown step, characteristic or lever, removes an
            edge the graph lacks, or adds one it has.

        Examples
        --------
        >>> from simulators.definition import load_process
        >>> g = CausalGraph.from_process(load_process("small"))
        >>> [e.source for e in g.parents(7, "yield_strength")]
        ['yield_strength', 'temper_temperature']
        """
        if edits is None:
            edits = ExpertEdits()
        elif not isinstance(edits, ExpertEdits):
            edits = load_edits(edits)
        acts: set[tuple[int, str]] = set()
        edges: list[Edge] = []
        for s in process.steps:
            spec = KINDS[s.kind]
            sets = set(SETS.get(s.kind, ()))
            targets = [c for role in spec.acts_on for c in _chars_of_role(process, role, s.target)]
            reads = [c for role in spec.needs[1:] for c in _chars_of_role(process, role, s.target)] \
                if len(spec.needs) > 1 else []
            primary = _primary(process, s)
            step_levers = [lv.name for lv in process.levers if lv.step == s.index]
            # a station lists what it makes (set afresh) and what it changes (carried)
            produced = set(s.produces)
            targets += list(s.produces) + list(s.acts_on)
            for c in dict.fromkeys(targets):
                acts.add((s.index, c))
                role = process.characteristic(c).role
                if role not in sets and c not in produced:
                    edges.append(Edge(s.index, c, c, "carry"))
                if c == primary:
                    for r in reads:
                        if r != c:
                            edges.append(Edge(s.index, r, c, "reads"))
                for lv in step_levers:
                    edges.append(Edge(s.index, lv, c, "lever"))
        # A characteristic of role "other" that nothing makes before its first gauge (a
        # partner's own measurement on a machining line) comes into being at the first
        # working step of the segment that first gauges it: set afresh there, with that
        # segment's own noise, so edges within that step can reach it too.
        start = 0
        for ins in process.inspections:
            for c in ins.measures:
                ch = process.characteristic(c)
                if ch.role == "other" and not any((k, c) in acts for k in range(1, ins.step + 1)):
                    first = next((k for k in range(start + 1, ins.step + 1)
                                  if process.step(k).kind != "inspection"), ins.step)
                    acts.add((first, c))
            start = ins.step
        g = cls(process, frozenset(acts), tuple(edges), edits)
        return g._apply(edits) if not edits.empty else g

    def _apply(self, edits: ExpertEdits) -> "CausalGraph":
        p = self.process
        acts = set(self.acts)
        edges = list(self.edges)
        log = []
        chars = set(p.char_index)
        levers = {lv.name: lv for lv in p.levers}

        def check(ref: EdgeRef) -> EdgeKind:
            if not 1 <= ref.step <= p.n_steps:
                raise ExpertEditError(f"{ref.where}: step {ref.step} is not a step of "
                                      f"'{p.name}' (1..{p.n_steps})")
            if ref.target not in chars:
                raise ExpertEditError(f"{ref.where}: unknown target characteristic '{ref.target}'; "
                                      f"known: {sorted(chars)}")
            if ref.source in levers:
                if levers[ref.source].step != ref.step:
                    raise ExpertEditError(f"{ref.where}: lever '{ref.source}' acts at step "
                                          f"{levers[ref.source].step}, not {ref.step}")
                return "lever"
            if ref.source not in chars:
                raise ExpertEditError(f"{ref.where}: unknown source '{ref.source}'; give a "
                                      f"characteristic or a lever of step {ref.step}")
            if ref.within or ref.source in p.step(ref.step).produces:
                if ref.source == ref.target:
                    raise ExpertEditError(f"{ref.where}: a within-step edge needs two different "
                                          f"characteristics, got {ref.source} -> {ref.target}")
                if (ref.step, ref.source) not in acts:
                    raise ExpertEditError(
                        f"{ref.where}: step {ref.step} does not make or change '{ref.source}', so "
                        f"it has no value after step {ref.step} of its own; drop 'within' to "
                        "read its value before the step")
                return "within"
            return "carry" if ref.source == ref.target else "reads"

        def find(ref: EdgeRef) -> int | None:
            kind = check(ref)
            for i, e in enumerate(edges):
                if (e.step, e.source, e.target) == (ref.step, ref.source, ref.target) \
                        and (e.kind == "within") == (kind == "within"):
                    return i
            return None

        for ref in edits.remove:
            check(ref)
            i = find(ref)
            if i is None:
                raise ExpertEditError(f"{ref.where}: the graph has no edge {ref.source} -> "
                                      f"{ref.target} at step {ref.step} to remove")
            edges.pop(i)
            log.append(f"removed {ref.source} -> {ref.target} at step {ref.step}"
                       + (f" ({ref.reason})" if ref.reason else ""))
        for ref in edits.add:
            kind = check(ref)
            if find(ref) is not None:
                raise ExpertEditError(f"{ref.where}: the graph already has {ref.source} -> "
                                      f"{ref.target} at step {ref.step}")
            if (ref.step, ref.target) not in acts:
                # An added influence does not erase the old value: keep its carry-over.
                acts.add((ref.step, ref.target))
                if kind != "carry":
                    edges.append(Edge(ref.step, ref.target, ref.target, "carry", "expert",
                                      "kept with the added edge"))
            edges.append(Edge(ref.step, ref.source, ref.target, kind, "expert", ref.reason))
            log.append(f"added {ref.source} -> {ref.target} at step {ref.step}"
                       + (f" ({ref.reason})" if ref.reason else ""))
        _refuse_within_cycles(p, edges, edits)
        g = CausalGraph(p, frozenset(acts), tuple(sorted(edges, key=lambda e: e.step)), edits, ())
        insp = set(p.inspection_steps)
        for pr in edits.priors:
            if pr.target not in chars:
                raise ExpertEditError(f"{pr.where}: unknown target characteristic '{pr.target}'")
            if pr.lever is not None:
                if pr.lever not in levers:
                    raise ExpertEditError(f"{pr.where}: unknown lever '{pr.lever}'")
                q = g.segment_of_step(levers[pr.lever].step)
                seg = g.segments()[q]
                ci, li = g.modeled_index.get(pr.target), p.lever_index[pr.lever]
                if ci is None or not seg.levers[ci, li]:
                    raise ExpertEditError(
                        f"{pr.where}: lever '{pr.lever}' does not reach '{pr.target}' by the next "
                        f"inspection in this graph; add the edge with [[add_edge]] first")
            else:
                if pr.source not in chars:
                    raise ExpertEditError(f"{pr.where}: unknown source characteristic '{pr.source}'")
                if pr.inspection not in insp:
                    raise ExpertEditError(f"{pr.where}: step {pr.inspection} is not an inspection; "
                                          f"inspections: {sorted(insp)}")
                seg = g.segments()[p.inspection_steps.index(pr.inspection)]
                ci, si = g.modeled_index.get(pr.target), g.modeled_index.get(pr.source)
                if ci is None or si is None or not seg.acted[ci] or not seg.carry[ci, si]:
                    raise ExpertEditError(
                        f"{pr.where}: in this graph '{pr.target}' at step {pr.inspection} does not "
                        f"depend on '{pr.source}' at the previous inspection through a learned "
                        f"coefficient; nothing to put a prior on")
            log.append(f"prior on {pr.label}: {pr.mean:g} +- {pr.sd:g}"
                       + (f" ({pr.reason})" if pr.reason else ""))
        return CausalGraph(p, g.acts, g.edges, edits, tuple(log))

    # ---- lookups ---------------------------------------------------------
    @property
    def modeled(self) -> tuple[str, ...]:
        """Characteristics in the linear-Gaussian state (all but ``crack``-role ones)."""
        return tuple(c.name for c in self.process.characteristics if c.role != "crack")

    @property
    def modeled_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.modeled)}

    @property
    def crack(self) -> tuple[str, ...]:
        """Characteristics with the 0/1 ``crack`` role (modelled apart)."""
        return tuple(c.name for c in self.process.characteristics if c.role == "crack")

    def parents(self, step: int, target: str) -> list[Edge]:
        """Edges into ``target`` at ``step`` (empty when the step leaves it alone)."""
        return [e for e in self.edges if e.step == step and e.target == target]

    def segment_of_step(self, step: int) -> int:
        """Index of the segment that contains ``step`` (1-based)."""
        for q, s in enumerate(self.process.inspection_steps):
            if step <= s:
                return q
        raise ValueError(f"step {step} lies after the last inspection")

    def segments(self) -> tuple[Segment, ...]:
        """The step graph composed over each segment between inspections, one
        per inspection, in order (:func:`recovery.causal.segments.compose_segments`,
        computed once per graph)."""
        cached = self.__dict__.get("_segments")
        if cached is not None:
            return cached
        result = compose_segments(self)
        # frozen, so set past __setattr__; the graph never changes, so neither do its segments
        object.__setattr__(self, "_segments", result)
        return result

    # ---- words -----------------------------------------------------------
    def describe_step(self, step: int) -> str:
        """``"step 12 austenitising (F03, Thermo)"``."""
        s = self.process.step(step)
        partner = next((pt.name or pt.id for pt in self.process.partners if pt.id == s.partner), s.partner)
        return f"step {step} {s.name} ({s.factory}, {partner})"

    def describe(self) -> str:
        """The graph in lines an engineer reads: what each step does to what."""
        lines = [f"causal graph of '{self.process.name}' ({self.process.n_steps} steps)"]
        for s in self.process.steps:
            targets = sorted({c for (k, c) in self.acts if k == s.index},
                             key=lambda c: self.process.char_index[c])
            if not targets:
                continue
            parts = []
            for c in targets:
                srcs = [e for e in self.parents(s.index, c)]
                carried = any(e.kind == "carry" for e in srcs)
                other = [e.source + (" (after the step)" if e.kind == "within" else "")
                         + ("*" if e.origin == "expert" else "") for e in srcs if e.kind != "carry"]
                verb = "changes" if carried else "sets"
                parts.append(f"{verb} {c}" + (f" from {', '.join(other)}" if other else ""))
            lines.append(f"  {self.describe_step(s.index)}: " + "; ".join(parts))
        if self.log:
            lines.append("expert edits (* above):")
            lines += [f"  {x}" for x in self.log]
        return "\n".join(lines)

    # ---- persistence -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (the model directory's ``graph.json``)."""
        return {
            "process": self.process.name,
            "process_digest": self.process.digest,
            "acts": sorted([list(a) for a in self.acts]),
            "edges": [asdict(e) for e in self.edges],
            "edits": {
                "source": self.edits.source,
                "add_edge": [asdict(r) for r in self.edits.add],
                "remove_edge": [asdict(r) for r in self.edits.remove],
                "prior": [asdict(r) for r in self.edits.priors],
            },
            "log": list(self.log),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], process: Process) -> "CausalGraph":
        """Inverse of :meth:`to_dict` (the edits are not re-applied: the edges are stored)."""
        if d.get("process_digest") != process.digest:
            raise ValueError(f"graph was built for process digest {d.get('process_digest')}, "
                             f"not {process.digest}")
        e = d["edits"]
        edits = ExpertEdits(tuple(EdgeRef(**r) for r in e["add_edge"]),
                            tuple(EdgeRef(**r) for r in e["remove_edge"]),
                            tuple(ExpertPrior(**r) for r in e["prior"]), e["source"])
        return cls(process, frozenset((int(a), str(c)) for a, c in d["acts"]),
                   tuple(Edge(**x) for x in d["edges"]), edits, tuple(d["log"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)
