"""The router inside the training loop (rmroute.online, rmroute.dpo), on a tiny policy that prefers
" yes" > " no" > " maybe" > " never" and a stub pool of four RMs, each ranking the four answers
in a different order. RM 0 ranks them as the policy does, so the chosen response of its pairs is
always the likelier one and its pairs give the lowest training loss (the NLL term on the chosen
response); the others rank them in reverse. The routers can find RM 0 within the first
iteration only if they learn inside it:

* LinUCB (per batch) and Thompson sampling (per pair) send >= 80% of the second half of the first
  iteration's decisions to RM 0 (a router frozen for the iteration sends about 25%);
* the order: label batch t -> one optimiser step -> feedback of step t's losses -> label t+1,
  with `router_updates` strictly increasing and each reward equal to that step's loss;
* the per-pair losses read from the step's forward pass average to the loss TRL optimised;
* batch orders, replay epochs, reward timings, empty batches and the labeler's API contract.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from datasets import Dataset

from rmroute import models
from rmroute.dpo import RoutedDPOTrainer, prepare_text_pairs, routed_dpo_config
from rmroute.methods import Method, Recipe, build_router
from rmroute.online import RoutedLabeler, training_batches
from rmroute.routers import make_normaliser
from rmroute.sft import train_sft

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ANSWERS = [" yes", " no", " maybe", " never"]
MIX = {" yes": 0.5, " no": 0.3, " maybe": 0.15, " never": 0.05}  # the policy's preference order
# RM 0 ranks the answers as the policy does; the three others rank them the other way round, so
# on every pair (and every top-vs-next choice) their winner is the less likely response.
ORDERS = [ANSWERS] + [ANSWERS[::-1]] * 3
DIM = 4


class RankRM:
    """A stub RM that ranks the answers in a fixed order (first = best)."""

    def __init__(self, rm_id: str, order: list[str]):
        self.rm_id, self.order, self.calls = rm_id, order, 0

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        self.calls += len(responses)
        return [float(len(self.order) - self.order.index(r)) for r in responses]


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """A one-layer policy fine-tuned on answers drawn with MIX, saved like any checkpoint."""
    root = tmp_path_factory.mktemp("online")
    prompts = [f"Q: is item {i} ready?\nA:" for i in range(200)]
    tok = models.train_tokenizer([p + a for p in prompts for a in ANSWERS], 300)
    rng = random.Random(0)
    records = [{"id": str(i), "domain": "d", "prompt": p, "answer": rng.choices(ANSWERS, weights=list(MIX.values()))[0]}
               for i, p in enumerate(prompts)]
    torch.manual_seed(0)
    policy = models.build_policy(tok, 32, 1, 2, 64, 64)
    train_sft(policy, tok, records, steps=60, batch_size=16, lr=3e-3, warmup_steps=0, seed=0, mix={"d": 1.0})
    models.save_atomic(policy.eval(), tok, root / "policy")
    return root / "policy"


def make_groups(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        responses = list(ANSWERS)
        rng.shuffle(responses)
        out.append({"id": f"q{i}", "domain": ["d1", "d2"][i % 2], "prompt": f"Q: is item {i} ready?\nA:",
                    "responses": responses, "gold": [1.0 if r == " yes" else 0.0 for r in responses]})
    return out


def run_loop(policy_dir, method: Method, batches: list[list[dict]], *, epochs: float = 1.0, pool=None, tmp_path=None,
             spy: list | None = None, log_both_timings: bool = False):
    """One routed iteration through RoutedDPOTrainer; returns (trainer, labeler)."""
    tok = models.load_tokenizer(policy_dir)
    policy = models.load_policy(policy_dir, device="cpu").train()
    reference = models.load_policy(policy_dir, device="cpu")
    pool = pool or [RankRM(f"rm{k}", order) for k, order in enumerate(ORDERS)]
    dim = int(policy.config.hidden_size) if method.router == "linucb" else DIM
    router = build_router(method, len(pool), dim, seed=0, prior=np.zeros((len(pool), DIM)))
    unit = np.ones(DIM) / 2.0
    labeler = RoutedLabeler(pool, method, router, make_normaliser(method.recipe.normaliser),
                            prompt_context=lambda prompts: models.prompt_embeddings(policy, tok, prompts, method.context),
                            pair_context=lambda group, cands: np.tile(unit, (len(cands), 1)), seed=0)
    if spy is not None:
        label, feedback = labeler.label, labeler.feedback
        labeler.label = lambda groups, step=0: (spy.append(("label", step, trainer.state.global_step, labeler.updates)),
                                                label(groups, step))[1]
        labeler.feedback = lambda losses, also=None: (spy.append(("feedback", np.asarray(losses), trainer.state.global_step)),
                                                      feedback(losses, also))[1]
    args = routed_dpo_config(str(tmp_path), method.recipe, seed=0, max_length=64)
    trainer = RoutedDPOTrainer(model=policy, ref_model=reference, args=args, processing_class=tok, labeler=labeler,
                               batches=batches, epochs=epochs, reward_timing=method.recipe.reward_timing,
                               log_both_timings=log_both_timings)
    trainer.train()
    return trainer, labeler


def laser(**recipe) -> Method:
    return Method(name="laser", router="linucb", granularity="batch", batch_prompts=4, pairs_per_prompt=2,
                  recipe=Recipe(**{"lr": 1e-5, **recipe}))


def bayesian(**recipe) -> Method:
    # The loop's mechanics under per-pair Thompson routing; dpo_nll so that the chosen response's
    # likelihood, which RM 0 maximises, enters the loss from the first step.
    return Method(name="bayesian", router="thompson", granularity="pair", prior="zero", batch_prompts=4, pairs_per_prompt=2,
                  recipe=Recipe(**{"pair_rule": "random_routed", "reward": "advantage", "lr": 1e-5, **recipe}))


def batches_of(n_groups: int, size: int = 4) -> list[list[dict]]:
    g = make_groups(n_groups)
    return [g[i : i + size] for i in range(0, n_groups, size)]


# ---------------------------------------------------------------- learning inside the iteration


@pytest.mark.parametrize("make, prompts", [(laser, 64), (bayesian, 160)], ids=["linucb-per-batch", "thompson-per-pair"])
def test_routers_learn_the_lowest_loss_rm_within_the_first_iteration(tiny_policy, tmp_path, make, prompts):
    # Thompson sampling keeps exploring in proportion to its posterior spread (λ0 = 1, σ² = 1, the
    # paper's values, against rewards in [0, 1]), so it is given more batches than LinUCB. The
    # per-call quantile rule: LASeR's own returns the first reward raw (about -1 on a [0, 1] scale),
    # which sinks whichever arm LinUCB tried first, the best one included.
    _, labeler = run_loop(tiny_policy, make(normaliser="quantile"), batches_of(prompts), tmp_path=tmp_path)
    decisions = list(dict.fromkeys((r["decision_id"], r["arm"]) for r in labeler.rows))
    second_half = [arm for _, arm in decisions[len(decisions) // 2 :]]
    share = Counter(second_half)[0] / len(second_half)
    assert share >= 0.8, (share, Counter(second_half))


def test_the_stub_pool_gives_rm0_the_lowest_step_loss(tiny_policy, tmp_path):
    """The premise of the test above, measured: single-RM runs, first step's loss per RM."""
    first = {}
    for arm in range(4):
        method = Method(name=f"rm{arm}", router="single", arm=arm, batch_prompts=4, pairs_per_prompt=2, recipe=Recipe())
        trainer, _ = run_loop(tiny_policy, method, batches_of(4), tmp_path=tmp_path / str(arm))
        first[arm] = trainer.step_log[0]["loss"]
    assert min(first, key=first.get) == 0, first


