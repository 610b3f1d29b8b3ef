"""A method's pool: RMs that join mid-run (router state extended, not reset), noise on one RM's
scores, and R2M as a pool member updated inside the training loop: after every policy step
(`update_every: step`) or once per iteration, its step count carried across iterations, and its
untrained control left exactly as it started."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from rmroute import models
from rmroute.io import write_jsonl
from rmroute.methods import ConfigError, Method, Recipe, resolve_methods
from rmroute.online import ScoreCache
from rmroute.rewards.r2m import R2M, R2MRewardModel, parse_r2m_source
from rmroute.routers.linucb import LinUCBRouter
from rmroute.routers.thompson import ThompsonRouter
from tiny_artefacts import policy_and_classifier

torch.set_num_threads(1)
IDS = ["a", "b", "c"]


def _config(methods: dict) -> dict:
    """The default config with only `methods` (no generated baselines) and three iterations, so an
    RM can join at iteration 2 or 3."""
    config = yaml.safe_load(open("config/config.yaml"))
    config["methods"] = methods
    config["budget"]["iterations"] = 3
    config.pop("baselines", None)
    return config


# ---------------------------------------------------------------- routers grow


def test_linucb_extended_equals_a_router_that_never_chose_the_new_arm():
    rng = np.random.default_rng(0)
    contexts, arms, rewards = rng.normal(size=(12, 3)), rng.integers(0, 2, 12), rng.random(12)
    grown = LinUCBRouter(2, 3, seed=0)
    grown.update(contexts, arms, rewards)
    grown.add_arms(1)
    full = LinUCBRouter(3, 3, seed=0)
    full.update(contexts, arms, rewards)
    np.testing.assert_array_equal(grown.A, full.A)
    np.testing.assert_array_equal(grown.b, full.b)
    np.testing.assert_allclose(grown.scores(contexts), full.scores(contexts))
    assert grown.state_dict()["n_arms"] == 3


def test_thompson_extended_keeps_posteriors_and_gives_the_newcomer_its_prior():
    rng = np.random.default_rng(1)
    prior = rng.normal(size=(3, 4))
    contexts, arms, rewards = rng.normal(size=(20, 4)), rng.integers(0, 2, 20), rng.random(20)
    grown = ThompsonRouter(2, 4, seed=0, prior_means=prior[:2], lambda0=5.0)
    grown.update(contexts, arms, rewards)
    grown.add_arms(1, prior[2:])
    full = ThompsonRouter(3, 4, seed=0, prior_means=prior, lambda0=5.0)
    full.update(contexts, arms, rewards)
    for key in ("precision", "b", "prior_means"):
        np.testing.assert_allclose(grown.state_dict()[key], full.state_dict()[key])
    np.testing.assert_allclose(grown.mean[2], prior[2])
    with pytest.raises(ValueError, match="prior_means must have shape"):
        grown.add_arms(2, prior[:1])


# ---------------------------------------------------------------- methods name their pool


def test_late_rms_come_last_so_an_arm_keeps_its_index():
    methods = resolve_methods(_config({"l": {"router": "linucb", "join": {"a": 3, "b": 2}}}), IDS)
    method = methods["l"]
    assert method.rms == ("c", "b", "a")
    assert method.active_rms(1) == ["c"] and method.active_rms(2) == ["c", "b"] and method.active_rms(3) == ["c", "b", "a"]
    assert Method.from_dict(method.to_dict()) == method


def test_opt_in_rows_join_only_the_methods_that_name_them():
    methods = resolve_methods(_config({"r": {"router": "random"}, "s": {"router": "single", "rm": "c"},
                                       "t": {"router": "random", "rms": ["a", "c"]}}), IDS, opt_in=("c",))
    assert methods["r"].rms == ("a", "b")
    assert methods["s"].rms == ("a", "b", "c") and methods["s"].arm == 2
    assert methods["t"].rms == ("a", "c")


@pytest.mark.parametrize("spec, field", [
    ({"router": "exp3", "join": {"b": 2}}, "methods.m.join: router 'exp3'"),
    ({"router": "linucb", "join": {"b": 9}}, "methods.m.join.b: iteration 9"),
    ({"router": "linucb", "join": {"z": 2}}, "methods.m.join: 'z'"),
    ({"router": "linucb", "rms": ["a", "z"]}, "methods.m.rms: 'z'"),
    ({"router": "linucb", "rms": ["a", "a"]}, "methods.m.rms: needs"),
    ({"router": "linucb", "rms": ["b"], "join": {"b": 2}}, "every RM of the pool joins late"),
    ({"router": "linucb", "noise_rm": "z"}, "methods.m.noise_rm"),
    ({"router": "linucb", "join": {"b": 2}, "normaliser": "ema-z"}, "needs normaliser 'quantile'"),
])
def test_bad_pool_settings_name_the_field(spec, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace("(", r"\(")):
        resolve_methods(_config({"m": spec}), IDS)


def test_noise_reaches_only_the_named_rms_scores():
    class Constant:
        def __init__(self, value):
            self.value = value

        def score(self, prompts, responses):
            return [self.value] * len(prompts)

    groups = [{"prompt": "p", "responses": ["x", "y", "z"]}]
    cache = ScoreCache([Constant(1.0), Constant(2.0)], noise_sigma=0.3, seed=0, noisy_arm=1)
    wanted = [(0, i) for i in range(3)]
    cache.score(0, groups, wanted)
    cache.score(1, groups, wanted)
    assert [cache.get(0, 0, i) for i in range(3)] == [1.0, 1.0, 1.0]
    noisy = np.array([cache.get(1, 0, i) for i in range(3)])
    assert np.all(noisy != 2.0) and np.all(np.abs(noisy - 2.0) < 2.0)


def test_r2m_sources_parse():
    assert parse_r2m_source("r2m:rm_a") == ("policy", "rm_a")
    assert parse_r2m_source("r2m-noise:rm_a") == ("noise", "rm_a")
    assert parse_r2m_source("r2m-untrained:rm_a") == ("untrained", "rm_a")
    assert parse_r2m_source("train") is None and parse_r2m_source("org/name") is None


# ---------------------------------------------------------------- R2M in the pool


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    tok, records, answers = policy_and_classifier(root)
    return root, tok, [{"id": str(i), "prompt": r["prompt"], "responses": a} for i, (r, a) in enumerate(zip(records, answers))]


SETTINGS = {"attn_dim": 8, "epochs": 2, "batch_groups": 4, "lr": 0.01}


def test_r2m_member_scores_the_rollouts_trains_on_whole_groups_and_continues(tiny, tmp_path):
    """The member's API under `update_every: iteration` (after_step then trains nothing)."""
    root, tok, groups = tiny
    policy = models.load_policy(root / "policy", device="cpu")
    settings = {**SETTINGS, "update_every": "iteration"}
    rm = R2MRewardModel("r2m_a", str(root / "rm"), "policy", settings, total_steps=8)
    with pytest.raises(RuntimeError, match="begin_iteration"):
        rm.score(["p"], ["r"])
    rm.begin_iteration(policy, tok, groups)
    with pytest.raises(ValueError, match="only the iteration's rollouts"):
        rm.score(["not a prompt"], ["r"])
    whole, part = groups[:6], groups[6:]
    first = rm.score([g["prompt"] for g in whole for _ in g["responses"]], [r for g in whole for r in g["responses"]])
    rm.score([part[0]["prompt"]], [part[0]["responses"][0]])  # a group scored in part is not trained on
    assert rm.calls == 25
    assert rm.after_step(policy, tok, groups, 0) == 0 and rm.model.step == 0
    assert rm.end_iteration(policy, tok, groups, 3) == 6
    assert len(rm.log) == 2 * 2 and rm.model.step == 4  # 2 epochs of ceil(6 / 4) steps
    assert {row["policy_step"] for row in rm.log} == {3} and {row["groups"] for row in rm.log} == {6}
    rm.save(tmp_path / "r2m_a.safetensors")
    again = R2MRewardModel("r2m_a", str(root / "rm"), "policy", settings, total_steps=8,
                           state_path=str(tmp_path / "r2m_a.safetensors"))
    again.begin_iteration(policy, tok, groups)
    assert again.model.step == 4
    after = again.score([g["prompt"] for g in whole for _ in g["responses"]], [r for g in whole for r in g["responses"]])
    np.testing.assert_allclose(after, rm.score([g["prompt"] for g in whole for _ in g["responses"]],
                                               [r for g in whole for r in g["responses"]]), rtol=1e-5)
    assert not np.allclose(first, after)


