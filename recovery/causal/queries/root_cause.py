"""The root-cause query: where the batch's deviation began (:func:`root_cause`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recovery.causal.likelihood import noise_covariance
from recovery.causal.queries._batch import (BatchView, _batch_out_of_range, _draws, _injection, _obs_var,
                                           _plan_effective, view)
from recovery.causal.queries.predict import _forecast

if TYPE_CHECKING:  # the model imports the queries, never the other way round at run time
    from recovery.causal.model import CausalModel

__all__ = ["Cause", "StepCause", "RootCause", "root_cause"]


@dataclass(frozen=True)
class Cause:
    """One hypothesis about where a batch's deviation began.

    Attributes
    ----------
    step : int
        The fault's step, or for an unexplained deviation the first step of
        the segment that acts on the characteristic.
    cause : str
        A fault type of the catalogue, or a characteristic name.
    cause_type : {"fault", "characteristic"}
        What ``cause`` names.
    probability : float
        Posterior probability, given that the batch deviates.
    path : str
        The causal path from the cause to the flag and to the final bands, in words.
    """

    step: int
    cause: str
    cause_type: str
    probability: float
    path: str

    def to_dict(self) -> dict:
        return {"step": self.step, "cause": self.cause, "probability": self.probability, "path": self.path}


@dataclass(frozen=True)
class StepCause:
    """The probability that a step's own contribution is what is out of the
    ordinary for this batch: the sum of its causes' probabilities (its faults,
    and the characteristics it makes or changes deviating there). A deviation
    that reaches other characteristics along the graph's edges counts for the
    step where it began, not where it was seen.

    Attributes
    ----------
    step : int
    name : str
    probability : float
    """

    step: int
    name: str
    probability: float

    def to_dict(self) -> dict:
        return {"step": self.step, "name": self.name, "probability": self.probability}


@dataclass(frozen=True)
class RootCause:
    """Posterior over the origin of a batch's deviation.

    Attributes
    ----------
    batch_id : str
    step : int
        Inspection the diagnosis is made at (the first that flags the batch,
        else the last in the history).
    flagged : bool
    causes : tuple[Cause, ...]
        Sorted by probability, highest first.
    p_deviation : float
        Posterior probability that the batch deviates at all (versus ordinary variation).
    out_of_range : bool
    reasons : tuple[str, ...]
    note : str
        Why ``causes`` is empty when there is nothing to weigh (no hypotheses),
        else empty.
    steps : tuple[StepCause, ...]
        The causes summed per step, highest first: which step's own
        contribution is out of the ordinary (all causes, whatever ``top``).
    """

    batch_id: str
    step: int
    flagged: bool
    causes: tuple
    p_deviation: float
    out_of_range: bool
    reasons: tuple[str, ...] = ()
    note: str = ""
    steps: tuple = ()


@dataclass(frozen=True)
class _Hyp:
    seg: int
    step: int
    cause: str
    cause_type: str
    chars: tuple[int, ...]       # modelled characteristics the shift moves
    signs: tuple[int, ...]       # +1, -1, 0
    crack: bool                  # it may crack bars
    log_prior: float


def _hypotheses(model: CausalModel, qf: int, unexplained_rate: float) -> list[_Hyp]:
    p, g = model.graph_.process, model.graph_
    segs = g.segments()
    mi = g.modeled_index
    rel = model.layout_.relevant
    out = []
    for r in range(qf + 1):
        seg = segs[r]
        for fi, sig in zip(seg.faults, seg.signatures):
            f = p.faults[fi]
            chars = tuple(mi[c] for c in sig if c in mi and rel[r, mi[c]])
            signs = tuple(sig[g.modeled[c]] for c in chars)
            crack = any(c not in mi for c in sig)
            out.append(_Hyp(r, f.step, f.name, "fault", chars, signs, crack, math.log(max(f.rate, 1e-6))))
        for c in np.flatnonzero(seg.acted & rel[r]):
            # a characteristic no step kind acts on comes into being in the segment
            # that first gauges it (CausalGraph.segments): name its first working step
            first = next((k for k in seg.steps if (k, g.modeled[c]) in g.acts),
                         next((k for k in seg.steps if p.step(k).kind != "inspection"), seg.steps[0]))
            out.append(_Hyp(r, first, g.modeled[c], "characteristic", (int(c),), (0,), False,
                            math.log(unexplained_rate)))
        for name in g.crack:
            if any((k, name) in g.acts for k in seg.steps) and r > 0:
                first = next(k for k in seg.steps if (k, name) in g.acts)
                out.append(_Hyp(r, first, name, "characteristic", (), (), True, math.log(unexplained_rate)))
    return out


def root_cause(model: CausalModel, history: pd.DataFrame, *, batch: str | None = None,
               n_draws: int | None = 500, unexplained_rate: float = 0.002,
               min_fault_sd: float = 2.0, top: int | None = None, seed: int = 0) -> RootCause:
    """Posterior probability over (step, fault type or characteristic) as the origin of the deviation.

    The diagnosis uses the readings up to the first inspection that flags the
    batch (as an engineer would; a shift that later steps shrink is clearest
    there), or all readings when none flags it. Hypotheses:

    - each catalogue fault at a step up to that inspection, shifting the
      characteristics of its signature (``KINDS[kind].fault_effects``, mapped
      through the graph) with the signs the signature gives; prior: its
      catalogue rate;
    - "characteristic c deviated in segment r" (no catalogue fault explains
      it); prior: ``unexplained_rate``.

    Each hypothesis's shift magnitude is integrated out (normal prior with the
    fitted fault-shift scale, sign-constrained where the signature has a sign),
    in closed form for every posterior draw; cracks found by the gauges count
    through a beta-binomial. Probabilities are averaged over draws and
    normalised over the hypotheses.

    Parameters
    ----------
    model : CausalModel
    history : DataFrame
    batch : str, optional
    n_draws : int, optional
    unexplained_rate : float
        Prior probability per batch of an unexplained shift of one
        characteristic in one segment.
    min_fault_sd : float
        Floor on the prior shift scale (standardised units).
    top : int, optional
        Keep only the most probable causes.
    seed : int

    Returns
    -------
    RootCause
    """
    bv = view(model, history, batch)
    p = model.graph_.process
    P = _draws(model, n_draws)
    qf = bv.first_flag if bv.first_flag is not None else bv.q_last
    reasons = _batch_out_of_range(model, bv)
    if qf < 0:
        return RootCause(bv.batch_id, 0, False, (), 0.0, bool(reasons), tuple(reasons))
    ev = _no_shift_evidence(model, bv, P, qf)
    crack_ll = _crack_evidence(model, bv, qf)
    hyps = _hypotheses(model, qf, unexplained_rate)
    if not hyps:
        # no fault catalogue and nothing the model lets deviate up to this inspection
        return RootCause(bv.batch_id, p.inspections[qf].step, bv.first_flag is not None, (), 0.0,
                         bool(reasons), tuple(reasons),
                         note=f"no root-cause hypotheses up to step {p.inspections[qf].step}: the "
                              "process has no fault there and no step the model lets deviate")
    logml = np.empty((len(hyps), P.n_draws))
    shift_sign = np.zeros((len(hyps), P.A.shape[2]))
    for h, hy in enumerate(hyps):
        extra = 0.0
        if hy.chars:
            extra, shift_sign[h, list(hy.chars)] = _shift_log_bayes_factor(P, ev, hy, min_fault_sd)
        logml[h] = ev.ll0 + extra + crack_ll[0] + (crack_ll[1].get(hy.seg, 0.0) if hy.crack else 0.0)
    # the null: no shift at all
    null = ev.ll0 + crack_ll[0] + sum(math.log1p(-math.exp(hy.log_prior)) for hy in hyps)
    lm = _logmeanexp(logml, axis=1) + np.array([hy.log_prior for hy in hyps])
    ln = _logmeanexp(null[None], axis=1)[0]
    top_lm = lm.max()
    w = np.exp(lm - top_lm)
    post = w / w.sum()
    p_dev = 1.0 / (1.0 + math.exp(ln - (top_lm + math.log(w.sum()))))
    order = np.argsort(-post)
    by_step: dict[int, float] = {}
    for hy, pr in zip(hyps, post):
        by_step[hy.step] = by_step.get(hy.step, 0.0) + float(pr)
    steps = tuple(StepCause(k, p.step(k).name, v)
                  for k, v in sorted(by_step.items(), key=lambda kv: (-kv[1], kv[0])))
    if top is not None:
        order = order[:top]
    fc = None
    causes = []
    for h in order:
        hy = hyps[h]
        if fc is None:
            fc = _final_outlook(model, bv, seed)
        causes.append(Cause(hy.step, hy.cause, hy.cause_type, float(post[h]),
                            _path(model, bv, hy, shift_sign[h], qf, fc)))
    return RootCause(bv.batch_id, p.inspections[qf].step, bv.first_flag is not None, tuple(causes),
                     float(p_dev), bool(reasons), tuple(reasons), steps=steps)


@dataclass
class _Evidence:
    """The readings up to the diagnosing inspection under "no shift", per draw."""

    rt: np.ndarray     # (S, D) whitened residuals L^-1 (y - E y)
    ll0: np.ndarray    # (S,) log-likelihood
    J: list            # [(S, D, d)] whitened loadings on the noise of each segment r <= qf


def _no_shift_evidence(model: CausalModel, bv: BatchView, P, qf: int) -> _Evidence:
    """Joint Gaussian of the batch's readings up to inspection ``qf`` with no
    fault shift, per posterior draw (the noise covariance of
    :func:`~recovery.causal.likelihood.noise_covariance`)."""
    S, Q, d, _ = P.A.shape
    u = _injection(model, P, _plan_effective(model, bv, None), bv.day)
    R = _obs_var(model, P, bv)
    rows = [(q, c) for q in range(qf + 1) for c in range(d) if np.isfinite(bv.z[q, c])]
    rq = np.array([q for q, _ in rows], dtype=np.int64)
    rc = np.array([c for _, c in rows], dtype=np.int64)
    mu = np.zeros((S, Q, d))
    prev = np.zeros((S, d))
    for q in range(qf + 1):
        prev = np.einsum("sab,sb->sa", P.A[:, q], prev) + u[:, q]
        mu[:, q] = prev
    Sigma, Gl = noise_covariance(P.A[:, :qf + 1], P.tau[:, :qf + 1], R[:, rq, rc], rq, rc,
                                 None if P.mix is None else P.mix[:, :qf + 1])
    D = len(rows)
    y = bv.z[rq, rc][None, :] - P.m[:, rq, rc] - mu[:, rq, rc]
    L = np.linalg.cholesky(Sigma)
    rt = _solve_lower(L, y[:, :, None])[:, :, 0]                  # (S, D)
    logdet = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
    ll0 = -0.5 * ((rt**2).sum(axis=1) + logdet + D * math.log(2 * math.pi))
    return _Evidence(rt, ll0, [_solve_lower(L, Gl[:, r]) for r in range(qf + 1)])


def _shift_log_bayes_factor(P, ev: _Evidence, hy: _Hyp, min_fault_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Log Bayes factor per draw of "a shift of ``hy.chars`` in segment ``hy.seg``"
    against none, its magnitude integrated out in closed form (normal prior with
    the fitted fault-shift scale, sign-constrained where the signature has a
    sign); and the sign of the posterior-mean shift per moved characteristic."""
    cols = list(hy.chars)
    scale = np.maximum(P.tauf[:, hy.seg][:, cols], min_fault_sd)          # (S, m)
    W = ev.J[hy.seg][:, :, cols] * scale[:, None, :]                       # (S, D, m)
    C = np.eye(len(cols)) + np.einsum("sdi,sdj->sij", W, W)
    b = np.einsum("sdi,sd->si", W, ev.rt)
    Ci = np.linalg.inv(C)
    mean = np.einsum("sij,sj->si", Ci, b)
    _, ldC = np.linalg.slogdet(C)
    lbf = 0.5 * np.einsum("si,si->s", b, mean) - 0.5 * ldC
    sd = np.sqrt(np.diagonal(Ci, axis1=1, axis2=2))
    sg = np.array(hy.signs, dtype=float)
    signed = sg != 0
    if signed.any():
        from scipy.special import log_ndtr
        lbf = lbf + (log_ndtr(sg[signed] * mean[:, signed] / sd[:, signed]).sum(axis=1)
                     + signed.sum() * math.log(2.0))
    return lbf, np.sign(np.average(mean * scale, axis=0))


