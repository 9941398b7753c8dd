"""The compiled log-density of a process structure, cached on disk.

nutpie samples a log-density that PyTensor rewrites and numba compiles: about
46 s on a quiet two-core machine for the default process (165 s on a busy
one), the same graph each time the same process is fitted. The graph does
not depend on the data when the readings, features, reading variances and
prior moments enter as shared inputs (``build_pymc_model(..., shared=True)``),
so the rewritten PyTensor functions are pickled once per structure in the
user cache folder, beside a small head (sizes, names, coordinates) and the C
entry points nutpie calls, whose machine code numba caches. The next fit
reads the head and loads the machine code, and binds its data: it unpickles
the PyTensor functions (14 MB for the default process, 8.5 s under load)
only when numba's cache has lost the machine code.

The entry points sample ``x`` with ``theta = shift + scale * x``, an affine
map the fit gives as data (``shift = 0, scale = 1`` unless the fit is warm
started, :mod:`recovery.causal.sampling`): the same posterior of ``theta``
in other coordinates, which a warm start uses as its mass matrix.

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

__all__ = ["CACHE_ENV", "Compiled", "WarmState", "cache_dir", "compile_nutpie", "structure_key", "c_logp_dlogp",
           "read_warm", "write_warm"]

#: Environment variable that moves the cache folder (tests, read-only homes).
CACHE_ENV = "RECOVERY_FIT_CACHE"
# Bumped when the pickled payload changes shape.
_PAYLOAD = 2
_LIBS = ("pymc", "pytensor", "nutpie", "numba", "numpy", "scipy")


@dataclass
class Compiled:
    """A nutpie model ready to sample, and how it was obtained.

    Attributes
    ----------
    model : nutpie.compile_pymc.CompiledPyMCModel
        Bound to the fit's data.
    logp_dlogp : callable
        ``theta (P,) -> (logp, gradient (P,))`` on the same data (the C entry
        point nutpie calls, mapped back to ``theta``), for
        :func:`recovery.causal.sampling.checked_start`.
    cache_hit : bool
        The structure came from the cache (no PyTensor rewriting).
    machine_code_cached : bool
        The C entry points were loaded from numba's cache (the PyTensor
        functions were not needed).
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
    machine_code_cached: bool = False


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
        shift = numba.carray(_void_ptr(ud[0]), ({n_dim},), np.float64)
        scale = numba.carray(_void_ptr(ud[2]), ({n_dim},), np.float64)
{logp_args}
        lp_val, grad = logp_inner(shift + scale * x{logp_call})
        lp[()] = lp_val
        out[...] = grad * scale
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
        shift = numba.carray(_void_ptr(ud[0]), ({n_dim},), np.float64)
        scale = numba.carray(_void_ptr(ud[2]), ({n_dim},), np.float64)
{expand_args}
        (values,) = expand_inner(shift + scale * x{expand_call})
        out[...] = values
    except Exception:  # noqa: BLE001
        return -2
    return 0
"""

# The affine map's two inputs lead the wrappers' data (offsets 0 and 2 of ``ud``).
_AFFINE = ("__shift", "__scale")


def _head(parts: dict) -> dict:
    """What a fit needs of a structure besides the machine code: sizes, the
    data inputs (name, ndim) in the wrappers' order, names and coordinates."""
    logp_sh, exp_sh = parts["logp"].get_shared(), parts["expand"].get_shared()
    ndim = {v.name: v.ndim for v in [*logp_sh, *exp_sh]}
    logp_names = [v.name for v in logp_sh]
    expand_names = [v.name for v in exp_sh]
    names = list(dict.fromkeys(logp_names + expand_names))
    return dict(n_dim=parts["n_dim"], n_expanded=parts["n_expanded"], shape_info=parts["shape_info"],
                dims=parts["dims"], coords=parts["coords"], inputs=[(n, ndim[n]) for n in names],
                logp_names=logp_names, expand_names=expand_names)


