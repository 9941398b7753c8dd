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
(``examples/expert_edits.toml``)::

    [[remove_edge]]
    step = 18
    source = "temper2_temperature"
    target = "residual_stress"
    reason = "the temper lever does not change stress relaxation"

    [[add_edge]]
    step = 17
    source = "yield_strength"
    target = "straightness"
    reason = "harder bars spring back more in the straightener"

    [[add_edge]]           # within a step: s2_b after step 3 depends on s2_a after step 3
    step = 3
    source = "s2_a"
    target = "s2_b"
    within = true          # implied when step 3 produces s2_a

    [[prior]]
    lever = "temper2_temperature"
    target = "yield_strength"
    mean = -1.2          # MPa per degC, slope at the lever's nominal value
    sd = 0.6

    [[prior]]
    source = "yield_strength"
    target = "bend_angle_1"
    inspection = 35      # carry-over coefficient of the segment ending there
    mean = -0.005        # deg per MPa
    sd = 0.003

Every edit is recorded in :attr:`CausalGraph.log` and printed by
``recovery fit``; an added edge keeps the old value's carry-over (it adds an
influence, it does not erase one). The model never drops an expert edge; when
the data contradict an expert prior, the fit report says so.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from simulators.definition import Process
from simulators.kinds import KINDS

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


class ExpertEditError(ValueError):
    """An expert edit file is malformed or names something the process lacks."""


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


@dataclass(frozen=True, slots=True)
class EdgeRef:
    """An edge named in an edit file, with its file location for errors.

    ``within``: the source's value *after* the step (an edge inside the step);
    also implied when the step produces the source.
    """

    step: int
    source: str
    target: str
    reason: str = ""
    where: str = ""
    within: bool = False


@dataclass(frozen=True, slots=True)
class ExpertPrior:
    """A prior an engineer sets on one mechanism parameter.

    Two parameters can carry expert priors:

    - a **lever slope** (``lever`` set): the lever's effect on ``target`` at
      the next inspection, per lever unit, at the lever's nominal value, in
      ``target`` units per lever unit;
    - a **carry-over coefficient** (``source`` and ``inspection`` set): how much
      of a deviation of ``source`` at the previous inspection reaches
      ``target`` at ``inspection``, in ``target`` units per ``source`` unit.

    Attributes
    ----------
    target : str
    mean, sd : float
        Normal prior, in the units above.
    lever : str or None
    source : str or None
    inspection : int or None
    reason : str
    where : str
        Location in the edit file (for messages).
    """

    target: str
    mean: float
    sd: float
    lever: str | None = None
    source: str | None = None
    inspection: int | None = None
    reason: str = ""
    where: str = ""

    @property
    def label(self) -> str:
        if self.lever is not None:
            return f"lever slope {self.lever} -> {self.target}"
        return f"carry-over {self.source} -> {self.target} (segment ending at step {self.inspection})"


@dataclass(frozen=True)
class ExpertEdits:
    """The content of an expert edit file."""

    add: tuple[EdgeRef, ...] = ()
    remove: tuple[EdgeRef, ...] = ()
    priors: tuple[ExpertPrior, ...] = ()
    source: str = ""

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove or self.priors)


