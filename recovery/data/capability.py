"""Process capability from the store: Cp/Cpk per stage, parts out of spec, genealogy relations.

Definitions (all figures in the characteristic's process unit):

* ``Cp = (USL - LSL) / (6 s_w)`` and ``Cpk = min(USL - mean, mean - LSL) / (3 s_w)``
  with ``s_w`` the short-term (within) standard deviation. Partner files carry
  no rational subgroups, so the measurements are treated as individuals in
  production order (timestamp, then the order stored) and ``s_w = MR / 1.128``,
  the mean moving range of consecutive measurements over d2 for n = 2 (the
  individuals-chart estimate, AIAG SPC manual).
* ``Pp`` and ``Ppk``: the same with the overall sample standard deviation ``s``
  (ddof 1), the long-term indices. ``Cpk`` well above ``Ppk`` says the process
  drifts or shifts between parts more than it varies from one part to the next.
* Specification limits are the process's final band of the characteristic.
  A characteristic that any ingest's mapping marked ``specified = false`` has
  no specification in its source; its band is only a plausibility band, and
  no Cp/Cpk or out-of-spec count is reported for it.
* A part is out of spec when one of its measurements lies outside its limits.
* Genealogy relations: for every stored link from a parent step to a child
  step, each numeric variable measured on the parent (measurements and events)
  is correlated with each measurement on the linked child (Pearson r with its
  two-sided p-value, and Spearman rho), over the linked parts that have both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from recovery.data.store import Store
from simulators.definition import Process

__all__ = ["StageCapability", "Relation", "QualityReport", "quality_report", "capability_table"]


@dataclass(frozen=True)
class StageCapability:
    """Capability of one characteristic at the step that measures it.

    Attributes
    ----------
    step : int
        Step of the measurements.
    stage : str
        The step's name.
    variable, unit : str
    n : int
        Measurements.
    mean, std, min, max : float
        In ``unit``; ``std`` overall, with ddof 1.
    std_within : float
        Moving-range estimate ``MR / 1.128`` (NaN with fewer than 2 measurements).
    specified : bool
        Whether the source gives specification limits.
    lower, upper : float or None
        Specification limits (None when not specified).
    cp, cpk : float or None
        Short-term indices (``std_within``); None when not specified or it is 0.
    pp, ppk : float or None
        Long-term indices (``std``); None when not specified or it is 0.
    out_of_spec : int or None
        Measurements outside the limits.
    """

    step: int
    stage: str
    variable: str
    unit: str
    n: int
    mean: float
    std: float
    min: float
    max: float
    specified: bool
    lower: float | None
    upper: float | None
    cp: float | None
    cpk: float | None
    out_of_spec: int | None
    std_within: float = float("nan")
    pp: float | None = None
    ppk: float | None = None


@dataclass(frozen=True)
class Relation:
    """Correlation of a parent-step variable with a linked child-step measurement."""

    parent_step: int
    parent_variable: str
    child_step: int
    child_variable: str
    n: int
    pearson_r: float
    p_value: float
    spearman_rho: float


@dataclass(frozen=True)
class QualityReport:
    """What :func:`quality_report` finds for one process.

    Attributes
    ----------
    process : str
    capability : tuple of StageCapability
        One per measured characteristic, in step order.
    out_of_spec : DataFrame
        ``batch_id, bar_id, step, variable, value, unit, lower, upper, side``
        (``side`` is ``low`` or ``high``), one row per measurement out of spec.
    links : DataFrame
        Per (parent_step, child_step): ``parents`` stored at the parent step,
        ``linked`` children, ``unlinked_parents`` without a child record.
    relations : tuple of Relation
        Sorted by ``|pearson_r|``, strongest first.
    """

    process: str
    capability: tuple[StageCapability, ...]
    out_of_spec: pd.DataFrame
    links: pd.DataFrame
    relations: tuple[Relation, ...]

    def to_json(self) -> dict:
        """Plain JSON-able dict (NaN -> None)."""
        def clean(d):
            return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}

        oos = self.out_of_spec.astype(object).where(self.out_of_spec.notna(), None)
        return {
            "process": self.process,
            "capability": [clean(asdict(c)) for c in self.capability],
            "out_of_spec": [clean(r) for r in oos.to_dict("records")],
            "links": self.links.to_dict("records"),
            "relations": [clean(asdict(r)) for r in self.relations],
        }


def _specified(store: Store, process: str) -> dict[str, bool]:
    v = store.read_variables(process=process)
    if not len(v):
        return {}
    return v.groupby("variable")["specified"].all().to_dict()


def capability_table(steps: pd.DataFrame, process: Process,
                     specified: dict[str, bool] | None = None) -> tuple[StageCapability, ...]:
    """Cp/Cpk of every measured characteristic in a step-data table.

    Parameters
    ----------
    steps : DataFrame
        Step data in the schema (``simulators.schema``).
    process : Process
        Gives the specification limits (final bands) and step names.
    specified : dict, optional
        ``variable -> bool``; False means the source gives no limits.
        Missing variables count as specified.

    Returns
    -------
    tuple of StageCapability

    Examples
    --------
    >>> from simulators.process import Simulator
    >>> sim = Simulator("small")
    >>> caps = capability_table(sim.simulate(20, seed=1).observations, sim.process)
    >>> sorted({c.step for c in caps})
    [3, 6, 12]
    """
    specified = specified or {}
    m = steps[steps["kind"] == "measurement"]
    out = []
    for (step, var), g in m.groupby(["step", "variable"], sort=True):
        if "timestamp" in g:     # production order; stable, so untimed rows keep the stored order
            g = g.sort_values("timestamp", kind="stable", na_position="last")
        x = g["value"].to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        if not len(x) or var not in process.char_index:
            continue
        ch = process.characteristic(var)
        spec = specified.get(var, True)
        mean = float(x.mean())
        std = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
        std_w = float(np.abs(np.diff(x)).mean() / D2_MOVING_RANGE) if len(x) > 1 else float("nan")
        cp, cpk = _indices(ch, mean, std_w) if spec else (None, None)
        pp, ppk = _indices(ch, mean, std) if spec else (None, None)
        oos = int(((x < ch.lower) | (x > ch.upper)).sum()) if spec else None
        out.append(StageCapability(
            step=int(step), stage=process.step(int(step)).name, variable=str(var), unit=ch.unit,
            n=len(x), mean=mean, std=std, min=float(x.min()), max=float(x.max()), specified=spec,
            lower=ch.lower if spec else None, upper=ch.upper if spec else None, cp=cp, cpk=cpk,
            out_of_spec=oos, std_within=std_w, pp=pp, ppk=ppk))
    return tuple(out)


D2_MOVING_RANGE = 1.128   # d2 for subgroups of 2: E[|X1 - X2|] = 1.128 sigma


def _indices(ch, mean: float, sd: float) -> tuple[float | None, float | None]:
    """(USL - LSL) / 6 sd and min(USL - mean, mean - LSL) / 3 sd; None when sd is not positive."""
    if not (np.isfinite(sd) and sd > 0):
        return None, None
    return (ch.upper - ch.lower) / (6 * sd), min(ch.upper - mean, mean - ch.lower) / (3 * sd)


def quality_report(store: Store, *, process: str | None = None,
                   partner: str | None = None) -> QualityReport:
    """Capability, parts out of spec and genealogy relations of one stored process.

    Parameters
    ----------
    store : Store
    process : str, optional
        Process name; may be omitted when the store holds one process.
    partner : str, optional
        Only this partner's rows.

    Returns
    -------
    QualityReport
    """
    from scipy import stats

    names = store.process_names()
    if process is None:
        if len(names) != 1:
            raise ValueError(f"store {store.location} holds processes {names}; name one")
        process = names[0]
    proc = store.process(process)
    steps = store.read_steps(process=process, partner=partner)
    spec = _specified(store, process)
    caps = capability_table(steps, proc, spec)

    m = steps[steps["kind"] == "measurement"]
    lo = m["variable"].map({c.name: c.lower for c in proc.characteristics})
    hi = m["variable"].map({c.name: c.upper for c in proc.characteristics})
    is_spec = m["variable"].map(lambda v: spec.get(v, True)).astype(bool)
    out = is_spec & ((m["value"] < lo) | (m["value"] > hi))
    oos = m.loc[out, ["batch_id", "bar_id", "step", "variable", "value", "unit"]].copy()
    oos["lower"], oos["upper"] = lo[out], hi[out]
    oos["side"] = np.where(oos["value"] < oos["lower"], "low", "high")
    oos = oos.sort_values(["step", "variable", "batch_id", "bar_id"], ignore_index=True)

    links = store.read_links(process=process, partner=partner)
    rel: list[Relation] = []
    link_rows = []
    numeric = steps[steps["kind"].isin(["measurement", "event"])]
    for (ps, cs), lk in links.groupby(["parent_step", "child_step"]):
        parents = steps[(steps["step"] == ps)][["batch_id", "bar_id"]].drop_duplicates()
        lk = lk.drop_duplicates(["parent_batch", "parent_bar", "child_batch", "child_bar"])
        link_rows.append({"parent_step": int(ps), "child_step": int(cs), "parents": len(parents),
                          "linked": len(lk), "unlinked_parents": len(parents) - len(
                              lk[["parent_batch", "parent_bar"]].drop_duplicates())})
        pv = _wide(numeric[numeric["step"] == ps])
        cv = _wide(m[m["step"] == cs])
        j = (lk.rename(columns={"parent_batch": "pb", "parent_bar": "pbar",
                                "child_batch": "cb", "child_bar": "cbar"})
             .merge(pv, left_on=["pb", "pbar"], right_index=True)
             .merge(cv, left_on=["cb", "cbar"], right_index=True, suffixes=("@p", "@c")))
        for a in pv.columns:
            for b in cv.columns:
                ca = f"{a}@p" if a in cv.columns else a
                cb = f"{b}@c" if b in pv.columns else b
                xy = j[[ca, cb]].dropna()
                if len(xy) < 3 or xy[ca].nunique() < 2 or xy[cb].nunique() < 2:
                    continue
                r, p = stats.pearsonr(xy[ca], xy[cb])
                rho = stats.spearmanr(xy[ca], xy[cb]).statistic
                rel.append(Relation(int(ps), a, int(cs), b, len(xy), float(r), float(p), float(rho)))
    rel.sort(key=lambda r: -abs(r.pearson_r))
    return QualityReport(process=process, capability=caps, out_of_spec=oos,
                         links=pd.DataFrame(link_rows, columns=["parent_step", "child_step", "parents",
                                                                "linked", "unlinked_parents"]),
                         relations=tuple(rel))


def _wide(df: pd.DataFrame) -> pd.DataFrame:
    """Long rows of one step -> one row per part, one column per variable (first value wins)."""
    if not len(df):
        return pd.DataFrame()
    w = df.pivot_table(index=["batch_id", "bar_id"], columns="variable", values="value",
                       aggfunc="first", dropna=False, observed=True)
    w.columns = [str(c) for c in w.columns]
    return w