# ---------------------------------------------------------------- the order of the loop


def test_each_batch_is_routed_after_the_feedback_of_the_step_before(tiny_policy, tmp_path):
    spy: list = []
    trainer, labeler = run_loop(tiny_policy, laser(), batches_of(32), tmp_path=tmp_path, spy=spy)
    kinds = [event[0] for event in spy]
    assert kinds == ["label", "feedback"] * 8  # strictly alternating, starting with a label
    for t in range(8):
        _, step, global_step, updates = spy[2 * t]
        assert step == t and global_step == t  # labelled just before optimiser step t
        assert updates == t  # after the updates from steps 0..t-1, and no later one
        _, losses, after = spy[2 * t + 1]
        assert after == t + 1  # fed back once step t's optimiser step is done
        # The reward's losses are the step's own: their mean is the loss TRL optimised at step t.
        assert trainer.step_log[t]["step"] == t
        assert np.nanmean(losses) == pytest.approx(trainer.step_log[t]["loss"], abs=1e-6)
    rows = labeler.rows
    per_step = {r["step"]: r["router_updates"] for r in rows}
    assert list(per_step) == list(range(8))
    assert all(b > a for a, b in zip(list(per_step.values()), list(per_step.values())[1:]))  # strictly increasing
    # LASeR's reward for a per-batch decision is minus that step's training loss.
    for r in rows:
        assert r["bandit_reward_raw"] == pytest.approx(-trainer.step_log[r["step"]]["loss"], abs=1e-6)


