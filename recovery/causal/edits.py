"""Expert edits of the causal graph: the edit file, its reading and its checks.

Engineers add or remove step-level edges of
:class:`~recovery.causal.graph.CausalGraph` and set priors in a TOML file
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

This module reads and checks the file on its own (:func:`load_edits`,
:func:`parse_edits`); names are checked against a process, and the edits
applied, by :meth:`CausalGraph.from_process <recovery.causal.graph.CausalGraph.from_process>`.
Within-step edges must stay acyclic (:func:`find_cycle`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from simulators.definition import Process
    from recovery.causal.graph import Edge

__all__ = ["EdgeRef", "ExpertPrior", "ExpertEdits", "ExpertEditError", "load_edits", "parse_edits",
           "find_cycle"]


class ExpertEditError(ValueError):
    """An expert edit file is malformed or names something the process lacks."""


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
