"""The `.test` workflow submitted through SLURM for real: a private single-node cluster (munged,
slurmctld, slurmd on 127.0.0.1, tests/slurm_cluster.py), Snakemake with `--executor slurm` and
profiles/slurm-local, and final tables equal to those of the local run of the same config (the
session's `tiny_run`). Skipped where SLURM and munge are not installed or the tests do not run as
root; `.ci/run` installs them.

Snakemake with the SLURM plugin can wait forever on a job state and ignores SIGTERM, so the run
is wrapped in `timeout -k 10`; every other wait has its own timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, missing_requirements
from test_resume import assert_same_frame

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / ".test" / "config" / "config.yaml"
SLURM_RESULTS = Path(".test") / "results-slurm"  # relative to ROOT, as results_dir must be
RUN_LIMIT_S = 1500  # past this the run is hung, not slow (it shares 2 cores with nothing else in CI)

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.workflow,
    pytest.mark.skipif(missing_requirements() is not None, reason=missing_requirements() or ""),
]


@pytest.fixture(scope="module")
def cluster():
    # Twice the machine's cores: profiles/slurm-local runs each (method, seed)'s iteration chain as
    # one group job, which asks for 2 CPUs (evaluate and the next rollout may overlap) but mostly
    # runs one job at a time; without the extra slots the groups would run one after another.
    with SlurmCluster(cpus=2 * (os.cpu_count() or 1)) as running:
        yield running


def test_the_test_cluster_runs_a_job(cluster):
    """sbatch -> slurmd -> output, so a failure below is the workflow's, not the cluster's."""
    out = cluster.root / "probe.out"
    submit = cluster.run("sbatch", "--parsable", "-p", "debug", "-c", "1", "--mem", "100", "-o", str(out),
                         "--wrap", "echo probe-ok")
    assert submit.returncode == 0, submit.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and "probe-ok" in out.read_text()):
        time.sleep(0.5)
    assert out.exists() and "probe-ok" in out.read_text()


def test_workflow_through_slurm_equals_the_local_run(tiny_run, cluster):
    shutil.rmtree(ROOT / SLURM_RESULTS, ignore_errors=True)
    command = ["timeout", "-k", "10", str(RUN_LIMIT_S), sys.executable, "-m", "snakemake",
               "--profile", "profiles/slurm-local", "--executor", "slurm", "--configfile", str(TEST_CONFIG),
               "--config", f"results_dir={SLURM_RESULTS.as_posix()}"]
    start = time.monotonic()
    run = subprocess.run(command, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=RUN_LIMIT_S + 60)
    wall = time.monotonic() - start
    print(f"SLURM run of the .test workflow: {wall:.0f} s")
    output = run.stdout[-4000:] + run.stderr[-6000:]
    assert run.returncode != 124, f"SLURM run hung past {RUN_LIMIT_S} s:\n{output}"
    assert run.returncode == 0, output
    assert "slurm" in run.stderr.lower() and "Submitted job" in run.stderr, output  # the jobs really went to SLURM
    local, slurm = tiny_run / "tables", ROOT / SLURM_RESULTS / "tables"
    names = sorted(p.name for p in local.glob("*.tsv"))
    assert names and names == sorted(p.name for p in slurm.glob("*.tsv"))
    for name in names:
        assert_same_frame(local / name, slurm / name)
    shutil.rmtree(ROOT / SLURM_RESULTS, ignore_errors=True)
