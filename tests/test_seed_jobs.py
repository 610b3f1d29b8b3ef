"""`seed_jobs: together`: one job runs every seed of a method in turn. A seed's outputs must not
depend on the seeds run before it in the same process, so the job gives the bytes that one job per
seed gives (the SLURM test compares a `separate` run through SLURM with the local `together` run of
the .test workflow); and each seed's own seconds are written for the tables that read them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rmroute.io import write_jsonl
from rmroute.methods import resolve_methods
from rmroute.stages import as_list, each_seed, rollout, train_iteration
from tiny_artefacts import policy_and_classifier, tiny_splits


def _digest(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory`, by relative path; the decision log's without its one
    wall-clock column (`route_seconds`, the seconds each decision took)."""
    digests = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "decisions.parquet":
                data = pd.read_parquet(p).drop(columns="route_seconds").to_csv().encode()
            digests[str(p.relative_to(directory))] = hashlib.sha256(data).hexdigest()
    return digests


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("seedjobs")
    tok, _, _ = policy_and_classifier(root)
    records = tiny_splits()["rollout"]
    write_jsonl(records, root / "prompts.jsonl")
    config = yaml.safe_load(open("config/config.yaml"))
    config["methods"] = {"laser": {"router": "linucb", "epochs": 1}}
    config.pop("baselines", None)
    config["budget"].update(batch_prompts=2, pairs_per_prompt=1)
    method = resolve_methods(config, ["a", "b"])["laser"]
    row = {"path": str(root / "rm"), "dtype": "float32", "batch_size": 64, "max_length": 64,
           "trust_remote_code": False, "source": "train"}
    return root, method, [{**row, "rm_id": "a"}, {**row, "rm_id": "b"}]


def _job(root: Path, method, pool, seeds: list[int], out: Path) -> None:
    """What the rollout and train_iteration scripts do for one job of `seeds`: each seed samples
    its rollouts from the SFT policy and trains one routed iteration on them."""
    budget = {"prompts_per_iteration": 8, "samples_per_prompt": 3, "temperature": 1.0, "max_new_tokens": 3}

    def run(k, seed):
        run_dir = out / str(seed)
        rollout(str(root / "policy"), str(root / "prompts.jsonl"), budget, seed, 1, 1, "cpu", str(run_dir / "rollouts.jsonl"))
        train_iteration(policy_dir=str(root / "policy"), reference_dir=str(root / "policy"),
                        rollouts_path=str(run_dir / "rollouts.jsonl"), method=method.to_dict(), pool_rows=pool,
                        previous_state=None, offline_dir=None, batch_order="interleaved", max_length=64, seed=seed, it=1,
                        threads=1, device="cpu", out_policy=str(run_dir / "policy"), out_state=str(run_dir / "state.json"),
                        out_decisions=str(run_dir / "decisions.parquet"), out_pairs=str(run_dir / "pairs.jsonl"))

    each_seed(seeds, run, [str(out / "seconds" / f"{s}.tsv") for s in seeds])


def test_a_seeds_outputs_do_not_depend_on_the_seeds_run_before_it(tiny, tmp_path):
    """Seeds 0 and 1 in one process, in both orders: every output file of each seed (rollouts,
    policy weights, router state, decisions but their seconds, pairs) is byte-identical, and the
    two seeds differ."""
    root, method, pool = tiny
    _job(root, method, pool, [0, 1], tmp_path / "forward")
    _job(root, method, pool, [1, 0], tmp_path / "backward")
    for seed in ("0", "1"):
        forward, backward = _digest(tmp_path / "forward" / seed), _digest(tmp_path / "backward" / seed)
        assert {"rollouts.jsonl", "decisions.parquet", "pairs.jsonl", "state.json", "policy/model.safetensors"} <= set(forward)
        assert forward == backward, seed
    assert _digest(tmp_path / "forward" / "0") != _digest(tmp_path / "forward" / "1")
    for seed in ("0", "1"):  # each seed's own seconds, in the columns the tables read
        seconds = pd.read_csv(tmp_path / "forward" / "seconds" / f"{seed}.tsv", sep="\t")
        assert list(seconds.columns) == ["s", "h:m:s"] and seconds["s"].iloc[0] > 0


def test_each_seed_checks_its_paths_and_as_list_reads_both_shapes(tmp_path):
    with pytest.raises(ValueError, match="2 seconds paths for 3 seeds"):
        each_seed([0, 1, 2], lambda k, s: None, ["a", "b"])
    seen = []
    each_seed([4, 7], lambda k, s: seen.append((k, s)))
    assert seen == [(0, 4), (1, 7)]
    assert as_list("x") == ["x"] and as_list(["x", "y"]) == ["x", "y"] and as_list(None) == []
