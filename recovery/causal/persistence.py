"""Saving and loading a fitted model: the directory format (``MODEL_FORMAT``)
and the version stamp (:class:`VersionStamp`).

:func:`save` writes a fitted :class:`~recovery.causal.model.CausalModel`;
:func:`load` reads the directory back into a :class:`FittedState`, which
``CausalModel.load`` hands to the same method ``fit`` uses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recovery.causal.components import BarSpread, CrackModel
from recovery.causal.config import FitConfig, PriorConfig
from recovery.causal.errors import ModelLoadError
from recovery.causal.graph import CausalGraph
from recovery.causal.layout import Layout, Standardisation, segment_fault_rates
from recovery.causal.report import FitReport
from recovery.causal.summaries import Summaries
from simulators.definition import Process, parse_process

__all__ = ["MODEL_FORMAT", "VersionStamp", "FittedState", "save", "load", "read_theta", "process_text",
           "package_version", "digest"]

MODEL_FORMAT = 3


@dataclass(frozen=True)
class VersionStamp:
    """Identifies a fitted model: what it was fitted to and with."""

    package: str
    model_format: int
    process_name: str
    process_digest: str
    data_digest: str
    draws_digest: str
    method: str
    created: str

    @property
    def id(self) -> str:
        h = hashlib.sha256(f"{self.process_digest}{self.data_digest}{self.draws_digest}"
                           f"{self.package}".encode())
        return h.hexdigest()[:12]


@dataclass
class FittedState:
    """Everything a fitted model learned (the ``*_`` attributes of ``CausalModel``
    that are not derived from the others).

    Attributes
    ----------
    graph, layout, std, config, priors, idata, crack, spread, summaries, report, version
        As ``CausalModel.graph_``, ``layout_``, ...
    process_text : str
        The exact text of the process file (saved as ``process.toml``).
    """

    graph: CausalGraph
    layout: Layout
    std: Standardisation
    config: FitConfig
    priors: PriorConfig
    idata: Any
    crack: CrackModel
    spread: BarSpread
    summaries: Summaries
    report: FitReport
    version: VersionStamp
    process_text: str


def save(model, directory: str | Path) -> Path:
    """Write a fitted model to a directory (see ``CausalModel.save``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.idata_.to_netcdf(str(d / "posterior.nc"), engine="h5netcdf")
    (d / "graph.json").write_text(model.graph_.to_json())
    (d / "process.toml").write_text(model._process_text)
    s = model.summaries_
    np.savez_compressed(d / "training.npz", batch_ids=s.batch_ids.astype(str), mean=s.mean,
                        var=s.var, count=s.count, levers=s.levers, lever_seen=s.lever_seen,
                        day=s.day, last_step=s.last_step)
    meta = {
        "version": asdict(model.version_),
        "version_id": model.version_.id,
        "config": asdict(model.config_),
        "priors": asdict(model.priors_),
        "standardisation": model.std_.to_dict(),
        "layout": model.layout_.to_dict(),
        "crack": asdict(model.crack_),
        "spread": {"nu": model.spread_.nu.tolist(), "ss": model.spread_.ss.tolist(),
                   "gauge": model.spread_.gauge.tolist(), "trimmed": model.spread_.trimmed},
        "report": _jsonable(asdict(model.report_)),
    }
    (d / "model.json").write_text(json.dumps(meta, indent=1))
    return d


def _tuples(d: dict) -> dict:
    """JSON lists back to the tuples of the frozen dataclasses."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def load(directory: str | Path, *, posterior: bool = True) -> FittedState:
    """Read a directory written by :func:`save`.

    Parameters
    ----------
    directory : str or Path
    posterior : bool
        Read ``posterior.nc`` into ArviZ ``InferenceData`` (``idata``). With
        False, ``idata`` is None and ArviZ is not imported: a reader that needs
        only the draws of ``theta`` takes them from :func:`read_theta` (ArviZ's
        import is most of a full load's time).

    Raises
    ------
    ModelLoadError
        The directory or a file is missing, or it was written by an
        incompatible model format.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ModelLoadError(f"{d}: no such model directory (run 'recovery fit' first)")
    need = ["model.json", "graph.json", "process.toml", "posterior.nc", "training.npz"]
    missing = [n for n in need if not (d / n).exists()]
    if missing:
        raise ModelLoadError(f"{d}: not a model directory; missing {missing}")
    meta = json.loads((d / "model.json").read_text())
    fmt = meta.get("version", {}).get("model_format")
    if fmt != MODEL_FORMAT:
        raise ModelLoadError(f"{d}: model format {fmt}, this version reads {MODEL_FORMAT}; refit")
    text = (d / "process.toml").read_text()
    process = parse_process(text, f"{d}/process.toml")
    if process.digest != meta["version"]["process_digest"]:
        raise ModelLoadError(f"{d}: process.toml does not match the model's process digest")
    graph = CausalGraph.from_dict(json.loads((d / "graph.json").read_text()), process)
    priors = PriorConfig(**_tuples(meta["priors"]))
    cfg = FitConfig(**meta["config"])
    std = Standardisation.from_dict(meta["standardisation"])
    z = np.load(d / "training.npz", allow_pickle=False)
    summ = Summaries(z["batch_ids"].astype(object), z["mean"], z["var"], z["count"], z["levers"],
                     z["lever_seen"], z["day"], z["last_step"])
    layout = Layout(graph, std, priors, segment_fault_rates(process, graph))
    if layout.names != meta["layout"]["names"]:
        raise ModelLoadError(f"{d}: the stored parameter layout does not match this version's; refit")
    layout.prior_mu = np.asarray(meta["layout"]["prior_mu"])
    layout.prior_sd = np.asarray(meta["layout"]["prior_sd"])
    idata = read_idata(d) if posterior else None
    sp = meta["spread"]
    spread = BarSpread(np.asarray(sp["nu"], float), np.asarray(sp["ss"], float),
                       np.asarray(sp["gauge"], float), int(sp["trimmed"]))
    report = FitReport(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                          if isinstance(v, list) else v for k, v in meta["report"].items()})
    return FittedState(graph, layout, std, cfg, priors, idata, CrackModel(**_tuples(meta["crack"])),
                       spread, summ, report, VersionStamp(**meta["version"]), text)


def read_idata(directory: str | Path):
    """ArviZ ``InferenceData`` of ``posterior.nc`` in a model directory, read into memory.

    Everything is loaded and the file let go, so the model can be saved again
    into the folder it came from.
    """
    import arviz as az

    idata = az.from_netcdf(str(Path(directory) / "posterior.nc"), engine="h5netcdf")
    for group in idata.groups():
        getattr(idata, group).load().close()
    return idata


def read_theta(directory: str | Path, names: tuple[str, ...], robust: bool = True) -> np.ndarray:
    """Posterior draws ``(S, P)`` of ``theta`` from ``posterior.nc``, chains stacked,
    read with h5py alone (no ArviZ, no xarray); the same array as
    :func:`recovery.causal.posterior.theta_draws` of the loaded ``idata``.

    Parameters
    ----------
    directory : str or Path
        A model directory (:func:`save`).
    names : tuple of str
        The layout's parameter names (``Layout.names``), checked against the
        file's ``param`` coordinate.
    robust : bool
        ``theta_robust`` when the fit made it, else ``theta``.

    Raises
    ------
    ModelLoadError
        The file is missing, unreadable or not of this layout.
    """
    import h5py

    path = Path(directory) / "posterior.nc"
    try:
        with h5py.File(path, "r") as f:
            post = f["posterior"]
            name = "theta_robust" if robust and "theta_robust" in post else "theta"
            x = np.asarray(post[name][...], dtype=float)
            stored = [v.decode() if isinstance(v, bytes) else str(v) for v in post["param"][...]]
    except (OSError, KeyError) as exc:
        raise ModelLoadError(f"{path}: cannot read the posterior draws ({exc})") from None
    # netCDF dims (chain, draw, param): C order stacks chain-major, as xarray's stack does
    if x.ndim != 3 or stored != list(names):
        raise ModelLoadError(f"{path}: the stored draws do not match the model's parameter layout; refit")
    return x.reshape(-1, x.shape[2])


def process_text(process: Process) -> str:
    """The exact text of a process's file (built-in or on disk)."""
    from importlib import resources

    from simulators.definition import BUILTIN_PROCESSES

    if process.source in BUILTIN_PROCESSES.values():
        return resources.files("simulators.processes").joinpath(process.source).read_text("utf-8")
    path = Path(process.source)
    if path.exists():
        return path.read_text("utf-8")
    raise ModelLoadError(f"cannot find the text of process '{process.name}' ({process.source})")


def package_version() -> str:
    from recovery import __version__
    return __version__


def digest(a: np.ndarray) -> str:
    """Short content hash of an array."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x
