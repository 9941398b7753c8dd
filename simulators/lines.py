"""Test lines with a known causal graph (issue 22): a partner's line of our own.

:func:`make_line` draws the structure of a line of ``station`` steps (a
station produces its characteristics, an inspection step after it gauges them)
with edges within and across stations, some of them nonlinear.
:meth:`Line.parts` draws parts from it, optionally with a planted deviation
at one station, and :meth:`Line.write` writes what a partner would hand over:
a process file, a mapping and a wide CSV in a partner's layout (semicolon
separated, decimal comma, anonymised column names, local time), plus the truth
(``truth.json``) for tests and benchmarks.

Structure (deviations from nominal in units of the characteristic's own noise
sd ``sigma``)::

    x_c = sum_{p -> c} w_pc f_pc(x_p) + e_c,   e_c ~ N(0, 1)

in the file's (topological) order (``e_c`` Laplace with unit variance for
``noise="laplace"``: the non-Gaussian case DirectLiNGAM and ``learn-graph
--within-order data`` need); ``f`` is the identity for a linear edge and
``f(x) = x + 0.4 (x**2 - 1)`` for a nonlinear one (monotone over the bulk, so a
linear method sees most of it, but not all). The value in the CSV is
``nominal + sigma * x``; the tolerance band is ``nominal +- 4 sd(x) sigma``.

Run ``python -m simulators.lines --help`` to write a line from the shell.

Examples
--------
>>> line = make_line(stations=3, chars_per_station=3, seed=1)
>>> df = line.parts(50, seed=2)
>>> df.shape
(50, 11)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["TrueEdge", "Line", "make_line", "main"]

#: Curvature of a nonlinear edge: ``f(x) = x + NONLINEAR * (x**2 - 1)``.
NONLINEAR = 0.4


@dataclass(frozen=True, slots=True)
class TrueEdge:
    """One edge of the true graph.

    Attributes
    ----------
    source, target : str
        Characteristic names.
    weight : float
        ``w`` in the structural equation (target noise-sd units per source
        noise-sd unit).
    within : bool
        Both ends are produced at the same station.
    nonlinear : bool
    """

    source: str
    target: str
    weight: float
    within: bool
    nonlinear: bool


@dataclass(frozen=True)
class Line:
    """A generated line: structure and truth. Build it with :func:`make_line`.

    Attributes
    ----------
    name : str
    stations : tuple of tuple of str
        Characteristic names per station, in order.
    edges : tuple of TrueEdge
    sigma : dict
        Characteristic -> its own noise sd (mm).
    nominal : dict
        Characteristic -> nominal (mm).
    spread : dict
        Characteristic -> sd of its deviation (in noise-sd units, all causes).
    seed : int
    noise : {"gaussian", "laplace"}
        Distribution of each characteristic's own noise ``e_c`` (unit variance).
    """

    name: str
    stations: tuple[tuple[str, ...], ...]
    edges: tuple[TrueEdge, ...]
    sigma: dict = field(repr=False)
    nominal: dict = field(repr=False)
    spread: dict = field(repr=False)
    seed: int = 0
    noise: str = "gaussian"

    @property
    def characteristics(self) -> tuple[str, ...]:
        return tuple(c for st in self.stations for c in st)

    def station_of(self, name: str) -> int:
        """1-based station that produces ``name``."""
        return next(i for i, st in enumerate(self.stations, 1) if name in st)

    def step_of(self, name: str) -> int:
        """The station step (``2 * station - 1``) that produces ``name``."""
        return 2 * self.station_of(name) - 1

    def deviations(self, n_parts: int, seed: int | np.random.Generator = 0, *,
                   shift: dict[str, float] | None = None) -> pd.DataFrame:
        """Deviations ``x`` (noise-sd units), one row per part, one column per characteristic.

        Parameters
        ----------
        n_parts : int
        seed : int or Generator
        shift : dict, optional
            Characteristic -> extra own deviation (noise-sd units) in every part:
            a planted deviation at the station that produces it; it reaches the
            characteristic's descendants along the edges.
        """
        rng = np.random.default_rng(seed)
        shift = shift or {}
        unknown = sorted(set(shift) - set(self.characteristics))
        if unknown:
            raise ValueError(f"shift: unknown characteristic(s) {unknown}")
        x: dict[str, np.ndarray] = {}
        parents: dict[str, list[TrueEdge]] = {}
        for e in self.edges:
            parents.setdefault(e.target, []).append(e)
        for c in self.characteristics:   # file order is topological
            own = (rng.laplace(0.0, 1.0 / np.sqrt(2.0), n_parts) if self.noise == "laplace"
                   else rng.standard_normal(n_parts))
            v = own + shift.get(c, 0.0)
            for e in parents.get(c, ()):
                xp = x[e.source]
                v = v + e.weight * (xp + NONLINEAR * (xp**2 - 1.0) if e.nonlinear else xp)
            x[c] = v
        return pd.DataFrame(x)

    def parts(self, n_parts: int, seed: int | np.random.Generator = 0, *,
              shift: dict[str, float] | None = None) -> pd.DataFrame:
        """Measured values (mm) in a partner's wide layout: ``part``, ``time``
        (local, ``%d.%m.%Y %H:%M``), then one column per characteristic, named
        ``M<station>.<k>`` (anonymised measurement points).

        See :meth:`deviations` for the parameters.
        """
        x = self.deviations(n_parts, seed, shift=shift)
        start = pd.Timestamp("2026-02-02 06:00")
        out = {"part": [f"{100000 + i}" for i in range(n_parts)],
               "time": [(start + pd.Timedelta(minutes=12 * i)).strftime("%d.%m.%Y %H:%M")
                        for i in range(n_parts)]}
        for c in self.characteristics:
            out[self.column(c)] = self.nominal[c] + self.sigma[c] * x[c].to_numpy()
        return pd.DataFrame(out)

    def step_data(self, n_parts: int, seed: int | np.random.Generator = 0, *,
                  shift: dict[str, float] | None = None, process=None,
                  first_id: int = 0) -> pd.DataFrame:
        """The parts as step data in the schema (``simulators.schema``), as
        ``recovery ingest`` would store them: batch ids ``L<n>``, one bar each,
        every value at its station's inspection step.

        Parameters
        ----------
        n_parts, seed, shift
            See :meth:`deviations`.
        process : Process, optional
            The line's process (parsed from :meth:`process_toml` when None).
        first_id : int
            Number of the first batch id (so that two draws do not collide).
        """
        from simulators.definition import parse_process
        from simulators.schema import validate

        proc = process if process is not None else parse_process(self.process_toml(), self.name)
        x = self.deviations(n_parts, seed, shift=shift)
        ids = np.array([f"L{first_id + i:06d}" for i in range(n_parts)], dtype=object)
        start = pd.Timestamp("2026-02-02T05:00:00Z") + pd.to_timedelta(np.arange(n_parts) * 12, unit="min")
        frames = []
        for c in self.characteristics:
            step = 2 * self.station_of(c)
            frames.append(pd.DataFrame({
                "batch_id": ids, "bar_id": pd.array(np.zeros(n_parts, dtype=int), dtype="Int64"),
                "step": step, "factory": "PL", "partner": "P", "variable": c,
                "value": self.nominal[c] + self.sigma[c] * x[c].to_numpy(), "unit": "mm",
                "kind": "measurement", "timestamp": start + pd.Timedelta(minutes=step)}))
        df = pd.concat(frames, ignore_index=True).sort_values(["batch_id", "step"], kind="stable")
        return validate(df.reset_index(drop=True), proc)

    def column(self, name: str) -> str:
        """The partner's anonymised column name of a characteristic."""
        s = self.station_of(name)
        return f"M{s}.{self.stations[s - 1].index(name) + 1}"

    # ---- files -----------------------------------------------------------
    def process_toml(self) -> str:
        """The process file: one ``station`` and one inspection step per station."""
        lines = [f"# Generated by simulators.lines (seed {self.seed}): a test line with a known graph.",
                 "[process]", f'name = "{self.name}"', 'version = "1"',
                 f'description = "{len(self.stations)} stations, {len(self.characteristics)} '
                 'characteristics, generated"',
                 "bars_per_batch = 1", "acceptance_level = 1.0", "season_days = 365.0", "",
                 "[economics]", "batch_value = 100.0", "scrap_cost = 20.0",
                 "processing_cost_per_step = 1.0", 'currency = "EUR"', "",
                 "[[partners]]", 'id = "P"', 'name = "partner"', "",
                 "[[factories]]", 'id = "PL"', 'partner = "P"', 'name = "partner line"', ""]
        for c in self.characteristics:
            half = 4.0 * self.spread[c] * self.sigma[c]
            nom = self.nominal[c]
            lines += ["[[characteristics]]", f'name = "{c}"', 'role = "other"', 'unit = "mm"',
                      f"nominal = {nom!r}", f"lower = {round(nom - half, 6)!r}",
                      f"upper = {round(nom + half, 6)!r}", ""]
        for s, chars in enumerate(self.stations, 1):
            lines += ["[[steps]]", f"step = {2 * s - 1}", f'name = "station {s}"', 'kind = "station"',
                      'factory = "PL"', f"produces = {json.dumps(list(chars))}", "",
                      "[[steps]]", f"step = {2 * s}", f'name = "station {s} gauge"',
                      'kind = "inspection"', 'factory = "PL"', "",
                      "[[inspections]]", f"step = {2 * s}", f"measures = {json.dumps(list(chars))}",
                      "sample = 1", ""]
        return "\n".join(lines)

    def mapping_toml(self, process_file: str = "line.toml") -> str:
        """The mapping of :meth:`parts`'s CSV (``docs/partner-data.md``)."""
        lines = ["# Generated by simulators.lines: the partner's CSV layout.", "[mapping]",
                 f'name = "{self.name} export"', 'version = "1"', f'process = "{process_file}"',
                 'partner = "P"', 'shape = "wide"', "", "[file]", 'format = "csv"',
                 'encoding = "utf-8"', 'separator = ";"', 'decimal = ","', "header_line = 1",
                 "data_line = 2", "", "[ids]", 'batch = "part"', "", "[timestamp]",
                 'column = "time"', 'format = "%d.%m.%Y %H:%M"', 'timezone = "Europe/Berlin"', ""]
        for c in self.characteristics:
            lines += ["[[columns]]", f'column = "{self.column(c)}"', f'variable = "{c}"',
                      f"step = {2 * self.station_of(c)}", 'unit = "mm"', ""]
        return "\n".join(lines)

    def edits_toml(self) -> str:
        """The true graph in the expert-edits format (``recovery fit --edits``):
        an edge across stations reads the source's value before the target's
        station; an edge within a station is ``within = true``."""
        out = ["# The true graph of a generated line (simulators.lines), as expert edits."]
        for e in self.edges:
            out += ["[[add_edge]]", f"step = {self.step_of(e.target)}", f'source = "{e.source}"',
                    f'target = "{e.target}"'] + (["within = true"] if e.within else []) + [""]
        return "\n".join(out)

    def truth(self) -> dict:
        """The true graph as JSON-ready data."""
        return {"name": self.name, "seed": self.seed, "stations": [list(s) for s in self.stations],
                "nonlinear_curvature": NONLINEAR,
                **({"noise": self.noise} if self.noise != "gaussian" else {}),
                "edges": [{"from": e.source, "to": e.target, "weight": e.weight, "within": e.within,
                           "nonlinear": e.nonlinear} for e in self.edges]}

    def write(self, folder: str | Path, n_parts: int, seed: int = 0, *,
              shift: dict[str, float] | None = None) -> dict[str, Path]:
        """Write ``line.toml``, ``mapping.toml``, ``parts.csv``, ``truth.json`` and
        ``true_edits.toml`` (:meth:`edits_toml`) to ``folder``.

        Returns
        -------
        dict
            ``{"process", "mapping", "data", "truth", "edits"}`` -> path.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"process": folder / "line.toml", "mapping": folder / "mapping.toml",
                 "data": folder / "parts.csv", "truth": folder / "truth.json",
                 "edits": folder / "true_edits.toml"}
        paths["edits"].write_text(self.edits_toml(), "utf-8")
        paths["process"].write_text(self.process_toml(), "utf-8")
        paths["mapping"].write_text(self.mapping_toml(paths["process"].name), "utf-8")
        self.parts(n_parts, seed, shift=shift).to_csv(paths["data"], sep=";", decimal=",", index=False,
                                                      float_format="%.6f")
        paths["truth"].write_text(json.dumps(self.truth(), indent=1), "utf-8")
        return paths


def make_line(*, stations: int = 5, chars_per_station: int | tuple[int, int] = 4,
              p_within: float = 0.3, p_across: float = 0.1, reach: int = 2,
              nonlinear_share: float = 0.2, weight: tuple[float, float] = (0.5, 1.0),
              seed: int = 0, name: str = "generated-line", noise: str = "gaussian") -> Line:
    """Draw a line's structure.

    Parameters
    ----------
    stations : int
        Number of stations (each a station step and an inspection step).
    chars_per_station : int or (low, high)
        Characteristics per station, fixed or drawn uniformly in ``[low, high]``.
    p_within : float
        Probability of an edge between two characteristics of one station
        (from the earlier-listed to the later one).
    p_across : float
        Probability of an edge from a characteristic of one of the ``reach``
        previous stations.
    reach : int
        How many stations back an edge may reach.
    nonlinear_share : float
        Share of edges that are nonlinear.
    weight : (low, high)
        ``|w|`` ~ uniform(low, high), random sign.
    seed : int
    name : str
        Process name.
    noise : {"gaussian", "laplace"}
        Each characteristic's own noise (unit variance either way). The
        structure drawn for a seed does not depend on it.

    Returns
    -------
    Line
    """
    if stations < 1:
        raise ValueError("stations must be >= 1")
    if noise not in ("gaussian", "laplace"):
        raise ValueError(f"noise must be 'gaussian' or 'laplace', got {noise!r}")
    rng = np.random.default_rng(seed)
    lo, hi = (chars_per_station, chars_per_station) if isinstance(chars_per_station, int) \
        else chars_per_station
    if not 1 <= lo <= hi:
        raise ValueError(f"chars_per_station must be >= 1, got {chars_per_station}")
    st = tuple(tuple(f"st{s}_m{k}" for k in range(1, int(rng.integers(lo, hi + 1)) + 1))
               for s in range(1, stations + 1))
    edges = []
    for s, chars in enumerate(st):
        earlier = [c for t in st[max(0, s - reach):s] for c in t]
        for j, c in enumerate(chars):
            cands = [(p, True) for p in chars[:j] if rng.random() < p_within]
            cands += [(p, False) for p in earlier if rng.random() < p_across]
            for p, within in cands:
                w = float(rng.uniform(*weight) * rng.choice([-1.0, 1.0]))
                edges.append(TrueEdge(p, c, round(w, 3), within, bool(rng.random() < nonlinear_share)))
    names = [c for t in st for c in t]
    sigma = {c: round(float(rng.choice([0.005, 0.01, 0.02, 0.05])), 4) for c in names}
    nominal = {c: round(float(rng.uniform(2.0, 60.0)), 2) for c in names}
    line = Line(name, st, tuple(edges), sigma, nominal, {c: 1.0 for c in names}, seed, noise)
    # the deviation's spread sets the band; a fixed seed apart from the data's
    x = line.deviations(20_000, np.random.default_rng([seed, 7]))
    spread = {c: round(float(x[c].std()), 4) for c in names}
    return Line(name, st, tuple(edges), sigma, nominal, spread, seed, noise)


def main(argv: list[str] | None = None) -> int:
    """``python -m simulators.lines --out DIR``: write a generated line."""
    ap = argparse.ArgumentParser(prog="python -m simulators.lines", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write line.toml, mapping.toml, parts.csv, truth.json")
    ap.add_argument("--stations", type=int, default=5)
    ap.add_argument("--chars", type=int, default=4, help="characteristics per station")
    ap.add_argument("--parts", type=int, default=500)
    ap.add_argument("--p-within", type=float, default=0.3)
    ap.add_argument("--p-across", type=float, default=0.1)
    ap.add_argument("--nonlinear", type=float, default=0.2, help="share of nonlinear edges")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="generated-line", help="process name")
    ap.add_argument("--noise", choices=["gaussian", "laplace"], default="gaussian",
                    help="each characteristic's own noise (default gaussian)")
    args = ap.parse_args(argv)
    line = make_line(stations=args.stations, chars_per_station=args.chars, p_within=args.p_within,
                     p_across=args.p_across, nonlinear_share=args.nonlinear, seed=args.seed, name=args.name,
                     noise=args.noise)
    paths = line.write(args.out, args.parts, seed=args.seed + 1)
    print(json.dumps({k: str(v) for k, v in paths.items()} | {"edges": len(line.edges)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
