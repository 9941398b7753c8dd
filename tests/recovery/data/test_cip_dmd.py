"""Partner files in the CiP-DMD layout, ingested exactly as a partner would hand them over.

Two datasets go through the same tests: the demo files in
``examples/partner_demo/`` (synthetic, written by its ``make.py``; always
there) and the real CiP-DMD files, read from ``../shared/data/cip_dmd`` beside
the repository or ``$RECOVERY_SHARED_DATA/cip_dmd`` (not in the repo: their
licence is unclear; the tests on them skip, saying where to put them, when
they are absent). The real files' figures are the ones PROVENANCE.md documents;
the demo's follow from ``make.py`` (where it plants its bad rows) and are
recomputed from the file by the textbook formulas below.
"""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recovery.data.capability import quality_report
from recovery.data.ingest import ingest
from recovery.data.mapping import load_mapping
from simulators.definition import load_process

from .conftest import PARTNER_DEMO, REPO, real_cip_dmd_or_skip

EXAMPLES = REPO / "examples" / "cip_dmd"
PATTERN = r"^(?P<batch>\d{4})(?P<bar>\d{2})$"


@dataclass(frozen=True)
class Expected:
    """What the quality checks must find in one dataset."""

    files: dict            # mapping -> (file, rows, accepted, stored observations, the one rejected row)
    first_weight: tuple    # (batch, bar, grams, UTC timestamp) of the first sawn part
    first_milled: tuple    # (line, part) of the first milled part (refused before sawing)
    links: list            # rep.links: [parent step, child step, parents, linked, unlinked]
    out_of_spec: dict      # variable -> measurements outside [LSL, USL]
    turned: int            # piston rods accepted
    indices: dict          # variable -> (Cp, Cpk, Pp, Ppk)
    relation: tuple        # ((parent variable, child variable), Pearson r)
    quality_text: tuple    # lines `recovery quality` prints


REAL = Expected(
    files={"sawing": ("quality_data_sawing.csv", 985, 984, 1968,
                      (138, "column 3", "conflicts with value 524.3919705 g on line 137 of this file")),
           "cylinder_bottom": ("quality_data_cylinder_bottom.csv", 254, 253, 1012,
                               (46, "column 2", f"part id 'e' does not match the pattern {PATTERN}")),
           "piston_rods": ("quality_data_piston_rods.csv", 583, 582, 1746,
                           (155, "column 6", "part ids disagree across the row's id columns: "
                                             "224803, 224803, 224901"))},
    # kg in the file, grams in the process; 09:04:59 in Darmstadt in August is 07:04:59 UTC
    first_weight=("1001", 1, 536.3886895, pd.Timestamp("2022-08-16T07:04:59Z")),
    first_milled=(5, "106204"),
    links=[[2, 4, 984, 253, 731]],
    # PROVENANCE.md: rows outside [LSL, USL]: coaxiality 76, diameter 5, length 1 (over 583 rows;
    # the refused row 155 is inside all three limits)
    out_of_spec={"coaxiality": 76, "thread_diameter": 5, "length": 1},
    turned=582,
    # length and thread diameter are capable from part to part (Cpk 1.32, 1.41) but drift over
    # the run (Ppk 0.84, 0.79); coaxiality is not capable at all
    indices={"coaxiality": (0.6059, 0.3799, 0.5451, 0.3418),
             "length": (2.1850, 1.3206, 1.3933, 0.8421),
             "thread_diameter": (1.4827, 1.4059, 0.8353, 0.7920)},
    relation=(("weight", "parallelism"), -0.1507),
    quality_text=("out of spec: 82 measurement(s) on 81 part(s)",
                  "step 2 -> step 4: 253 linked part(s); 731 of 984 parent part(s) have no later record"),
)

