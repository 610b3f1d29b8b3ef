"""Which RM each router chose per domain (and how often the domain's gold-best RM), and RM calls and
wall time per method (rule router_tables)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute import report  # noqa: E402
from rmroute.io import write_table  # noqa: E402

decisions = pd.concat([pd.read_parquet(p) for p in snakemake.input.decisions], ignore_index=True)
choices = report.router_choices(decisions)
write_table(choices, snakemake.output.choices)
write_table(report.gold_best_share(choices, pd.read_csv(snakemake.input.rm_accuracy, sep="\t")), snakemake.output.best_rm_share)
benchmarks = [(m, s, i, stage, path) for (stage, m, s, i), path in zip(snakemake.params.runs, snakemake.input.benchmarks)]
write_table(report.cost_table(decisions, benchmarks), snakemake.output.cost)
report.router_choice_figure(choices, snakemake.output.png, snakemake.output.pdf)
