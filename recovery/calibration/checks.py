"""Posterior predictive checks: can the calibrated simulator reproduce the history?

Per inspection and characteristic, the batches' sample means in the history
are compared with those of the simulator run under the history's conditions
with physics drawn from the posterior: their mean, their spread and the share
of batches outside the gate (the flag rate). Mean and spread are compared on
what the step range adds (the level at the first inspection that gauges the
characteristic, the change since the previous one after that), so a
difference is reported where it arises, not at every later inspection; a flag
rate that differs only because an earlier inspection of the same
characteristic already differs is noted, not failed. A check fails only when a
difference is both clear (beyond ``Z`` standard errors, which include the
spread over posterior draws) and large enough to matter (a share of the
characteristic's tolerance band, or a few points of flag rate). With a thousand
batches, smaller differences are certain but irrelevant to a planner.
"""

from __future__ import annotations

import numpy as np

from recovery.calibration.posterior import PhysicsPosterior, PredictiveCheck

__all__ = ["predictive_checks", "Z", "MEAN_SHARE", "SPREAD_RATIO", "FLAG_POINTS"]

#: Standard errors beyond which a difference is clear (about 40 checks are made).
Z = 4.0
#: A mean differs materially when by this share of the tolerance band.
MEAN_SHARE = 0.05
#: Spreads differ materially when their ratio is beyond this (or its inverse).
SPREAD_RATIO = 1.3
#: Flag rates differ materially by this much.
FLAG_POINTS = 0.03


def _outside(m: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (m < lo) | (m > hi)


def predictive_checks(post: PhysicsPosterior, process, hist, setup, cfg, seed: int
                      ) -> list[PredictiveCheck]:
    """Compare the history with the simulator at ``cfg.check_draws`` posterior draws.

    Parameters
    ----------
    post : PhysicsPosterior
    process : Process
    hist : recovery.calibration.summaries.History
    setup : the calibration's simulation setup (history's days and plans)
    cfg : CalibrationConfig
    seed : int

    Returns
    -------
    list of PredictiveCheck
        One per inspection and gauged characteristic, in process order.
    """
    from recovery.calibration.surrogate import _simulate

    rng = np.random.default_rng([seed, 3])
    idx = post.sample_indices(cfg.check_draws, rng)
    z_draws = np.log(post.draws[idx] / setup.file_values)
    sims = [_simulate(setup, z, seed_offset=d + 1, means=True)[0] for d, z in enumerate(z_draws)]
    out = []
    n_h = hist.n_batches
    lay = setup.layout
    feat_h = lay.features(hist.mean)
    feat_s = [lay.features(m) for m in sims]
    failed_at: dict[int, int] = {}   # characteristic column -> step of its first failed check
    for f, (q, c) in enumerate(lay.pairs):
        ins = process.inspections[q]
        ch = process.characteristics[c]
        lo_g, hi_g = process.gate_bands(ins.step)
        prev = lay.prev[f]
        what = "level" if prev < 0 else \
            f"change since step {process.inspections[lay.pairs[prev][0]].step}"
        h = feat_h[:, f]
        per = np.array([s[:, f].mean() for s in feat_s])
        allm = np.concatenate([s[:, f] for s in feat_s])
        problems, parts = [], []
        d = h.mean() - allm.mean()
        se = np.sqrt(h.var(ddof=1) / n_h + allm.var(ddof=1) / len(allm) + per.var(ddof=1))
        band = ch.upper - ch.lower
        zd = d / se if se > 0 else (0.0 if d == 0 else np.inf)
        parts.append(f"{what} {h.mean():.5g} vs {allm.mean():.5g} {ch.unit}")
        if abs(zd) > Z and abs(d) > MEAN_SHARE * band:
            problems.append(f"{what} differs by {d:+.4g} {ch.unit} ({zd:+.1f} se, "
                            f"{abs(d) / band:.0%} of the band)")
        sh, ss = h.std(ddof=1), allm.std(ddof=1)
        if sh > 0 and ss > 0:
            ratio = sh / ss
            se_log = np.sqrt(1 / (2 * (n_h - 1)) + 1 / (2 * (len(allm) - 1)))
            parts.append(f"sd {sh:.3g} vs {ss:.3g}")
            if abs(np.log(ratio)) / se_log > Z and not 1 / SPREAD_RATIO < ratio < SPREAD_RATIO:
                problems.append(f"batch-to-batch spread of the {what} {ratio:.2f}x the simulator's")
        lo, hi = lo_g[c], hi_g[c]
        if np.isfinite(lo) and np.isfinite(hi):
            hm = hist.mean[:, q, c]
            fh = _outside(hm, lo, hi).mean()
            fs_per = np.array([_outside(m[:, q, c], lo, hi).mean() for m in sims])
            fs = fs_per.mean()
            se_f = np.sqrt(fh * (1 - fh) / n_h + fs * (1 - fs) / len(allm) + fs_per.var(ddof=1))
            parts.append(f"outside the gate {fh:.1%} vs {fs:.1%}")
            df = fh - fs
            if abs(df) > FLAG_POINTS and (se_f == 0 or abs(df) / se_f > Z):
                if c in failed_at:
                    parts.append(f"flag rate differs as step {failed_at[c]} already does")
                else:
                    problems.append(f"flag rate {fh:.1%} in the history, {fs:.1%} simulated")
        if problems:
            failed_at.setdefault(c, ins.step)
            detail = "; ".join(problems) + " (" + ", ".join(parts) + ")"
        else:
            detail = "ok: " + ", ".join(parts)
        out.append(PredictiveCheck(ins.step, ch.name, not problems, detail))
    return out
