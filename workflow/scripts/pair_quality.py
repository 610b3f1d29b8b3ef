"""Gold quality of every method's routed DPO pairs, per domain, with a heatmap (rule pair_quality)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute import report  # noqa: E402
from rmroute.io import write_table  # noqa: E402

pair_files = [(m, s, i, path) for (m, s, i), path in zip(snakemake.params.runs, snakemake.input.pairs)]
table = report.pair_quality(pair_files)
write_table(table, snakemake.output.table)
report.heatmap(table, "method", "domain", "right", "Share of routed pairs whose chosen response is gold-better",
               snakemake.output.png, snakemake.output.pdf)
