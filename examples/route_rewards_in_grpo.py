"""Route your own reward models inside TRL's GRPOTrainer: one RM per prompt group, learned online.

Your prompts come in two kinds, sums ("What is 3 plus 4?") and products ("Multiply 3 by 4."),
and you have two reward models of your own (those of examples/route_your_own_rms.py): `adder` scores every answer as a sum, `multiplier`
as a product. Each is right on its own kind of prompt and wrong on the other. TRL would score every
completion with both and add the rewards; here `RoutedReward`, one entry of `reward_funcs`,
lets a LinUCB router (LASeR's) pick one RM per training batch from the current policy's
embedding of the batch's prompts, and only that RM scores the batch's completions. After the
optimiser step that trained on them, `reward.callback` gives the router its bandit reward
(`prior_rank`: does the RM rank the completions as the fine-tuned policy already finds likely?)
before the next batch is generated.

    python examples/route_rewards_in_grpo.py                     # a tiny policy built here, on CPU (what CI runs)
    python examples/route_rewards_in_grpo.py --router random     # the same run with a router that does not learn
    python examples/route_rewards_in_grpo.py --trainer rloo      # TRL's RLOOTrainer instead
    python examples/route_rewards_in_grpo.py --policy path/or/hub-id --rm path/or/hub-id ...
    python examples/route_rewards_in_grpo.py --policy path --vllm   # GPU: TRL's vLLM generation (colocated), as benchmarks/gpu_check.sh runs it

`--policy` takes any causal LM that `from_pretrained` can load (a local directory, or a hub id
already in your Hugging Face cache: nothing is downloaded); each `--rm` adds a sequence-
classification RM to the pool the same way.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded

from datasets import Dataset  # noqa: E402

from rmroute import models  # noqa: E402
from rmroute.methods import Method, build_router  # noqa: E402
from rmroute.online import training_batches  # noqa: E402
from rmroute.rewards.pool import RewardModel  # noqa: E402
from rmroute.rl import SIGNALS, RoutedReward  # noqa: E402
from rmroute.routers import make_normaliser  # noqa: E402
from rmroute.sft import train_sft  # noqa: E402
# The two kinds of prompt and the two rule RMs of the DPO example, each right on one kind.
from route_your_own_rms import KINDS, RuleChecker  # noqa: E402  (examples/, beside this file)


def my_prompts(n_per_kind: int, seed: int) -> list[dict]:
    """`n_per_kind` prompts of each kind with their gold `answer` (for the warm start only)."""
    rng = random.Random(seed)
    rows = []
    for kind, (template, rule, _) in KINDS.items():
        for _ in range(n_per_kind):
            a, b = rng.choice([(a, b) for a in range(2, 7) for b in range(2, 7) if a + b != a * b])
            rows.append({"id": f"{kind}{len(rows)}", "domain": kind, "prompt": template.format(a=a, b=b), "answer": f" {rule(a, b)}"})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="causal LM directory or cached hub id (default: a tiny one built here)")
    parser.add_argument("--rm", action="append", default=[], help="a sequence-classification RM to add to the pool")
    parser.add_argument("--trainer", default="grpo", choices=["grpo", "rloo"])
    parser.add_argument("--router", default="linucb", choices=["linucb", "random"])
    parser.add_argument("--signal", default="prior_rank", choices=SIGNALS)
    parser.add_argument("--prompts", type=int, default=96, help="prompts of each kind")
    parser.add_argument("--batch-prompts", type=int, default=4, help="prompts per optimiser step (one routing decision)")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt (num_generations)")
    parser.add_argument("--sft-steps", type=int, default=150, help="steps of the policy's warm start on gold answers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vllm", action="store_true",
                        help="generate with vLLM inside the trainer (TRL's colocate mode; needs a GPU, vLLM and --policy)")
    args = parser.parse_args(argv)
    if args.vllm and not args.policy:
        parser.error("--vllm loads the policy into vLLM from --policy: give a saved policy directory")

    models.set_seed(args.seed)
    rows = my_prompts(args.prompts, args.seed)
    if args.policy:
        policy, tokenizer = models.load_policy(args.policy, device="auto").train(), models.load_tokenizer(args.policy)
    else:  # a tokenizer trained on the prompts and a small Llama built from a config
        tokenizer = models.train_tokenizer([r["prompt"] + f" {i}" for r in rows for i in range(40)], 300)
        policy = models.build_policy(tokenizer, 64, 2, 4, 128, 64)
    use_cpu = policy.device.type == "cpu"
    # A policy that already knows most answers (LASeR starts from an instruction-tuned model).
    train_sft(policy, tokenizer, rows, steps=args.sft_steps, batch_size=32, lr=3e-3, warmup_steps=10, seed=args.seed,
              mix={kind: 1.0 for kind in KINDS}, use_cpu=use_cpu, max_length=64)
    pool = [RuleChecker("plus"), RuleChecker("times")] + [RewardModel(rm_id=f"rm{i}", source=s) for i, s in enumerate(args.rm)]

    # Single-kind batches taken round-robin over the kinds; the trainer keeps this order.
    order = [rows[i] for batch in training_batches(rows, args.batch_prompts, "interleaved", args.seed) for i in batch]
    dataset = Dataset.from_dict({"prompt": [r["prompt"] for r in order], "domain": [r["domain"] for r in order]})

    # LASeR's router, one decision per batch, inside the online trainer.
    method = Method(name=f"laser-{args.trainer}", router=args.router, granularity="batch", batch_prompts=args.batch_prompts)
    router = build_router(method, n_arms=len(pool), dim=policy.config.hidden_size, seed=args.seed)
    reward = RoutedReward(pool, method, router, make_normaliser("quantile"), signal=args.signal, seed=args.seed,
                          prompt_context=lambda texts: models.prompt_embeddings(policy, tokenizer, texts, "last_hidden"))
    if args.trainer == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(output_dir=tmp, per_device_train_batch_size=args.batch_prompts * args.generations,
                        num_generations=args.generations, max_completion_length=6, temperature=1.0, learning_rate=1e-4,
                        beta=0.0, max_steps=len(order) // args.batch_prompts, shuffle_dataset=False, seed=args.seed,
                        use_cpu=use_cpu, report_to=[], save_strategy="no", disable_tqdm=True, logging_steps=10,
                        **({"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3} if args.vllm else {}))
        trainer = Trainer(model=policy, reward_funcs=[reward], args=config, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[reward.callback])
        trainer.train()

    # The decision log has one row per prompt group; a batch's rows share its step, kind and RM.
    decisions = list({row["step"]: (row["domain"], row["rm"]) for row in reward.rows}.values())
    picks = [rm for _, rm in decisions]
    calls = sum(row["rm_calls"] for row in reward.rows)
    print("RM picked per batch:", " ".join(picks))
    print("picks:", dict(Counter(picks)), "router updates:", reward.updates,
          f"RM calls: {calls} (scoring every completion with every RM: {len(pool) * len(order) * args.generations})")
    half, shares = len(decisions) // 2, {}
    for kind, (_, _, right) in KINDS.items():
        first, second = ([rm == right for k, rm in part if k == kind] for part in (decisions[:half], decisions[half:]))
        shares[kind] = (sum(first) / len(first), sum(second) / len(second))
        print(f"right RM ({right}) on {kind}: first half {sum(first)}/{len(first)} = {shares[kind][0]:.0%}, "
              f"second half {sum(second)}/{len(second)} = {shares[kind][1]:.0%}")
    return {"picks": picks, "updates": reward.updates, "steps": trainer.state.global_step, "shares": shares, "calls": calls}


if __name__ == "__main__":
    main()
