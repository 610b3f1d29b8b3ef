"""Concatenate each run's per-iteration decision logs (rule collect_decisions: one run, or every
seed of a method under `seed_jobs: together`)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute.io import as_list, write_table  # noqa: E402

inputs, n = as_list(snakemake.input.decisions), snakemake.params.iterations  # per seed, its iterations in order
for k, out in enumerate(as_list(snakemake.output.decisions)):
    write_table(pd.concat([pd.read_parquet(p) for p in inputs[k * n:(k + 1) * n]], ignore_index=True), out)
