"""r2m_probe.tsv and its mean ± 95% CI summary beside the R2M paper (rule r2m_probe_table)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import r2m_tables  # noqa: E402

r2m_tables(snakemake.input.tables, snakemake.output.table, snakemake.output.summary)
