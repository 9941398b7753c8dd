"""The fitted posterior: the raw draws of ``theta`` (:func:`theta_draws`), the
decoded draws the queries use (:func:`kept_params`), and an ArviZ view with
named mechanism parameters for researchers (:func:`to_inference_data`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from recovery.causal.components import BarSpread
from recovery.causal.graph import CausalGraph
from recovery.causal.layout import Layout, Params, Standardisation

__all__ = ["theta_draws", "kept_params", "params_from_theta", "to_inference_data"]


def theta_draws(idata, robust: bool = True) -> np.ndarray:
    """Posterior draws ``(S, P)`` of ``theta``, chains stacked.

    Parameters
    ----------
    idata : arviz.InferenceData
        The fit's posterior (``CausalModel.idata_``).
    robust : bool
        The widened draws (``theta_robust``) when the fit made them.
    """
    name = "theta_robust" if robust and "theta_robust" in idata.posterior else "theta"
    post = idata.posterior[name]
    return np.asarray(post.stack(sample=("chain", "draw")).transpose("sample", ...).values)


def kept_params(idata, layout: Layout, graph: CausalGraph, spread: BarSpread, std: Standardisation,
                keep: int, seed: int) -> Params:
    """The decoded draws the queries use: at most ``keep``, thinned evenly, with
    bar-spread draws (seeded by ``seed``) attached; read-only arrays."""
    return params_from_theta(theta_draws(idata), layout, graph, spread, std, keep=keep, seed=seed)


def params_from_theta(theta: np.ndarray, layout: Layout, graph: CausalGraph, spread: BarSpread,
                      std: Standardisation, keep: int, seed: int) -> Params:
    """:func:`kept_params` from the draws ``theta (S, P)`` themselves (e.g. read by
    :func:`recovery.causal.persistence.read_theta`, without ArviZ)."""
    if len(theta) > keep:
        idx = np.linspace(0, len(theta) - 1, keep).round().astype(int)
        theta = theta[idx]
    params = layout.decode(theta)
    p = graph.process
    mod = [p.char_index[c] for c in graph.modeled]
    sbar = spread.draws(params.n_draws, seed)[:, :, mod] / std.scale
    params = replace(params, sbar=sbar)
    for f in ("A", "B", "G", "tau", "m", "sbar", "pi", "tauf"):
        getattr(params, f).flags.writeable = False
    return params


# (variable, dim, index attribute of Layout, transform to the natural scale)
_BLOCKS = (
    ("mean", "gauged_pair", "mean_i", None),
    ("carry", "carry_edge", "carry_i", None),
    ("lever_effect", "lever_edge", "lever_i", None),
    ("noise_sd", "noise_pair", "noise_i", np.exp),
    ("drift", "drift_pair", "drift_i", None),
    ("fault_rate", "fault_segment", "rate_i", lambda x: 1.0 / (1.0 + np.exp(-x))),
    ("fault_sd", "fault_pair", "fscale_i", np.exp),
)


def _label(name: str) -> str:
    """``"mean[3,diameter]"`` -> ``"3,diameter"``."""
    return name[name.index("[") + 1:-1] if "[" in name else name


def to_inference_data(idata, layout: Layout, *, robust: bool = True):
    """The posterior as ArviZ ``InferenceData`` with one variable per kind of
    mechanism parameter and named dims and coords.

    Units are the model's standardised ones (a characteristic's typical
    batch-to-batch spread is 1); scales and rates are on their natural scale
    (``noise_sd``, ``fault_sd``: sd; ``fault_rate``: probability). Variables:
    ``mean`` (dim ``gauged_pair``), ``carry`` (``carry_edge``),
    ``lever_effect`` (``lever_edge`` x ``power``: ``lin``, ``quad``),
    ``noise_sd`` (``noise_pair``), ``drift`` (``drift_pair``), ``drift_sd``,
    ``fault_rate`` (``fault_segment``), ``fault_sd`` (``fault_pair``); coords
    are the layout's labels (``"step,characteristic"``, ``"source->target@step"``).
    Built from ``idata`` each call; the saved posterior keeps the flat ``theta``.

    Parameters
    ----------
    idata : arviz.InferenceData
        The fit's posterior (``CausalModel.idata_``).
    layout : Layout
    robust : bool
        Use the widened draws when the fit made them.

    Returns
    -------
    arviz.InferenceData

    Examples
    --------
    >>> # import arviz as az; az.summary(model.to_inference_data(), var_names=["carry"])
    """
    import arviz as az

    name = "theta_robust" if robust and "theta_robust" in idata.posterior else "theta"
    th = np.asarray(idata.posterior[name].transpose("chain", "draw", ...).values)
    posterior, coords, dims = {}, {}, {}
    for var, dim, attr, f in _BLOCKS:
        idx = np.asarray(getattr(layout, attr), dtype=np.int64)
        if not len(idx):
            continue
        x = th[:, :, idx]
        labels = [_label(layout.names[i]) for i in idx]
        if var == "lever_effect":
            # the layout keeps each (lever, characteristic, segment)'s linear and
            # quadratic coefficient side by side
            x = x.reshape(*x.shape[:2], -1, 2)
            labels = labels[::2]
            coords["power"] = ["lin", "quad"]
            dims[var] = [dim, "power"]
        else:
            dims[var] = [dim]
        posterior[var] = f(x) if f is not None else x
        coords[dim] = labels
    if layout.drift_scale_i is not None:
        posterior["drift_sd"] = np.exp(th[:, :, layout.drift_scale_i])
    out = az.from_dict(posterior=posterior, coords=coords, dims=dims)
    if "sample_stats" in idata.groups():
        out.add_groups(sample_stats=idata.sample_stats)
    return out
