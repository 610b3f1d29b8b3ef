"""Sample the iteration's responses from the current policy (rules rollout_sft and rollout), for
each seed of the job in turn (`seed_jobs`)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import as_list, each_seed, rollout  # noqa: E402

policies = as_list(snakemake.input.policy)  # rollout_sft: the SFT policy, shared by every seed
outputs = as_list(snakemake.output.rollouts)
each_seed(snakemake.params.seeds,
          lambda k, seed: rollout(policies[k if len(policies) > 1 else 0], snakemake.input.prompts, snakemake.params.budget,
                                  seed, snakemake.params.it, snakemake.threads, snakemake.params.device, outputs[k],
                                  snakemake.params.backend, snakemake.params.get("domains")),  # rollout_sft: every domain
          as_list(snakemake.output.seconds))
