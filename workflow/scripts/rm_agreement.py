"""How often two RMs prefer the same response on the offline pairs, per domain (rule rm_agreement)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute import figures  # noqa: E402
from rmroute.io import write_table  # noqa: E402

table = figures.rm_agreement(pd.read_parquet(snakemake.input.behaviour))
write_table(table, snakemake.output.table)
figures.agreement_figure(table, snakemake.output.png, snakemake.output.pdf)
