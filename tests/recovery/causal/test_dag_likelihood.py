"""The likelihood factorised along the causal graph (issue 22: fit time on wide
lines) is the dense one: the same density at any parameter, the same posterior,
and used only where it is exact."""

import tomllib
from dataclasses import replace

import numpy as np
import pytest

from recovery.causal.config import PriorConfig
from recovery.causal.graph import CausalGraph, parse_edits
from recovery.causal.layout import Layout, segment_fault_rates, standardise
from recovery.causal.likelihood import dag_index, fit_data, likelihood_form, loglik_tensor, loglik_terms
from recovery.causal.model import BarSpread, CausalModel, FitConfig, summarise
from simulators.definition import load_process
from simulators.lines import make_line

pytestmark = pytest.mark.filterwarnings("ignore")

#: 3 stations x 3: edges within stations (a chain of two at station 2) and one across
LINE = make_line(stations=3, chars_per_station=3, seed=1)


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    paths = LINE.write(tmp_path_factory.mktemp("dag"), 10, seed=2)
    proc = load_process(str(paths["process"]))
    edits = parse_edits(tomllib.loads(LINE.edits_toml()))
    df = LINE.step_data(150, seed=2, process=proc)
    return proc, edits, df


def _parts(proc, edits, df):
    g = CausalGraph.from_process(proc, edits)
    summ = summarise(df, proc)
    std = standardise(summ, g)
    layout = Layout(g, std, PriorConfig(), segment_fault_rates(proc, g))
    return fit_data(summ, g, std, layout, BarSpread.fit(summ, proc)), layout


def test_the_factorised_density_equals_the_dense_one_at_any_parameter(line):
    import pytensor
    import pytensor.tensor as pt

    fd, layout = _parts(*line)
    assert likelihood_form(fd, layout) == "dag"
    ix = dag_index(fd, layout)
    # both within-step and carried-over parents feed readings, and faults mix
    assert len(layout.within_i) == 4 and len(ix.tgt) == 5 and len(layout.rate_q) == 3
    theta = pt.vector("theta")
    P = layout.decode_tensor(theta)
    f = pytensor.function([theta], [loglik_tensor(P, fd, layout, 1, per_batch=True, form=form)
                                    for form in ("dense", "dag")], mode="FAST_COMPILE")
    rng = np.random.default_rng(5)
    for _ in range(3):
        th = layout.prior_mu + 0.5 * layout.prior_sd * rng.standard_normal(layout.size)
        dense = loglik_terms(th, fd, layout, form="dense")
        np.testing.assert_allclose(loglik_terms(th, fd, layout, form="dag"), dense, rtol=1e-10, atol=1e-9)
        t_dense, t_dag = f(th)
        np.testing.assert_allclose(t_dense, dense, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(t_dag, dense, rtol=1e-10, atol=1e-9)


def test_the_dense_form_is_kept_where_the_factorisation_is_not_exact(line):
    fd, layout = _parts(*line)
    # reading noise (several bars, a gauge sigma): the states are hidden
    noisy = replace(fd, R=np.full(len(fd.R), 0.01))
    assert dag_index(noisy, layout) is None and likelihood_form(noisy, layout) == "dense"
    with pytest.raises(ValueError, match="does not factorise"):
        loglik_terms(layout.prior_mu, noisy, layout, form="dag")
    # a batch that misses a reading: its parents' values are not all read
    idx, Z, zeta = fd.patterns[0]
    part = replace(fd, patterns=[(idx, Z[:100], zeta[:100]), (idx[1:], Z[100:, 1:], zeta[100:])])
    assert dag_index(part, layout) is None
    np.testing.assert_allclose(loglik_terms(layout.prior_mu, part, layout)[:100],
                               loglik_terms(layout.prior_mu, fd, layout)[:100], rtol=1e-10)
    assert likelihood_form(fd, layout, "dense") == "dense"
    with pytest.raises(ValueError, match="'auto', 'dense' or 'dag'"):
        likelihood_form(fd, layout, "sparse")


def test_the_fast_fit_gives_the_posterior_of_the_dense_fit(line):
    proc, edits, df = line
    fits = {}
    for form in ("auto", "dense"):
        cfg = FitConfig(method="advi", advi_steps=400, draws=200, seed=3, likelihood=form)
        fits[form] = CausalModel(proc, edits=edits, config=cfg).fit(df, progress=False)
    fast, slow = fits["auto"], fits["dense"]
    assert any("factorised" in n for n in fast.report_.notes)
    assert not any("factorised" in n for n in slow.report_.notes)
    a, b = fast.theta_draws(), slow.theta_draws()
    sd = b.std(axis=0)
    np.testing.assert_allclose(a.mean(axis=0), b.mean(axis=0), atol=0.01 * sd.min())
    np.testing.assert_allclose(a.std(axis=0), sd, rtol=0.01)
    # the queries read the same model: root cause of one part, from the fast fit's posterior
    part = LINE.step_data(1, seed=9, process=proc, shift={"st2_m1": 5.0})
    rc_fast, rc_slow = fast.root_cause(part), slow.root_cause(part)
    assert [s.step for s in rc_fast.steps] == [s.step for s in rc_slow.steps]
    assert [s.probability for s in rc_fast.steps] == pytest.approx([s.probability for s in rc_slow.steps],
                                                                   abs=1e-6)
    assert rc_fast.steps[0].step == 3      # st2_m1 is produced at station 2 (step 3)
