"""r2m.tsv: R2M in the loop beside its controls and the base RM, with a summary (rule r2m_table)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import r2m_loop_tables  # noqa: E402

# Each variant's decision logs and eval tables (all of them inputs of the rule), grouped by variant.
r2m_loop_tables(snakemake.params.decisions, snakemake.params.evals, snakemake.output.table, snakemake.output.summary)
