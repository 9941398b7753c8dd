"""The CLI keeps third-party notices that do not concern the user's run off stderr."""

import os
import subprocess
import sys


def test_arviz_refactor_notice_is_not_printed(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))  # ArviZ prints it once a day per cache
    code = "import recovery.cli, arviz"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "ArviZ is undergoing" not in out.stderr
    bare = subprocess.run([sys.executable, "-c", "import arviz"], env=dict(env, XDG_CACHE_HOME=str(tmp_path / "b")),
                          capture_output=True, text=True, check=True)
    assert "ArviZ is undergoing" in bare.stderr  # the notice exists, so the first check can fail
