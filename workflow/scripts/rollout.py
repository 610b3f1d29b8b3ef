"""Sample the iteration's responses from the current policy (rules rollout_sft and rollout)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import rollout  # noqa: E402

rollout(snakemake.input.policy, snakemake.input.prompts, snakemake.params.budget, int(snakemake.wildcards.seed),
        snakemake.params.it, snakemake.threads, snakemake.params.device, snakemake.output.rollouts, snakemake.params.backend,
        snakemake.params.get("domains"))  # rollout_sft: every domain