def _r2m_run(root, groups, tmp_path, r2m: dict, *, iterations: int = 2, recipe_epochs: float = 1.0):
    """`iterations` routed iterations of an ensemble of R2M and its untrained control (both score
    every group, so both update whenever they update), 2 prompts per batch; returns each
    iteration's output directory."""
    from rmroute.stages import train_iteration

    rollouts = tmp_path / "rollouts.jsonl"
    write_jsonl(groups, rollouts)
    row = {"path": str(root / "rm"), "dtype": "float32", "batch_size": 64, "max_length": 64, "trust_remote_code": False}
    pool = [{**row, "rm_id": "r2m_a", "source": "r2m:rm"}, {**row, "rm_id": "r2m_u", "source": "r2m-untrained:rm"}]
    method = Method(name="ens", router="ensemble", rms=("r2m_a", "r2m_u"), batch_prompts=2, pairs_per_prompt=1,
                    recipe=Recipe(epochs=recipe_epochs, lr=1e-4)).to_dict()
    policy, outs = root / "policy", []
    for it in range(1, iterations + 1):
        out = tmp_path / f"it{it}"
        out.mkdir()
        previous = tmp_path / f"it{it - 1}"
        train_iteration(policy_dir=str(policy), reference_dir=str(policy), rollouts_path=str(rollouts), method=method,
                        pool_rows=pool, previous_state=str(previous / "state.json") if it > 1 else None, offline_dir=None,
                        batch_order="blocked", max_length=64, seed=0, it=it, threads=1, device="cpu",
                        out_policy=str(out / "policy"), out_state=str(out / "state.json"),
                        out_decisions=str(out / "decisions.parquet"), out_pairs=str(out / "pairs.jsonl"), r2m=r2m,
                        previous_r2m=str(previous / "r2m") if it > 1 else None, out_r2m=str(out / "r2m"),
                        iterations=iterations)
        policy = out / "policy"
        outs.append(out)
    return outs


