"""Whether the loss-based bandit reward agrees with gold, per method, domain and RM (rule reward_validity)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute import report  # noqa: E402
from rmroute.io import write_table  # noqa: E402

table = report.reward_validity(pd.concat([pd.read_parquet(p) for p in snakemake.input.decisions], ignore_index=True))
write_table(table, snakemake.output.table)
report.reward_validity_figure(table, snakemake.output.png, snakemake.output.pdf)