def _user_data(head: dict, data: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    """The wrappers' view of the data: per input (the affine map's first) its
    address then its shape, as int64; and the arrays it points to (kept alive
    with it)."""
    arrays, words = {}, []
    for name, _ in [(n, 1) for n in _AFFINE] + head["inputs"]:
        arr = np.array(data[name], dtype=np.float64, order="C", copy=True)
        arr.flags.writeable = False
        arrays[name] = arr
        words += [arr.ctypes.data, *arr.shape]
    return np.array(words, dtype=np.int64), arrays


def _wrapper_source(head: dict) -> str:
    ndim = dict(head["inputs"])
    offsets, at = {}, 2 * 2  # after the affine map's two vectors
    for n, k in head["inputs"]:
        offsets[n] = at
        at += 1 + k

    def unpack(which):
        lines = []
        for n in which:
            o = offsets[n]
            shape = ", ".join(f"ud[{o + 1 + i}]" for i in range(ndim[n]))
            lines.append(f"        a_{n} = numba.carray(_void_ptr(ud[{o}]), ({shape}{',' if ndim[n] == 1 else ''}), np.float64)")
        return "\n".join(lines) or "        pass"

    return _WRAPPER.format(n_dim=head["n_dim"], n_exp=head["n_expanded"], n_ud=at,
                           logp_args=unpack(head["logp_names"]), expand_args=unpack(head["expand_names"]),
                           logp_call="".join(f", a_{n}" for n in head["logp_names"]),
                           expand_call="".join(f", a_{n}" for n in head["expand_names"]))


class _NeedsParts(Exception):
    """numba's cache has no machine code for a wrapper: it must be compiled."""


def _wrappers(head: dict, folder: Path, key: str, get_parts):
    """The C entry points nutpie calls, compiled by numba with its on-disk cache.

    nutpie's own wrappers hold the data as globals, which numba cannot cache, and
    compiling them links and re-optimises the whole log-density (40 s of the 50 s
    left once PyTensor's rewrites are cached). These take the data's addresses
    and shapes at run time instead, so their machine code is cached beside the
    generated source, one file per structure. The PyTensor functions they call
    (``get_parts()``) are only needed to compile them: on a hit of numba's cache
    they are never loaded.

    Returns
    -------
    logp_c, expand_c : numba CFunc
    from_cache : bool
        Both came from numba's cache.
    """
    import importlib.util
    import warnings

    import numba
    from numba.core.ccallback import CFunc

    src = _wrapper_source(head)
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
    T = numba.types
    sigs = {"logp": T.int64(T.uint64, T.CPointer(T.double), T.CPointer(T.double), T.CPointer(T.double),
                            T.voidptr),
            "expand": T.int64(T.uint64, T.uint64, T.CPointer(T.double), T.CPointer(T.double), T.voidptr)}

    def miss(*args, **kw):
        raise _NeedsParts

    out, from_cache = [], True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", numba.NumbaWarning)
        for fn in ("logp", "expand"):
            cf = CFunc(getattr(mod, fn), (sigs[fn].args, sigs[fn].return_type), locals={}, options={})
            cf.enable_caching()
            cf._compile_uncached = miss  # first ask numba's cache only
            try:
                cf.compile()
            except _NeedsParts:
                from_cache = False
                del cf._compile_uncached
                parts = get_parts()
                mod.logp_inner = parts["logp"].vm.jit_fn
                mod.expand_inner = parts["expand"].vm.jit_fn
                cf.compile()
            out.append(cf)
    return out[0], out[1], from_cache


def c_logp_dlogp(model):
    """``theta (P,) -> (logp, gradient (P,))`` through the C entry point of a
    :class:`Compiled` model (the one nutpie calls) with its bound data and
    affine map, back in ``theta``'s coordinates. A failed evaluation gives a
    log-density of NaN."""
    import ctypes

    f = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_void_p)(model.compiled_logp_func.address)
    shift, scale = model.shared_data["__shift"], model.shared_data["__scale"]

    def logp_dlogp(theta):
        x = np.ascontiguousarray((np.asarray(theta, dtype=np.float64) - shift) / scale)
        grad, lp = np.zeros_like(x), np.zeros(())
        rc = f(len(x), x.ctypes.data, grad.ctypes.data, lp.ctypes.data, model.user_data.ctypes.data)
        if rc not in (0, 3, 4):
            return float("nan"), np.full(len(x), np.nan)
        return float(lp), grad / scale

    return logp_dlogp


