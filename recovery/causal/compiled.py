"""The compiled log-density of a process structure, cached on disk.

nutpie samples a log-density that PyTensor rewrites and numba compiles: about
46 s on a quiet two-core machine for the default process (165 s on a busy
one), the same graph each time the same process is fitted. The graph does
not depend on the data when the readings, features, reading variances and
prior moments enter as shared inputs (``build_pymc_model(..., shared=True)``),
so the rewritten PyTensor functions are pickled once per structure in the
user cache folder and loaded by the next fit, which only binds its data.

What the key holds (:func:`structure_key`): the process digest, the model
format, the layout's structure (parameter names, index arrays, fixed
carry-over, drift map), the gauged rows and the observed set of each
inspection pattern, whether a prior is given (and its size), the bars per
batch, the versions of the libraries that build and run the graph, and the
source of the modules that write it. Anything else (a batch count, a reading, a prior mean) is
data. A stale or unreadable entry is rebuilt, never trusted: PyTensor's own
numba cache (``~/.pytensor``) keeps the machine code behind the pickled
functions, keyed by their graphs.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from numba.extending import intrinsic

__all__ = ["CACHE_ENV", "Compiled", "cache_dir", "compile_nutpie", "structure_key"]

#: Environment variable that moves the cache folder (tests, read-only homes).
CACHE_ENV = "RECOVERY_FIT_CACHE"
# Bumped when the pickled payload changes shape.
_PAYLOAD = 1
_LIBS = ("pymc", "pytensor", "nutpie", "numba", "numpy", "scipy")


@dataclass
class Compiled:
    """A nutpie model ready to sample, and how it was obtained.

    Attributes
    ----------
    model : nutpie.compile_pymc.CompiledPyMCModel
        Bound to the fit's data.
    logp_dlogp : callable
        ``theta (P,) -> (logp, gradient (P,))`` on the same data, for
        :func:`recovery.causal.sampling.checked_start`.
    cache_hit : bool
        The functions came from the cache (no PyTensor rewriting).
    seconds : float
        Wall time to get ``model`` (s).
    note : str or None
        For the fit report: a cache entry that was unreadable and rebuilt.
    """

    model: object
    logp_dlogp: object
    cache_hit: bool
    seconds: float
    note: str | None = None


def cache_dir() -> Path:
    """The folder of the cached log-densities: ``$RECOVERY_FIT_CACHE`` or the user
    cache folder (``platformdirs.user_cache_dir('recovery')/fit``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("recovery")) / "fit"


def _lib_versions() -> list[str]:
    out = [sys.version.split()[0]]
    for name in _LIBS:
        try:
            out.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            out.append(f"{name}=none")
    return out


def structure_key(layout, fd, prior, bars: int, process_digest: str, *, form: str = "dense") -> str:
    """The cache key of the compiled log-density of one structure (hex SHA-256).

    Parameters
    ----------
    layout : Layout
    fd : FitData
    prior : (mean, cov) or None
        Only whether it is given (and its size) enters the key: the values are data.
    bars : int
        Bars per batch.
    process_digest : str
        ``Process.digest`` of the process fitted.
    form : {"dense", "dag"}
        The likelihood's form (``likelihood.likelihood_form``): whether it
        factorises rests on the reading variances, which are otherwise data.

    Returns
    -------
    str
    """
    from recovery.causal import layout as layout_mod, likelihood, sampling
    from recovery.causal.persistence import MODEL_FORMAT

    h = hashlib.sha256()

    def put(x) -> None:
        if isinstance(x, np.ndarray):
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        else:
            h.update(repr(x).encode())
        h.update(b"\x00")

    put(_PAYLOAD)
    put(MODEL_FORMAT)
    put(process_digest)
    put(_lib_versions())
    for mod in (layout_mod, likelihood, sampling, sys.modules[__name__]):
        put(Path(mod.__file__).read_bytes())
    # The layout's structure: everything but the prior moments, which are data.
    for name in sorted(vars(layout)):
        if name in ("prior_mu", "prior_sd"):
            continue
        val = getattr(layout, name)
        if isinstance(val, (np.ndarray, int, float, str, bool, type(None))) or (
                isinstance(val, (list, tuple)) and all(isinstance(v, (int, float, str, np.integer)) for v in val)):
            put(name)
            put(np.asarray(val) if isinstance(val, (list, tuple)) and val and not isinstance(val[0], str)
                else val)
    put(fd.rows)
    put([idx.tolist() for idx, _, _ in fd.patterns])
    put(None if prior is None else ("mvnormal", len(prior[0])))
    put(int(bars))
    if form != "dense":      # keys of the dense form stay those written before the dag form
        put(("likelihood", form))
    return h.hexdigest()