def load_edits(path: str | Path) -> ExpertEdits:
    """Read an expert edit file (TOML: ``[[add_edge]]``, ``[[remove_edge]]``, ``[[prior]]``).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ExpertEdits

    Raises
    ------
    ExpertEditError
        The file is missing, not TOML, or an entry lacks a field; the message
        names the file and the entry. Names are checked against a process by
        :meth:`CausalGraph.from_process`.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ExpertEditError(f"{path}: no such edit file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ExpertEditError(f"{path}: cannot read: {exc}") from None
    return parse_edits(doc, str(path))


def parse_edits(doc: dict[str, Any], label: str = "<edits>") -> ExpertEdits:
    """Build :class:`ExpertEdits` from a parsed TOML document; see :func:`load_edits`."""
    unknown = sorted(set(doc) - {"add_edge", "remove_edge", "prior"})
    if unknown:
        raise ExpertEditError(f"{label}: unknown table(s) {unknown}; allowed: "
                              "[[add_edge]], [[remove_edge]], [[prior]]")

    def field_(t: dict, where: str, key: str, typ: type, default: Any = ...) -> Any:
        if key not in t:
            if default is ...:
                raise ExpertEditError(f"{label}: {where}: missing required field '{key}'")
            return default
        v = t[key]
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, typ) or isinstance(v, bool):
            raise ExpertEditError(f"{label}: {where}: field '{key}' must be {typ.__name__}, got {v!r}")
        return v

    def refs(key: str) -> tuple[EdgeRef, ...]:
        out = []
        for i, t in enumerate(doc.get(key, [])):
            where = f"{key}[{i}]"
            if not isinstance(t, dict):
                raise ExpertEditError(f"{label}: {where}: expected a table")
            extra = sorted(set(t) - {"step", "source", "target", "reason", "within"})
            if extra:
                raise ExpertEditError(f"{label}: {where}: unknown field(s) {extra}")
            within = t.get("within", False)
            if not isinstance(within, bool):
                raise ExpertEditError(f"{label}: {where}: field 'within' must be true or false, "
                                      f"got {within!r}")
            out.append(EdgeRef(field_(t, where, "step", int), field_(t, where, "source", str),
                               field_(t, where, "target", str), field_(t, where, "reason", str, ""),
                               f"{label}: {where}", within))
        return tuple(out)

    priors = []
    for i, t in enumerate(doc.get("prior", [])):
        where = f"prior[{i}]"
        if not isinstance(t, dict):
            raise ExpertEditError(f"{label}: {where}: expected a table")
        extra = sorted(set(t) - {"lever", "source", "target", "inspection", "mean", "sd", "reason"})
        if extra:
            raise ExpertEditError(f"{label}: {where}: unknown field(s) {extra}")
        pr = ExpertPrior(field_(t, where, "target", str), field_(t, where, "mean", float),
                         field_(t, where, "sd", float), field_(t, where, "lever", str, None),
                         field_(t, where, "source", str, None), field_(t, where, "inspection", int, None),
                         field_(t, where, "reason", str, ""), f"{label}: {where}")
        if (pr.lever is None) == (pr.source is None):
            raise ExpertEditError(f"{label}: {where}: give either 'lever' (a lever slope) or "
                                  "'source' and 'inspection' (a carry-over coefficient)")
        if pr.source is not None and pr.inspection is None:
            raise ExpertEditError(f"{label}: {where}: a carry-over prior needs 'inspection'")
        if not pr.sd > 0 or not np.isfinite(pr.mean):
            raise ExpertEditError(f"{label}: {where}: need a finite mean and sd > 0")
        priors.append(pr)
    return ExpertEdits(refs("add_edge"), refs("remove_edge"), tuple(priors), label)


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
        """Compose the step graph over each segment between inspections.

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
        cached = self.__dict__.get("_segments")
        if cached is not None:
            return cached
        p = self.process
        if not p.inspections or p.inspection_steps[-1] != p.n_steps:
            raise ValueError(f"process '{p.name}': the causal model needs an inspection at the "
                             f"last step ({p.n_steps}); the steps after the last gauge cannot be learned")
        mod = self.modeled
        mi = self.modeled_index
        d, nl, nf = len(mod), len(p.levers), len(p.factories)
        fidx = {f.id: i for i, f in enumerate(p.factories)}
        by_step: dict[int, list[Edge]] = {}
        for e in self.edges:
            by_step.setdefault(e.step, []).append(e)
        out = []
        start = 0
        for q, end in enumerate(p.inspection_steps):
            # reach[c]: start characteristics the value of c depends on; same for
            # levers, factory drift and fault sources (fault index -> sign).
            dep = {c: {c} for c in mod}
            lev: dict[str, set[int]] = {c: set() for c in mod}
            dri: dict[str, set[int]] = {c: set() for c in mod}
            flt: dict[str, dict[int, int]] = {c: {} for c in mod}
            acted = set()
            within = np.zeros((d, d), dtype=bool)
            faults_here = [i for i, f in enumerate(p.faults) if start < f.step <= end]
            for k in range(start + 1, end + 1):
                s = p.step(k)
                incoming = by_step.get(k, [])
                new_dep, new_lev, new_dri, new_flt = {}, {}, {}, {}
                for c in mod:
                    if (k, c) not in self.acts:
                        continue
                    acted.add(c)
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
                                within[mi[c], mi[e.source]] = True
                        elif e.source in mi:
                            nd |= dep[e.source]
                            nlv |= lev[e.source]
                            ndr |= dri[e.source]
                            # A fault's signature follows carry-over only: what it does
                            # through another characteristic's reads is second order.
                            if e.kind == "carry":
                                for fi, sg in flt[e.source].items():
                                    nfl[fi] = _merge_sign(nfl.get(fi), sg)
                    if c in _noise_targets(p, s) and KINDS[s.kind].params and s.params.get("batch_sigma", 0) > 0:
                        ndr.add(fidx[s.factory])
                    new_dep[c], new_lev[c], new_dri[c], new_flt[c] = nd, nlv, ndr, nfl
                dep.update(new_dep)
                lev.update(new_lev)
                dri.update(new_dri)
                flt.update(new_flt)
                for fi in faults_here:
                    f = p.faults[fi]
                    if f.step != k:
                        continue
                    for role, sign in KINDS[s.kind].fault_effects.items():
                        for c in _chars_of_role(p, role, s.target):
                            if c in mi:
                                flt[c][fi] = _merge_sign(flt[c].get(fi), sign)
            acted_v = np.array([c in acted for c in mod])
            carry = np.zeros((d, d), dtype=bool)
            levers = np.zeros((d, nl), dtype=bool)
            drift = np.zeros((nf, d), dtype=bool)
            for c in mod:
                i = mi[c]
                if not acted_v[i]:
                    carry[i, i] = True
                    continue
                for c2 in dep[c]:
                    carry[i, mi[c2]] = True
                for j in lev[c]:
                    levers[i, j] = True
                for fi in dri[c]:
                    drift[fi, i] = True
            sigs = []
            for fi in faults_here:
                sig = {c: flt[c][fi] for c in mod if fi in flt[c]}
                for role in KINDS[p.step(p.faults[fi].step).kind].fault_effects:
                    for c in _chars_of_role(p, role, p.step(p.faults[fi].step).target):
                        if c not in mi:
                            sig[c] = 1  # crack: a fault can only add cracks
                sigs.append(sig)
            out.append(Segment(q, start, end, acted_v, carry, levers, drift, tuple(faults_here),
                               tuple(sigs), within))
            start = end
        # A characteristic that no step kind acts on before it is first gauged (role
        # "other": a partner's own measurement) would have no noise at all, and with
        # one bar per batch and a perfect gauge a zero covariance. It comes into
        # being in the segment that first gauges it: that segment sets it afresh
        # (no carry-over), with its own batch-level noise learned from the data.
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
        result = tuple(out)
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


