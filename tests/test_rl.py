"""Routed rewards inside TRL's GRPO and RLOO (rmroute.rl): the loss signal against TRL's own loss,
the feedback order, a stub pool whose only gold-consistent RM the router must find, and R2M
updated inside RLOO after every policy step."""

from __future__ import annotations

import copy
import random
import re

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import Dataset

from rmroute import models
from rmroute.methods import Method, build_router
from rmroute.rl import RMReward, RoutedReward, advantages, spearman, step_loss
from rmroute.routers import make_normaliser


def _target(prompt: str) -> int:
    a, b = map(int, re.findall(r"\d+", prompt)[:2])
    return a + b


def _closeness(prompt: str, response: str) -> float:
    numbers = re.findall(r"\d+", response)
    return -abs(int(numbers[0]) - _target(prompt)) if numbers else -20.0


class Stub:
    """A reward model of the stub pool: `rm_id` and `score(prompts, responses)`."""

    def __init__(self, rm_id, fn):
        self.rm_id, self.fn, self.calls = rm_id, fn, 0

    def score(self, prompts, responses):
        self.calls += len(prompts)
        return [float(self.fn(p, r)) for p, r in zip(prompts, responses)]


def stub_pool(seed: int = 0) -> list[Stub]:
    """RM 0 ranks like gold (closeness of the answer to a + b); RM 1 reverses gold; RM 2 is noise."""
    rng = random.Random(seed)
    return [Stub("gold_like", _closeness), Stub("reversed", lambda p, r: -_closeness(p, r)),
            Stub("noise", lambda p, r: rng.random())]


def gold(prompts, completions, **columns):
    return [_closeness(p, c) for p, c in zip(prompts, completions)]


PROMPTS = [f"Q: What is {a} plus {b}?\nA:" for a in range(1, 10) for b in range(1, 10)]


@pytest.fixture(scope="module")
def warm_policy():
    """A tiny Llama fine-tuned on the gold answers, so its samples are mostly right or near."""
    from rmroute.sft import train_sft

    models.set_seed(0)
    tokenizer = models.train_tokenizer([p + f" {i}" for p in PROMPTS for i in range(20)], 200)
    policy = models.build_policy(tokenizer, 64, 2, 4, 128, 64)
    tasks = [{"id": f"t{i}", "prompt": p, "answer": f" {_target(p)}", "domain": "plus"} for i, p in enumerate(PROMPTS)]
    train_sft(policy, tokenizer, tasks, steps=150, batch_size=32, lr=3e-3, warmup_steps=10, seed=0, mix={"plus": 1.0},
              use_cpu=True, max_length=32)
    return policy, tokenizer


def _dataset():
    return Dataset.from_dict({"prompt": PROMPTS, "id": [f"q{i}" for i in range(len(PROMPTS))], "domain": ["plus"] * len(PROMPTS)})


def _run(kind, warm_policy, reward, tmp_path, steps, **config):
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    policy, tokenizer = warm_policy
    policy = copy.deepcopy(policy)
    Config, Trainer = (GRPOConfig, GRPOTrainer) if kind == "grpo" else (RLOOConfig, RLOOTrainer)
    settings = dict(output_dir=str(tmp_path / kind), per_device_train_batch_size=16, num_generations=4,
                    max_completion_length=6, max_steps=steps, logging_steps=1, beta=0.0, use_cpu=True, report_to=[],
                    learning_rate=1e-4, seed=0, save_strategy="no", temperature=1.0, disable_tqdm=True)
    settings.update(config)
    trainer = Trainer(model=policy, reward_funcs=reward if isinstance(reward, list) else [reward], args=Config(**settings),
                      train_dataset=_dataset(), processing_class=tokenizer,
                      callbacks=[reward.callback] if isinstance(reward, RoutedReward) else None)
    trainer.train()
    return trainer, policy, tokenizer


def _routed(pool, router="random", granularity="batch", signal="loss", policy=None, tokenizer=None, **kwargs):
    method = Method(name="m", router=router, granularity=granularity, batch_prompts=4)
    dim = policy.config.hidden_size if router == "linucb" else 1
    context = (lambda texts: models.prompt_embeddings(policy, tokenizer, texts, "last_hidden")) if router == "linucb" else None
    return RoutedReward(pool, method, build_router(method, len(pool), dim, 0), make_normaliser("quantile"), signal=signal,
                        gold=gold, prompt_context=context, **kwargs)


# ---------------------------------------------------------------- the loss signal is TRL's loss


