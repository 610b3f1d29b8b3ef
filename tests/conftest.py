"""Fixtures shared by the test modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / ".test" / "config" / "config.yaml"
TEST_RESULTS = ROOT / ".test" / "results"  # the .test config's own results_dir


REPO = ROOT


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project root with the repository's schemas and a private copy of the RM sheet."""
    (tmp_path / "workflow").mkdir()
    (tmp_path / "workflow" / "schemas").symlink_to(REPO / "workflow" / "schemas")
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "rm_pool.tsv", tmp_path / "config" / "rm_pool.tsv")
    return tmp_path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train faster on one thread: extra threads only add synchronisation, badly so on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run():
    """The whole DAG of the .test config, run locally from nothing, once per test session: the
    workflow tests read its outputs and the SLURM test compares its own run against them."""
    shutil.rmtree(TEST_RESULTS, ignore_errors=True)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(TEST_CONFIG)],
                            cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    print(f"local run of the .test workflow: {time.monotonic() - start:.0f} s")
    return TEST_RESULTS