def _chars_of_role(process: Process, role: str, target: str | None) -> list[str]:
    """Characteristics a kind's role refers to at a step (as the kernel resolves them)."""
    if role == "bend_angle" and target is not None:
        return [target]
    for c in process.characteristics:
        if c.role == role and role != "other":
            return [c.name]
    return []


def _primary(process: Process, step) -> str | None:
    """The characteristic a step's batch-level noise (and factory drift) acts on."""
    spec = KINDS[step.kind]
    roles = spec.needs or spec.acts_on
    if not roles:
        return None
    chars = _chars_of_role(process, roles[0], step.target)
    return chars[0] if chars else None


#: Roles a kind's batch-level noise (and so its factory's drift) reaches besides its
#: primary characteristic: plating's noise scales the deposit, which sets the coating
#: and, through it, the diameter (``simulators/_kernels.py``, PLATING).
_NOISE_ALSO: dict[str, tuple[str, ...]] = {"plating": ("diameter",)}


def _noise_targets(process: Process, step) -> list[str]:
    """The characteristics a step's batch-level noise (and factory drift) shifts."""
    out = [c for c in [_primary(process, step)] if c is not None]
    for role in _NOISE_ALSO.get(step.kind, ()):
        out += [c for c in _chars_of_role(process, role, step.target) if c not in out]
    return out


def _merge_sign(old: int | None, new: int) -> int:
    if old is None or old == new:
        return new
    return 0


def find_cycle(pairs) -> list[str] | None:
    """A directed cycle among ``(source, target)`` pairs, as ``[a, b, ..., a]``, or None.

    Examples
    --------
    >>> find_cycle([("a", "b"), ("b", "c"), ("c", "a")])
    ['a', 'b', 'c', 'a']
    >>> find_cycle([("a", "b"), ("a", "c")]) is None
    True
    """
    children: dict[str, list[str]] = {}
    for a, b in pairs:
        children.setdefault(a, []).append(b)
    state: dict[str, int] = {}       # 1 on the current path, 2 done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in children.get(v, ()):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        state[v] = 2
        path.pop()
        return None

    for v in list(children):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def _refuse_within_cycles(p: Process, edges: list[Edge], edits: ExpertEdits) -> None:
    """Within edges must form a DAG in each step and in each segment (they are
    solved as one linear system at the segment's end)."""
    within = [e for e in edges if e.kind == "within"]
    if not within:
        return
    where = {(r.step, r.source, r.target): r.where for r in edits.add}
    for k in sorted({e.step for e in within}):
        cyc = find_cycle([(e.source, e.target) for e in within if e.step == k])
        if cyc:
            refs = sorted({where.get((k, a, b), "") for a, b in zip(cyc, cyc[1:])} - {""})
            raise ExpertEditError(f"{edits.source}: cycle within step {k}: {' -> '.join(cyc)}"
                                  + (f" (edges {', '.join(refs)})" if refs else ""))
    start = 0
    for end in p.inspection_steps:
        cyc = find_cycle([(e.source, e.target) for e in within if start < e.step <= end])
        if cyc:
            raise ExpertEditError(f"{edits.source}: cycle within the segment of steps {start + 1}.."
                                  f"{end} (within-step edges of several steps): {' -> '.join(cyc)}")
        start = end