def _solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve ``L X = B`` for batched lower-triangular ``L``."""
    from scipy.linalg import solve_triangular

    return np.stack([solve_triangular(L[s], B[s], lower=True, check_finite=False) for s in range(len(L))])


def _logmeanexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).mean(axis=axis, keepdims=True))).squeeze(axis)


def _crack_evidence(model, bv: BatchView, qf: int) -> tuple[float, dict[int, float]]:
    """Log-likelihood of the crack readings up to inspection ``qf``.

    Returns the log-likelihood with no crack cause (background cracking of
    about one bar in a thousand per stretch between crack gauges), and for a
    crack cause in segment ``r`` (key) the log-likelihood with the new cracks of
    the stretch covering ``r`` drawn from the fitted beta-binomial instead.
    """
    cm = model.crack_
    if cm.char is None:
        return 0.0, {}
    p = model.graph_.process
    ci = p.char_index[cm.char]
    from scipy.special import betaln, gammaln

    bg = 1e-3
    ll0 = 0.0
    delta: dict[int, float] = {}
    prev_k = 0
    prev_step = 0
    for q in range(qf + 1):
        step = p.inspections[q].step
        if not np.isfinite(bv.mean[q, ci]) or step not in cm.steps:
            continue
        n = int(bv.count[q, ci])
        k = int(round(bv.mean[q, ci] * n))
        new = max(k - prev_k, 0)
        risk = max(n - prev_k, new)
        i = list(cm.steps).index(step)
        lc = gammaln(risk + 1) - gammaln(new + 1) - gammaln(risk - new + 1)
        l0 = lc + new * math.log(bg) + (risk - new) * math.log1p(-bg)
        l1 = lc + betaln(new + cm.alpha[i], risk - new + cm.beta[i]) - betaln(cm.alpha[i], cm.beta[i])
        ll0 += l0
        for r, ins in enumerate(p.inspections):
            if prev_step < ins.step <= step:
                delta[r] = l1 - l0
        prev_k, prev_step = k, step
    return ll0, delta


@dataclass
class _Outlook:
    p_in_band: dict
    mean: dict


def _final_outlook(model: CausalModel, bv: BatchView, seed: int) -> _Outlook:
    pr_ = _forecast(model, bv, 200, 2, seed)
    p, g, std = model.graph_.process, model.graph_, model.std_
    from scipy.stats import norm

    lo_b, hi_b = p.final_bands()
    x = pr_.base[:, None, :] + std.scale * pr_.X0
    out, mean = {}, {}
    for c, name in enumerate(g.modeled):
        if not pr_.use[c]:
            continue
        ci = p.char_index[name]
        sd = np.maximum(pr_.sbar[:, None, c], 1e-300)
        out[name] = float((norm.cdf((hi_b[ci] - x[:, :, c]) / sd) - norm.cdf((lo_b[ci] - x[:, :, c]) / sd)).mean())
        mean[name] = float(x[:, :, c].mean())
    for name in g.crack:
        out[name] = float(1.0 - pr_.crack_frac.mean())
        mean[name] = float(pr_.crack_frac.mean())
    return _Outlook(out, mean)


def _path(model: CausalModel, bv: BatchView, hy: _Hyp, sign: np.ndarray, qf: int, fc: _Outlook) -> str:
    p, g = model.graph_.process, model.graph_
    segs = g.segments()
    insp = p.inspections[qf]
    moved = [(g.modeled[c], sign[c]) for c in hy.chars]
    verb = {1.0: "raised", -1.0: "lowered", 0.0: "shifted"}
    if hy.cause_type == "fault":
        by_verb: dict[str, list[str]] = {}
        for name, sg in moved:
            by_verb.setdefault(verb[float(sg)], []).append(name)
        if hy.crack:
            by_verb.setdefault("cracked", []).append("bars")
        what = "; ".join(f"{v} {' and '.join(n)}" for v, n in by_verb.items()) or "acted"
        head = f"{g.describe_step(hy.step)}: {hy.cause} {what}"
    else:
        seg = segs[hy.seg]
        acting = [f"{k} {p.step(k).name}" for k in seg.steps if (k, hy.cause) in g.acts]
        direction = {1.0: "rose", -1.0: "fell", 0.0: "deviated"}[float(sign[hy.chars[0]])] if hy.chars else "appeared"
        # a partner's own characteristic set afresh at this step comes into being here
        produced = (hy.cause in p.char_index and p.characteristic(hy.cause).role == "other"
                    and not any(e.kind == "carry" for e in g.parents(hy.step, hy.cause)))
        where = (f"produced here, at step {hy.step} {p.step(hy.step).name}" if produced or not acting
                 else f"steps acting on it: {', '.join(acting)}")
        head = (f"{hy.cause} {direction} between step {seg.start} and step {seg.end} ({where}); "
                "no catalogue fault explains it")
    lo, hi = p.gate_bands(insp.step)
    bad = []
    for ci, ch in enumerate(p.characteristics):
        v = bv.mean[qf, ci]
        if np.isfinite(v) and np.isfinite(lo[ci]) and (v < lo[ci] or v > hi[ci]):
            bad.append(f"{ch.name} {v:.4g} {ch.unit} outside {lo[ci]:.4g}..{hi[ci]:.4g}")
    flag = (f"flagged at step {insp.step} {insp_name(p, insp.step)} ({'; '.join(bad)})" if bad
            else f"seen at step {insp.step} {insp_name(p, insp.step)} (no gate failed)")
    # characteristics downstream of the cause's shift that are predicted out of their final band
    reach = set(hy.chars)
    for q in range(hy.seg + 1, len(segs)):
        reach = {c for c in range(len(g.modeled)) if segs[q].carry[c, list(reach)].any()} if reach else set()
    names = {g.modeled[c] for c in reach} | (set(g.crack) if hy.crack else set())
    # a characteristic that alone would fail the acceptance rule
    outs = [f"{n} (expected {100 * fc.p_in_band[n]:.0f}% of bars inside)" for n in
            sorted(names, key=lambda n: p.char_index[n]) if n in fc.p_in_band and not p.accepts(fc.p_in_band[n])]
    tail = ("out of final band under the nominal plan: " + ", ".join(outs)) if outs else \
        "final bands expected to hold under the nominal plan"
    return f"{head} -> {flag} -> {tail}"


def insp_name(p, step: int) -> str:
    return p.step(step).name
