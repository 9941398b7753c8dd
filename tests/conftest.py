"""Shared pytest fixtures."""

# ---------------------------------------------------------------------------
# PostgreSQL: a throwaway server from Debian's binaries (self-contained section)
#
# ``postgresql_server`` starts one server per test session in a temporary
# directory on a free localhost port and stops it at the end; ``postgresql_url``
# gives each test a fresh, empty database on it. When the server binaries are
# missing the tests FAIL (they do not skip): run ``scripts/test-deps.sh``.
# ---------------------------------------------------------------------------
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest

_PG_HINT = "run scripts/test-deps.sh (installs Debian's postgresql package) and re-run the tests"


def _pg_bin() -> str:
    """Directory of initdb/pg_ctl: $RECOVERY_PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    env = os.environ.get("RECOVERY_PG_BIN")
    cands = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                     key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    for d in reversed(cands):
        if d and os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql; "
                f"{_PG_HINT}", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgresql_server():
    """Base URL of a running throwaway PostgreSQL server (database ``postgres``)."""
    bindir = _pg_bin()
    root = tempfile.mkdtemp(prefix="recovery-pg-")
    data = os.path.join(root, "data")
    # PostgreSQL refuses to run as root: run it as the 'postgres' system user then.
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.fail("running as root needs runuser to start PostgreSQL as 'postgres'", pytrace=False)
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(f"no 'postgres' system user to run the server as; {_PG_HINT}", pytrace=False)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = lambda *a: subprocess.run(as_user + list(a), check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync",
            "-E", "UTF8", "--locale=C")
        run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  f"-c synchronous_commit=off -c full_page_writes=off", "start")
    except subprocess.CalledProcessError as exc:
        log = ""
        if os.path.exists(os.path.join(root, "log")):
            with open(os.path.join(root, "log")) as f:
                log = f.read()[-2000:]
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr or exc}\n{log}", pytrace=False)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgresql_url(postgresql_server):
    """URL of a fresh, empty database on the session's server (dropped afterwards)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgresql_server, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    base = postgresql_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(postgresql_server, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
# --------------------------- end of PostgreSQL section ---------------------


# ---------------------------------------------------------------------------
# Partner data: the demo files in the repo, and the real CiP-DMD files beside it
#
# The real files' licence is unclear, so they are not in the repo: tests read
# them from $RECOVERY_SHARED_DATA/cip_dmd, else ../shared/data/cip_dmd beside
# the checkout (CI has them there), and skip when they are absent. The demo
# files in examples/partner_demo/ have the same layout and are always there.
# ---------------------------------------------------------------------------
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PARTNER_DEMO = REPO / "examples" / "partner_demo"


def cip_dmd_dir() -> Path:
    """Where the real CiP-DMD files are looked for (they may be absent)."""
    env = os.environ.get("RECOVERY_SHARED_DATA")
    base = Path(env) if env else REPO / ".." / "shared" / "data"
    return (base / "cip_dmd").resolve()


def real_cip_dmd_or_skip() -> Path:
    """The folder of the real CiP-DMD files, or skip the test saying where to put them."""
    d = cip_dmd_dir()
    names = ("quality_data_sawing.csv", "quality_data_cylinder_bottom.csv", "quality_data_piston_rods.csv")
    missing = [n for n in names if not (d / n).is_file()]
    if missing:
        pytest.skip(f"the real CiP-DMD files are not at {d} (missing {', '.join(missing)}): get them "
                    "from https://github.com/nicolasj92/interq_cip_qhs at commit ec094bc2 (see README, "
                    "'The real CiP-DMD files') and put them in ../shared/data/cip_dmd beside the repo, "
                    "or set RECOVERY_SHARED_DATA to the folder that holds cip_dmd/")
    return d
