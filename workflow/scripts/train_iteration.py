"""One routed iteration with the router in the training loop (rule train_iteration): iterative DPO
on the rollouts, or, for a recipe with `trainer: grpo | rloo`, TRL's online trainer sampling the
iteration's prompts itself (rmroute.stages.online_rl); for each seed of the job in turn (`seed_jobs`)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import as_list, each_seed, train_iteration  # noqa: E402

inputs, outputs, params = snakemake.input, snakemake.output, snakemake.params
previous_states, previous_r2m = as_list(inputs.previous_state), as_list(inputs.previous_r2m)
online = params.method["recipe"].get("trainer", "dpo") != "dpo"


def shared(k, seed):
    """What both kinds of iteration take: seed k's paths, the method and its pool, the iteration."""
    return dict(
        policy_dir=as_list(inputs.policy)[k],
        method=params.method,
        pool_rows=params.pool,
        previous_state=previous_states[k] if previous_states else None,
        batch_order=params.batch_order,
        seed=seed,
        it=int(snakemake.wildcards.it),
        threads=snakemake.threads,
        device=params.device,
        out_policy=as_list(outputs.policy)[k],
        out_state=as_list(outputs.state)[k],
        out_decisions=as_list(outputs.decisions)[k],
        r2m=params.r2m,
        previous_r2m=previous_r2m[k] if previous_r2m else None,
        out_r2m=as_list(outputs.r2m)[k],
    )


def run(k, seed):
    if online:
        from rmroute.stages.online_rl import rl_iteration

        # `rollouts` is the prompt split here: the trainer samples the iteration's prompts itself.
        rl_iteration(**shared(k, seed), prompts_path=as_list(inputs.rollouts)[k], budget=params.online_budget,
                     out_samples=as_list(outputs.pairs)[k])
        return
    train_iteration(
        **shared(k, seed),
        reference_dir=as_list(inputs.reference)[k],
        rollouts_path=as_list(inputs.rollouts)[k],
        offline_dir=inputs.offline_router or None,
        max_length=params.max_length,
        out_pairs=as_list(outputs.pairs)[k],
        log_both_timings=params.log_both_timings,
        lora_block=params.lora,
        iterations=params.r2m.get("iterations", 1),
    )


each_seed(params.seeds, run, as_list(outputs.seconds))
