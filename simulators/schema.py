"""The step-data schema: the one definition of the long table every part shares.

It lives in ``simulators`` (not ``recovery``) because the simulator must write
it and ``simulators`` never imports ``recovery``; ``recovery.data`` uses it for
ingestion and the store.

One row per observation:

============  ===========  ===========================================================
column        dtype        meaning
============  ===========  ===========================================================
batch_id      string       batch identifier, never null
bar_id        Int64        bar number within the batch; null for batch-level rows
step          int64        process step, 1-based
factory       string       factory that ran the step
partner       string       partner that owns the factory
variable      string       characteristic (measurement), lever name (lever),
                           event or context name
value         float64      in ``unit``; finite for measurements and levers
unit          string       pint unit string, must equal the process's unit
kind          string       ``measurement`` | ``lever`` | ``event`` | ``context``
timestamp     datetime     UTC
============  ===========  ===========================================================
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulators.definition import Process

__all__ = ["COLUMNS", "KINDS_OF_ROW", "VALUE_KINDS", "StepRules", "SchemaError", "observations_frame",
           "observations_table", "arrow_schema", "validate", "check_rows", "coded_strings",
           "dictionary_schema", "plain_table"]

COLUMNS: dict[str, str] = {
    "batch_id": "string",
    "bar_id": "Int64",
    "step": "int64",
    "factory": "string",
    "partner": "string",
    "variable": "string",
    "value": "float64",
    "unit": "string",
    "kind": "string",
    "timestamp": "datetime64[ns, UTC]",
}
KINDS_OF_ROW = ("measurement", "lever", "event", "context")
#: Kinds whose rows must carry a finite value in the process's unit (events and
#: context may carry NaN, in a unit of their own).
VALUE_KINDS = ("measurement", "lever")


class StepRules:
    """The step table's rules for one process, as vectorised lookups.

    The one place that says what a row of step data must satisfy against its
    process: a known step, run by its factory and owned by its partner; a
    measurement of a known characteristic in the characteristic's unit; a
    lever known, acting at its step, in its unit and inside its hard bounds;
    a finite value for both (:data:`VALUE_KINDS`). :func:`check_rows` (the
    simulator's and ``validate``'s check) and the ingestion of partner files
    (``recovery.data.ingestion``) both ask these; each words its own messages,
    and ingestion adds only what is about partner files (mappings, unit
    conversion, plausible ranges, quarantine).

    Every method takes array-likes (missing values as None, NaN or <NA>) and
    returns NumPy arrays of the same length.

    Parameters
    ----------
    process : Process

    Examples
    --------
    >>> from simulators.definition import load_process
    >>> rules = StepRules(load_process("small"))
    >>> rules.known_step([0, 1, 99]).tolist()
    [False, True, False]
    """

    def __init__(self, process: Process):
        self.process = process
        self._factory = np.array([None] + [s.factory for s in process.steps], dtype=object)
        self._partner = np.array([None] + [s.partner for s in process.steps], dtype=object)
        self._chars = {c.name: c for c in process.characteristics}
        self._levers = {lv.name: lv for lv in process.levers}

    # -- steps -------------------------------------------------------------------
    def known_step(self, step) -> np.ndarray:
        """True where the step is one of the process's (1..n_steps)."""
        st = _ints(step, 0)
        return (st >= 1) & (st <= self.process.n_steps)

    def step_factory(self, step) -> np.ndarray:
        """The factory that runs each step (None where the step is unknown)."""
        return self._factory[self._step_index(step)]

    def step_partner(self, step) -> np.ndarray:
        """The partner that owns each step's factory (None where the step is unknown)."""
        return self._partner[self._step_index(step)]

    def _step_index(self, step) -> np.ndarray:
        st = _ints(step, 0)
        return np.where(self.known_step(st), st, 0)

    # -- variables ---------------------------------------------------------------
    def is_characteristic(self, variable) -> np.ndarray:
        """True where the variable is a characteristic of the process."""
        return _lookup(variable, {n: True for n in self._chars}, False, bool)

    def is_lever(self, variable) -> np.ndarray:
        """True where the variable is a lever of the process."""
        return _lookup(variable, {n: True for n in self._levers}, False, bool)

    def lever_step(self, variable, default: int = -1) -> np.ndarray:
        """The step each lever acts at (``default`` where not a lever)."""
        return _lookup(variable, {n: lv.step for n, lv in self._levers.items()}, default, np.int64)

    def lever_bounds(self, variable) -> tuple[np.ndarray, np.ndarray]:
        """Each lever's hard bounds, in its unit (-inf, inf where not a lever)."""
        return (_lookup(variable, {n: lv.lower for n, lv in self._levers.items()}, -np.inf, np.float64),
                _lookup(variable, {n: lv.upper for n, lv in self._levers.items()}, np.inf, np.float64))

    def characteristic_unit(self, variable) -> np.ndarray:
        """Each characteristic's unit (None where not a characteristic)."""
        return _lookup(variable, {n: c.unit for n, c in self._chars.items()}, None, object)

    def lever_unit(self, variable) -> np.ndarray:
        """Each lever's unit (None where not a lever)."""
        return _lookup(variable, {n: lv.unit for n, lv in self._levers.items()}, None, object)

    def process_unit(self, kind, variable) -> np.ndarray:
        """The unit a row must be in: the characteristic's for a measurement, the
        lever's for a lever; None for events and context (their own unit) and
        for unknown variables."""
        k = pd.Series(np.asarray(kind, dtype=object))
        return np.where(k.eq("measurement").to_numpy(dtype=bool), self.characteristic_unit(variable),
                        np.where(k.eq("lever").to_numpy(dtype=bool), self.lever_unit(variable), None))

    @staticmethod
    def needs_value(kind) -> np.ndarray:
        """True where the row's kind must carry a finite value (:data:`VALUE_KINDS`)."""
        return pd.Series(np.asarray(kind, dtype=object)).isin(VALUE_KINDS).to_numpy(dtype=bool)