def test_advantages_match_hand_computed():
    r = [1.0, 2.0, 4.0, 0.0, 0.0, 3.0]
    loo = advantages(r, 3, "rloo")
    assert loo[:3] == pytest.approx([1 - 3.0, 2 - 2.5, 4 - 1.5])
    assert loo[3:] == pytest.approx([0 - 1.5, 0 - 1.5, 3 - 0.0])
    grpo = advantages(r, 3, "grpo", scale_rewards="none")
    assert grpo == pytest.approx([1 - 7 / 3, 2 - 7 / 3, 4 - 7 / 3, -1, -1, 2])
    scaled = advantages(r, 3, "grpo")
    assert scaled[3:] == pytest.approx(np.array([-1, -1, 2]) / (np.std([0, 0, 3], ddof=1) + 1e-4))
    # Group-centred advantages: a group's per-sequence loss is zero; a token-level loss is the
    # (negated) covariance of advantage and length.
    assert step_loss(loo[:3], [5, 5, 5], "rloo") == pytest.approx(0.0)
    assert step_loss(grpo[:3], [1, 1, 4], "grpo", "dapo") == pytest.approx(-(grpo[:3] @ [1, 1, 4]) / 6)
    with pytest.raises(ValueError, match="loss_type"):
        step_loss(grpo, [1] * 6, "grpo", "cispo")
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("kind,config", [("grpo", {"loss_type": "dapo"}), ("grpo", {"loss_type": "bnpo"}),
                                         ("grpo", {"loss_type": "grpo"}), ("rloo", {})])
def test_loss_signal_is_the_loss_trl_optimised(kind, config, warm_policy, tmp_path):
    """A per-batch decision's `loss` is the step's loss: equal to the loss TRL logged for that step."""
    reward = _routed(stub_pool(), signal="loss")
    trainer, _, _ = _run(kind, warm_policy, reward, tmp_path, 4, **config)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
    ours = pd.DataFrame(reward.rows).drop_duplicates("step")["loss"].tolist()
    assert len(logged) == len(ours) == 4
    assert ours == pytest.approx(logged, rel=1e-4, abs=1e-6)
    if kind == "rloo" or config["loss_type"] == "grpo":
        assert ours == pytest.approx([0.0] * 4, abs=1e-6)  # group-centred advantages, per-sequence loss


# ---------------------------------------------------------------- feedback order


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_each_step_is_fed_back_before_the_next_batch_is_routed(kind, warm_policy, tmp_path):
    pool = stub_pool()
    reward = _routed(pool, router="exp3", granularity="query", signal="prior_rank")
    trainer, _, _ = _run(kind, warm_policy, reward, tmp_path, 5)
    assert reward.events == [(event, s) for s in range(5) for event in ("route", "feedback")]
    rows = pd.DataFrame(reward.rows)
    # Every decision of step s was made by a router that had learned from steps 0..s-1 exactly.
    assert (rows["router_updates"] == rows["step"]).all()
    assert reward.updates == trainer.state.global_step == 5
    assert rows.groupby("step").size().tolist() == [4] * 5  # one decision per prompt group
    # Only the routed RM scored each group: RM calls = completions, not completions x RMs.
    assert rows["rm_calls"].sum() == sum(rm.calls for rm in pool) == 5 * 16
    assert rows["bandit_reward_norm"].notna().any()


def test_routing_twice_without_feedback_is_an_error(warm_policy):
    from trl import GRPOConfig

    policy, tokenizer = warm_policy
    reward = _routed(stub_pool(), signal="loss")
    reward.bind(GRPOConfig(output_dir="unused", num_generations=2, per_device_train_batch_size=2, use_cpu=True, report_to=[]),
                policy, tokenizer)
    reward(prompts=[PROMPTS[0]] * 2, completions=[" 2", " 3"], completion_ids=[[5], [6]])
    with pytest.raises(RuntimeError, match="without feedback"):
        reward(prompts=[PROMPTS[0]] * 2, completions=[" 2", " 3"], completion_ids=[[5], [6]])


def test_unbound_reward_and_buffered_generations_are_rejected(warm_policy):
    from trl import GRPOConfig

    policy, tokenizer = warm_policy
    reward = _routed(stub_pool())
    with pytest.raises(RuntimeError, match="callbacks"):
        reward(prompts=[PROMPTS[0]] * 2, completions=[" 2", " 3"])
    args = GRPOConfig(output_dir="unused", num_generations=2, per_device_train_batch_size=2, steps_per_generation=2,
                      use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="steps_per_generation"):
        reward.bind(args, policy, tokenizer)


# ---------------------------------------------------------------- the router finds the right RM


