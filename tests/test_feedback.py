"""The bandit reward each routed decision gets from the DPO step's per-pair training losses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rmroute.stages import bandit_rewards

ROUTING = pd.DataFrame({
    "decision_id": ["b0", "b0", "b1", "b1"],  # two per-batch decisions over four queries
    "query_id": ["q0", "q1", "q2", "q3"],
})
PAIRS = [
    {"decision_id": "b0", "prompt_id": "q0"}, {"decision_id": "b0", "prompt_id": "q1"},
    {"decision_id": "b1", "prompt_id": "q2"},  # q3 produced no pair
]
LOSSES = np.array([1.0, 3.0, 0.5])


def test_neg_loss_is_minus_the_mean_loss_of_the_decisions_pairs():
    rewards = bandit_rewards(ROUTING, PAIRS, LOSSES, "neg_loss", batch_prompts=2)
    assert rewards.tolist() == [-2.0, -2.0, -0.5, -0.5]


def test_advantage_is_batch_mean_minus_pair_loss():
    routing = pd.DataFrame({"decision_id": ["p0", "p1", "p2", "p3"], "query_id": ["q0", "q0", "q1", "q2"]})
    pairs = [{"decision_id": d, "prompt_id": q} for d, q in (("p0", "q0"), ("p1", "q0"), ("p2", "q1"), ("p3", "q2"))]
    rewards = bandit_rewards(routing, pairs, np.array([1.0, 2.0, 3.0, 4.0]), "advantage", batch_prompts=2)
    # q0, q1 form batch 0 (mean loss 2.0); q2 is batch 1 alone (mean 4.0).
    assert rewards.tolist() == [1.0, 0.0, -1.0, 0.0]


def test_a_decision_without_pairs_gets_no_reward():
    routing = pd.concat([ROUTING, pd.DataFrame({"decision_id": ["b2"], "query_id": ["q4"]})], ignore_index=True)
    rewards = bandit_rewards(routing, PAIRS, LOSSES, "neg_loss", batch_prompts=2)
    assert np.isnan(rewards.iloc[-1])


def test_unknown_reward_is_refused():
    with pytest.raises(ValueError, match="reward 'gold'"):
        bandit_rewards(ROUTING, PAIRS, LOSSES, "gold", batch_prompts=2)
