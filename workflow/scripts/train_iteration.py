"""One routed DPO iteration with the router in the training loop (rule train_iteration)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import train_iteration  # noqa: E402

train_iteration(
    policy_dir=snakemake.input.policy,
    reference_dir=snakemake.input.reference,
    rollouts_path=snakemake.input.rollouts,
    method=snakemake.params.method,
    pool_rows=snakemake.params.pool,
    previous_state=snakemake.input.previous_state[0] if snakemake.input.previous_state else None,
    offline_dir=snakemake.input.offline_router or None,
    batch_order=snakemake.params.batch_order,
    max_length=snakemake.params.max_length,
    seed=int(snakemake.wildcards.seed),
    it=int(snakemake.wildcards.it),
    threads=snakemake.threads,
    device=snakemake.params.device,
    out_policy=snakemake.output.policy,
    out_state=snakemake.output.state,
    out_decisions=snakemake.output.decisions,
    out_pairs=snakemake.output.pairs,
    log_both_timings=snakemake.params.log_both_timings,
    lora_block=snakemake.params.lora,
    r2m=snakemake.params.r2m,
    previous_r2m=snakemake.input.previous_r2m or None,
    out_r2m=snakemake.output.r2m,
    iterations=snakemake.params.r2m.get("iterations", 1),
)
