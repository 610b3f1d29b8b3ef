"""bsr.tsv, its mean ± 95% CI summary beside the BSR paper, and the norm figure (rule bsr_table)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import bsr_tables  # noqa: E402

bsr_tables(snakemake.input.tables, snakemake.input.norms, snakemake.output.table, snakemake.output.summary,
           snakemake.output.png, snakemake.output.pdf)
