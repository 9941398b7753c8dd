"""Posterior predictive checks: can the calibrated simulator reproduce the history?

Per inspection and characteristic, the batches' sample means in the history
are compared with those of the simulator run under the history's conditions
with physics drawn from the posterior: their mean, their spread and the share
of batches outside the gate (the flag rate). A check fails only when a
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
    for q, ins in enumerate(process.inspections):
        lo_g, hi_g = process.gate_bands(ins.step)
        for name in ins.measures:
            c = process.char_index[name]
            ch = process.characteristics[c]
            h = hist.mean[:, q, c]
            per = np.array([s[:, q, c].mean() for s in sims])
            allm = np.concatenate([s[:, q, c] for s in sims])
            problems, parts = [], []
            # mean
            d = h.mean() - allm.mean()
            se = np.sqrt(h.var(ddof=1) / n_h + allm.var(ddof=1) / len(allm) + per.var(ddof=1))
            band = ch.upper - ch.lower
            zd = d / se if se > 0 else (0.0 if d == 0 else np.inf)
            parts.append(f"mean {h.mean():.5g} vs {allm.mean():.5g} {ch.unit}")
            if abs(zd) > Z and abs(d) > MEAN_SHARE * band:
                problems.append(f"mean differs by {d:+.4g} {ch.unit} ({zd:+.1f} se, "
                                f"{abs(d) / band:.0%} of the band)")
            # spread of batch means
            sh, ss = h.std(ddof=1), allm.std(ddof=1)
            if sh > 0 and ss > 0:
                ratio = sh / ss
                se_log = np.sqrt(1 / (2 * (n_h - 1)) + 1 / (2 * (len(allm) - 1)))
                parts.append(f"sd {sh:.3g} vs {ss:.3g}")
                if abs(np.log(ratio)) / se_log > Z and not 1 / SPREAD_RATIO < ratio < SPREAD_RATIO:
                    problems.append(f"batch-to-batch spread {ratio:.2f}x the simulator's")
            # flag rate at the gate (the final band at the last step)
            lo, hi = lo_g[c], hi_g[c]
            if np.isfinite(lo) and np.isfinite(hi):
                fh = _outside(h, lo, hi).mean()
                fs_per = np.array([_outside(s[:, q, c], lo, hi).mean() for s in sims])
                fs = fs_per.mean()
                se_f = np.sqrt(fh * (1 - fh) / n_h + fs * (1 - fs) / len(allm) + fs_per.var(ddof=1))
                parts.append(f"outside gate {fh:.1%} vs {fs:.1%}")
                df = fh - fs
                if abs(df) > FLAG_POINTS and (se_f == 0 or abs(df) / se_f > Z):
                    problems.append(f"flag rate {fh:.1%} in the history, {fs:.1%} simulated")
            detail = "; ".join(problems) if problems else "ok: " + ", ".join(parts)
            if problems:
                detail += " (" + ", ".join(parts) + ")"
            out.append(PredictiveCheck(ins.step, name, not problems, detail))
    return out