# make.py: part 300702 weighed twice (line 28 repeats line 27 with another weight), the id 'e'
# on line 22, the length column of line 69 carrying the next rod's id; 30 bars of 4 sawn, the
# first 10 bars milled, 100 rods turned.
DEMO = Expected(
    files={"sawing": ("quality_data_sawing.csv", 121, 120, 240,
                      (28, "column 3", "conflicts with value 569.7611538 g on line 27 of this file")),
           "cylinder_bottom": ("quality_data_cylinder_bottom.csv", 41, 40, 160,
                               (22, "column 2", f"part id 'e' does not match the pattern {PATTERN}")),
           "piston_rods": ("quality_data_piston_rods.csv", 100, 99, 297,
                           (69, "column 6", "part ids disagree across the row's id columns: "
                                            "401601, 401601, 401603"))},
    # 08:00:41 in Darmstadt in March (CET) is 07:00:41 UTC
    first_weight=("3001", 1, 573.4914909, pd.Timestamp("2024-03-11T07:00:41Z")),
    first_milled=(5, "300104"),
    links=[[2, 4, 120, 40, 80]],
    out_of_spec={"coaxiality": 14, "thread_diameter": 2, "length": 0},
    turned=99,
    indices={"coaxiality": (0.5098, 0.3805, 0.5004, 0.3735),
             "length": (2.6421, 1.6279, 1.8895, 1.1642),
             "thread_diameter": (1.1729, 1.1229, 0.7898, 0.7562)},
    # the saw's flag marks bars 3008-3010, whose milled bottoms make.py makes rougher
    relation=(("sawing_flag", "surface_roughness"), 0.8095),
    quality_text=("out of spec: 16 measurement(s) on 16 part(s)",
                  "step 2 -> step 4: 40 linked part(s); 80 of 120 parent part(s) have no later record"),
)


@pytest.fixture(params=["demo", "real"], scope="module")
def dataset(request) -> tuple[Path, Expected]:
    """(folder of the three files, what they hold)."""
    if request.param == "demo":
        return PARTNER_DEMO, DEMO
    return real_cip_dmd_or_skip(), REAL


def _ingest_all(store, data_dir, expected, tmp_path):
    out = {}
    for name, (fname, *_rest) in expected.files.items():
        out[name] = ingest(data_dir / fname, store=store, mapping=EXAMPLES / f"{name}.toml",
                           quarantine=tmp_path / f"{name}.quarantine.csv")
    return out


def test_process_definition_loads():
    p = load_process(EXAMPLES / "process.toml")
    assert p.name == "cip-dmd" and p.n_steps == 6 and p.inspection_steps == (2, 4, 6)
    assert {c.name: (c.lower, c.upper) for c in p.characteristics if c.name in
            ("coaxiality", "thread_diameter", "length")} == {
        "coaxiality": (0.0, 50.0), "thread_diameter": (-0.018, 0.018), "length": (163.45, 163.75)}
    for name in DEMO.files:
        assert load_mapping(EXAMPLES / f"{name}.toml").process.digest == p.digest


def test_files_ingest_with_their_quirks_refused(store, dataset, tmp_path):
    data_dir, exp = dataset
    res = _ingest_all(store, data_dir, exp, tmp_path)
    for name, (_f, rows, accepted, stored, reason) in exp.files.items():
        r = res[name]
        assert (r.rows, r.accepted, r.rejected, r.duplicates, r.stored) == (rows, accepted, 1, 0, stored)
        assert [(x.row, x.column, x.reason) for x in r.reasons] == [reason]
    assert store.counts()["links"] == exp.links[0][3]
    df = store.read_steps(process="cip-dmd")
    w = df[df.variable == "weight"]
    batch, bar, grams, ts = exp.first_weight
    first = w[(w.batch_id == batch) & (w.bar_id == bar)].iloc[0]
    assert first["value"] == pytest.approx(grams) and first["unit"] == "g"
    assert first["timestamp"] == ts
    assert df.loc[df.step == 6, "timestamp"].isna().all()  # the turning file has no timestamps
    fname = exp.files["piston_rods"][0]
    again = ingest(data_dir / fname, store=store, mapping=EXAMPLES / "piston_rods.toml",
                   quarantine=tmp_path / "again.csv")
    assert (again.accepted, again.duplicates, again.rejected) == (0, exp.turned, 1)


