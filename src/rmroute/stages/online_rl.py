"""One iteration of online RL (TRL's GRPO or RLOO) with routed rewards: the `train_iteration` of a
method whose recipe has `trainer: grpo | rloo`.

Online trainers sample inside the trainer, so such an iteration reads the iteration's prompts (the
same `iteration_prompts` the DPO methods' rollouts are drawn from) instead of a rollout file, and
cuts them into the same training batches (`training_batches`, `batch_order`): one optimiser step
per batch of `batch_prompts` prompts, `samples_per_prompt` completions each (`num_generations`),
`max_new_tokens` long at `temperature`. The budget is the DPO methods' budget. The policy, the
router state and the decision log are the iteration's file outputs, as for DPO.
"""

from __future__ import annotations

import tempfile

import pandas as pd

from rmroute import models
from rmroute.io import read_jsonl, save_router_state, write_jsonl, write_table
from rmroute.seeding import derive_seed, text_seed
from rmroute.stages.policy import iteration_prompts, of_domains
from rmroute.stages.rewards import load_pool

TRL_AGGREGATION = "normalize_then_sum"  # the ensemble combine that runs as TRL's own multi-reward aggregation


def rl_config(out_dir: str, recipe, budget: dict, *, n_steps: int, seed: int, use_cpu: bool, aggregation: str | None = None,
              reward_weights: list[float] | None = None):
    """TRL's GRPOConfig or RLOOConfig for one iteration: one generation batch (`batch_prompts` x
    `samples_per_prompt` completions) per optimiser step, prompts in the given order."""
    from trl import GRPOConfig, RLOOConfig

    common = dict(output_dir=out_dir, per_device_train_batch_size=budget["batch_prompts"] * budget["samples_per_prompt"],
                  num_generations=budget["samples_per_prompt"], max_completion_length=budget["max_new_tokens"],
                  temperature=budget["temperature"], learning_rate=recipe.lr, lr_scheduler_type="constant", warmup_steps=0,
                  beta=recipe.kl_beta, max_steps=n_steps, seed=seed, data_seed=seed, use_cpu=use_cpu, report_to=[],
                  save_strategy="no", logging_steps=1, disable_tqdm=True, shuffle_dataset=False,
                  gradient_accumulation_steps=1, steps_per_generation=1, reward_weights=reward_weights)
    if recipe.trainer == "grpo":
        extra = {"loss_type": recipe.loss_type}
        if aggregation:
            extra["multi_objective_aggregation"] = aggregation
        return GRPOConfig(**common, **extra)
    if recipe.trainer == "rloo":
        return RLOOConfig(**common)
    raise ValueError(f"recipe trainer {recipe.trainer!r}: expected grpo or rloo")


