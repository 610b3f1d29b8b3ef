"""Concatenate one run's per-iteration decision logs (rule collect_decisions)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute.io import write_table  # noqa: E402

write_table(pd.concat([pd.read_parquet(p) for p in snakemake.input.decisions], ignore_index=True),
            snakemake.output.decisions)
