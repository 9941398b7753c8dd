"""Track record: the agent's recommendations against the engineers' decisions and
the batches' real outcomes, from the store alone.

For every batch and step that received a recommendation (the last one logged
before the decision), :func:`track_record` joins the engineer's final decision
(``accept``, ``reject`` or ``modify``; the one that superseded the others) and
the outcome of the final inspection once its readings are stored. The outcome
rule is the service's: a batch is *rejected* when a sample mean at the final
inspection lies outside its final band (the gate rule every inspection
applies), *accepted* otherwise.

A decision *follows* the agent when it is ``accept``, or ``modify`` with the
recommended plan (every lever within 1e-6 of it). The *counterfactual* P(accept)
of a batch is that of the plan that was not carried out, as the agent saw it
when it recommended: the doing-nothing P(accept) when the agent was followed
(logged with the recommendation since this report exists; None for older
ones), the recommended plan's when it was not.

Intervals are 94% Jeffreys intervals (Beta(k + 1/2, n - k + 1/2) quantiles);
the calibration table has the bins and keys of ``recovery evaluate``'s, each
bin with the binomial interval of its observed share.

Value per batch, in the process's currency: ``batch_value`` when accepted,
minus ``scrap_cost`` when rejected, minus the lever cost of the plan carried out
(:meth:`Process.lever_cost`). The baseline of doing nothing is its expectation
under the agent's doing-nothing P(accept); ``scrap_avoided`` is the number of
accepted batches minus the number doing nothing would have expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from recovery.status import final_outcomes

__all__ = ["TrackRecord", "track_record", "BATCH_COLUMNS", "INTERVAL"]

INTERVAL = 0.94
#: Columns of :attr:`TrackRecord.batches` (and of the export), in order.
BATCH_COLUMNS = ["process", "batch_id", "after_step", "recommended_at", "agent", "recommended",
                 "recommended_plan", "p_accept", "p_accept_do_nothing", "decision", "engineer",
                 "decided_at", "decision_plan", "followed", "outcome", "counterfactual_p_accept",
                 "net_value", "baseline_net_value"]
_BINS = ((0.0, 0.2), (0.2, 0.5), (0.5, 0.8), (0.8, 1.0 + 1e-9))


def _jeffreys(k: float, n: int) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    a = (1 - INTERVAL) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k + 0.5, n - k + 0.5))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 0.5, n - k + 0.5))
    return lo, hi


def _share(ok: np.ndarray) -> dict:
    """Recovered share with its interval; with no batch, 0 in [0, 1] (the contract's zeros)."""
    n, k = len(ok), int(np.sum(ok))
    if n == 0:
        return {"n": 0, "recovered": 0.0, "low": 0.0, "high": 1.0}
    lo, hi = _jeffreys(k, n)
    return {"n": n, "recovered": k / n, "low": lo, "high": hi}


def _calibration(p: np.ndarray, y: np.ndarray) -> dict | None:
    """Reliability table in ``recovery evaluate``'s shape, with binomial intervals."""
    if not len(p):
        return {"n": 0, "predicted": None, "observed": None, "brier": None, "bins": []}
    bins = []
    for lo, hi in _BINS:
        m = (p >= lo) & (p < hi)
        if m.any():
            blo, bhi = _jeffreys(int(y[m].sum()), int(m.sum()))
            bins.append({"low": lo, "high": min(hi, 1.0), "n": int(m.sum()), "predicted": float(p[m].mean()),
                         "observed": float(y[m].mean()), "observed_low": blo, "observed_high": bhi})
    return {"n": len(p), "predicted": float(p.mean()), "observed": float(y.mean()),
            "brier": float(np.mean((p - y) ** 2)), "bins": bins}


@dataclass(frozen=True)
class TrackRecord:
    """The report of :func:`track_record`; :meth:`to_dict` is the JSON contract.

    Attributes
    ----------
    batches : DataFrame
        One row per recommended (batch, step), columns :data:`BATCH_COLUMNS`.
    notes : tuple of str
        What the report could not join, in words.
    """

    batches: pd.DataFrame
    notes: tuple[str, ...] = field(default=())

    def to_dict(self, *, with_batches: bool = True) -> dict:
        b = self.batches
        dec = b[b["decision"].notna()]
        out = dec[dec["outcome"].notna()]
        acc = (out["outcome"] == "accepted").to_numpy()
        fol = out["followed"].astype(bool).to_numpy()
        has_p = out["followed"].astype(bool) & out["p_accept"].notna()
        cal = _calibration(out.loc[has_p, "p_accept"].to_numpy(float),
                           (out.loc[has_p, "outcome"] == "accepted").to_numpy(float))
        months = []
        if len(out):
            month = pd.to_datetime(out["decided_at"], utc=True).dt.strftime("%Y-%m")
            for mth, g in out.groupby(month, sort=True):
                base = g["baseline_net_value"]
                known = base.notna()
                pn = g["p_accept_do_nothing"].astype(float)
                months.append({
                    "month": str(mth), "n": int(len(g)),
                    "net_value": float(g["net_value"].sum()),
                    "baseline_net_value": float(base[known].sum()) if known.all() else None,
                    "scrap_avoided": float((g["outcome"] == "accepted").sum() - pn.sum())
                    if pn.notna().all() else None,
                })
        rep = {
            "n_recommendations": int(len(b)),
            "n_decisions": int(len(dec)),
            "n_outcomes": int(len(out)),
            "agreement": float(dec["followed"].astype(bool).mean()) if len(dec) else 0.0,
            "followed": _share(acc[fol]),
            "not_followed": _share(acc[~fol]),
            "calibration": cal,
            "by_month": months,
            "interval": INTERVAL,
            "notes": list(self.notes),
        }
        if with_batches:
            rows = b.astype(object).where(b.notna(), None)
            rep["batches"] = [{k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in r.items()}
                              for r in rows.to_dict("records")]
        return rep

    def export(self, path) -> None:
        """Write :attr:`batches` to ``path`` (``.csv`` or ``.parquet``; plans as JSON text)."""
        import json
        from pathlib import Path

        path = Path(path)
        df = self.batches.copy()
        for c in ("recommended_plan", "decision_plan"):
            df[c] = df[c].map(lambda d: None if d is None else json.dumps(d, sort_keys=True))
        if path.suffix == ".csv":
            df.to_csv(path, index=False)
        elif path.suffix == ".parquet":
            df.to_parquet(path, index=False)
        else:
            raise ValueError(f"{path}: expected a .csv or .parquet file name")


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in BATCH_COLUMNS})