def _log(out, rm_id):
    return pd.read_csv(out / "r2m" / f"{rm_id}.log.tsv", sep="\t")


def test_r2m_updates_after_every_policy_step_and_continues_its_schedule_across_iterations(tiny, tmp_path):
    """update_every: step. 8 groups in batches of 2: 4 policy optimiser steps per iteration, each
    followed by one R2M update of 2 epochs × ⌈2 / 4⌉ = 2 steps on that step's 2 groups; T = 2
    iterations × 4 updates × 2 = 16. t goes on from the saved state, so the run ends at t = T with
    ω at its floor. The untrained control takes the same steps and ends bit-identical to its start."""
    root, tok, groups = tiny
    outs = _r2m_run(root, groups, tmp_path, SETTINGS)
    steps_seen = 0
    for out in outs:
        policy_steps = sorted(pd.read_parquet(out / "decisions.parquet")["step"].unique())
        assert len(policy_steps) == 4
        for rm_id in ("r2m_a", "r2m_u"):
            log = _log(out, rm_id)
            assert sorted(log["policy_step"].unique()) == policy_steps  # one update after each policy step ...
            assert (log.groupby("policy_step").size() == 2).all() and set(log["groups"]) == {2}  # ... on its groups
            assert log["step"].tolist() == list(range(steps_seen, steps_seen + 8))  # t continues from the saved state
        state = R2M.load(root / "rm", out / "r2m" / "r2m_a.safetensors")
        steps_seen += 8
        assert state.step == steps_seen and state.total_steps == 16
    assert _log(outs[0], "r2m_a")["omega"].iloc[0] == 1.0
    assert state.score_omega == 0.6  # Ω, the floor
    for out in outs:
        trained = R2M.load(root / "rm", out / "r2m" / "r2m_u.safetensors")
        initial = R2M.from_base(root / "rm", 24, trained.config).trainable_state()
        assert trained.config.feedback == "untrained" and trained.step > 0
        assert all(torch.equal(initial[k], v) for k, v in trained.trainable_state().items())
    moved = R2M.load(root / "rm", outs[-1] / "r2m" / "r2m_a.safetensors").trainable_state()
    assert any(not torch.equal(initial[k], v) for k, v in moved.items())  # R2M itself did train