def _nutpie_model(head: dict, data: dict[str, np.ndarray], start: np.ndarray, folder: Path, key: str,
                  get_parts, shift: np.ndarray, scale: np.ndarray):
    """Wrap a structure as nutpie's compiled model, bound to ``data`` and the
    affine map (what ``nutpie.compile_pymc_model`` does after its
    ``_make_functions``). Returns the model and whether its machine code came
    from numba's cache."""
    from nutpie.compile_pymc import CompiledPyMCModel

    missing = [n for n, _ in head["inputs"] if n not in data]
    if missing:
        raise KeyError(f"the compiled log-density has an input '{missing[0]}' the fit does not give")
    n = head["n_dim"]
    shift = np.broadcast_to(np.asarray(shift, dtype=np.float64), (n,))
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,))
    if not (np.all(np.isfinite(shift)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError("the affine map needs a finite shift and a finite, positive scale")
    logp_c, exp_c, from_cache = _wrappers(head, folder, key, get_parts)
    user_data, arrays = _user_data(head, {**data, "__shift": shift, "__scale": scale})
    info = head["shape_info"]
    # shared_data keeps the arrays user_data points to alive as long as the model;
    # with_data (nutpie's record layout) does not apply to these wrappers. nutpie
    # samples through the C entry points only: its PyTensor functions are not given.
    model = CompiledPyMCModel(
        _n_dim=n, dims=head["dims"], _coords=head["coords"],
        _shapes={name: tuple(shape) for name, _, shape in zip(*info)},
        compiled_logp_func=logp_c, compiled_expand_func=exp_c,
        initial_point_func=lambda seed: start.copy(), shared_data=arrays, user_data=user_data,
        n_expanded=head["n_expanded"], shape_info=info, logp_func=None, expand_func=None)
    return model, from_cache


def _read(path: Path, what: str):
    with open(path, "rb") as f:
        payload = pickle.load(f)
    if not isinstance(payload, dict) or payload.get("payload") != _PAYLOAD:
        raise ValueError("not a cache entry of this version")
    return payload[what]


def _load(path: Path):
    """The PyTensor functions of an entry (``<key>.pkl``)."""
    return _read(path, "parts")


def _shared_inputs(parts: dict) -> list:
    return [*parts["logp"].get_shared(), *parts["expand"].get_shared()]


def _write(path: Path, obj: dict) -> None:
    # Written beside the entry and renamed over it: a reader never sees half a file,
    # and two fits writing the same entry leave one whole copy.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump({"payload": _PAYLOAD, **obj}, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(path: Path, parts: dict) -> None:
    # The shared inputs hold this fit's data (partners' readings); they are emptied
    # while pickling so that the cache keeps the structure only, and put back for
    # this fit. The head is written last: it is what marks the entry usable.
    shared = _shared_inputs(parts)
    kept = [v.get_value(borrow=True) for v in shared]
    try:
        for v, value in zip(shared, kept):
            v.set_value(np.zeros((0,) * np.ndim(value), dtype=np.asarray(value).dtype))
        _write(path, {"parts": parts})
    finally:
        for v, value in zip(shared, kept):
            v.set_value(value, borrow=True)
    _write(_head_path(path), {"head": _head(parts)})


def _head_path(path: Path) -> Path:
    return path.with_name(path.stem + ".head.pkl")


def compile_nutpie(build_model, key: str, data: dict[str, np.ndarray], start: np.ndarray, *,
                   use_cache: bool = True, folder: Path | None = None, shift=0.0, scale=1.0) -> Compiled:
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
        Where the chains start, in the sampler's coordinates ``x``.
    use_cache : bool
        ``False``: compile afresh and neither read nor write the cache.
    folder : Path, optional
        Default :func:`cache_dir`.
    shift, scale : float or ndarray (P,)
        The sampler's coordinates: ``theta = shift + scale * x`` (``scale > 0``,
        units of ``theta``). The default is ``theta`` itself.

    Returns
    -------
    Compiled
    """
    t0 = time.perf_counter()
    # Without the cache the wrappers still need a file for numba: a private folder.
    folder = (folder or cache_dir()) if use_cache else Path(tempfile.mkdtemp(prefix="recovery-fit-"))
    path = folder / f"{key}.pkl"
    note = None
    if use_cache and _head_path(path).exists() and path.exists():
        try:
            head = _read(_head_path(path), "head")
            model, from_cache = _nutpie_model(head, data, start, folder, key, lambda: _load(path), shift, scale)
            return Compiled(model, c_logp_dlogp(model), True, time.perf_counter() - t0,
                            machine_code_cached=from_cache)
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt
            note = (f"compiled log-density cache entry {path.name[:12]} was unreadable "
                    f"({type(exc).__name__}), rebuilt")
            _head_path(path).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
    parts = _build_functions(build_model())
    for var in _shared_inputs(parts):
        if var.name not in data:
            raise KeyError(f"the compiled log-density has an input '{var.name}' the fit does not give")
        var.set_value(data[var.name])
    model, from_cache = _nutpie_model(_head(parts), data, start, folder, key, lambda: parts, shift, scale)
    if use_cache:
        try:
            _save(path, parts)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written costs time only
            note = f"compiled log-density not cached ({type(exc).__name__}: {exc})"
    return Compiled(model, c_logp_dlogp(model), False, time.perf_counter() - t0, note,
                    machine_code_cached=from_cache)


@dataclass(frozen=True)
class WarmState:
    """What a fit leaves for the next fit of its structure (``<key>.warm.npz``).

    Summaries of a posterior, not data: no reading, feature or batch count.

    Attributes
    ----------
    mean, sd : ndarray (P,)
        Posterior mean and sd of ``theta`` (its units).
    step_size : float
        The sampler's step size after tuning, in the coordinates
        ``(theta - mean) / sd``.
    """

    mean: np.ndarray
    sd: np.ndarray
    step_size: float


def _warm_path(key: str, folder: Path | None) -> Path:
    return (folder or cache_dir()) / f"{key}.warm.npz"


def read_warm(key: str, size: int, folder: Path | None = None) -> WarmState | None:
    """The warm state of a structure, or None when there is none usable (missing,
    unreadable, another size, non-finite values or a non-positive sd or step)."""
    path = _warm_path(key, folder)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            mean, sd, step = (np.asarray(z[k], dtype=np.float64) for k in ("mean", "sd", "step_size"))
    except Exception:  # noqa: BLE001 - a bad entry costs a cold tuning, nothing else
        return None
    ok = (mean.shape == sd.shape == (size,) and step.shape == () and np.all(np.isfinite(mean))
          and np.all(np.isfinite(sd)) and np.all(sd > 0) and np.isfinite(step) and step > 0)
    return WarmState(mean, sd, float(step)) if ok else None


def write_warm(key: str, state: WarmState, folder: Path | None = None) -> None:
    """Store ``state`` for the next fit of the structure ``key`` (atomically)."""
    path = _warm_path(key, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, mean=np.asarray(state.mean, dtype=np.float64), sd=np.asarray(state.sd, dtype=np.float64),
                 step_size=np.float64(state.step_size))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