def _p(expected, key: str) -> float | None:
    """A probability logged with a recommendation: a number or ``{"mean": ...}``."""
    v = (expected or {}).get(key) if isinstance(expected, dict) else None
    if isinstance(v, dict):
        v = v.get("mean")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _outcomes(store, process, batch_ids: list[str]) -> dict[str, str]:
    """batch -> ``accepted``/``rejected`` for batches whose final inspection is stored."""
    if not batch_ids:
        return {}
    return final_outcomes(process, store.read_steps(process=process.name, batch_ids=batch_ids))


def track_record(store, *, since: str | pd.Timestamp | None = None, visible=None,
                 partner: str | None = None) -> TrackRecord:
    """Join recommendations, final decisions and final-inspection outcomes.

    Parameters
    ----------
    store : Store
        An open store (:func:`recovery.data.store.open_store`).
    since : str or Timestamp, optional
        Only recommendations logged on or after this day (UTC, ``YYYY-MM-DD``).
    visible : callable ``(process_name, batch_ids) -> set of batch ids``, optional
        The batches the caller may read (the service's access rule); others are
        left out entirely. Default: every batch.
    partner : str, optional
        Shorthand for ``visible``: only batches this partner owns (has step data
        in, or was handed), by :meth:`Store.batch_owners`.

    Returns
    -------
    TrackRecord

    Examples
    --------
    >>> # with open_store(url) as st: track_record(st).to_dict()["agreement"]
    """
    notes: list[str] = []
    recs = store.recommendations()
    if since is not None:
        t0 = pd.Timestamp(since)
        t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
        if len(recs):
            recs = recs[recs["created_at"] >= t0]
    if partner is not None and visible is None:
        def visible(proc, ids):
            bo = store.batch_owners(proc, ids)
            return set(bo.loc[bo["partner"] == partner, "batch_id"].astype(str))
    if not len(recs):
        if visible is None:
            n_dec = len(store.decisions())
            notes.append(f"no recommendation logged{' in the window' if since is not None else ''}"
                         + (f" ({n_dec} decision(s) without one)" if n_dec else "") + ": nothing to join")
        return TrackRecord(_empty(), tuple(notes))
    recs = recs.assign(batch_id=recs["batch_id"].astype(str))
    # the service logs a recommendation each time a batch's answer is recomputed: keep the last
    recs = recs.sort_values("id").groupby(["process", "batch_id", "after_step"], as_index=False).last()
    rows = []
    for proc_name, rp in recs.groupby("process", sort=True):
        ids = sorted(rp["batch_id"].unique())
        if visible is not None:
            seen = visible(proc_name, ids)
            rp = rp[rp["batch_id"].isin(seen)]
            ids = [b for b in ids if b in seen]
            if not ids:
                continue
        try:
            process = store.process(proc_name)
        except Exception as exc:  # noqa: BLE001 - an unknown process is reported, not fatal
            notes.append(f"process '{proc_name}' of {len(rp)} recommendation(s) is not in the store "
                         f"({exc}); their outcomes cannot be read")
            process = None
        dmap = _final_decisions(store, proc_name, ids)
        outcome = _outcomes(store, process, ids) if process is not None else {}
        for r in rp.itertuples(index=False):
            d = dmap.get((r.batch_id, int(r.after_step)))
            out = outcome.get(r.batch_id) if d is not None else None
            rows.append(_batch_row(proc_name, r, d, out, process))
    if not rows:
        return TrackRecord(_empty(), tuple(notes))
    df = pd.DataFrame(rows, columns=BATCH_COLUMNS)
    n_dec = int(df["decision"].notna().sum())
    if n_dec == 0:
        notes.append("recommendations without decisions: agreement and recovery need decisions")
    else:
        pending = int((df["decision"].notna() & df["outcome"].isna()).sum())
        if pending:
            notes.append(f"{pending} decided batch(es) without final-inspection step data yet: "
                         "left out of recovery, calibration and value")
    return TrackRecord(df, tuple(notes))


