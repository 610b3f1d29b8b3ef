"""R2M and the BSR term on tiny local models: the loss terms against direct computations, the ω
schedule (and the ω scoring uses), what trains and what stays frozen, the controls, and the state
file."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import RewardConfig

from rmroute import models
from rmroute.rewards.losses import BSRRewardTrainer
from rmroute.rewards.r2m import (
    R2M,
    R2MConfig,
    best_vs_worst_bt,
    group_reward_entropy,
    load_policy_hidden,
    omega,
    policy_hidden_states,
    save_policy_hidden,
)
from tiny_artefacts import policy_and_classifier

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tokenizer, a tiny policy (width 24) and a tiny classifier RM (width 32), saved as checkpoints."""
    root = tmp_path_factory.mktemp("r2m")
    tok, records, answers = policy_and_classifier(root)
    return root, tok, {"prompts": [r["prompt"] for r in records], "responses": answers}


def _hidden(root, tok, prompts, responses):
    policy = models.load_policy(root / "policy", device="cpu")
    return policy_hidden_states(policy, tok, prompts, responses)


def _group_hidden(root, tok, groups):
    flat_p = [p for p, g in zip(groups["prompts"], groups["responses"]) for _ in g]
    flat_r = [r for g in groups["responses"] for r in g]
    states = _hidden(root, tok, flat_p, flat_r)
    size = len(groups["responses"][0])
    return flat_p, flat_r, states, [states[i:i + size] for i in range(0, len(states), size)]


# ---------------------------------------------------------------- BSR inside the TRL trainer


@pytest.mark.parametrize("batch_scale", [False, True])
def test_bsr_loss_is_bt_plus_lambda_times_squared_batch_mean(tiny, tmp_path, batch_scale):
    """BSRRewardTrainer.compute_loss = mean −log σ(r_w − r_l) + λ·(B if scaled)·(mean of the 2B rewards)²,
    computed here directly from the model's rewards on the same batch."""
    root, tok, _ = tiny
    model = models.load_reward_model(root / "rm", device="cpu")
    with torch.no_grad():  # a bias in the rewards, so the batch mean and the penalty are far from zero
        model.score.weight.add_(0.5)
    pairs = [{"prompt": f"Q: {i} + 1?\nA:", "chosen": f" {i + 1}", "rejected": f" {i + 3}"} for i in range(6)]
    coef = 0.3
    args = RewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, max_length=64,
                        **models.trainer_settings(True, 0))
    trainer = BSRRewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tok,
                               bsr_coef=coef, bsr_batch_scale=batch_scale)
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    chosen, rejected = rewards[:6], rewards[6:]
    scale = 6 if batch_scale else 1
    direct = -F.logsigmoid(chosen - rejected).mean() + coef * scale * torch.cat([chosen, rejected]).mean() ** 2
    assert loss.item() == pytest.approx(direct.item(), rel=1e-5)
    plain_bt = -F.logsigmoid(chosen - rejected).mean()
    assert loss.item() - plain_bt.item() > 1e-3  # the penalty is really in the loss
    # Not TRL's centring term, which penalises each pair's (r_w + r_l)².
    centring = coef * scale * ((chosen + rejected) ** 2).mean()
    assert loss.item() != pytest.approx((plain_bt + centring).item(), rel=1e-3)


# ---------------------------------------------------------------- ω, GRE and BT


