"""Train one testbed RM of the pool (rule train_rm)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import train_rm  # noqa: E402

train_rm(snakemake.input.policy, snakemake.input.pairs, snakemake.params.rm, snakemake.params.seed, snakemake.threads,
         snakemake.params.device, snakemake.output.rm, snakemake.input.init)