def _final_decisions(store, proc_name: str, ids: list[str]) -> dict:
    """The final decision row of each ``(batch_id, after_step)`` among the batches ``ids``."""
    heads = store.final_decisions(proc_name, ids)
    dec = store.decisions()
    if len(dec):
        dec = dec.assign(batch_id=dec["batch_id"].astype(str))
        dec = dec[dec["id"].isin(heads["decision_id"])] if len(heads) else dec.iloc[:0]
    dec = dec.merge(heads[["decision_id", "after_step"]], left_on="id", right_on="decision_id") \
        if len(dec) else None
    dmap = {}
    if dec is not None:
        for r in dec.itertuples(index=False):
            dmap[(r.batch_id, int(r.after_step))] = r
    return dmap


def _batch_row(proc_name: str, r, d, out: str | None, process) -> dict:
    """One row of the batch table: recommendation ``r``, its final decision ``d`` (or
    None) and the final-inspection outcome ``out`` (or None), with the values they give
    (currency: the process file's; ``process`` is None when it is not in the store)."""
    levers = {lv.name: lv for lv in process.levers} if process is not None else {}
    nominal = {lv.name: lv.nominal for lv in levers.values()}
    eco = process.economics if process is not None else None
    p_acc, p_none = _p(r.expected, "p_accept"), _p(r.expected, "p_accept_do_nothing")
    rec_dec = (r.expected or {}).get("decision") if isinstance(r.expected, dict) else None
    plan = r.plan or {}
    followed = None
    if d is not None:
        dplan = d.plan or {}
        followed = d.decision == "accept" or (d.decision == "modify" and set(dplan) >= set(plan) and all(
            abs(float(dplan[k]) - float(v)) <= 1e-6 for k, v in plan.items()))
    net = base = cf = None
    if d is not None:
        cf = p_none if followed else p_acc
    if out is not None and eco is not None:
        done = d.plan if d.decision in ("accept", "modify") and d.plan else {}
        if d.decision == "accept" and not done:
            done = plan
        cost = 0.0
        if done and levers:
            known = {k: v for k, v in done.items() if k in levers}
            vec = np.array([known.get(k, nominal[k]) for k in levers])
            cost = float(process.lever_cost(vec))
        net = (eco.batch_value if out == "accepted" else -eco.scrap_cost) - cost
        if p_none is not None:
            base = p_none * eco.batch_value - (1 - p_none) * eco.scrap_cost
    return {
        "process": proc_name, "batch_id": r.batch_id, "after_step": int(r.after_step),
        "recommended_at": r.created_at, "agent": r.agent, "recommended": rec_dec,
        "recommended_plan": plan, "p_accept": p_acc, "p_accept_do_nothing": p_none,
        "decision": None if d is None else d.decision, "engineer": None if d is None else d.engineer,
        "decided_at": None if d is None else d.decided_at,
        "decision_plan": None if d is None else d.plan, "followed": followed, "outcome": out,
        "counterfactual_p_accept": cf, "net_value": net, "baseline_net_value": base,
    }
