"""The evaluate pipeline's model cache: reused when it loads, refitted when it does not;
no calibration without a plant."""

import io
import json
import warnings
from argparse import Namespace

from recovery.pipeline import load_or_fit_model
from simulators.definition import load_process


def test_a_cached_model_is_reused_and_one_from_another_version_is_refitted(tmp_path):
    process = load_process("small")
    args = Namespace(workdir=str(tmp_path), seed=3, train_batches=40, budget="tiny", quiet=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log = io.StringIO()
        first, d = load_or_fit_model(args, process, log=log)
        assert "fitting the causal model" in log.getvalue()
        # without a plant the world is the file: nothing is calibrated, as before issue 18
        assert "calibration" not in log.getvalue()
        assert not tmp_path.joinpath(d, "calibration").exists()
        log = io.StringIO()
        again, _ = load_or_fit_model(args, process, log=log)
        assert "using the model fitted earlier" in log.getvalue()
        assert again.version_.id == first.version_.id
        meta_path = tmp_path.joinpath(d, "model.json")
        meta = json.loads(meta_path.read_text())
        meta["version"]["model_format"] = 1
        meta_path.write_text(json.dumps(meta))
        log = io.StringIO()
        refit, _ = load_or_fit_model(args, process, log=log)
    out = log.getvalue()
    assert "not using the model" in out and "model format 1" in out and "fitting the causal model" in out
    assert refit.fitted and refit.version_.model_format != 1
