"""Train one RM of the BT/BSR comparison and measure it (rule bsr_rm)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import bsr_rm  # noqa: E402

bsr_rm(snakemake.input.init, snakemake.input.tokenizer, snakemake.input.pairs, snakemake.input.test_pairs,
       snakemake.input.groups, snakemake.params.rm, snakemake.params.data_seed, snakemake.params.seed, snakemake.threads,
       snakemake.params.device, snakemake.output.rm, snakemake.output.table, snakemake.output.norms)
