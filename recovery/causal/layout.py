"""The parameter layout: standardisation of units, where each mechanism
parameter sits in the flat vector ``theta`` (:class:`Layout`), and its decoding
into per-draw arrays (:class:`Params`)."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np

from recovery.causal.config import PriorConfig
from recovery.causal.graph import CausalGraph
from recovery.causal.summaries import Summaries
from simulators.definition import Process

__all__ = ["Standardisation", "standardise", "Params", "Layout", "segment_fault_rates"]


@dataclass(frozen=True)
class Standardisation:
    """Maps physical units to the model's standardised units.

    Attributes
    ----------
    centre : ndarray (n_insp, d)
        Median of the training sample means per gauged pair (0 elsewhere).
    scale : ndarray (d,)
        Typical batch-to-batch spread of each modelled characteristic (robust).
    lever_nominal, lever_half : ndarray (n_levers,)
        ``x = (value - nominal) / half``; ``half`` is the larger distance from
        nominal to an effective bound.
    lever_gamma : ndarray (n_levers,)
        The features are ``x - gamma x**2`` and ``x**2``: both vanish at nominal,
        the first has slope 1 there and the second slope 0 (so the first
        coefficient *is* the slope at nominal), and ``gamma`` makes them
        orthogonal over the lever's range. Without it a lever whose nominal
        sits at a bound (re-chroming time 0) has two nearly collinear features
        and the sampler crawls along their ridge.
    day_ref : float
        Production day at which ``m_q`` is the mean.
    """

    centre: np.ndarray
    scale: np.ndarray
    lever_nominal: np.ndarray
    lever_half: np.ndarray
    lever_gamma: np.ndarray
    day_ref: float

    def features(self, levers: np.ndarray) -> np.ndarray:
        """Lever features ``[x - gamma x**2, x**2]``, shape ``(..., 2 * n_levers)``."""
        x = (np.asarray(levers, dtype=np.float64) - self.lever_nominal) / self.lever_half
        return np.concatenate([x - self.lever_gamma * x * x, x * x], axis=-1)

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Standardisation":
        return cls(np.asarray(d["centre"], float), np.asarray(d["scale"], float),
                   np.asarray(d["lever_nominal"], float), np.asarray(d["lever_half"], float),
                   np.asarray(d["lever_gamma"], float), float(d["day_ref"]))


def standardise(summ: Summaries, graph: CausalGraph) -> Standardisation:
    p = graph.process
    mod = [p.char_index[c] for c in graph.modeled]
    mean = summ.mean[:, :, mod]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # never-gauged pairs are all NaN
        centre = np.nan_to_num(np.nanmedian(mean, axis=0) if summ.n_batches
                               else np.zeros(mean.shape[1:]), nan=0.0)
    scale = np.zeros(len(mod))
    for i, ci in enumerate(mod):
        sds = []
        for q in range(mean.shape[1]):
            col = mean[:, q, i]
            col = col[np.isfinite(col)]
            if len(col) >= 5:
                mad = 1.4826 * np.median(np.abs(col - np.median(col)))
                if mad > 0:
                    sds.append(mad)
        g = p.characteristics[ci].gauge_sigma
        scale[i] = np.median(sds) if sds else (g if g > 0 else 1.0)
    lo, hi = p.lever_bounds()
    nom = p.nominal_plan()
    half = np.maximum(np.maximum(hi - nom, nom - lo), 1e-9)
    a, b = (lo - nom) / half, (hi - nom) / half
    gamma = np.where(b - a > 0, ((b**4 - a**4) / 4) / np.maximum((b**5 - a**5) / 5, 1e-12), 0.0)
    return Standardisation(centre, scale, nom, half, gamma,
                           float(np.mean(summ.day)) if summ.n_batches else 0.0)


@dataclass(frozen=True)
class Params:
    """Decoded parameters, one row per posterior draw (standardised units).

    Attributes
    ----------
    A : (S, Q, d, d)      carry-over from the previous inspection
    B : (S, Q, d, F)      lever-feature effects
    G : (S, Q, d)         factory drift per 100 production days
    tau : (S, Q, d)       process-noise sd
    m : (S, Q, d)         mean at nominal levers and ``day_ref`` (gauged pairs)
    sbar : (S, Q, d)      bar-to-bar sd within a batch (gauged pairs)
    pi : (S, Q)           probability of a fault shift in the segment
    tauf : (S, Q, d)      sd of a fault shift
    mix : (S, Q, d, d) or None
        ``(I - W_q)^-1`` of the within-step edges ``W_q`` (``CausalGraph``,
        "Within a step"); None when the graph has none (the identity). ``A``,
        ``B`` and ``G`` above already include it (they are the reduced form);
        the noise ``tau`` and a fault shift ``tauf`` enter each segment
        through it: ``x_q = A_q x_{q-1} + u_q + mix_q w_q``.
    """

    A: np.ndarray
    B: np.ndarray
    G: np.ndarray
    tau: np.ndarray
    m: np.ndarray
    sbar: np.ndarray
    pi: np.ndarray
    tauf: np.ndarray
    mix: np.ndarray | None = None

    @property
    def n_draws(self) -> int:
        return self.A.shape[0]

    def take(self, idx) -> "Params":
        return Params(*(getattr(self, f)[idx] for f in ("A", "B", "G", "tau", "m", "sbar", "pi", "tauf")),
                      mix=None if self.mix is None else self.mix[idx])

    def noise_loading(self, q: int) -> np.ndarray:
        """``(S, d, d)``: how segment ``q``'s own noise (or a shift) reaches its end state."""
        if self.mix is None:
            return np.broadcast_to(np.eye(self.A.shape[2]), (self.n_draws,) + self.A.shape[2:])
        return self.mix[:, q]


