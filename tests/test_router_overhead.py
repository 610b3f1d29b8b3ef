"""The iteration time the router-overhead benchmark divides by (benchmarks/router_overhead.py),
read from a run's job benchmarks in either `seed_jobs` layout: a job's seconds are shared among
the (seed, iteration) runs it holds, so both layouts give the same per-iteration time."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # router_overhead imports its sibling `common`
SPEC = importlib.util.spec_from_file_location("router_overhead", BENCHMARKS / "router_overhead.py")
overhead = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(overhead)


def _bench(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\n{seconds}\t0:00:00\n")


def _runs(results: Path, seeds=("0", "1"), its=("it1", "it2")) -> None:
    for s in seeds:
        for it in its:
            (results / "runs" / "laser" / s / it).mkdir(parents=True)


def test_both_layouts_give_the_same_iteration_seconds(tmp_path):
    # Per seed: rollout_sft 2 s, rollout it2 4 s, train_iteration 10 s an iteration, evaluate 6 s a run.
    separate, together = tmp_path / "separate", tmp_path / "together"
    _runs(separate)
    _runs(together)
    rules = separate / "benchmarks" / "rules"
    for s in ("0", "1"):
        _bench(rules / "rollout_sft" / s / "rollout.tsv", 2.0)
        _bench(rules / "rollout" / "laser" / s / "it2.tsv", 4.0)
        _bench(rules / "evaluate" / "laser" / s / "evaluate.tsv", 6.0)
        for it in ("it1", "it2"):
            _bench(rules / "train_iteration" / "laser" / s / f"{it}.tsv", 10.0)
    rules = together / "benchmarks" / "rules"
    _bench(rules / "rollout_sft" / "rollout.tsv", 4.0)
    _bench(rules / "rollout" / "laser" / "it2.tsv", 8.0)
    _bench(rules / "evaluate" / "laser" / "evaluate.tsv", 12.0)
    for it in ("it1", "it2"):
        _bench(rules / "train_iteration" / "laser" / f"{it}.tsv", 20.0)
    # iteration 1: 2 + 10 + 3, iteration 2: 4 + 10 + 3 (the run's evaluation shared by its two iterations)
    for results in (separate, together):
        seconds, source = overhead.iteration_seconds(results, "laser")
        assert seconds == pytest.approx((15.0 + 17.0) / 2), source
        assert "4 iterations" in source


def test_without_complete_iterations_it_falls_back_to_the_constant(tmp_path):
    _runs(tmp_path)
    _bench(tmp_path / "benchmarks" / "rules" / "train_iteration" / "laser" / "it1.tsv", 20.0)  # no rollout, no evaluate
    assert overhead.iteration_seconds(tmp_path, "laser") == (overhead.FALLBACK_ITERATION_S, "fallback constant")
