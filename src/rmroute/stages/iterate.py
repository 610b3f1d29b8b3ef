"""One routed DPO iteration, with the router in the training loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rmroute import models
from rmroute.io import atomic_dir, read_jsonl, save_router_state, write_jsonl, write_table
from rmroute.seeding import derive_seed, text_seed
from rmroute.stages.policy import of_domains
from rmroute.stages.rewards import load_pool


def train_iteration(*, policy_dir: str, reference_dir: str, rollouts_path: str, method: dict, pool_rows: list[dict],
                    previous_state: str | None, offline_dir: str | None, batch_order: str, max_length: int, seed: int,
                    it: int, threads: int, device: str, out_policy: str, out_state: str, out_decisions: str,
                    out_pairs: str, log_both_timings: bool = False, lora_block: dict | None = None,
                    r2m: dict | None = None, previous_r2m: str | None = None, out_r2m: str | None = None,
                    iterations: int = 1) -> None:
    """One routed DPO iteration with the router in the training loop.

    The rollouts are cut into training batches (`batch_order`, the same for every method); for
    each batch in turn the router picks from its current state, only the picked RM scores, the
    pair rule builds pairs, one optimiser step trains on them (TRL's DPOTrainer), and that step's
    per-pair losses reward the router before the next batch is routed. The router, normaliser
    and update count continue from `previous_state` and are written to `out_state`; every
    decision goes to `out_decisions`, every pair to `out_pairs`. With `log_both_timings` every
    batch's losses are also measured under the reward timing the router does not use, for the
    reward-validity table. With `lora_block` (the config's `lora:`) only a peft adapter trains
    (rmroute.lora): a reference equal to the entering policy is then TRL's frozen copy of the
    entering adapter, and the policy is saved as an adapter or merged.

    The pool is the method's RMs that have joined by iteration `it` (`Method.join`); a router
    state saved with fewer arms is extended with the newcomers (`add_arms`), not reset. R2M rows
    of the pool (settings `r2m`) continue from `previous_r2m`, read the entering policy's hidden
    states while they label, train on their own pairs with the updated policy's states after
    every policy optimiser step (`update_every: step`, inside the trainer) or after the whole DPO
    update (`iteration`), and are saved to `out_r2m/<rm_id>.safetensors` with their training log
    (one row per R2M optimiser step). Their schedule's T is `iterations` × this iteration's R2M
    steps (`r2m_steps_per_iteration` of its training batches).
    """
    from rmroute.methods import Method
    from rmroute.online import training_batches
    from rmroute.rewards.r2m import R2MRewardModel, r2m_steps_per_iteration

    method = Method.from_dict(method)
    run_seed = derive_seed(seed, it, scheme="iteration")
    models.set_threads(threads)
    models.set_seed(run_seed)
    policy, reference, tokenizer = load_models(policy_dir, reference_dir, lora_block, device)
    # `Method.domains` restricts the training stream; iteration 1's rollouts hold every domain.
    groups = of_domains(read_jsonl(rollouts_path), method.domains)
    if not groups:
        raise ValueError(f"methods.{method.name}.domains: no prompt of {list(method.domains)} in {rollouts_path}")
    batches = [[groups[i] for i in batch] for batch in training_batches(groups, method.batch_prompts, batch_order, text_seed(seed, it))]
    rows = {r["rm_id"]: r for r in pool_rows}
    active = [rows[r] for r in method.active_rms(it)]
    before = len(method.active_rms(it - 1)) if previous_state else len(active)  # arms in the saved router state
    r2m_steps = iterations * r2m_steps_per_iteration(r2m or {}, [len(b) for b in batches])
    pool = load_pool(active, device, r2m=r2m, r2m_states=previous_r2m, r2m_total_steps=r2m_steps, seed=run_seed)
    for rm in pool:
        if isinstance(rm, R2MRewardModel):
            rm.begin_iteration(policy, tokenizer, groups)  # the policy that sampled the rollouts
    labeler = build_labeler(method, pool, active, before, policy, tokenizer, groups, offline_dir=offline_dir, device=device,
                            seed=seed, run_seed=run_seed, previous_state=previous_state)
    trainer = run_iteration(policy, reference, tokenizer, labeler, batches, method.recipe, seed=run_seed, max_length=max_length,
                            device=device, log_both_timings=log_both_timings)
    if lora_block:
        from rmroute import lora

        lora.save_policy(policy.eval(), tokenizer, out_policy, lora.settings(lora_block)["save"])
    else:
        models.save_atomic(policy.eval(), tokenizer, out_policy)
    save_router_state(labeler.state_dict(), out_state)
    if out_r2m:
        with atomic_dir(out_r2m) as tmp:
            for rm in pool:
                if isinstance(rm, R2MRewardModel):
                    rm.end_iteration(policy.eval(), tokenizer, groups, trainer.state.global_step - 1)  # the updated policy's states
                    rm.save(tmp / f"{rm.rm_id}.safetensors")
                    log = pd.DataFrame(rm.log, columns=["policy_step", "groups", "step", "omega", "loss", "bt", "gre"])
                    log.insert(0, "rm", rm.rm_id)
                    write_table(log, tmp / f"{rm.rm_id}.log.tsv")
    write_jsonl([pair for b in range(len(batches)) for pair in trainer.labelled.get(b, [])], out_pairs)
    frame = pd.DataFrame(labeler.rows)
    frame.insert(0, "iteration", it)
    frame.insert(0, "seed", seed)
    frame.insert(0, "method", method.name)
    write_table(frame, out_decisions)


def load_models(policy_dir: str, reference_dir: str, lora_block: dict | None, device: str):
    """(policy in train mode, DPO reference, tokenizer) of an iteration. With `lora_block` only a
    peft adapter trains, and a reference equal to the entering policy is None (TRL's frozen copy
    of the entering adapter)."""
    import copy

    tokenizer = models.load_tokenizer(policy_dir)
    if lora_block:
        from rmroute import lora

        return (lora.wrap_policy(policy_dir, lora_block, device=device),
                lora.dpo_reference(policy_dir, reference_dir, device=device), tokenizer)
    policy = models.load_policy(policy_dir, device=device).train()
    # The reference is an explicit model: TRL would otherwise reload it from the policy's path.
    same = Path(reference_dir).resolve() == Path(policy_dir).resolve()
    return policy, copy.deepcopy(policy).eval() if same else models.load_policy(reference_dir, device=device), tokenizer


def build_labeler(method, pool: list, pool_rows: list[dict], before: int, policy, tokenizer, groups: list[dict], *,
                  offline_dir: str | None, device: str, seed: int, run_seed: int, previous_state: str | None):
    """The iteration's `RoutedLabeler`: the method's router over `pool` (whose sheet rows are
    `pool_rows`, in arm order), with the contexts its class declares (the current policy's prompt
    embeddings; the offline router's pair vectors, whose RM embeddings are also the prior of a
    pair-context router), its normaliser, and the state of the last iteration, extended by the
    RMs that join now (`before` = the arms in that state)."""
    from rmroute.io import load_router_state
    from rmroute.methods import build_router
    from rmroute.online import RoutedLabeler
    from rmroute.rewards.r2m import parse_r2m_source
    from rmroute.routers import arm_embeddings, make_normaliser

    prior, pair_context, dim = None, None, 1
    if method.needs_offline_router:
        from rmroute.encoders import PairEncoder

        encoder = PairEncoder(offline_dir, device=device)
        encoder.precompute(groups)  # the frozen encoder's vectors of every response, in one pass
        embeddings = arm_embeddings(encoder.model)
        # An R2M row starts from its base RM's prior: it scores as the base RM until it has learned.
        bases = [(parse_r2m_source(row["source"]) or (None, row["rm_id"]))[1] for row in pool_rows]
        missing = [b for b in bases if b not in encoder.rm_ids]
        if missing:
            raise ValueError(f"method {method.name!r}: the offline router knows RMs {encoder.rm_ids}, not {missing}")
        prior = embeddings[[encoder.rm_ids.index(b) for b in bases]]
        pair_context, dim = encoder.candidate_contexts, encoder.dim
    elif method.granularity == "pair":  # a context-free router (random, single) routing each pair
        pair_context = lambda group, cands: np.zeros((len(cands), 1))  # noqa: E731
    elif method.router_class.context == "prompt":  # LinUCB's: the current policy's prompt embeddings
        dim = int(policy.config.hidden_size)

    def prompt_context(prompts: list[str]) -> np.ndarray:
        # LASeR's context: the *current* policy's embedding of each prompt, at decision time.
        return models.prompt_embeddings(policy, tokenizer, prompts, method.context)

    router = build_router(method, before, dim, seed, None if prior is None else prior[:before])
    normaliser = make_normaliser(method.recipe.normaliser, method.recipe.normaliser_scope,
                                 **({"n_arms": len(pool)} if method.recipe.normaliser == "ema-z" else {}))
    labeler = RoutedLabeler(pool, method, router, normaliser, prompt_context=prompt_context, pair_context=pair_context,
                            seed=run_seed)
    if previous_state:
        labeler.load_state_dict(load_router_state(previous_state))
    if len(pool) > before:  # RMs joining at this iteration: extend the state, keep what was learned
        router.add_arms(len(pool) - before, None if prior is None or method.prior != "offline" else prior[before:])
    return labeler


def run_iteration(policy, reference, tokenizer, labeler, batches: list[list[dict]], recipe, *, seed: int, max_length: int,
                  device: str, log_both_timings: bool = False):
    """Train `policy` on `batches`, each labelled by `labeler` just before its optimiser step and
    rewarding its router just after (TRL's DPOTrainer, `rmroute.dpo.RoutedDPOTrainer`); the
    recipe's epochs and reward timing travel in its `routed_dpo_config`. Returns the trainer."""
    import tempfile

    from rmroute.dpo import RoutedDPOTrainer, routed_dpo_config

    with tempfile.TemporaryDirectory() as tmp:
        args = routed_dpo_config(tmp, recipe, seed=seed, max_length=max_length, use_cpu=device == "cpu")
        trainer = RoutedDPOTrainer(model=policy, ref_model=reference, args=args, processing_class=tokenizer, labeler=labeler,
                                   batches=batches, log_both_timings=log_both_timings)
        trainer.train()
    return trainer
