"""The self-check on a partner's own line (issue 22): characteristics of role
`other`, which no step kind acts on, start at their nominal, not at 0."""

import numpy as np
import pytest

from recovery.cli import main
from simulators.process import Simulator
from tests.fixtures.partner_line import PROCESS_PATH, partner_process

pytestmark = pytest.mark.filterwarnings("ignore")


def test_other_characteristics_are_carried_at_nominal_in_kernel_and_reference():
    p = partner_process()
    nominal = np.array([c.nominal for c in p.characteristics])
    fast, slow = Simulator(p), Simulator(p, reference=True)
    a, b = fast.simulate(20, seed=2), slow.simulate(20, seed=2)
    np.testing.assert_allclose(a.obs, b.obs, equal_nan=True)
    for q, ins in enumerate(p.inspections):
        cols = [p.char_index[c] for c in ins.measures]
        np.testing.assert_allclose(a.obs[:, q, 0, cols], np.broadcast_to(nominal[cols], (20, len(cols))))
    assert not a.flags.any()
    assert fast.accepted(a.state).all()


def test_simulate_self_check_says_other_characteristics_are_not_simulated(tmp_path, capsys):
    rc = main(["simulate", "--process", str(PROCESS_PATH), "--batches", "10", "--seed", "1",
               "--out", str(tmp_path / "s.parquet"), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "step   6  100.0%" not in text and "accepted     100.0%" in text
    assert "not simulated 5 characteristic(s) of role 'other' (s1_a, s1_b, s2_a, s2_b, s3_a)" in text
    # every characteristic is carried at nominal: the self-check says plainly that it means nothing
    assert "self-check   means nothing for this process" in text and "hold by construction" in text
