"""Models on tiny local artefacts: the same loading code as the paper scale (save_pretrained
directories through from_pretrained, safetensors only), sampling determinism and BSR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rmroute import models
from rmroute.rewards.losses import bsr_penalty
from rmroute.rewards.pool import (
    RewardModel,
    parse_mix,
    preference_pairs,
    rm_training_pairs,
)
from tiny_artefacts import tiny_splits, tiny_tokenizer, tiny_classifier

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tokenizer, a policy and an RM saved with save_pretrained, as any local checkpoint would be."""
    root = tmp_path_factory.mktemp("tiny")
    splits = tiny_splits()
    tok = tiny_tokenizer(splits)
    torch.manual_seed(0)
    policy = models.build_policy(tok, 32, 1, 2, 64, 128)
    models.save_atomic(policy, tok, root / "policy")
    rm = tiny_classifier(tok)
    models.save_atomic(rm, tok, root / "rm")
    return root, splits


def test_checkpoints_are_safetensors_and_reload(tiny):
    root, _ = tiny
    assert (root / "policy" / "model.safetensors").exists()
    assert not list(root.rglob("*.bin"))
    policy = models.load_policy(root / "policy", device="cpu")
    assert policy.config.hidden_size == 32
    assert models.load_tokenizer(root / "policy").padding_side == "left"


def test_a_local_rm_path_goes_through_the_pool_loader(tiny):
    root, splits = tiny
    rm = RewardModel("local", str(root / "rm"), device="cpu")
    prompts = [r["prompt"] for r in splits["test"]]
    scores = rm.score(prompts, [r["answer"] for r in splits["test"]])
    assert len(scores) == len(prompts) and all(math.isfinite(s) for s in scores)
    assert rm.calls == len(prompts)
    # Left padding must not change a row's score: score one row alone and inside the batch.
    alone = rm.score(prompts[:1], [splits["test"][0]["answer"]])
    assert alone[0] == pytest.approx(scores[0], abs=1e-5)


def test_a_generative_rm_scores_the_mean_log_prob_of_the_response(tiny):
    """`loss: lm` rows load a causal LM from a local path; the reward is the mean token log-prob
    of response + EOS given the prompt, computed here by hand from the logits."""
    root, splits = tiny
    rm = RewardModel("judge", str(root / "policy"), loss="lm", device="cpu")
    rec = splits["test"][0]
    got = rm.score([rec["prompt"], rec["prompt"]], [rec["answer"], rec["answer"] + "</s>"])
    assert rm.calls == 2 and got[0] == pytest.approx(got[1], abs=1e-6)  # a trailing EOS is not counted twice

    lm = models.load_policy(root / "policy", device="cpu")
    tok = models.load_tokenizer(root / "policy")
    p_ids = tok(rec["prompt"], add_special_tokens=False)["input_ids"]
    full = tok(rec["prompt"] + rec["answer"] + tok.eos_token, add_special_tokens=False)["input_ids"]
    assert full[: len(p_ids)] == p_ids
    with torch.no_grad():
        logp = torch.log_softmax(lm(torch.tensor([full])).logits[0, :-1].float(), -1)
    token_logps = [logp[i - 1, full[i]].item() for i in range(len(p_ids), len(full))]
    assert got[0] == pytest.approx(sum(token_logps) / len(token_logps), abs=1e-4)


@pytest.mark.parametrize("drop", [0, 3, 200])
def test_a_generative_rm_truncates_to_its_max_length(tiny, drop):
    """The sheet's max_length: prompt tokens go first (from the left, one kept), then the
    response's end; the reward is the mean log-prob of the response tokens kept, by hand."""
    root, splits = tiny
    rec = next(r for r in splits["test"] if r["domain"] == "instruct")
    tok = models.load_tokenizer(root / "policy")
    lm = models.load_policy(root / "policy", device="cpu")
    p_ids = tok(rec["prompt"], add_special_tokens=False)["input_ids"]
    full = tok(rec["prompt"] + rec["answer"] + tok.eos_token, add_special_tokens=False)["input_ids"]
    n_resp = len(full) - len(p_ids)
    if drop == 200:  # shorter than the response: one prompt token and the response's start remain
        max_length, kept, n_prompt = n_resp - 1, full[len(p_ids) - 1 :][: n_resp - 1], 1
    else:
        max_length, kept, n_prompt = len(full) - drop, full[drop:], len(p_ids) - drop
    rm = RewardModel("judge", str(root / "policy"), loss="lm", device="cpu", max_length=max_length)
    got = rm.score([rec["prompt"]], [rec["answer"]])[0]
    with torch.no_grad():
        logp = torch.log_softmax(lm(torch.tensor([kept])).logits[0, :-1].float(), -1)
    token_logps = [logp[i - 1, kept[i]].item() for i in range(n_prompt, len(kept))]
    assert got == pytest.approx(sum(token_logps) / len(token_logps), abs=1e-4)
    if drop:  # truncation changed what was scored
        untruncated = RewardModel("judge", str(root / "policy"), loss="lm", device="cpu").score([rec["prompt"]], [rec["answer"]])[0]
        assert got != pytest.approx(untruncated, abs=1e-6)


