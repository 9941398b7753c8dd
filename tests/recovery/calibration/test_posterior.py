import numpy as np
import pytest

from recovery.calibration.posterior import (CalibrationLoadError, PhysicsPosterior, from_values)
from simulators.definition import load_process


def test_posterior_round_trip_and_processes(tmp_path):
    p = load_process("small")
    q = next(s for s in p.steps if s.kind == "quench")
    post = from_values(p, [{(q.index, "gain"): 400.0}, {(q.index, "gain"): 420.0}])
    post.save(tmp_path)
    back = PhysicsPosterior.load(tmp_path)
    assert back.keys == ((q.index, "gain"),)
    assert np.array_equal(back.draws, post.draws)
    gains = sorted(x.step(q.index).params["gain"] for x in back.processes(p, 2, rng=0))
    assert gains == [400.0, 420.0]          # without replacement while n <= n_draws
    assert all(p.structure_difference(x) is None for x in back.processes(p, 5, rng=1))
    with pytest.raises(CalibrationLoadError, match="not 'chromed-seat-bar'"):
        back.processes(load_process("default"), 1, rng=0)


def test_load_refuses_missing_and_other_format(tmp_path):
    with pytest.raises(CalibrationLoadError, match="no calibration"):
        PhysicsPosterior.load(tmp_path)
    p = load_process("small")
    q = next(s for s in p.steps if s.kind == "quench")
    from_values(p, [{(q.index, "gain"): 400.0}]).save(tmp_path)
    doc = (tmp_path / "calibration.json").read_text().replace('"format": 1', '"format": 99')
    (tmp_path / "calibration.json").write_text(doc)
    with pytest.raises(CalibrationLoadError, match="format 99"):
        PhysicsPosterior.load(tmp_path)
