"""The workflow as a user runs it: DAG building, lint, and the whole DAG end to end on the tiny
`.test` config (CI; the `tiny_run` fixture in conftest.py), checking the output contract the README
documents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / ".test" / "config" / "config.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_snakemake(*args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_default_dag_builds():
    result = run_snakemake("-n", "--cores", "2", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]


def test_test_dag_builds():
    result = run_snakemake("-n", "--cores", "2", "--quiet", "rules", "--configfile", str(TEST_CONFIG))
    assert result.returncode == 0, result.stderr[-3000:]


def test_lint_is_clean():
    result = run_snakemake("--lint")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.workflow
def test_tables_follow_the_output_contract(tiny_run):
    tables = tiny_run / "tables"
    expected = {
        "sft_accuracy": ["domain", "accuracy"],
        "sft_selection": ["step", "domain", "accuracy", "margin", "selected"],
        "rm_accuracy": ["rm", "domain", "accuracy"],
        "policy_accuracy": ["method", "seed", "iteration", "domain", "accuracy"],
        "validation_accuracy": ["method", "seed", "iteration", "domain", "accuracy"],
        "laser_table1": ["method", "domain", "mean", "ci95", "n_seeds", "chosen_method"],
        "router_choices": ["method", "iteration", "domain", "rm", "count", "share"],
        "reward_validity": ["method", "reward_timing", "domain", "rm", "gold_pair_accuracy", "mean_reward_raw", "mean_reward_norm",
                            "spearman_reward_gold", "spearman_arms"],
        "pair_quality": ["method", "domain", "n_pairs", "right", "tie", "wrong", "chosen_correct"],
        "offline_router": ["split", "router_accuracy"],
        "routing_sim": ["stream", "router", "lambda0", "seed", "labelling_accuracy", "regret"],
        "bsr": ["loss", "seed", "split", "metric", "value"],
        "bsr_summary": ["loss", "split", "metric", "mean", "ci95", "n_seeds", "paper"],
        "r2m": ["variant", "seed", "iteration", "metric", "value"],
        "r2m_summary": ["metric", "variant", "iteration", "mean", "ci95", "n_seeds", "paper_pct"],
        "claims": ["claim", "source", "paper", "ours", "ci_low", "ci_high", "n_seeds", "test", "mdd", "verdict"],
    }
    for name, columns in expected.items():
        table = pd.read_csv(tables / f"{name}.tsv", sep="\t")
        assert set(columns) <= set(table.columns), (name, list(table.columns))
        assert len(table) > 0, name
        assert (tables / f"{name}.md").exists(), name
    for name in ("rm_accuracy", "accuracy_vs_iteration", "router_choices", "routing_regret", "pair_quality",
                 "reward_validity", "bsr_norms"):
        assert (tiny_run / "figures" / f"{name}.png").stat().st_size > 0
        assert (tiny_run / "figures" / f"{name}.pdf").stat().st_size > 0


@pytest.mark.workflow
def test_policy_accuracy_covers_every_run(tiny_run):
    import yaml

    config = yaml.safe_load(TEST_CONFIG.read_text())
    acc = pd.read_csv(tiny_run / "tables" / "policy_accuracy.tsv", sep="\t")
    assert set(acc["method"]) == set(config["methods"])
    assert set(acc["seed"]) == set(config["seeds"])
    assert set(acc["iteration"]) == set(range(config["budget"]["iterations"] + 1))
    assert acc["accuracy"].between(0, 1).all()


@pytest.mark.workflow
def test_best_single_row_is_chosen_on_validation(tiny_run):
    validation = pd.read_csv(tiny_run / "tables" / "validation_accuracy.tsv", sep="\t")
    assert set(validation["iteration"]) == {1, 2} and validation["accuracy"].between(0, 1).all()
    laser = pd.read_csv(tiny_run / "tables" / "laser_table1.tsv", sep="\t")
    best = laser[laser["method"] == "best-single-rm"]
    assert set(best["chosen_method"]) == {"rm-a"}  # the only single-RM method of recipe laser (r2m-a is an R2M row)
    mine = laser[laser["method"] == "rm-a"]
    assert best["mean"].tolist() == mine["mean"].tolist()  # reported at its test accuracy
    bayes = pd.read_csv(tiny_run / "tables" / "bayesian_table1.tsv", sep="\t")
    assert "best-single-rm" not in set(bayes["method"])  # no single-RM method of recipe bayesian
    assert "No best-single-rm row" in (tiny_run / "tables" / "bayesian_table1.md").read_text()


@pytest.mark.workflow
def test_decisions_log_every_routed_choice(tiny_run):
    decisions = pd.read_parquet(tiny_run / "decisions" / "rm-a" / "0.parquet")
    for column in ("method", "seed", "iteration", "step", "router_updates", "query_id", "domain", "rm", "score_gap",
                   "bandit_reward_raw", "bandit_reward_norm", "loss", "gold_agreement", "route_seconds", "rm_calls"):
        assert column in decisions.columns, column
    assert set(decisions["rm"]) == {"rm_a"}  # a single-RM method never routes elsewhere
    ensemble = pd.read_parquet(tiny_run / "decisions" / "ensemble-mean" / "0.parquet")
    single_calls = decisions.groupby("iteration")["rm_calls"].sum()
    ensemble_calls = ensemble.groupby("iteration")["rm_calls"].sum()
    assert (ensemble_calls == 3 * single_calls).all()  # the 3-RM ensemble pays for every RM
    laser = pd.read_parquet(tiny_run / "decisions" / "laser" / "0.parquet")
    # LASeR's rescaler (quantile-laser) returns the run's first reward raw, then rescales into [0, 1].
    rewarded = laser.dropna(subset=["bandit_reward_norm"]).drop_duplicates("decision_id")
    first = rewarded.iloc[0]
    assert first["bandit_reward_norm"] == pytest.approx(first["bandit_reward_raw"])
    assert rewarded["bandit_reward_norm"].iloc[1:].between(0, 1).all()
    # The router learns inside the iteration: one update per optimiser step, carried across iterations.
    per_step = laser.groupby(["iteration", "step"])["router_updates"].first()
    assert per_step.is_monotonic_increasing and per_step.is_unique
    assert per_step.loc[1].tolist() == list(range(len(per_step.loc[1])))


@pytest.mark.workflow
def test_bsr_and_r2m_tables_cover_every_seed_and_variant(tiny_run):
    import yaml

    config = yaml.safe_load(TEST_CONFIG.read_text())
    bsr = pd.read_csv(tiny_run / "tables" / "bsr.tsv", sep="\t")
    assert set(bsr["loss"]) == {"bt", "bsr"} and set(bsr["seed"]) == set(config["bsr_eval"]["seeds"])
    assert {"train", "in_domain", "prompt_ood", "response_ood", "mutual_ood"} <= set(bsr["split"])
    loop = pd.read_csv(tiny_run / "tables" / "r2m.tsv", sep="\t")
    assert set(loop["variant"]) == set(config["r2m"]["compare"]) and set(loop["seed"]) == set(config["seeds"])
    assert set(loop["metric"]) == {"rm_pair_accuracy", "policy_accuracy"}
    iterations = range(1, config["budget"]["iterations"] + 1)
    assert set(loop["iteration"]) == set(iterations)
    method = config["r2m"]["compare"]["r2m"]
    steps = []
    for seed in config["seeds"]:
        for it in iterations:  # R2M's state is a per-iteration output that continues its schedule
            state = tiny_run / "runs" / method / str(seed) / f"it{it}" / "r2m"
            assert (state / "r2m_a.safetensors").stat().st_size > 0
            log = pd.read_csv(state / "r2m_a.log.tsv", sep="\t")
            steps.append(log["step"].tolist())
        assert steps[-1][0] == steps[-2][-1] + 1
    written = [p.name for p in (tiny_run / "runs" / "laser" / "0" / "it1" / "r2m").iterdir() if not p.name.startswith(".")]
    assert not written  # a pool without R2M writes no R2M state


@pytest.mark.workflow
def test_an_rm_that_joins_mid_run_is_routed_only_from_its_iteration(tiny_run):
    decisions = pd.read_parquet(tiny_run / "decisions" / "laser-join" / "0.parquet")
    assert "rm_b" not in set(decisions.loc[decisions["iteration"] == 1, "rm"])
    assert set(decisions.loc[decisions["iteration"] == 2, "arm"]) <= {0, 1, 2}
    assert (decisions.loc[decisions["rm"] == "rm_b", "arm"] == 2).all()  # the newcomer takes the last arm


@pytest.mark.workflow
def test_no_temporary_files_are_left(tiny_run):
    leftovers = [p for p in tiny_run.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


@pytest.mark.workflow
def test_online_methods_route_rewards_inside_grpo_and_rloo(tiny_run):
    """The .test config's online methods (recipes with trainer grpo | rloo): sampling inside
    train_iteration (no rollout job), one RM call per completion for routed methods, every RM's
    for TRL's normalize_then_sum aggregation, the router learning across iterations, and every
    bandit signal in online_reward_validity.tsv."""
    import yaml

    from rmroute.rl import SIGNALS

    config = yaml.safe_load(TEST_CONFIG.read_text())
    per_step = config["budget"]["batch_prompts"] * config["budget"]["samples_per_prompt"]
    steps = config["budget"]["prompts_per_iteration"] // config["budget"]["batch_prompts"]
    for method, calls_per_step in (("laser-grpo", per_step), ("exp3-rloo", per_step), ("nts-grpo", 3 * per_step)):
        decisions = pd.read_parquet(tiny_run / "decisions" / method / "0.parquet")
        for it in (1, 2):
            mine = decisions[decisions["iteration"] == it]
            assert sorted(mine["step"].unique()) == list(range(steps)), method
            assert (mine.groupby("step")["rm_calls"].sum() == calls_per_step).all(), method
            assert not (tiny_run / "runs" / method / "0" / f"it{it}" / "rollouts.jsonl").exists()  # sampled in the trainer
        samples = [json.loads(line) for line in (tiny_run / "runs" / method / "0" / "it1" / "pairs.jsonl").open()]
        assert len(samples) == config["budget"]["prompts_per_iteration"]
        assert all(len(s["responses"]) == len(s["gold"]) == config["budget"]["samples_per_prompt"] for s in samples)
    laser = pd.read_parquet(tiny_run / "decisions" / "laser-grpo" / "0.parquet")
    assert set(laser["reward_signal"]) == {"prior_rank"}
    it2 = laser[laser["iteration"] == 2]
    # Iteration 2's router continues from iteration 1's state (its update count is carried over).
    first, second = laser[laser["iteration"] == 1], laser[laser["iteration"] == 2]
    assert second["router_updates"].min() >= first["router_updates"].max() > 0
    validity = pd.read_csv(tiny_run / "tables" / "online_reward_validity.tsv", sep="\t")
    assert set(validity["reward_signal"]) <= set(SIGNALS) and "laser-grpo" in set(validity["method"])
    # R2M inside RLOO: an update after every policy step of each iteration, its state carried over.
    for it in (1, 2):
        r2m = tiny_run / "runs" / "r2m-rloo" / "0" / f"it{it}" / "r2m"
        assert (r2m / "r2m_a.safetensors").exists()
        log = pd.read_csv(r2m / "r2m_a.log.tsv", sep="\t")
        assert sorted(log["policy_step"].unique()) == list(range(steps))