def test_a_trained_generative_rm_prefers_what_it_was_fine_tuned_on(tiny):
    from rmroute.rewards.pool import train_generative_rm

    root, splits = tiny
    tok = models.load_tokenizer(root / "policy")
    pairs = [{"prompt": r["prompt"], "chosen": r["answer"], "rejected": " zz"} for r in splits["sft"][:16]]
    models.set_seed(0)
    model = train_generative_rm(str(root / "policy"), tok, pairs, steps=30, batch_size=8, lr=0.01, seed=0)
    models.save_atomic(model, tok, root / "judge")
    rm = RewardModel("judge", str(root / "judge"), loss="lm", device="cpu")
    prompts = [p["prompt"] for p in pairs]
    chosen = rm.score(prompts, [p["chosen"] for p in pairs])
    rejected = rm.score(prompts, [p["rejected"] for p in pairs])
    assert np.mean(np.array(chosen) > np.array(rejected)) >= 0.9


def test_sampling_is_deterministic_for_a_seed(tiny):
    root, splits = tiny
    policy = models.load_policy(root / "policy", device="cpu")
    tok = models.load_tokenizer(root / "policy")
    prompts = [r["prompt"] for r in splits["rollout"][:6]]
    a = models.generate(policy, tok, prompts, n=3, temperature=1.0, max_new_tokens=6, seed=5)
    b = models.generate(policy, tok, prompts, n=3, temperature=1.0, max_new_tokens=6, seed=5)
    c = models.generate(policy, tok, prompts, n=3, temperature=1.0, max_new_tokens=6, seed=6)
    assert a == b and a != c
    assert all(len(group) == 3 for group in a)


def test_prompt_embeddings_have_the_policy_width(tiny):
    root, splits = tiny
    policy = models.load_policy(root / "policy", device="cpu")
    tok = models.load_tokenizer(root / "policy")
    prompts = [r["prompt"] for r in splits["rollout"][:5]]
    for kind in ("last_hidden", "mean_input_embedding"):
        assert models.prompt_embeddings(policy, tok, prompts, kind).shape == (5, 32)
    with pytest.raises(ValueError, match="context kind"):
        models.prompt_embeddings(policy, tok, prompts, "cls")


def test_bsr_penalty_is_the_squared_batch_mean():
    chosen, rejected = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])
    assert bsr_penalty(chosen, rejected, 1e-3).item() == pytest.approx(1e-3 * 1.0**2)
    assert bsr_penalty(chosen, rejected, 1e-3, batch_scale=2).item() == pytest.approx(2e-3)
    # Not TRL's centring term, which would be mean((r_w + r_l)^2) = (1 + 9) / 2.
    assert bsr_penalty(chosen, rejected, 1.0).item() != pytest.approx(5.0)


def test_new_layers_start_as_the_identity_and_freeze_init_trains_only_them(tiny):
    """Block expansion: the expanded RM scores exactly as the checkpoint before training; with
    freeze_init only the new layers, the final norm and the head move."""
    from rmroute.rewards.pool import train_reward_model

    root, splits = tiny
    tok = models.load_tokenizer(root / "rm")
    prompts = [r["prompt"] for r in splits["test"]]
    responses = [r["answer"] + tok.eos_token for r in splits["test"]]
    plain = models.load_reward_model(root / "rm", device="cpu")
    expanded = models.load_reward_model(root / "rm", device="cpu", new_layers=2)
    assert len(expanded.model.layers) == len(plain.model.layers) + 2
    assert np.allclose(models.rm_scores(expanded, tok, prompts, responses), models.rm_scores(plain, tok, prompts, responses),
                       atol=1e-5)
    pairs = [{"prompt": r["prompt"], "chosen": r["answer"], "rejected": " 0"} for r in splits["rm_train"][:8]]
    trained = train_reward_model(str(root / "rm"), tok, pairs, loss="bt", steps=3, batch_size=4, lr=1e-2, seed=0,
                                 new_layers=1, freeze_init=True)
    assert torch.equal(trained.model.embed_tokens.weight, plain.model.embed_tokens.weight)
    assert all(torch.equal(a, b) for a, b in zip(trained.model.layers[0].parameters(), plain.model.layers[0].parameters()))
    assert not torch.equal(trained.model.layers[1].mlp.down_proj.weight, torch.zeros_like(trained.model.layers[1].mlp.down_proj.weight))
    assert not torch.equal(trained.score.weight, plain.score.weight)


def test_rm_training_pairs_follow_the_mix_and_noise(tiny):
    _, splits = tiny
    records = splits["rm_train"]
    pairs = preference_pairs(records, [[" 1", " 2"] for _ in records], seed=0)
    assert all(p["chosen_gold"] >= p["rejected_gold"] for p in pairs)
    mix = parse_mix("arith:0.5,instruct:0.5")
    drawn = rm_training_pairs(pairs, mix, 20, 0.0, 0)
    domains = {p["domain"] for p in pairs}
    assert len(drawn) == 20 and domains >= {"arith", "instruct"}
    flipped = rm_training_pairs(pairs, mix, 20, 0.5, 0)
    assert flipped != drawn


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_scoring_and_generation_on_gpu(tiny):
    root, splits = tiny
    policy = models.load_policy(root / "policy", dtype="bfloat16", device="cuda")
    tok = models.load_tokenizer(root / "policy")
    prompts = [r["prompt"] for r in splits["rollout"][:8]]
    out = models.generate(policy, tok, prompts, n=2, temperature=1.0, max_new_tokens=4, seed=0)
    assert len(out) == 8
    rm = RewardModel("gpu", str(root / "rm"), dtype="bfloat16", device="cuda")
    assert all(math.isfinite(s) for s in rm.score(prompts, [" 1"] * 8))