def test_routed_grpo_sends_the_second_half_to_the_gold_consistent_rm(warm_policy, tmp_path):
    """Stub pool: only RM 0's ranking matches gold. LinUCB per batch on the prior_rank signal
    sends at least 80 % of its second-half decisions to RM 0."""
    policy, tokenizer = warm_policy
    live = copy.deepcopy(policy)
    method = Method(name="laser-grpo", router="linucb", granularity="batch", batch_prompts=4)
    reward = RoutedReward(stub_pool(), method, build_router(method, 3, live.config.hidden_size, 0), make_normaliser("quantile"),
                          signal="prior_rank", log_all_signals=True, gold=gold,
                          prompt_context=lambda texts: models.prompt_embeddings(live, tokenizer, texts, "last_hidden"))
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(tmp_path / "g"), per_device_train_batch_size=16, num_generations=4, max_completion_length=6,
                      max_steps=40, beta=0.0, use_cpu=True, report_to=[], learning_rate=1e-4, seed=0, save_strategy="no",
                      temperature=1.0, disable_tqdm=True)
    GRPOTrainer(model=live, reward_funcs=[reward], args=args, train_dataset=_dataset(), processing_class=tokenizer,
                callbacks=[reward.callback]).train()
    picks = pd.DataFrame(reward.rows).drop_duplicates("step")["rm"].tolist()
    assert len(picks) == 40
    assert np.mean([p == "gold_like" for p in picks[20:]]) >= 0.8, picks
    rows = pd.DataFrame(reward.rows)
    # Every signal was logged for every decision (analysis), the router's own under bandit_reward_raw.
    assert {"bandit_reward_raw", "bandit_reward_raw_loss", "bandit_reward_raw_logp_rank"} <= set(rows.columns)
    assert rows.groupby("rm")["gold_agreement"].mean()["gold_like"] == 1.0


def test_rm_rewards_form_trl_ensembles(warm_policy, tmp_path):
    """Every RM as its own TRL reward function, aggregated by TRL (normalize_then_sum): every RM
    scores every completion."""
    pool = stub_pool()
    funcs = [RMReward(rm) for rm in pool]
    _run("grpo", warm_policy, funcs, tmp_path, 2, multi_objective_aggregation="normalize_then_sum")
    assert [f.calls for f in funcs] == [32, 32, 32]
    assert [f.__name__ for f in funcs] == ["rm:gold_like", "rm:reversed", "rm:noise"]


# ---------------------------------------------------------------- R2M inside RLOO


@pytest.mark.parametrize("feedback", ["policy", "untrained"])
def test_r2m_in_rloo_updates_after_every_policy_step(feedback, warm_policy, tmp_path):
    """R2M as the single RM of an RLOO run, as its paper runs it: it scores each batch with the
    hidden states of the policy that sampled it and trains after every policy optimiser step on
    that step's groups (one update per step, the policy step logged); the untrained control
    changes no parameter."""
    from tiny_artefacts import tiny_classifier

    from rmroute.rewards.r2m import R2MRewardModel

    policy, tokenizer = warm_policy
    tiny_classifier(tokenizer).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    steps = 4
    rm = R2MRewardModel("r2m", str(tmp_path / "base"), feedback, {"attn_dim": 8, "epochs": 1, "batch_groups": 4},
                        total_steps=steps, seed=0)
    live = copy.deepcopy(policy)
    rm.begin_iteration(live, tokenizer, [])
    before = {k: v.clone() for k, v in rm.model.trainable_state().items()}
    method = Method(name="r2m", router="single", rm="r2m", arm=0, batch_prompts=4)
    reward = RoutedReward([rm], method, build_router(method, 1, 1, 0), make_normaliser("quantile"), gold=gold)
    from trl import RLOOConfig, RLOOTrainer

    args = RLOOConfig(output_dir=str(tmp_path / "r"), per_device_train_batch_size=16, num_generations=4, max_completion_length=6,
                      max_steps=steps, beta=0.0, use_cpu=True, report_to=[], learning_rate=1e-4, seed=0, save_strategy="no",
                      temperature=1.0, disable_tqdm=True)
    RLOOTrainer(model=live, reward_funcs=[reward], args=args, train_dataset=_dataset(), processing_class=tokenizer,
                callbacks=[reward.callback]).train()
    after = rm.model.trainable_state()
    if feedback == "untrained":
        assert all(torch.equal(before[k], after[k]) for k in before)
    else:
        assert sorted({row["policy_step"] for row in rm.log}) == list(range(steps))  # an update after every policy step
        assert all(row["groups"] == 4 for row in rm.log)
        assert any(not torch.equal(before[k], after[k]) for k in before)
    assert rm.calls == steps * 16
