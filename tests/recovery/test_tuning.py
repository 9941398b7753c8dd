"""Agent tuning as one Optuna study shared by worker processes on PostgreSQL."""

import optuna
import pytest

from recovery.tuning import TuneSpec, storage_url, tune


def test_two_workers_share_one_study_on_postgresql(postgresql_url):
    spec = TuneSpec("oracle", process="small", batches=60, seed=3)
    r = tune(postgresql_url, "oracle-shared", spec, trials=4, workers=2)
    assert r["trials"] == 4 and r["by_worker"] == [2, 2]
    # a later worker (another machine, say) adds to the same study
    r2 = tune(postgresql_url, "oracle-shared", spec, trials=1, workers=1)
    assert r2["trials"] == 5
    study = optuna.load_study(study_name="oracle-shared", storage=storage_url(postgresql_url))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5 and len({t.number for t in complete}) == 5
    assert all("recovery_rate" in t.user_attrs for t in complete)
    assert r2["best_value"] == max(t.value for t in complete)


def test_unknown_agent_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown agent"):
        tune(f"sqlite:///{tmp_path}/t.db", "x", TuneSpec("magic"), trials=1)