@pytest.mark.parametrize("update_every, recipe_epochs, updates", [("step", 1.5, 4), ("iteration", 1.0, 1)])
def test_r2m_skips_replays_and_keeps_the_once_per_iteration_variant(tiny, tmp_path, update_every, recipe_epochs, updates):
    """A replay step (recipe epochs > 1) labels nothing and trains no R2M: 6 policy steps, 4 updates.
    `update_every: iteration` (the variant) trains once, on all 8 groups, after the last step."""
    root, tok, groups = tiny
    (out,) = _r2m_run(root, groups, tmp_path, {**SETTINGS, "update_every": update_every}, iterations=1,
                      recipe_epochs=recipe_epochs)
    log = _log(out, "r2m_a")
    assert log["policy_step"].nunique() == updates
    state = R2M.load(root / "rm", out / "r2m" / "r2m_a.safetensors")
    assert state.step == len(log) == state.total_steps  # T counts exactly the steps taken
    if update_every == "iteration":
        assert log["policy_step"].unique().tolist() == [3] and set(log["groups"]) == {8}


def test_r2m_loop_table_reads_decision_logs_and_evals(tmp_path):
    from rmroute.stages import r2m_loop_tables

    decisions, evals = {}, {}
    for variant, agree in (("r2m", 3.0), ("base", 1.0)):
        decisions[variant], evals[variant] = [], []
        for seed in (0, 1):
            path = tmp_path / f"{variant}-{seed}.parquet"
            pd.DataFrame({"seed": seed, "iteration": [1, 1, 2], "gold_pairs": [2, 2, 4],
                          "gold_pairs_agree": [agree / 2, agree / 2, agree]}).to_parquet(path)
            decisions[variant].append(str(path))
            for it in (1, 2):
                run = tmp_path / variant / str(seed) / f"it{it}"
                run.mkdir(parents=True)
                pd.DataFrame({"domain": ["arith", "instruct", "arith"], "metric": ["accuracy", "accuracy", "win_rate_vs_sft"],
                              "value": [0.5, 0.25 * it, 0.9]}).to_csv(run / "eval.tsv", sep="\t", index=False)
                evals[variant].append(str(run / "eval.tsv"))
    r2m_loop_tables(decisions, evals, tmp_path / "r2m.tsv", tmp_path / "r2m_summary.tsv")
    table = pd.read_csv(tmp_path / "r2m.tsv", sep="\t")
    rm_acc = table[(table.metric == "rm_pair_accuracy")].set_index(["variant", "seed", "iteration"])["value"]
    assert rm_acc[("r2m", 0, 1)] == pytest.approx(75.0) and rm_acc[("base", 1, 2)] == pytest.approx(25.0)
    policy = table[(table.metric == "policy_accuracy")].set_index(["variant", "seed", "iteration"])["value"]
    assert policy[("r2m", 0, 2)] == pytest.approx(50.0)
    summary = pd.read_csv(tmp_path / "r2m_summary.tsv", sep="\t")
    row = summary[(summary.metric == "rm_pair_accuracy") & (summary.variant == "r2m") & (summary.iteration == 1)].iloc[0]
    assert row["n_seeds"] == 2 and row["paper_pct"] == pytest.approx(78.6)