def _build_functions(model):
    """nutpie's PyTensor functions for ``model`` (the slow part: graph rewrites)."""
    from nutpie.compile_pymc import _make_functions
    from pymc.initial_point import make_initial_point_fn

    ipf = make_initial_point_fn(model=model, overrides=None, default_strategy="support_point",
                                jitter_rvs=set(), return_transformed=True)
    n_dim, n_expanded, logp_fn_pt, expand_fn_pt, _, shape_info = _make_functions(
        model, mode="NUMBA", compute_grad=True, join_expanded=True, pymc_initial_point_fn=ipf)
    from nutpie.compile_pymc import _prepare_dims_and_coords

    dims, coords = _prepare_dims_and_coords(model, shape_info)
    return dict(n_dim=n_dim, n_expanded=n_expanded, logp=logp_fn_pt, expand=expand_fn_pt,
                shape_info=shape_info, dims=dims, coords=coords)


@intrinsic
def _void_ptr(typingctx, src):
    """An integer address as a void pointer (inside the generated wrappers)."""
    from numba.core import cgutils, types

    def codegen(cgctx, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(src), codegen


_WRAPPER = """\
# Generated by recovery.causal.compiled for one structure; numba caches it beside this file.
import numba
import numpy as np

from recovery.causal.compiled import _void_ptr

logp_inner = None
expand_inner = None


def logp(dim, x_, out_, logp_, ud_):
    if dim != {n_dim}:
        return -1
    try:
        ud = numba.carray(ud_, ({n_ud},), np.int64)
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_dim},))
        lp = numba.carray(logp_, ())
{logp_args}
        lp_val, grad = logp_inner(x{logp_call})
        lp[()] = lp_val
        out[...] = grad
        if not np.all(np.isfinite(out)):
            return 3
        if not np.isfinite(lp_val):
            return 4
    except Exception:  # noqa: BLE001
        return 1
    return 0


def expand(dim, expanded, x_, out_, ud_):
    if dim != {n_dim} or expanded != {n_exp}:
        return -1
    try:
        ud = numba.carray(ud_, ({n_ud},), np.int64)
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_exp},))
{expand_args}
        (values,) = expand_inner(x{expand_call})
        out[...] = values
    except Exception:  # noqa: BLE001
        return -2
    return 0
"""


def _user_data(names: list[str], data: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, list]:
    """The wrappers' view of the data: per input its address then its shape, as
    int64; the arrays it points to (kept alive with it); the offsets."""
    arrays, words, offsets = {}, [], []
    for name in names:
        arr = np.array(data[name], dtype=np.float64, order="C", copy=True)
        arr.flags.writeable = False
        arrays[name] = arr
        offsets.append(len(words))
        words += [arr.ctypes.data, *arr.shape]
    return np.array(words or [0], dtype=np.int64), arrays, offsets


def _wrapper_source(parts: dict) -> str:
    logp_names = [v.name for v in parts["logp"].get_shared()]
    expand_names = [v.name for v in parts["expand"].get_shared()]
    names = list(dict.fromkeys(logp_names + expand_names))
    ndim = {v.name: v.ndim for v in [*parts["logp"].get_shared(), *parts["expand"].get_shared()]}
    offsets, at = {}, 0
    for n in names:
        offsets[n] = at
        at += 1 + ndim[n]

    def unpack(which):
        lines = []
        for n in which:
            o = offsets[n]
            shape = ", ".join(f"ud[{o + 1 + i}]" for i in range(ndim[n]))
            lines.append(f"        a_{n} = numba.carray(_void_ptr(ud[{o}]), ({shape}{',' if ndim[n] == 1 else ''}), np.float64)")
        return "\n".join(lines) or "        pass"

    return _WRAPPER.format(n_dim=parts["n_dim"], n_exp=parts["n_expanded"], n_ud=max(at, 1),
                           logp_args=unpack(logp_names), expand_args=unpack(expand_names),
                           logp_call="".join(f", a_{n}" for n in logp_names),
                           expand_call="".join(f", a_{n}" for n in expand_names)), names


def _wrappers(parts: dict, folder: Path, key: str):
    """The C entry points nutpie calls, compiled by numba with its on-disk cache.

    nutpie's own wrappers hold the data as globals, which numba cannot cache, and
    compiling them links and re-optimises the whole log-density (40 s of the 50 s
    left once PyTensor's rewrites are cached). These take the data's addresses
    and shapes at run time instead, so their machine code is cached beside the
    generated source, one file per structure."""
    import importlib.util
    import warnings

    import numba

    src, names = _wrapper_source(parts)
    path = folder / f"{key}_wrap.py"
    if not path.exists() or path.read_text() != src:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w") as f:
            f.write(src)
        os.replace(tmp, path)
    name = f"_recovery_fit_{key[:24]}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[name] = mod
    mod.logp_inner = parts["logp"].vm.jit_fn
    mod.expand_inner = parts["expand"].vm.jit_fn
    T = numba.types
    c_sig = T.int64(T.uint64, T.CPointer(T.double), T.CPointer(T.double), T.CPointer(T.double), T.voidptr)
    c_sig_exp = T.int64(T.uint64, T.uint64, T.CPointer(T.double), T.CPointer(T.double), T.voidptr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", numba.NumbaWarning)
        logp_c = numba.cfunc(c_sig, cache=True)(mod.logp)
        exp_c = numba.cfunc(c_sig_exp, cache=True)(mod.expand)
    return logp_c, exp_c, names


def _nutpie_model(parts: dict, data: dict[str, np.ndarray], start: np.ndarray, folder: Path, key: str):
    """Wrap PyTensor functions as nutpie's compiled model, bound to ``data``
    (what ``nutpie.compile_pymc_model`` does after its ``_make_functions``)."""
    from nutpie.compile_pymc import CompiledPyMCModel

    logp_pt, expand_pt = parts["logp"], parts["expand"]
    for var in [*logp_pt.get_shared(), *expand_pt.get_shared()]:
        if var.name not in data:
            raise KeyError(f"the compiled log-density has an input '{var.name}' the fit does not give")
        var.set_value(data[var.name])  # the PyTensor functions (checked_start) see the same data
    logp_c, exp_c, names = _wrappers(parts, folder, key)
    user_data, arrays, _ = _user_data(names, data)
    info = parts["shape_info"]
    # shared_data keeps the arrays user_data points to alive as long as the model;
    # with_data (nutpie's record layout) does not apply to these wrappers.
    return CompiledPyMCModel(
        _n_dim=parts["n_dim"], dims=parts["dims"], _coords=parts["coords"],
        _shapes={name: tuple(shape) for name, _, shape in zip(*info)},
        compiled_logp_func=logp_c, compiled_expand_func=exp_c,
        initial_point_func=lambda seed: start.copy(), shared_data=arrays, user_data=user_data,
        n_expanded=parts["n_expanded"], shape_info=info, logp_func=logp_pt, expand_func=expand_pt)


def _load(path: Path):
    with open(path, "rb") as f:
        payload = pickle.load(f)
    if not isinstance(payload, dict) or payload.get("payload") != _PAYLOAD:
        raise ValueError("not a cache entry of this version")
    return payload["parts"]


def _shared_inputs(parts: dict) -> list:
    return [*parts["logp"].get_shared(), *parts["expand"].get_shared()]


def _save(path: Path, parts: dict) -> None:
    # Written beside the entry and renamed over it: a reader never sees half a file,
    # and two fits writing the same entry leave one whole copy. The shared inputs
    # hold this fit's data (partners' readings); they are emptied while pickling so
    # that the cache keeps the structure only, and put back for this fit.
    path.parent.mkdir(parents=True, exist_ok=True)
    shared = _shared_inputs(parts)
    kept = [v.get_value(borrow=True) for v in shared]
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        for v, value in zip(shared, kept):
            v.set_value(np.zeros((0,) * np.ndim(value), dtype=np.asarray(value).dtype))
        with os.fdopen(fd, "wb") as f:
            pickle.dump({"payload": _PAYLOAD, "parts": parts}, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        for v, value in zip(shared, kept):
            v.set_value(value, borrow=True)


def compile_nutpie(build_model, key: str, data: dict[str, np.ndarray], start: np.ndarray, *,
                   use_cache: bool = True, folder: Path | None = None) -> Compiled:
    """nutpie's compiled model of a structure, from the cache when it holds one.

    Parameters
    ----------
    build_model : callable
        ``() -> pymc.Model`` with the data as shared inputs named as in ``data``;
        called on a miss only.
    key : str
        :func:`structure_key`.
    data : dict of str to ndarray
        The values of the shared inputs for this fit.
    start : ndarray (P,)
        Where the chains start (unconstrained ``theta``).
    use_cache : bool
        ``False``: compile afresh and neither read nor write the cache.
    folder : Path, optional
        Default :func:`cache_dir`.

    Returns
    -------
    Compiled
    """
    t0 = time.perf_counter()
    # Without the cache the wrappers still need a file for numba: a private folder.
    folder = (folder or cache_dir()) if use_cache else Path(tempfile.mkdtemp(prefix="recovery-fit-"))
    path = folder / f"{key}.pkl"
    parts, note = None, None
    if use_cache and path.exists():
        try:
            parts = _load(path)
            compiled = _nutpie_model(parts, data, start, folder, key)
            return Compiled(compiled, _logp_dlogp(parts), True, time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt
            note = (f"compiled log-density cache entry {path.name[:12]} was unreadable "
                    f"({type(exc).__name__}), rebuilt")
            path.unlink(missing_ok=True)
    parts = _build_functions(build_model())
    compiled = _nutpie_model(parts, data, start, folder, key)
    if use_cache:
        try:
            _save(path, parts)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written costs time only
            note = f"compiled log-density not cached ({type(exc).__name__}: {exc})"
    return Compiled(compiled, _logp_dlogp(parts), False, time.perf_counter() - t0, note)


def _logp_dlogp(parts: dict):
    fn = parts["logp"]

    def logp_dlogp(x):
        logp, grad = fn(np.asarray(x, dtype=np.float64))
        return float(logp), np.asarray(grad, dtype=np.float64)

    return logp_dlogp
