"""DPO update on the routed pairs and the bandit feedback (rule dpo)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import dpo_iteration  # noqa: E402

dpo_iteration(snakemake.input.policy, snakemake.input.reference, snakemake.input.pairs, snakemake.input.routing,
              snakemake.input.state, snakemake.input.offline_router or None, snakemake.params.method,
              int(snakemake.wildcards.seed), int(snakemake.wildcards.it), snakemake.threads, snakemake.params.device,
              snakemake.output.policy, snakemake.output.state, snakemake.output.decisions, snakemake.params.lora)