class Layout:
    """Where each mechanism parameter sits in the flat parameter vector ``theta``.

    Every parameter is unconstrained (scales on the log scale, rates on the
    logit scale) with an independent normal default prior, so that
    :meth:`CausalModel.update` can replace the whole prior by a moment-matched
    multivariate normal.
    """

    def __init__(self, graph: CausalGraph, std: Standardisation, priors: PriorConfig,
                 fault_prior_rate: np.ndarray):
        p = graph.process
        self.graph = graph
        segs = graph.segments()
        Q, d, L = len(segs), len(graph.modeled), len(p.levers)
        F = 2 * L
        self.Q, self.d, self.L, self.F = Q, d, L, F
        mi = graph.modeled_index
        gauged = np.zeros((Q, d), dtype=bool)
        for q, ins in enumerate(p.inspections):
            for cname in ins.measures:
                if cname in mi:
                    gauged[q, mi[cname]] = True
        rel = np.zeros((Q, d), dtype=bool)
        for q in range(Q - 1, -1, -1):
            rel[q] = gauged[q] | (segs[q + 1].carry[rel[q + 1]].any(axis=0) if q < Q - 1 else False)
            # a within-step parent of a relevant characteristic is relevant (to a fixed point)
            wq = _within(segs[q], d)
            while True:
                more = rel[q] | wq[rel[q]].any(axis=0)
                if (more == rel[q]).all():
                    break
                rel[q] = more
        self.gauged, self.relevant = gauged, rel
        segs = self._defer(segs, gauged, rel)
        self.segments = segs
        self._names: list[str] = []
        self._mu: list[float] = []
        self._sd: list[float] = []
        self._add_means_and_mechanisms(p, priors)
        self._add_within(priors)
        self._add_noise_drift_and_faults(p, priors, fault_prior_rate)
        self.names = self._names
        self.prior_mu = np.array(self._mu)
        self.prior_sd = np.array(self._sd)
        del self._names, self._mu, self._sd
        for attr in list(vars(self)):
            if attr.endswith(("_q", "_c", "_c2", "_f", "_i")) and isinstance(getattr(self, attr), list):
                setattr(self, attr, np.asarray(getattr(self, attr), dtype=np.int64))
        self._apply_expert_priors(graph, std)

    def _add(self, label: str, m_: float, s_: float) -> int:
        """Append one parameter with its default prior; its index in ``theta``."""
        self._names.append(label)
        self._mu.append(m_)
        self._sd.append(s_)
        return len(self._names) - 1

    def _add_means_and_mechanisms(self, p: Process, priors: PriorConfig) -> None:
        """The means ``m_q``, the carry-over ``A_q`` and the lever effects ``B_q``."""
        Q, d, L = self.Q, self.d, self.L
        segs, rel, gauged = self.segments, self.relevant, self.gauged
        cn, insp, add = self.graph.modeled, p.inspection_steps, self._add
        # m_q: mean of each gauged pair
        self.mean_q, self.mean_c, self.mean_i = [], [], []
        for q in range(Q):
            for c in np.flatnonzero(gauged[q]):
                self.mean_q.append(q)
                self.mean_c.append(c)
                self.mean_i.append(add(f"mean[{insp[q]},{cn[c]}]", 0.0, priors.mean_sd))
        # A_q: carry-over entries learned where the segment acts on a relevant characteristic
        self.carry_fixed = np.zeros((Q, d, d))
        self.carry_q, self.carry_c, self.carry_c2, self.carry_i = [], [], [], []
        for q, seg in enumerate(segs):
            for c in range(d):
                if not seg.acted[c]:
                    self.carry_fixed[q, c, c] = 1.0
                    continue
                if q == 0 or not rel[q, c]:
                    continue
                for c2 in np.flatnonzero(seg.carry[c]):
                    m0, s0 = priors.carry_self if c2 == c else priors.carry_cross
                    self.carry_q.append(q)
                    self.carry_c.append(c)
                    self.carry_c2.append(c2)
                    lab = f"carry[{insp[q]},{cn[c2]}->{cn[c]}]"
                    self.carry_i.append(add(lab, m0, s0))
        # B_q: lever effects (linear and quadratic feature of the deviation from nominal)
        self.lever_q, self.lever_c, self.lever_f, self.lever_i = [], [], [], []
        for q, seg in enumerate(segs):
            for c in range(d):
                if not (seg.acted[c] and rel[q, c]):
                    continue
                for j in np.flatnonzero(seg.levers[c]):
                    for power, off in (("lin", 0), ("quad", L)):
                        self.lever_q.append(q)
                        self.lever_c.append(c)
                        self.lever_f.append(j + off)
                        self.lever_i.append(add(f"lever_{power}[{p.levers[j].name}->{cn[c]}@{insp[q]}]",
                                                0.0, priors.lever_sd))

    def _add_within(self, priors: PriorConfig) -> None:
        """``W_q``: the within-step edges, one coefficient each (prior as a
        cross carry-over), and the nilpotency depth of each segment's ``W_q``
        (its longest within path), so ``(I - W)^-1 = I + W + ... + W^depth``."""
        cn, insp = self.graph.modeled, self.graph.process.inspection_steps
        self.within_q, self.within_c, self.within_c2, self.within_i = [], [], [], []
        depth = 0
        for q, seg in enumerate(self.segments):
            wq = _within(seg, self.d)
            for c, c2 in zip(*np.nonzero(wq)):
                self.within_q.append(q)
                self.within_c.append(int(c))
                self.within_c2.append(int(c2))
                self.within_i.append(self._add(f"within[{insp[q]},{cn[c2]}->{cn[c]}]",
                                               *priors.carry_cross))
            reach = wq.astype(float)
            k = 0
            while reach.any() and k <= self.d:
                k += 1
                reach = reach @ wq
            depth = max(depth, k)
        self.within_depth = depth

    def _add_noise_drift_and_faults(self, p: Process, priors: PriorConfig, fault_prior_rate: np.ndarray) -> None:
        """The process noise ``tau_q``, the factory drift and the fault mixture."""
        Q, d, L = self.Q, self.d, self.L
        segs, rel, gauged = self.segments, self.relevant, self.gauged
        cn, insp, add = self.graph.modeled, p.inspection_steps, self._add
        # tau_q: process noise
        self.noise_q, self.noise_c, self.noise_i = [], [], []
        for q, seg in enumerate(segs):
            for c in np.flatnonzero(seg.acted & rel[q]):
                self.noise_q.append(q)
                self.noise_c.append(c)
                self.noise_i.append(add(f"log_noise[{insp[q]},{cn[c]}]", *priors.log_noise))
        # drift: one slope per (factory, characteristic), partially pooled across
        # factories (centred: the data pin each slope down well).
        pairs: list[tuple[int, int]] = []
        for q, seg in enumerate(segs):
            for f, c in zip(*np.nonzero(seg.drift)):
                if seg.acted[c] and rel[q, c] and (f, c) not in pairs:
                    pairs.append((int(f), int(c)))
        self.drift_i = [add(f"drift[{p.factories[f].id},{cn[c]}]", 0.0, priors.drift_base_sd)
                        for f, c in pairs]
        self.drift_scale_i = add("log_drift_sd", *priors.log_drift_scale) if pairs else None
        self.drift_map = np.zeros((len(pairs), Q * d))
        for k, (f, c) in enumerate(pairs):
            for q, seg in enumerate(segs):
                if seg.drift[f, c] and seg.acted[c] and rel[q, c]:
                    self.drift_map[k, q * d + c] = 1.0
        self.drift_pairs = pairs
        # fault mixture
        self.rate_q, self.rate_i = [], []
        for q, seg in enumerate(segs):
            if (seg.acted & rel[q]).any():
                r = max(float(fault_prior_rate[q]), priors.fault_rate_floor)
                self.rate_q.append(q)
                self.rate_i.append(add(f"logit_fault_rate[{insp[q]}]", math.log(r / (1 - r)),
                                       priors.logit_fault_rate_sd))
        self.fscale_q, self.fscale_c, self.fscale_i = [], [], []
        for q in self.rate_q:
            for c in np.flatnonzero(segs[q].acted & rel[q]):
                self.fscale_q.append(q)
                self.fscale_c.append(c)
                self.fscale_i.append(add(f"log_fault_sd[{insp[q]},{cn[c]}]", *priors.log_fault_scale))

    @property
    def size(self) -> int:
        return len(self.names)

    @staticmethod
    def _defer(segs, gauged, rel):
        """Move a characteristic's change in a segment into the next one when it is
        not gauged at the segment's end and nothing else reads it there.

        Between two gauges of a characteristic, only the whole change is
        identifiable: splitting it into two carry-over coefficients and two
        noises leaves a ridge the sampler crawls along. The characteristic then
        passes through the first segment unchanged and the second learns the
        combined change (its levers, drift and noise included): the second
        segment acts on it even when its own steps do not, and when the first
        segment sets the characteristic afresh (a cut to length) so does the
        combined change (no carry-over from before).
        """
        segs = [replace(sg, acted=sg.acted.copy(), carry=sg.carry.copy(), levers=sg.levers.copy(),
                        drift=sg.drift.copy()) for sg in segs]
        for q in range(len(segs) - 1):
            cur, nxt = segs[q], segs[q + 1]
            linked = set()   # within-step edges tie a characteristic to its segment
            for sg in (cur, nxt):
                w = _within(sg, len(cur.acted))
                linked |= set(np.flatnonzero(w.any(axis=0) | w.any(axis=1)))
            for c in range(len(cur.acted)):
                if not (cur.acted[c] and rel[q, c]) or gauged[q, c] or c in linked:
                    continue
                if set(np.flatnonzero(cur.carry[c])) - {c} or not nxt.carry[c, c]:
                    continue
                if set(np.flatnonzero(nxt.carry[:, c])) - {c}:
                    continue
                nxt.acted[c] = True
                nxt.carry[c, c] = cur.carry[c, c]
                cur.acted[c] = False
                cur.carry[c] = False
                cur.carry[c, c] = True
                nxt.levers[c] |= cur.levers[c]
                cur.levers[c] = False
                nxt.drift[:, c] |= cur.drift[:, c]
                cur.drift[:, c] = False
        return segs

    def _apply_expert_priors(self, graph: CausalGraph, std: Standardisation) -> None:
        p = graph.process
        mi = graph.modeled_index
        self.expert: list[tuple[int, float, str]] = []  # (index, std -> physical factor, label)
        self.expert_notes: list[str] = []
        for pr in graph.edits.priors:
            c = mi[pr.target]
            if pr.lever is not None:
                j = p.lever_index[pr.lever]
                q = graph.segment_of_step(p.levers[j].step)
                # the effect may have been moved to a later segment (see _defer)
                hit = np.flatnonzero((self.lever_q >= q) & (self.lever_c == c) & (self.lever_f == j))
                # slope per lever unit at nominal -> coefficient of x = (u - nom) / half
                to_std = std.lever_half[j] / std.scale[c]
            else:
                q = p.inspection_steps.index(pr.inspection)
                c2 = mi[pr.source]
                hit = np.flatnonzero((self.carry_q == q) & (self.carry_c == c) & (self.carry_c2 == c2))
                to_std = std.scale[c2] / std.scale[c]
            if not len(hit):
                self.expert_notes.append(
                    f"prior on {pr.label} NOT USED: {pr.target} is not gauged at the end of that "
                    "segment, so the model learns its change up to the next gauge as one "
                    "coefficient; put the prior on that segment instead")
                continue
            k = int(self.lever_i[hit[0]] if pr.lever is not None else self.carry_i[hit[0]])
            self.prior_mu[k] = pr.mean * to_std
            self.prior_sd[k] = pr.sd * abs(to_std)
            self.expert.append((k, 1.0 / to_std, pr.label))

    # ---- decoding ----------------------------------------------------------
    def decode(self, theta: np.ndarray) -> Params:
        """Decode draws ``theta (S, P)`` into :class:`Params` (NumPy)."""
        th = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        S, Q, d, F = th.shape[0], self.Q, self.d, self.F
        m = np.zeros((S, Q, d))
        m[:, self.mean_q, self.mean_c] = th[:, self.mean_i]
        A = np.broadcast_to(self.carry_fixed, (S, Q, d, d)).copy()
        A[:, self.carry_q, self.carry_c, self.carry_c2] = th[:, self.carry_i]
        B = np.zeros((S, Q, d, F))
        B[:, self.lever_q, self.lever_c, self.lever_f] = th[:, self.lever_i]
        tau = np.zeros((S, Q, d))
        tau[:, self.noise_q, self.noise_c] = np.exp(th[:, self.noise_i])
        G = np.zeros((S, Q * d))
        if len(self.drift_pairs):
            G = th[:, self.drift_i] @ self.drift_map
        sbar = np.zeros((S, Q, d))  # filled in from the spread model by the caller
        pi = np.zeros((S, Q))
        pi[:, self.rate_q] = 1.0 / (1.0 + np.exp(-th[:, self.rate_i]))
        tauf = np.zeros((S, Q, d))
        tauf[:, self.fscale_q, self.fscale_c] = np.exp(th[:, self.fscale_i])
        G = G.reshape(S, Q, d)
        mix = None
        if len(self.within_i):
            W = np.zeros((S, Q, d, d))
            W[:, self.within_q, self.within_c, self.within_c2] = th[:, self.within_i]
            mix = np.linalg.inv(np.eye(d) - W)      # unit triangular up to a permutation: exact
            A = mix @ A
            B = mix @ B
            G = np.einsum("sqab,sqb->sqa", mix, G)
        return Params(A, B, G, tau, m, sbar, pi, tauf, mix)

    def decode_tensor(self, theta):
        """Decode a symbolic ``theta (P,)`` (PyTensor) into a dict of tensors."""
        import pytensor.tensor as pt

        Q, d, F = self.Q, self.d, self.F

        def put(shape, idx, values, base=None):
            z = pt.zeros(shape) if base is None else pt.as_tensor_variable(base)
            return pt.set_subtensor(z[idx], values) if idx[0].size else z

        m = put((Q, d), (self.mean_q, self.mean_c), theta[self.mean_i])
        A = put((Q, d, d), (self.carry_q, self.carry_c, self.carry_c2), theta[self.carry_i],
                base=self.carry_fixed)
        B = put((Q, d, F), (self.lever_q, self.lever_c, self.lever_f), theta[self.lever_i])
        tau = put((Q, d), (self.noise_q, self.noise_c), pt.exp(theta[self.noise_i]))
        if len(self.drift_pairs):
            G = pt.dot(theta[self.drift_i], self.drift_map).reshape((Q, d))
        else:
            G = pt.zeros((Q, d))
        pi = put((Q,), (self.rate_q,), pt.sigmoid(theta[self.rate_i]))
        tauf = put((Q, d), (self.fscale_q, self.fscale_c), pt.exp(theta[self.fscale_i]))
        mix = None
        if len(self.within_i):
            # (I - W)^-1 = I + W + ... + W^depth: W is nilpotent (a DAG), and a short
            # sum of products differentiates more cheaply than a matrix inverse
            W = put((Q, d, d), (self.within_q, self.within_c, self.within_c2), theta[self.within_i])
            eye = pt.eye(d)
            mix_q = []
            for q in range(Q):
                term, acc = eye, eye
                for _ in range(self.within_depth):
                    term = pt.dot(W[q], term)
                    acc = acc + term
                mix_q.append(acc)
            mix = pt.stack(mix_q)
            A = pt.stack([pt.dot(mix_q[q], A[q]) for q in range(Q)])
            B = pt.stack([pt.dot(mix_q[q], B[q]) for q in range(Q)])
            G = pt.stack([pt.dot(mix_q[q], G[q]) for q in range(Q)])
        # theta itself too: the factorised likelihood (likelihood.dag_index) reads the
        # coefficients before the within-step edges are solved
        return dict(A=A, B=B, G=G, tau=tau, m=m, pi=pi, tauf=tauf, mix=mix, theta=theta)

    def to_dict(self) -> dict:
        return {"names": self.names, "prior_mu": self.prior_mu.tolist(), "prior_sd": self.prior_sd.tolist()}



def segment_fault_rates(process: Process, graph: CausalGraph) -> np.ndarray:
    """Catalogue probability of at least one fault in each segment, (n_insp,).

    The default prior of the fault-shift rates (:class:`Layout`) and their
    ground truth in :mod:`recovery.causal.validation`: faults strike
    independently, so a segment is fault-free with the product of its faults'
    complements.
    """
    rate = np.zeros(len(process.inspections))
    for seg in graph.segments():
        if seg.faults:
            rate[seg.index] = 1.0 - np.prod([1.0 - process.faults[i].rate for i in seg.faults])
    return rate


def _within(seg, d: int) -> np.ndarray:
    """A segment's within-step edges, ``(d, d)`` bool (none for a graph saved before them)."""
    return seg.within if seg.within is not None else np.zeros((d, d), dtype=bool)