@pytest.mark.parametrize("loss", ["dpo_nll", "dpo", "nll"])
def test_per_pair_losses_average_to_the_loss_trl_optimised(tiny_policy, tmp_path, loss):
    trainer, _ = run_loop(tiny_policy, laser(loss=loss, beta=0.5), batches_of(12), tmp_path=tmp_path)
    assert len(trainer.step_log) == 3
    for entry in trainer.step_log:
        assert entry["pairs"] > 0
        assert entry["loss_check"] <= 1e-6, entry


def test_text_pairs_are_prepared_exactly_as_trl_prepares_them(tiny_policy, tmp_path):
    trainer, _ = run_loop(tiny_policy, laser(), batches_of(4), tmp_path=tmp_path)
    tok = trainer.processing_class
    long_prompt = "Q: " + "is it ready " * 40 + "?\nA:"  # alone fills max_length (64): dropped under keep_start
    pairs = [{"prompt": "Q: is item 1 ready?\nA:", "chosen": " yes", "rejected": " no"},
             {"prompt": "Q: is item 2 ready?\nA:", "chosen": " maybe" + tok.eos_token, "rejected": ""},
             {"prompt": long_prompt, "chosen": " yes", "rejected": " no"},
             {"prompt": "Q: is item 3 ready?\nA", "chosen": ": yes", "rejected": "never"}]  # tokens merge across the boundary
    rows = [{**p, "index": i} for i, p in enumerate(pairs)]
    reference = trainer._prepare_dataset(Dataset.from_list(rows), tok, trainer.args, "reference")
    ours, kept = prepare_text_pairs(pairs, tok, tok.eos_token, trainer.args.max_length, trainer.args.truncation_mode)
    assert kept == list(reference["index"]) == [0, 1, 3]
    for mine, theirs in zip(ours, reference):
        assert mine == {k: theirs[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}


def test_after_update_rewards_remeasure_the_pairs_after_the_step(tiny_policy, tmp_path):
    step_spy, after_spy = [], []
    run_loop(tiny_policy, laser(), batches_of(8), tmp_path=tmp_path / "a", spy=step_spy)
    run_loop(tiny_policy, laser(reward_timing="after_update"), batches_of(8), tmp_path=tmp_path / "b", spy=after_spy)
    first_step = next(e for e in step_spy if e[0] == "feedback")[1]
    first_after = next(e for e in after_spy if e[0] == "feedback")[1]
    # The same pairs (identical routing before any feedback), their loss measured after the step
    # that trained on them is lower.
    assert first_step.shape == first_after.shape
    assert np.nanmean(first_after) < np.nanmean(first_step)


def test_both_timings_are_logged_and_only_one_reaches_the_router(tiny_policy, tmp_path):
    trainer, labeler = run_loop(tiny_policy, laser(), batches_of(8), tmp_path=tmp_path, log_both_timings=True)
    for row in labeler.rows:
        assert row["reward_timing"] == "step"
        assert row["bandit_reward_raw"] == pytest.approx(-trainer.step_log[row["step"]]["loss"], abs=1e-6)
        assert row["bandit_reward_raw_after_update"] == pytest.approx(-row["loss_after_update"])
        assert row["loss_after_update"] < row["loss"]  # the step lowered the loss of the pairs it trained on


def test_later_epochs_replay_the_labelled_pairs_without_routing(tiny_policy, tmp_path):
    spy: list = []
    trainer, labeler = run_loop(tiny_policy, laser(), batches_of(16), epochs=2.0, tmp_path=tmp_path, spy=spy)
    assert len(trainer.step_log) == 8  # 4 routed steps + 4 replays
    assert [e[0] for e in spy].count("label") == 4 and [e[0] for e in spy].count("feedback") == 4
    assert [e["routed"] for e in trainer.step_log] == [True] * 4 + [False] * 4
    assert sorted(e["batch"] for e in trainer.step_log[4:]) == [0, 1, 2, 3]
    assert labeler.updates == 4


def test_the_recipe_config_carries_epochs_and_reward_timing_to_the_trainer(tiny_policy, tmp_path):
    """`routed_dpo_config(..., recipe)` alone sets the replay epochs and the reward timing (the usage
    example passes nothing else to the trainer); an argument given to the trainer still wins."""
    recipe = laser(epochs=1.5, reward_timing="after_update").recipe
    tok = models.load_tokenizer(tiny_policy)

    def trainer(name: str, **explicit) -> RoutedDPOTrainer:
        args = routed_dpo_config(str(tmp_path / name), recipe, seed=0, max_length=64)
        assert (args.epochs, args.reward_timing) == (1.5, "after_update")
        return RoutedDPOTrainer(model=models.load_policy(tiny_policy, device="cpu").train(),
                                ref_model=models.load_policy(tiny_policy, device="cpu"), args=args, processing_class=tok,
                                labeler=None, batches=batches_of(16), **explicit)

    from_recipe = trainer("recipe")
    assert len(from_recipe.schedule) == 6 and from_recipe.reward_timing == "after_update"  # 4 routed + 2 replays
    given = trainer("given", epochs=1.0, reward_timing="step")
    assert len(given.schedule) == 4 and given.reward_timing == "step"


def test_a_batch_without_pairs_trains_nothing_and_updates_nothing(tiny_policy, tmp_path):
    same = [{**g, "responses": [" yes"] * 4, "gold": [1.0] * 4} for g in make_groups(4)]  # identical texts: no pair
    before = {k: v.clone() for k, v in models.load_policy(tiny_policy, device="cpu").state_dict().items()}
    trainer, labeler = run_loop(tiny_policy, laser(), [same], tmp_path=tmp_path)
    assert trainer.step_log[0]["pairs"] == 0 and labeler.updates == 0
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------- batch orders and the labeler's contract


def test_batch_orders():
    g = [{"id": f"{d}{i}", "domain": d} for d in ("a", "b", "c") for i in range(6)]
    interleaved = training_batches(g, 2, "interleaved", seed=0)
    assert all(len({g[i]["domain"] for i in batch}) == 1 for batch in interleaved)  # single-domain batches
    rounds = [interleaved[i : i + 3] for i in range(0, 9, 3)]
    assert all({g[b[0]]["domain"] for b in r} == {"a", "b", "c"} for r in rounds)  # every domain once per round
    assert sorted(i for b in interleaved for i in b) == list(range(18))
    assert training_batches(g, 2, "interleaved", seed=0) == interleaved  # seeded
    assert training_batches(g, 4, "blocked", seed=0)[0] == [0, 1, 2, 3]
    mixed = training_batches(g, 6, "mixed", seed=1)
    assert sorted(i for b in mixed for i in b) == list(range(18)) and mixed != training_batches(g, 6, "blocked", seed=1)
    with pytest.raises(ValueError, match="batch_order 'shuffled'"):
        training_batches(g, 2, "shuffled", seed=0)


def test_rewards_from_losses():
    pool = [RankRM(f"rm{k}", order) for k, order in enumerate(ORDERS)]
    per_query = Method(name="q", router="random", granularity="query", batch_prompts=2, recipe=Recipe())
    labeler = RoutedLabeler(pool, per_query, build_router(per_query, 4, 1, 0), make_normaliser("quantile"))
    pairs = labeler.label(make_groups(2), step=0)
    assert len(pairs) == 4  # two pairs per prompt
    labeler.feedback(np.array([1.0, 3.0, 0.5, np.nan]))  # the last pair was not trained on
    assert [r["bandit_reward_raw"] for r in labeler.rows] == [-2.0, -0.5]  # minus the mean loss of each query's pairs
    assert labeler.updates == 1

    advantage = Method(name="a", router="random", granularity="query", batch_prompts=2,
                       recipe=Recipe(reward="advantage"))
    labeler = RoutedLabeler(pool, advantage, build_router(advantage, 4, 1, 0), make_normaliser("quantile"))
    labeler.label(make_groups(2), step=0)
    labeler.feedback(np.array([1.0, 3.0, 0.5, 3.5]))  # batch mean 2.0
    assert [r["bandit_reward_raw"] for r in labeler.rows] == [0.0, 0.0]  # (1, -1) and (1.5, -1.5) averaged

    labeler.label(make_groups(2), step=1)
    labeler.feedback(np.full(4, np.nan))  # nothing trained: no reward, no update
    assert math.isnan(labeler.rows[-1]["bandit_reward_raw"]) and labeler.updates == 1


def test_the_labeler_refuses_to_route_twice_without_feedback():
    pool = [RankRM("rm0", ANSWERS)]
    method = Method(name="r", router="random", batch_prompts=2, recipe=Recipe())
    labeler = RoutedLabeler(pool, method, build_router(method, 1, 1, 0), make_normaliser("quantile"))
    pairs = labeler.label(make_groups(2))
    with pytest.raises(RuntimeError, match="without feedback"):
        labeler.label(make_groups(2))
    with pytest.raises(ValueError, match="one value per labelled pair"):
        labeler.feedback(np.zeros(len(pairs) + 1))
    with pytest.raises(ValueError, match="routes on prompt contexts and needs prompt_context"):
        RoutedLabeler(pool, laser(), build_router(laser(), 1, 4, 0))
    with pytest.raises(ValueError, match="needs a router object"):
        RoutedLabeler(pool, method, None)
