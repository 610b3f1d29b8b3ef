"""Route your own reward models inside TRL's DPO training loop.

Each training batch of your prompts is labelled by ONE of your reward models, which a LinUCB
router (LASeR) picks from its current state; after the optimiser step that trained on the
batch's pairs, their per-pair losses from that step reward the router, before the next batch is
routed. The pieces are rmroute's library objects: `RoutedLabeler` (router + normaliser + RM
pool) and `RoutedDPOTrainer` (TRL's DPOTrainer with the labeler in its loop).

    python examples/route_your_own_rms.py                         # a tiny policy built here, on CPU
    python examples/route_your_own_rms.py --policy path/or/hub-id --rm path/or/hub-id ...

`--policy` takes any causal LM that `from_pretrained` can load (from a local directory, or a hub
id already in your Hugging Face cache: nothing is downloaded); each `--rm` adds a sequence-
classification RM the same way. Without them the example builds a tiny policy and uses two toy
RMs written below, which is what CI runs.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import re
import tempfile
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded

from rmroute import models  # noqa: E402
from rmroute.dpo import RoutedDPOTrainer, routed_dpo_config  # noqa: E402
from rmroute.methods import Method, Recipe, build_router  # noqa: E402
from rmroute.online import RoutedLabeler  # noqa: E402
from rmroute.rewards.pool import RewardModel  # noqa: E402
from rmroute.routers import make_normaliser  # noqa: E402


class ArithmeticChecker:
    """A reward model of your own: anything with an `rm_id` and `score(prompts, responses)`."""

    rm_id = "checker"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = []
        for prompt, response in zip(prompts, responses):
            a, b = map(int, re.findall(r"\d+", prompt)[:2])
            numbers = re.findall(r"-?\d+", response)
            out.append(1.0 if numbers and int(numbers[0]) == a + b else -len(response) / 100)
        return out


class Brevity:
    """A second, weaker opinion: shorter answers are better."""

    rm_id = "brevity"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [-float(len(r)) for r in responses]


def my_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"Q: What is {rng.randint(1, 9)} plus {rng.randint(1, 9)}?\nA:" for _ in range(n)]


def tiny_policy(prompts: list[str]):
    """A tokenizer trained on the prompts and a small Llama built from a config (untrained)."""
    tokenizer = models.train_tokenizer([p + f" {i}" for p in prompts for i in range(19)], 400)
    return models.build_policy(tokenizer, 64, 2, 4, 128, 128), tokenizer


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="causal LM directory or cached hub id (default: a tiny one built here)")
    parser.add_argument("--rm", action="append", default=[], help="a sequence-classification RM to add to the pool")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-prompts", type=int, default=8, help="prompts per training batch (one routing decision)")
    parser.add_argument("--samples", type=int, default=4, help="responses sampled per prompt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    models.set_seed(args.seed)
    prompts = my_prompts(args.prompts, args.seed)
    if args.policy:
        policy, tokenizer = models.load_policy(args.policy, device="auto").train(), models.load_tokenizer(args.policy)
    else:
        policy, tokenizer = tiny_policy(prompts)
    reference = copy.deepcopy(policy).eval()  # the DPO reference: a frozen copy of the starting policy
    pool = [ArithmeticChecker(), Brevity()] + [RewardModel(rm_id=f"rm{i}", source=s) for i, s in enumerate(args.rm)]

    # Samples of the starting policy, grouped per prompt: what each batch's pairs are made from.
    samples = models.generate(policy.eval(), tokenizer, prompts, n=args.samples, temperature=1.0, max_new_tokens=6,
                              seed=args.seed)
    groups = [{"id": f"p{i}", "prompt": p, "responses": r} for i, (p, r) in enumerate(zip(prompts, samples))]
    batches = [groups[i : i + args.batch_prompts] for i in range(0, len(groups), args.batch_prompts)]

    # LASeR: one RM per batch by LinUCB on the current policy's prompt embedding; reward = -loss.
    method = Method(name="laser", router="linucb", batch_prompts=args.batch_prompts, pairs_per_prompt=2,
                    recipe=Recipe(loss="dpo_nll", beta=0.1, lr=1e-4, epochs=1))
    router = build_router(method, n_arms=len(pool), dim=policy.config.hidden_size, seed=args.seed)
    labeler = RoutedLabeler(
        pool, method, router, make_normaliser("quantile"), seed=args.seed,
        prompt_context=lambda texts: models.prompt_embeddings(policy, tokenizer, texts, "last_hidden"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = RoutedDPOTrainer(
            model=policy.train(), ref_model=reference, processing_class=tokenizer, labeler=labeler, batches=batches,
            args=routed_dpo_config(tmp, method.recipe, seed=args.seed, max_length=128, use_cpu=policy.device.type == "cpu"),
        )
        trainer.train()

    picks = [row["rm"] for row in labeler.rows[:: args.batch_prompts]]
    print("RM picked per batch:", " ".join(picks))
    print("picks:", dict(Counter(picks)), "router updates:", labeler.updates)
    print("step losses:", " ".join(f"{entry['loss']:.3f}" for entry in trainer.step_log))
    return {"picks": picks, "updates": labeler.updates, "steps": len(trainer.step_log)}


if __name__ == "__main__":
    main()
