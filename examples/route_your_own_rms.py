"""Route your own reward models inside TRL's DPO training loop, and watch the router learn.

Your prompts come in two kinds, sums ("What is 3 plus 4?") and products ("Multiply 3 by 4."),
and you have two reward models of your own: `adder` checks every answer as a sum, `multiplier`
as a product. Each is right on its own kind of prompt and wrong on the other, so no single RM
labels every batch well. A LinUCB router (LASeR) picks one RM per training batch from the
current policy's embedding of the batch's prompts; after the optimiser step that trained on the
batch's pairs, minus their loss rewards the router, before the next batch is routed. The policy
was first fine-tuned on gold answers, so the pairs of the right RM (the gold answer chosen) train
with a low DPO + NLL loss and the wrong RM's with a high one: the router learns which RM to
trust on which kind of prompt. The pieces are rmroute's library objects: `RoutedLabeler` (router
+ normaliser + RM pool) and `RoutedDPOTrainer` (TRL's DPOTrainer with the labeler in its loop).

    python examples/route_your_own_rms.py                    # a tiny policy built here, on CPU (what CI runs)
    python examples/route_your_own_rms.py --router random    # the same run with a router that does not learn
    python examples/route_your_own_rms.py --policy path/or/hub-id --rm path/or/hub-id ...

`--policy` takes any causal LM that `from_pretrained` can load (a local directory, or a hub id
already in your Hugging Face cache: nothing is downloaded); each `--rm` adds a sequence-
classification RM to the pool the same way.
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
from rmroute.online import RoutedLabeler, training_batches  # noqa: E402
from rmroute.rewards.pool import RewardModel  # noqa: E402
from rmroute.routers import make_normaliser  # noqa: E402
from rmroute.sft import train_sft  # noqa: E402

# The two kinds of prompt (from two sources, each with its own template), their gold rule and
# the RM that is right on them.
KINDS = {
    "plus": ("Q: What is {a} plus {b}?\nA:", lambda a, b: a + b, "adder"),
    "times": ("Multiply {a} by {b}.\nAnswer:", lambda a, b: a * b, "multiplier"),
}


class RuleChecker:
    """A reward model of your own: anything with an `rm_id` and `score(prompts, responses)`.

    It reads the prompt's two numbers and scores an answer by how close it is to `rule(a, b)`,
    whatever the prompt asks: right on its own kind of prompt, wrong on the other."""

    def __init__(self, kind: str):
        _, self.rule, self.rm_id = KINDS[kind]

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = []
        for prompt, response in zip(prompts, responses):
            a, b = map(int, re.findall(r"\d+", prompt)[:2])
            numbers = re.findall(r"\d+", response)
            out.append(-abs(int(numbers[0]) - self.rule(a, b)) if numbers else -100.0)
        return out


def my_tasks(n_per_kind: int, seed: int) -> list[dict]:
    """`n_per_kind` prompts of each kind, as prompt groups: `domain` (the kind), the gold `answer`
    and 4 candidate `responses`: the gold answer, the other kind's answer and two near misses. In
    your own loop the responses are your policy's samples (`models.generate`); fixed candidates
    make sure every prompt holds both the right answer and the one the wrong RM prefers."""
    rng = random.Random(seed)
    tasks = []
    for kind, (template, rule, _) in KINDS.items():
        other = next(r for k, (_, r, _) in KINDS.items() if k != kind)
        for _ in range(n_per_kind):
            a, b = rng.choice([(a, b) for a in range(2, 7) for b in range(2, 7) if a + b != a * b])
            gold, wrong = rule(a, b), other(a, b)
            near = rng.sample([x for x in range(gold - 3, gold + 4) if x not in (gold, wrong) and x > 0], 2)
            responses = [f" {x}" for x in (gold, wrong, *near)]
            rng.shuffle(responses)
            tasks.append({"id": f"{kind}{len(tasks)}", "domain": kind, "prompt": template.format(a=a, b=b),
                          "answer": f" {gold}", "responses": responses})
    return tasks


def tiny_policy(tasks: list[dict]):
    """A tokenizer trained on the tasks and a small Llama built from a config (untrained)."""
    tokenizer = models.train_tokenizer([t["prompt"] + f" {i}" for t in tasks for i in range(40)], 300)
    return models.build_policy(tokenizer, 64, 2, 4, 128, 64), tokenizer


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="causal LM directory or cached hub id (default: a tiny one built here)")
    parser.add_argument("--rm", action="append", default=[], help="a sequence-classification RM to add to the pool")
    parser.add_argument("--prompts", type=int, default=192, help="prompts of each kind")
    parser.add_argument("--batch-prompts", type=int, default=8, help="prompts per training batch (one routing decision)")
    parser.add_argument("--sft-steps", type=int, default=200, help="steps of the policy's warm start on gold answers")
    parser.add_argument("--router", default="linucb", choices=["linucb", "random"])
    parser.add_argument("--normaliser", default="quantile", choices=["quantile", "quantile-laser"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    models.set_seed(args.seed)
    tasks = my_tasks(args.prompts, args.seed)
    if args.policy:
        policy, tokenizer = models.load_policy(args.policy, device="auto").train(), models.load_tokenizer(args.policy)
    else:
        policy, tokenizer = tiny_policy(tasks)
    use_cpu = policy.device.type == "cpu"
    # A policy that already knows the answers (LASeR starts from an instruction-tuned model): this
    # is what makes the training loss a verdict on the RM's labels.
    train_sft(policy, tokenizer, tasks, steps=args.sft_steps, batch_size=32, lr=3e-3, warmup_steps=10, seed=args.seed,
              mix={kind: 1.0 for kind in KINDS}, use_cpu=use_cpu, max_length=64)
    reference = copy.deepcopy(policy).eval()  # the DPO reference: a frozen copy of the starting policy
    pool = [RuleChecker("plus"), RuleChecker("times")] + [RewardModel(rm_id=f"rm{i}", source=s) for i, s in enumerate(args.rm)]

    # Single-kind batches, taken round-robin over the kinds (rmroute's `interleaved` batch order).
    batches = [[tasks[i] for i in batch] for batch in training_batches(tasks, args.batch_prompts, "interleaved", args.seed)]

    # LASeR: one RM per batch by LinUCB on the current policy's prompt embedding; reward = -loss.
    method = Method(name="laser", router=args.router, batch_prompts=args.batch_prompts, pairs_per_prompt=2,
                    recipe=Recipe(loss="dpo_nll", beta=0.1, lr=1e-4, epochs=1))
    router = build_router(method, n_arms=len(pool), dim=policy.config.hidden_size, seed=args.seed)
    # The normaliser rescales each -loss to [0, 1] by the q20/q80 quantiles of all rewards so far.
    # `quantile` maps the very first reward to 0.5. LASeR's released rule (`quantile-laser`)
    # returns it raw: here about -5 when the first pick is wrong, which sinks that RM below every
    # later reward of the other (all in [0, 1]), on both kinds of prompt, as the prompts' contexts
    # overlap, so the router would never try it again (see it with --normaliser quantile-laser).
    labeler = RoutedLabeler(
        pool, method, router, make_normaliser(args.normaliser), seed=args.seed,
        prompt_context=lambda texts: models.prompt_embeddings(policy, tokenizer, texts, "last_hidden"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = RoutedDPOTrainer(
            model=policy.train(), ref_model=reference, processing_class=tokenizer, labeler=labeler, batches=batches,
            args=routed_dpo_config(tmp, method.recipe, seed=args.seed, max_length=64, use_cpu=use_cpu),
        )
        trainer.train()

    # The decision log has one row per prompt; a batch's rows share its step, kind and RM.
    decisions = list({row["step"]: (row["domain"], row["rm"]) for row in labeler.rows}.values())
    picks = [rm for _, rm in decisions]
    print("RM picked per batch:", " ".join(picks))
    print("picks:", dict(Counter(picks)), "router updates:", labeler.updates)
    print("step losses:", " ".join(f"{entry['loss']:.3f}" for entry in trainer.step_log))
    # Did the router learn? Per kind, how often it picked the right RM early and late in the run.
    half, shares = len(decisions) // 2, {}
    for kind, (_, _, right) in KINDS.items():
        first, second = ([rm == right for k, rm in part if k == kind] for part in (decisions[:half], decisions[half:]))
        shares[kind] = (sum(first) / len(first), sum(second) / len(second))
        print(f"right RM ({right}) on {kind}: first half {sum(first)}/{len(first)} = {shares[kind][0]:.0%}, "
              f"second half {sum(second)}/{len(second)} = {shares[kind][1]:.0%}")
    return {"picks": picks, "updates": labeler.updates, "steps": len(trainer.step_log), "shares": shares}


if __name__ == "__main__":
    main()
