"""The `.test` workflow submitted through SLURM for real: a private single-node cluster (munged,
slurmctld, slurmd on 127.0.0.1, tests/slurm_cluster.py), Snakemake with `--executor slurm` and
profiles/slurm-local, and outputs equal to those of the local run of the same config (the
session's `tiny_run`). It submits one routed method's whole chain and everything it needs (data,
SFT policy, RM pool, offline router inputs, rollouts, train_iteration, evaluate, the RM tables):
every kind of GPU job of the DAG, not every copy of it, so CI stays within its time budget. It
runs with `seed_jobs: separate` (a job per seed, as on a cluster) where the local run has the
default `together` (every seed of a method in one job), so the equal outputs also show that the
two job layouts give the same bytes.
Skipped where SLURM and munge are not installed or the tests do not run as root; `.ci/run`
installs them.

Snakemake with the SLURM plugin can wait forever on a job state and ignores SIGTERM, so the run
is wrapped in `timeout -k 10`; every other wait has its own timeout.
"""

from __future__ import annotations

import os
import re
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


# What the SLURM run makes and compares with the local run: LASeR's chain for seed 0 (rollouts,
# train_iteration and the evaluation of every iteration, its decision log), the SFT evaluation and
# the RM accuracy table (data, SFT, RM pairs, every RM, their behaviour on the held-out pairs).
SLURM_OUTPUTS = ["eval/sft.tsv", "tables/rm_accuracy.tsv", "decisions/laser/0.parquet",
                 *(f"runs/laser/0/it{it}/eval.tsv" for it in (1, 2))]


def test_workflow_through_slurm_equals_the_local_run(tiny_run, cluster):
    shutil.rmtree(ROOT / SLURM_RESULTS, ignore_errors=True)
    command = ["timeout", "-k", "10", str(RUN_LIMIT_S), sys.executable, "-m", "snakemake",
               "--profile", "profiles/slurm-local", "--executor", "slurm", "--configfile", str(TEST_CONFIG),
               "--config", f"results_dir={SLURM_RESULTS.as_posix()}", "seed_jobs=separate", "--",
               *((SLURM_RESULTS / name).as_posix() for name in SLURM_OUTPUTS)]
    start = time.monotonic()
    run = subprocess.run(command, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=RUN_LIMIT_S + 60)
    wall = time.monotonic() - start
    print(f"SLURM run of the .test workflow: {wall:.0f} s")
    output = run.stdout[-4000:] + run.stderr[-6000:]
    assert run.returncode != 124, f"SLURM run hung past {RUN_LIMIT_S} s:\n{output}"
    assert run.returncode == 0, output
    # the jobs really went to SLURM: the plugin reports "Job N has been submitted with SLURM jobid M"
    submitted = re.findall(r"has been submitted with SLURM jobid \d+", run.stderr)
    assert len(submitted) >= 5, output
    for name in SLURM_OUTPUTS:
        assert_same_frame(tiny_run / name, ROOT / SLURM_RESULTS / name)
    shutil.rmtree(ROOT / SLURM_RESULTS, ignore_errors=True)