def test_milling_before_sawing_is_refused_by_genealogy(tmp_path, dataset):
    from recovery.data.store import open_store

    data_dir, exp = dataset
    line, part = exp.first_milled
    _f, rows, *_ = exp.files["cylinder_bottom"]
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        r = ingest(data_dir / exp.files["cylinder_bottom"][0], store=st,
                   mapping=EXAMPLES / "cylinder_bottom.toml", quarantine=tmp_path / "q.csv")
        assert (r.accepted, r.rejected) == (0, rows)
        assert r.reasons[0] == type(r.reasons[0])(
            line, "column 2", f"genealogy: part {part} has no record at step 2 (weighing after "
                              "sawing); ingest that step's data first")
        assert st.counts()["observations"] == 0


def test_quality_report(tmp_path, dataset):
    from recovery.data.store import open_store

    data_dir, exp = dataset
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        _ingest_all(st, data_dir, exp, tmp_path)
        rep = quality_report(st)
    caps = {c.variable: c for c in rep.capability}
    assert {v: caps[v].out_of_spec for v in exp.out_of_spec} == exp.out_of_spec
    assert caps["coaxiality"].n == exp.turned
    for v, (cp, cpk, pp, ppk) in exp.indices.items():
        assert (caps[v].cp, caps[v].cpk, caps[v].pp, caps[v].ppk) == pytest.approx(
            (cp, cpk, pp, ppk), abs=1e-4), v
    for v in ("weight", "surface_roughness", "parallelism", "groove_depth", "groove_diameter"):
        assert not caps[v].specified and caps[v].cp is None and caps[v].out_of_spec is None
    assert rep.links.values.tolist() == exp.links
    rel = {(r.parent_variable, r.child_variable): r for r in rep.relations}
    assert len(rel) == 8 and all(r.n == exp.links[0][3] for r in rel.values())
    pair, r = exp.relation
    assert rel[pair].pearson_r == pytest.approx(r, abs=1e-4)


def test_demo_capability_is_the_textbook_formula(tmp_path):
    """The demo's turning figures, recomputed from the file itself: the refused line 69
    left out; without timestamps the moving range runs in the store's order (by part id)."""
    from recovery.data.store import open_store

    raw = pd.read_csv(PARTNER_DEMO / "quality_data_piston_rods.csv", sep=";", decimal=",",
                      skiprows=8, header=None, encoding="utf-8", usecols=[1, 2, 3, 4, 5, 6])
    raw.index = np.arange(9, 9 + len(raw))  # file line numbers
    ok = raw.drop(index=69)
    assert (raw.loc[69, 1] != raw.loc[69, 5]) and (ok[1] == ok[5]).all()
    ok = ok.sort_values(1)
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        _ingest_all(st, PARTNER_DEMO, DEMO, tmp_path)
        caps = {c.variable: c for c in quality_report(st).capability}
    for col, var, lsl, usl in ((2, "coaxiality", 0.0, 50.0), (4, "thread_diameter", -0.018, 0.018),
                               (6, "length", 163.45, 163.75)):
        x = ok[col].to_numpy(float)
        m, s = x.mean(), x.std(ddof=1)
        s_w = np.abs(np.diff(x)).mean() / 1.128
        c = caps[var]
        assert (c.n, c.out_of_spec) == (len(x), int(((x < lsl) | (x > usl)).sum()))
        assert (c.mean, c.std, c.std_within) == pytest.approx((m, s, s_w), rel=1e-9)
        assert (c.cp, c.cpk) == pytest.approx(((usl - lsl) / (6 * s_w), min(usl - m, m - lsl) / (3 * s_w)))
        assert (c.pp, c.ppk) == pytest.approx(((usl - lsl) / (6 * s), min(usl - m, m - lsl) / (3 * s)))


def test_demo_files_are_what_make_py_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("partner_demo_make", PARTNER_DEMO / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    written = make.write(tmp_path)
    assert [p.name for p in written] == [f[0] for f in DEMO.files.values()]
    for p in written:
        assert p.read_bytes() == (PARTNER_DEMO / p.name).read_bytes(), p.name
        assert p.stat().st_size < 20_000
    # the layout the mappings expect: Latin-1 (single-byte umlauts) for the milling export,
    # UTF-8 with the umlauts lost for the turning one, CRLF everywhere
    assert "Rauhheit_Oberfläche".encode("latin-1") in written[1].read_bytes()
    assert "Koaxalit\ufffdt".encode("utf-8") in written[2].read_bytes()
    assert all(p.read_bytes().count(b"\r\n") == p.read_bytes().count(b"\n") for p in written)