def rl_iteration(*, policy_dir: str, prompts_path: str, method: dict, pool_rows: list[dict], previous_state: str | None,
                 budget: dict, batch_order: str, seed: int, it: int, threads: int, device: str, out_policy: str,
                 out_state: str, out_decisions: str, out_samples: str, log_all_signals: bool = True,
                 r2m: dict | None = None, previous_r2m: str | None = None, out_r2m: str | None = None) -> None:
    """Train the policy with GRPO or RLOO on iteration `it`'s prompts, each prompt group's rewards
    from the RM the method's router picks (`rmroute.rl.RoutedReward`), or from every RM for the
    ensembles; `ensemble` with combine `normalize_then_sum` is TRL's own multi-reward aggregation
    (one `RMReward` per RM). Writes the policy, the router state (continuing from
    `previous_state`), the decision log and the samples (`out_samples`: one row per prompt group,
    with the optimiser step, the completions and their gold scores, analysis only).

    R2M rows of the pool (settings `r2m`, continuing from `previous_r2m`) score each batch with the
    hidden states of the policy that sampled it and train after every policy optimiser step on
    that step's groups they scored, with the hidden states of the policy the step produced, as
    R2M's paper runs it in RLOO; their states and training logs go to `out_r2m`. Their ω(t)
    schedule runs over all iterations' R2M steps (`r2m["iterations"]`)."""
    from datasets import Dataset

    from rmroute.methods import Method, build_router
    from rmroute.online import training_batches
    from rmroute.rewards.r2m import R2MRewardModel, r2m_steps_per_iteration
    from rmroute.rl import RMReward, RoutedReward
    from rmroute.routers import make_normaliser
    from rmroute.testbed import score_record

    method = Method.from_dict(method)
    recipe = method.recipe
    run_seed = derive_seed(seed, it, scheme="iteration")
    models.set_threads(threads)
    models.set_seed(run_seed)
    records = of_domains(iteration_prompts(read_jsonl(prompts_path), budget["prompts_per_iteration"], seed, it), method.domains)
    if not records:
        raise ValueError(f"methods.{method.name}.domains: no prompt of {list(method.domains)} in {prompts_path}")
    batches = training_batches(records, budget["batch_prompts"], batch_order, text_seed(seed, it))
    ordered = [records[i] for batch in batches for i in batch]
    by_id = {r["id"]: r for r in ordered}
    policy, tokenizer = models.load_policy(policy_dir, device=device).train(), models.load_tokenizer(policy_dir)
    r2m_steps = (r2m or {}).get("iterations", 1) * r2m_steps_per_iteration(r2m or {}, [len(b) for b in batches])
    pool = load_pool([r for r in pool_rows if r["rm_id"] in method.active_rms(it)], device, r2m=r2m,
                     r2m_states=previous_r2m, r2m_total_steps=r2m_steps, seed=run_seed)
    for rm in pool:
        if isinstance(rm, R2MRewardModel):
            rm.begin_iteration(policy, tokenizer, [])  # hidden states come batch by batch (observe)

    def gold(prompts, completions, id, **columns):  # noqa: A002  (the dataset's column name)
        return [score_record(by_id[i], c) for i, c in zip(id, completions)]

    trl_ensemble = method.router == "ensemble" and method.combine == TRL_AGGREGATION
    if trl_ensemble:
        funcs, reward = [RMReward(rm) for rm in pool], None
    else:
        dim = int(policy.config.hidden_size) if method.router_class.context == "prompt" else 1
        router = None if method.router_class.scores_every_rm else build_router(method, len(pool), dim, seed)
        reward = RoutedReward(
            pool, method, router, make_normaliser(recipe.normaliser, recipe.normaliser_scope,
                                                  **({"n_arms": len(pool)} if recipe.normaliser == "ema-z" else {})),
            signal=recipe.signal, log_all_signals=log_all_signals, gold=gold, seed=run_seed,
            prompt_context=lambda texts: models.prompt_embeddings(policy, tokenizer, texts, method.context))
        if previous_state:
            from rmroute.io import load_router_state

            reward.load_state_dict(load_router_state(previous_state))
        funcs = [reward]
    dataset = Dataset.from_dict({"prompt": [r["prompt"] for r in ordered], "id": [r["id"] for r in ordered],
                                 "domain": [r["domain"] for r in ordered]})
    samples = _SampleLog(gold)
    with tempfile.TemporaryDirectory() as tmp:
        from trl import GRPOTrainer, RLOOTrainer

        args = rl_config(tmp, recipe, budget, n_steps=len(batches), seed=run_seed, use_cpu=device == "cpu",
                         aggregation=TRL_AGGREGATION if trl_ensemble else None, reward_weights=[1.0] * len(funcs) + [0.0])
        Trainer = GRPOTrainer if recipe.trainer == "grpo" else RLOOTrainer
        trainer = Trainer(model=policy, reward_funcs=funcs + [samples], args=args,
                          train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[reward.callback] if reward is not None else None)
        trainer.train()
    models.save_atomic(policy.eval(), tokenizer, out_policy)
    if out_r2m:
        from rmroute.io import atomic_dir

        with atomic_dir(out_r2m) as tmp:
            for rm in pool:
                if isinstance(rm, R2MRewardModel):
                    rm.end_iteration(policy, tokenizer, samples.groups, trainer.state.global_step - 1)  # update_every: iteration
                    rm.save(tmp / f"{rm.rm_id}.safetensors")
                    log = pd.DataFrame(rm.log, columns=["policy_step", "groups", "step", "omega", "loss", "bt", "gre"])
                    log.insert(0, "rm", rm.rm_id)
                    write_table(log, tmp / f"{rm.rm_id}.log.tsv")
    save_router_state(reward.state_dict() if reward is not None else {"router": {}, "normaliser": {}, "updates": 0}, out_state)
    rows = reward.rows if reward is not None else samples.ensemble_rows(method, funcs)
    frame = pd.DataFrame(rows)
    frame.insert(0, "iteration", it)
    frame.insert(0, "seed", seed)
    frame.insert(0, "method", method.name)
    write_table(frame, out_decisions)
    write_jsonl(samples.groups, out_samples)


class _SampleLog:
    """A reward function of weight 0 (it changes no advantage) that records each step's prompt
    groups, completions and gold scores for the analysis tables, and the ensembles' decision rows."""

    __name__ = "sample_log"

    def __init__(self, gold):
        self.gold, self.groups, self.steps = gold, [], 0

    def __call__(self, prompts, completions, completion_ids=None, trainer_state=None, id=None, domain=None, **columns):  # noqa: A002
        step = int(trainer_state.global_step) if trainer_state is not None else self.steps
        self.steps += 1
        gold = self.gold(prompts, completions, id=id)
        start = 0
        while start < len(prompts):
            end = start
            while end < len(prompts) and id[end] == id[start]:
                end += 1
            self.groups.append({"step": step, "prompt_id": id[start], "domain": domain[start], "prompt": prompts[start],
                                "responses": list(completions[start:end]), "gold": [float(g) for g in gold[start:end]]})
            start = end
        return [0.0] * len(prompts)

    def ensemble_rows(self, method, funcs) -> list[dict]:
        """Decision rows of TRL's own aggregation: every RM scored every completion of each group
        (the step's RM calls on its first row); TRL aggregates the scores inside the trainer, so
        the rows log no score or gold agreement, only the group's gold-rankable pairs."""
        from collections import Counter

        from rmroute.gold import ranking_counts

        completions = Counter()
        for group in self.groups:
            completions[group["step"]] += len(group["responses"])
        rows = []
        for n, group in enumerate(self.groups):
            first = n == 0 or self.groups[n - 1]["step"] != group["step"]
            total = ranking_counts(group["gold"], group["gold"])[1]  # the pairs gold tells apart
            rows.append({"decision_id": f"s{group['step']}:{group['prompt_id']}", "step": group["step"], "router_updates": 0,
                         "rm": f"ensemble:{method.combine}", "arm": -1, "reward_signal": "none", "score_gap": float("nan"),
                         "route_seconds": float("nan"), "rm_calls": len(funcs) * completions[group["step"]] if first else 0,
                         "bandit_reward_raw": float("nan"), "bandit_reward_norm": float("nan"), "loss": float("nan"),
                         "gold_pairs": total, "gold_pairs_agree": float("nan"), "query_id": group["prompt_id"],
                         "domain": group["domain"], "n_completions": len(group["responses"]), "n_pairs": total,
                         "gold_agreement": float("nan")})
        return rows