def _ints(values, missing: int) -> np.ndarray:
    """Whole numbers as int64, ``missing`` where missing."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    return pd.Series(values).astype("Int64").fillna(missing).to_numpy(dtype=np.int64)


def _lookup(values, table: dict, default, dtype) -> np.ndarray:
    """``table[v]`` per value (``default`` for others and missing), once per distinct value."""
    codes, uniq = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    out = np.empty(len(uniq) + 1, dtype=dtype)
    for i, u in enumerate(uniq):
        out[i] = table.get(u, default)
    out[-1] = default  # codes are -1 where missing
    return out[codes]


class SchemaError(ValueError):
    """Step data does not match the schema. ``failures`` is a frame of
    (row, column, reason); ``row`` is the 0-based position in the table."""

    def __init__(self, message: str, failures: pd.DataFrame):
        super().__init__(message)
        self.failures = failures


def _frame_schema():
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            "batch_id": pa.Column("string", pa.Check.str_length(min_value=1), nullable=False),
            "bar_id": pa.Column("Int64", pa.Check.ge(0), nullable=True),
            "step": pa.Column("int64", pa.Check.ge(1)),
            "factory": pa.Column("string", nullable=False),
            "partner": pa.Column("string", nullable=False),
            "variable": pa.Column("string", pa.Check.str_length(min_value=1), nullable=False),
            "value": pa.Column("float64", nullable=True),
            "unit": pa.Column("string", nullable=False),
            "kind": pa.Column("string", pa.Check.isin(KINDS_OF_ROW), nullable=False),
            "timestamp": pa.Column("datetime64[ns, UTC]", nullable=True),
        },
        checks=[
            pa.Check(lambda d: ~StepRules.needs_value(d["kind"]) | np.isfinite(
                d["value"].astype("float64")).fillna(False),
                element_wise=False, name="value is finite for measurements and levers"),
        ],
        strict=True,
        coerce=True,
        ordered=False,
    )


def validate(df: pd.DataFrame, process: Process | None = None) -> pd.DataFrame:
    """Coerce and validate step data; raise :class:`SchemaError` on any failure.

    Parameters
    ----------
    df : DataFrame
        A table in the step-data schema.
    process : Process, optional
        Also check steps, variables, units, factories and lever bounds against it.

    Returns
    -------
    DataFrame
        The coerced table (same rows, schema dtypes, schema column order).

    Examples
    --------
    >>> from simulators.process import Simulator
    >>> sim = Simulator("small")
    >>> df = sim.simulate(2, seed=0).observations
    >>> validate(df, sim.process).shape[1]
    10
    """
    import pandera.errors as pe

    try:
        out = _frame_schema().validate(df, lazy=True)
    except pe.SchemaErrors as exc:
        fc = exc.failure_cases
        rows = fc["index"].astype("Int64") if "index" in fc else pd.Series([pd.NA] * len(fc))
        check = fc["check"].astype(str)
        wide = check.str.startswith("value is finite")
        failures = pd.DataFrame({
            "row": rows,
            # a table-wide check reports every cell of a failing row; it is about the value
            # a missing or unexpected column is reported with the column as the failure case
            "column": fc["column"].fillna(fc["failure_case"].where(
                check.isin(["column_in_dataframe", "column_in_schema"]), "<table>")
            ).astype(str).where(~wide, "value"),
            "reason": (check + ": " + fc["failure_case"].astype(str)).where(~wide, check),
        }).drop_duplicates(ignore_index=True)
        first = failures.head(5).to_string(index=False)
        raise SchemaError(f"{len(failures)} schema failure(s); first:\n{first}", failures) from None
    out = out[list(COLUMNS)]
    if process is not None:
        failures = check_rows(out, process)
        if len(failures):
            first = failures.head(5).to_string(index=False)
            raise SchemaError(f"{len(failures)} row(s) do not fit process '{process.name}'; "
                              f"first:\n{first}", failures)
    return out


def check_rows(df: pd.DataFrame, process: Process) -> pd.DataFrame:
    """Rows that do not fit the process: (row, column, reason), one per failing row.

    Checks known steps, variables of the right kind, the process's unit, the
    step's factory and partner, and lever values inside their hard bounds
    (the rules of :class:`StepRules`). ``df`` must already have schema dtypes.
    """
    rules = StepRules(process)
    n = len(df)
    reason = np.full(n, "", dtype=object)
    column = np.full(n, "", dtype=object)

    def fail(mask, col, text):
        mask = np.asarray(mask, dtype=bool) & (reason == "")
        reason[mask] = text if isinstance(text, str) else np.asarray(text, dtype=object)[mask]
        column[mask] = col

    step = df["step"].to_numpy()
    fail(~rules.known_step(step), "step", f"unknown step: this process has steps 1..{process.n_steps}")
    fac = df["factory"].astype(object).to_numpy()
    fail(fac != rules.step_factory(step), "factory",
         pd.Series(fac).radd("factory ").to_numpy().astype(object)
         + " does not run step " + pd.Series(step).astype(str).to_numpy().astype(object))
    fail(df["partner"].astype(object).to_numpy() != rules.step_partner(step), "partner",
         "partner does not own the step's factory")

    kind = df["kind"].astype(object).to_numpy()
    var = df["variable"].astype(object).to_numpy()
    unit = df["unit"].astype(object).to_numpy()
    val = df["value"].to_numpy(dtype=np.float64, na_value=np.nan)

    meas = kind == "measurement"
    known = rules.is_characteristic(var)
    fail(meas & ~known, "variable", "unknown characteristic for this process")
    exp_unit = rules.characteristic_unit(var)
    fail(meas & known & (unit != exp_unit), "unit",
         "unit differs from the process's " + exp_unit.astype(str).astype(object))
    fail(meas & ~np.isfinite(val), "value", "measurement value is missing or not finite")

    lev = kind == "lever"
    lknown = rules.is_lever(var)
    fail(lev & ~lknown, "variable", "unknown lever for this process")
    fail(lev & lknown & (rules.lever_step(var) != step), "step", "lever does not act at this step")
    lunit = rules.lever_unit(var)
    fail(lev & lknown & (unit != lunit), "unit",
         "unit differs from the lever's " + lunit.astype(str).astype(object))
    lo, hi = rules.lever_bounds(var)
    fail(lev & ~np.isfinite(val), "value", "lever value is missing or not finite")
    with np.errstate(invalid="ignore"):
        fail(lev & ((val < lo) | (val > hi)), "value", "lever value outside its hard bounds")

    bad = np.flatnonzero(reason != "")
    return pd.DataFrame({"row": bad, "column": column[bad], "reason": reason[bad]})


def observations_frame(process: Process, conditions, obs: np.ndarray, plan: np.ndarray,
                       *, upto_step: int | None = None) -> pd.DataFrame:
    """Turn gauge readings and lever set points into the long step-data table.

    Parameters
    ----------
    process : Process
    conditions : simulators.process.Conditions
    obs : ndarray (n_batches, n_insp, max_sample, n_chars)
        NaN where nothing was measured.
    plan : ndarray (n_batches, n_levers)
        Lever values used.
    upto_step : int, optional
        Keep only rows of steps up to this one (a history in progress).

    Returns
    -------
    DataFrame in the schema (ground truth is never included).
    """
    last = process.n_steps if upto_step is None else upto_step
    start = pd.Timestamp("2026-01-05T06:00:00Z")
    batch_start = start + pd.to_timedelta(conditions.time, unit="D")
    step_factory = np.array([s.factory for s in process.steps], dtype=object)
    step_partner = np.array([s.partner for s in process.steps], dtype=object)
    units = np.array([c.unit for c in process.characteristics], dtype=object)
    names = np.array([c.name for c in process.characteristics], dtype=object)

    b, q, j, c = np.nonzero(np.isfinite(obs))
    steps = np.array(process.inspection_steps, dtype=np.int64)[q] if len(q) else np.zeros(0, np.int64)
    keep = steps <= last
    b, q, j, c, steps = b[keep], q[keep], j[keep], c[keep], steps[keep]
    meas = pd.DataFrame({
        "batch_id": conditions.batch_ids[b],
        "bar_id": pd.array(j, dtype="Int64"),
        "step": steps,
        "factory": step_factory[steps - 1],
        "partner": step_partner[steps - 1],
        "variable": names[c],
        "value": obs[b, q, j, c],
        "unit": units[c],
        "kind": "measurement",
        "timestamp": batch_start[b] + pd.to_timedelta(steps * 2, unit="h"),
    })
    frames = [meas]
    lev_steps = np.array([lv.step for lv in process.levers], dtype=np.int64)
    li = np.flatnonzero(lev_steps <= last)
    if len(li):
        nb = conditions.n_batches
        bb = np.repeat(np.arange(nb), len(li))
        ll = np.tile(li, nb)
        st = lev_steps[ll]
        frames.append(pd.DataFrame({
            "batch_id": conditions.batch_ids[bb],
            "bar_id": pd.array([pd.NA] * len(bb), dtype="Int64"),
            "step": st,
            "factory": step_factory[st - 1],
            "partner": step_partner[st - 1],
            "variable": np.array([lv.name for lv in process.levers], dtype=object)[ll],
            "value": np.asarray(plan, dtype=np.float64)[bb, ll],
            "unit": np.array([lv.unit for lv in process.levers], dtype=object)[ll],
            "kind": "lever",
            "timestamp": batch_start[bb] + pd.to_timedelta(st * 2, unit="h"),
        }))
    # The production day is context a partner's MES knows; drift models need it.
    frames.append(pd.DataFrame({
        "batch_id": conditions.batch_ids,
        "bar_id": pd.array([pd.NA] * conditions.n_batches, dtype="Int64"),
        "step": 1,
        "factory": step_factory[0],
        "partner": step_partner[0],
        "variable": "season_day",
        "value": np.asarray(conditions.time, dtype=np.float64),
        "unit": "day",
        "kind": "context",
        "timestamp": batch_start,
    }))
    df = pd.concat([f for f in frames if len(f)], ignore_index=True)
    df = df.astype({k: v for k, v in COLUMNS.items() if k != "timestamp"})
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return df.sort_values(["batch_id", "step", "kind", "variable", "bar_id"],
                          kind="stable", ignore_index=True)


_START = "2026-01-05T06:00:00Z"  # the first batch's start: day 0 of the season


def arrow_schema(example: pd.DataFrame):
    """The Arrow schema ``pa.Table.from_pandas`` gives ``example``, with its pandas
    metadata (so that ``pd.read_parquet`` restores the same dtypes). ``example``
    needs one row at least: an empty object column has no Arrow type."""
    import pyarrow as pa

    return pa.Schema.from_pandas(example, preserve_index=False)


def _observations_schema():
    global _OBS_SCHEMA
    if _OBS_SCHEMA is None:
        one = pd.DataFrame({"batch_id": ["B-1"], "bar_id": [0], "step": [1], "factory": ["f"],
                            "partner": ["p"], "variable": ["v"], "value": [0.0], "unit": ["mm"],
                            "kind": ["lever"], "timestamp": pd.to_datetime([_START], utc=True)})
        one = one.astype({k: v for k, v in COLUMNS.items() if k != "timestamp"})
        one["timestamp"] = one["timestamp"].astype("datetime64[ns, UTC]")
        _OBS_SCHEMA = arrow_schema(one)
    return _OBS_SCHEMA


_OBS_SCHEMA = None


def _strings(values, codes: np.ndarray, dictionary: bool = False):
    """Arrow strings ``values[codes]``: each distinct string converted once.

    With ``dictionary``, a ``pa.DictionaryArray`` (see :func:`coded_strings`)
    instead of the plain string array.
    """
    import pyarrow as pa

    if dictionary:
        return coded_strings(values, codes)
    return pa.array(list(values), type=pa.string()).take(pa.array(codes, type=pa.int64()))


def coded_strings(values, codes: np.ndarray):
    """``values[codes]`` as an Arrow dictionary array, without building the strings.

    The dictionary holds each distinct string of ``values`` once, in order of
    first appearance (only those used when there are more strings than rows);
    the indices are int32. Casting it to ``pa.string()``
    gives the plain array :func:`_strings` builds. A dictionary entry no row
    uses does not enter a Parquet writer's column statistics (pyarrow takes
    them from the indices used), so files hold the same min and max as from
    the plain strings.

    Parameters
    ----------
    values : sequence of str
        The strings, possibly repeated (e.g. one factory name per step).
    codes : ndarray of int
        Positions into ``values``, one per row.

    Returns
    -------
    pyarrow.DictionaryArray
    """
    import pyarrow as pa

    first: dict[str, int] = {}
    remap = np.array([first.setdefault(str(v), len(first)) for v in values], dtype=np.int32)
    idx = remap[np.asarray(codes, dtype=np.intp)] if len(codes) else np.zeros(0, np.int32)
    names = list(first)
    if len(names) > len(idx):
        # a short column (a chunk's few faults among its 1,000 batch ids): keep only the strings
        # used, or the file's dictionary page would carry all of them
        used, idx = np.unique(idx, return_inverse=True)
        names, idx = [names[u] for u in used], idx.reshape(-1).astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(idx, type=pa.int32()), pa.array(names, type=pa.string()))


def dictionary_schema(schema):
    """``schema`` with its string fields as dictionary<int32, string> (metadata kept):
    the schema of a table whose string columns are :func:`coded_strings`.
    (``pa.Table.from_arrays`` casts their small dictionaries to ``large_string``
    where the schema has it, as ``from_pandas`` gives for pandas' string dtype.)"""
    import pyarrow as pa

    return pa.schema([pa.field(f.name, pa.dictionary(pa.int32(), f.type), f.nullable)
                      if pa.types.is_string(f.type) or pa.types.is_large_string(f.type) else f
                      for f in schema], metadata=schema.metadata)


def plain_table(table):
    """``table`` with its dictionary columns decoded to their value type (metadata kept):
    the inverse of :func:`dictionary_schema`, for a table built with ``dictionary=True``."""
    import pyarrow as pa

    schema = pa.schema([pa.field(f.name, f.type.value_type, f.nullable)
                        if pa.types.is_dictionary(f.type) else f for f in table.schema],
                       metadata=table.schema.metadata)
    return table.cast(schema)


def observations_table(process: Process, conditions, obs: np.ndarray, plan: np.ndarray,
                       *, upto_step: int | None = None, dictionary: bool = False):
    """:func:`observations_frame` as an Arrow table, built from the arrays directly.

    The same rows in the same order with the same values, and the schema
    (with pandas metadata) ``pa.Table.from_pandas`` gives that frame, so a
    Parquet file written from it reads back as the same frame; a test holds
    the two equal. Campaigns write it without building a DataFrame (pandas
    took ten times the kernel's time on a 1,000-batch chunk).

    Parameters
    ----------
    process : Process
    conditions : simulators.process.Conditions
    obs : ndarray (n_batches, n_insp, max_sample, n_chars)
        NaN where nothing was measured.
    plan : ndarray (n_batches, n_levers)
        Lever values used.
    upto_step : int, optional
        Keep only rows of steps up to this one.
    dictionary : bool
        Give the string columns as dictionary arrays (:func:`coded_strings`,
        schema :func:`dictionary_schema`): no string is built per row, and a
        Parquet writer takes the codes as they are (half its time on a
        1,000-batch chunk). :func:`plain_table` gives the plain table.

    Returns
    -------
    pyarrow.Table
    """
    import pyarrow as pa

    last = process.n_steps if upto_step is None else upto_step
    nb = conditions.n_batches
    hour = np.int64(3_600_000_000_000)
    # per batch, exactly as the frame computes it (float days to ns by pandas)
    batch_start = (pd.Timestamp(_START) + pd.to_timedelta(conditions.time, unit="D")).asi8
    ids, id_code = np.unique(np.asarray(conditions.batch_ids, dtype=object), return_inverse=True)
    id_code = id_code.reshape(-1)

    # Variables are coded over one list: characteristics, levers, then season_day.
    var_names = ([ch.name for ch in process.characteristics] + [lv.name for lv in process.levers]
                 + ["season_day"])
    var_units = ([ch.unit for ch in process.characteristics] + [lv.unit for lv in process.levers] + ["day"])
    kinds = ["measurement", "lever", "context"]
    n_char = len(process.characteristics)

    def rank(names):  # codes that order as the strings do
        order = np.argsort(np.array(names, dtype=object), kind="stable")
        r = np.empty(len(names), dtype=np.int64)
        r[order] = np.arange(len(names))
        return r

    var_rank = rank(var_names)
    # Each block of rows is made in (batch id, step, variable name, bar) order, close to the
    # final one, so the stable sort below merges a few runs instead of sorting 10^5 keys
    # from scratch (a third of the table's time). Rows with equal keys keep the frame's
    # relative order (inspection order), so the sorted result is the frame's.
    by_id = np.argsort(id_code, kind="stable")
    by_name = np.argsort(var_rank[:n_char], kind="stable")
    bi, q, ci, j = np.nonzero(np.isfinite(obs)[by_id][:, :, :, by_name].transpose(0, 1, 3, 2))
    b, c = by_id[bi], by_name[ci]
    steps = np.array(process.inspection_steps, dtype=np.int64)[q] if len(q) else np.zeros(0, np.int64)
    keep = steps <= last
    b, q, j, c, steps = b[keep], q[keep], j[keep], c[keep], steps[keep]
    lev_steps = np.array([lv.step for lv in process.levers], dtype=np.int64)
    li = np.flatnonzero(lev_steps <= last)
    li = li[np.lexsort((var_rank[n_char + li], lev_steps[li]))]
    bb, ll = np.repeat(by_id, len(li)), np.tile(li, nb)

    # Rows before the sort: measurements, levers, context (the frame's blocks).
    n_m, n_l = len(b), len(bb)
    batch = np.concatenate([b, bb, by_id])
    step = np.concatenate([steps, lev_steps[ll], np.ones(nb, dtype=np.int64)])
    var = np.concatenate([c, n_char + ll, np.full(nb, len(var_names) - 1)])
    kind = np.repeat(np.arange(3), [n_m, n_l, nb])
    bar = np.concatenate([j, np.full(n_l + nb, -1)])
    value = np.concatenate([obs[b, q, j, c], np.asarray(plan, dtype=np.float64)[bb, ll] if n_l else np.zeros(0),
                            np.asarray(conditions.time, dtype=np.float64)[by_id]])

    # The frame's stable sort by batch_id, step, kind, variable, bar_id (missing last).
    # One int64 key (mixed radix, most significant first) sorts faster than lexsort on five.
    n_bar = int(bar.max()) + 2 if len(bar) else 1
    key = id_code[batch].astype(np.int64)
    for col, size in ((step, last + 1), (rank(kinds)[kind], 3), (var_rank[var], len(var_names)),
                      (np.where(bar < 0, n_bar - 1, bar), n_bar)):  # a missing bar_id sorts last
        key = key * size + col
    order = np.argsort(key, kind="stable")
    batch, step, var, kind, bar, value = (a[order] for a in (batch, step, var, kind, bar, value))
    stamp = batch_start[batch] + np.where(kind == 2, 0, step * 2 * hour)

    step_factory = [s.factory for s in process.steps]
    step_partner = [s.partner for s in process.steps]
    d = dictionary
    cols = [
        _strings(ids, id_code[batch], d),
        pa.array(bar, type=pa.int64(), mask=bar < 0),
        pa.array(step, type=pa.int64()),
        _strings(step_factory, step - 1, d),
        _strings(step_partner, step - 1, d),
        _strings(var_names, var, d),
        pa.array(value, type=pa.float64()),
        _strings(var_units, var, d),
        _strings(kinds, kind, d),
        pa.array(stamp.astype("datetime64[ns]"), type=pa.timestamp("ns", tz="UTC")),
    ]
    schema = _observations_schema()
    return pa.Table.from_arrays(cols, schema=dictionary_schema(schema) if d else schema)