def test_omega_schedule_decays_from_one_to_its_floor():
    assert omega(0, 100, 0.6) == 1.0
    assert omega(25, 100, 0.6) == pytest.approx(0.5 * math.cos(math.pi / 4) + 0.5)
    assert omega(50, 100, 0.6) == 0.6  # ½cos(π/2) + ½ = 0.5 < Ω
    assert omega(100, 100, 0.6) == 0.6
    assert omega(100, 100, 0.0) == pytest.approx(0.0)
    crossing = math.acos(2 * 0.6 - 1) / math.pi  # where ½cos(πt/T) + ½ meets Ω
    assert omega(crossing * 100 - 1, 100, 0.6) > 0.6 and omega(crossing * 100 + 1, 100, 0.6) == 0.6
    values = [omega(t, 100, 0.7) for t in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert all(v >= 0.7 for v in values) and values[0] == 1.0 and values[-1] == 0.7
    assert values[10] == pytest.approx(0.5 * math.cos(math.pi * 0.1) + 0.5)  # on the cosine above the floor
    with pytest.raises(ValueError, match="total steps"):
        omega(0, 0, 0.6)


def test_gre_gradient_is_zero_when_a_groups_rewards_are_equal():
    equal = torch.full((1, 4), 0.37, requires_grad=True)
    group_reward_entropy(equal).backward()
    assert torch.isfinite(equal.grad).all()
    assert torch.allclose(equal.grad, torch.zeros_like(equal.grad), atol=1e-6)
    spread = torch.tensor([[0.1, 0.9, -0.4, 0.3]], requires_grad=True)
    group_reward_entropy(spread).backward()
    assert spread.grad.abs().max() > 1e-3


def test_gre_is_the_entropy_of_the_softmax_of_standardised_rewards():
    rewards = torch.tensor([[1.0, 2.0, 4.0, 0.0], [3.0, 3.5, 2.0, 1.0]])
    z = (rewards - rewards.mean(1, keepdim=True)) / rewards.std(1, unbiased=False, keepdim=True)
    p = torch.softmax(z, 1)
    expected = -(p * p.log()).sum(1).mean()
    assert group_reward_entropy(rewards, eps=0.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert group_reward_entropy(rewards * 10 + 3, eps=0.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_bt_pairs_the_best_and_worst_by_the_rms_own_scores():
    rewards = torch.tensor([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]])
    own = torch.tensor([[0.2, 0.9, -1.0], [1.0, 1.0, 1.0]])  # best = index 1, worst = index 2; group 2 has no pair
    assert best_vs_worst_bt(rewards, own).item() == pytest.approx(-F.logsigmoid(torch.tensor(1.0 - 2.0)).item())


# ---------------------------------------------------------------- the model


def test_policy_hidden_states_match_an_unpadded_forward(tiny):
    root, tok, groups = tiny
    policy = models.load_policy(root / "policy", device="cpu")
    prompts, responses = groups["prompts"][:3], [" 12", " yes please", " blue"]
    batched = policy_hidden_states(policy, tok, prompts, responses)
    for p, r, states in zip(prompts, responses, batched):
        ids = tok(p, add_special_tokens=False)["input_ids"] + tok(r + tok.eos_token, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            alone = policy(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        assert states.shape == (len(ids), 24)
        assert torch.allclose(states, alone, atol=1e-5)


def test_zeroed_attention_output_reduces_r2m_to_the_base_rm(tiny):
    """With W_o = 0, Ĥ = 0 and H = ωH_last: at t = 0 (ω = 1) R2M's score is the base RM's, and at
    any ω it is ω times the base RM's (the head has no bias), so it ranks exactly as the base RM.
    Scoring follows the schedule (`paper`): ω(0) = 1 before any update, Ω once t = T."""
    root, tok, groups = tiny
    flat_p, flat_r, states, _ = _group_hidden(root, tok, groups)
    r2m = R2M.from_base(root / "rm", policy_dim=24, config=R2MConfig(attn_dim=8), total_steps=10)
    base = models.rm_scores(r2m.base, tok, flat_p, [r + tok.eos_token for r in flat_r])
    with torch.no_grad():
        r2m.attention.o.weight.zero_()
    h_last = r2m.rm_states(flat_p, flat_r)
    from rmroute.rewards.r2m import _pad_states

    h, mask = _pad_states(states)
    at_start = r2m.rewards_from_states(h_last, h, mask, omega(0, 10, 0.6)).detach().numpy()
    assert np.allclose(at_start, base, atol=1e-5)
    assert np.allclose(r2m.score(flat_p, flat_r, states), base, atol=1e-5)  # t = 0: ω = 1
    r2m.step = r2m.total_steps
    scored = r2m.score(flat_p, flat_r, states)  # at ω(T) = Ω
    assert np.allclose(scored, 0.6 * np.asarray(base), atol=1e-5)
    assert (np.argsort(scored) == np.argsort(base)).all()
    # ... and the attention does matter once W_o is not zero.
    with torch.no_grad():
        r2m.attention.o.weight.normal_()
    assert not np.allclose(r2m.score(flat_p, flat_r, states), 0.6 * np.asarray(base), atol=1e-3)


def test_before_any_update_r2m_scores_as_its_base_head_on_h_last(tiny):
    """The paper's ω(0) = 1: an R2M at step 0, its attention untrained but not zero, scores exactly
    as its base RM's head on H_last; `omega_schedule: floor` (the variant) scores at Ω from the start."""
    root, tok, groups = tiny
    flat_p, flat_r, states, _ = _group_hidden(root, tok, groups)
    r2m = R2M.from_base(root / "rm", policy_dim=24, config=R2MConfig(attn_dim=8), total_steps=10)
    assert r2m.step == 0 and r2m.score_omega == 1.0
    h_last = r2m.rm_states(flat_p, flat_r)
    np.testing.assert_allclose(r2m.score(flat_p, flat_r, states), r2m.base_scores(h_last), rtol=0, atol=1e-6)
    base = models.rm_scores(r2m.base, tok, flat_p, [r + tok.eos_token for r in flat_r])
    np.testing.assert_allclose(r2m.score(flat_p, flat_r, states), base, atol=1e-5)
    r2m.step = 3
    assert r2m.score_omega == omega(3, 10, 0.6) < 1.0
    floor = R2M.from_base(root / "rm", policy_dim=24, config=R2MConfig(attn_dim=8, omega_schedule="floor"), total_steps=10)
    assert floor.score_omega == 0.6
    assert not np.allclose(floor.score(flat_p, flat_r, states), base, atol=1e-3)


def _own_scores(r2m, flat_p, flat_r, states, size):
    scores = r2m.score(flat_p, flat_r, states)
    return [scores[i:i + size].tolist() for i in range(0, len(scores), size)]


def test_update_trains_attention_and_head_and_leaves_the_base_frozen(tiny):
    root, tok, groups = tiny
    flat_p, flat_r, states, grouped = _group_hidden(root, tok, groups)
    config = R2MConfig(attn_dim=8, epochs=2, batch_groups=4, lr=1e-2)
    r2m = R2M.from_base(root / "rm", policy_dim=24, config=config, total_steps=4)
    base_before = {k: v.clone() for k, v in r2m.base.state_dict().items()}
    attention_before = {k: v.clone() for k, v in r2m.attention.state_dict().items()}
    head_before = r2m.head.weight.clone()
    own = _own_scores(r2m, flat_p, flat_r, states, 4)
    log = r2m.update(groups["prompts"], groups["responses"], own, grouped)
    assert [row["step"] for row in log] == [0, 1, 2, 3] and r2m.step == 4
    assert log[0]["omega"] == 1.0 and log[-1]["omega"] < 1.0
    assert all(p.grad is None and not p.requires_grad for p in r2m.base.parameters())
    trainable = {id(p) for p in r2m.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in (*r2m.attention.parameters(), *r2m.head.parameters())}
    assert all(torch.equal(base_before[k], v) for k, v in r2m.base.state_dict().items())
    assert not torch.equal(head_before, r2m.head.weight)
    assert any(not torch.equal(attention_before[k], v) for k, v in r2m.attention.state_dict().items())


@pytest.mark.parametrize("freezes", ["all", "attention"])
def test_untrained_control_keeps_the_attention_at_its_initial_weights(tiny, freezes):
    """`all` (the paper's w/o train): attention and head keep their initial weights, while t and
    ω(t) advance as R2M's and the loss is logged; `attention` (the variant): the head trains."""
    root, tok, groups = tiny
    flat_p, flat_r, states, grouped = _group_hidden(root, tok, groups)
    r2m = R2M.from_base(root / "rm", policy_dim=24, config=R2MConfig(attn_dim=8, epochs=2, batch_groups=4, lr=1e-2,
                                                                     feedback="untrained", untrained_freezes=freezes),
                        total_steps=4)
    before = {k: v.clone() for k, v in r2m.trainable_state().items()}
    log = r2m.update(groups["prompts"], groups["responses"], _own_scores(r2m, flat_p, flat_r, states, 4), grouped)
    after = r2m.trainable_state()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("attention."))
    assert torch.equal(before["head.weight"], after["head.weight"]) == (freezes == "all")
    assert r2m.step == 4 and [row["step"] for row in log] == [0, 1, 2, 3]
    assert all(np.isfinite(row["loss"]) for row in log)


def test_noise_control_replaces_the_policy_states_by_noise_of_their_scale(tiny):
    root, tok, groups = tiny
    flat_p, flat_r, states, _ = _group_hidden(root, tok, groups)
    from rmroute.rewards.r2m import _pad_states

    h, mask = _pad_states(states)
    noisy = R2M.from_base(root / "rm", policy_dim=24, config=R2MConfig(attn_dim=8, feedback="noise"))
    fed = noisy._feedback(h, mask)
    real = h[mask]
    assert not torch.allclose(fed, h)
    assert torch.allclose(fed[mask].mean(0), real.mean(0), atol=0.35 * float(real.std()))
    assert torch.allclose(fed[mask].std(0), real.std(0), rtol=0.3)
    policy = R2M.from_base(root / "rm", policy_dim=24, config=R2MConfig(attn_dim=8, feedback="policy"))
    assert torch.equal(policy._feedback(h, mask), h)


def test_off_control_is_the_plain_base_rm(tiny):
    root, tok, groups = tiny
    flat_p, flat_r, states, grouped = _group_hidden(root, tok, groups)
    off = R2M.from_base(root / "rm", policy_dim=24, config=R2MConfig(attn_dim=8, feedback="off"))
    base = models.rm_scores(off.base, tok, flat_p, [r + tok.eos_token for r in flat_r])
    assert np.allclose(off.score(flat_p, flat_r, states), base, atol=1e-5)
    assert off.update(groups["prompts"], groups["responses"], _own_scores(off, flat_p, flat_r, states, 4), grouped) == []


def test_state_file_round_trip_and_hidden_state_file(tiny, tmp_path):
    root, tok, groups = tiny
    flat_p, flat_r, states, grouped = _group_hidden(root, tok, groups)
    r2m = R2M.from_base(root / "rm", policy_dim=24, config=R2MConfig(attn_dim=8, epochs=1, batch_groups=4, seed=3),
                        total_steps=6)
    r2m.update(groups["prompts"], groups["responses"], _own_scores(r2m, flat_p, flat_r, states, 4), grouped)
    r2m.save(tmp_path / "r2m.safetensors")
    again = R2M.load(root / "rm", tmp_path / "r2m.safetensors")
    assert again.step == r2m.step == 2 and again.total_steps == 6 and again.config == r2m.config
    assert np.array_equal(again.score(flat_p, flat_r, states), r2m.score(flat_p, flat_r, states))
    save_policy_hidden(states, tmp_path / "hidden.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(load_policy_hidden(tmp_path / "hidden.safetensors"), states))
    # Equal states, equal bytes: one metadata entry (safetensors orders a map of several at random).
    r2m.save(tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "r2m.safetensors").read_bytes()
    # A state written with one string entry per field (before) still loads.
    from safetensors.torch import save_file

    old = {"step": "2", "total_steps": "6", "config": json.dumps(asdict(r2m.config)), "policy_dim": "24", "rm_dim": str(r2m.rm_dim)}
    save_file({k: v.contiguous() for k, v in r2m.trainable_state().items()}, str(tmp_path / "old.safetensors"), metadata=old)
    legacy = R2M.load(root / "rm", tmp_path / "old.safetensors")
    assert legacy.step == 2 and legacy.config == r2m.config
    assert np.array_equal(legacy.score(flat_p, flat_r, states), r2m.score(flat_p, flat_r, states))


def test_bad_r2m_settings_name_the_field():
    with pytest.raises(ValueError, match="r2m.feedback"):
        R2MConfig(feedback="random")
    with pytest.raises(ValueError, match="r2m.omega_floor"):
        R2MConfig(omega_floor=1.5)
    for name in ("omega_schedule", "update_every", "untrained_freezes"):
        with pytest.raises(ValueError, match=f"r2m.{name}"):
            R2MConfig(**{name: "sometimes"})
