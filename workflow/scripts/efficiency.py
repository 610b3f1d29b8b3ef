"""Final accuracy against training wall time and RM calls per method, table and figure (rule efficiency)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute import figures  # noqa: E402
from rmroute.io import write_table  # noqa: E402

benchmarks = [(m, s, stage, path) for (m, s, stage), path in zip(snakemake.params.benchmarks, snakemake.input.benchmarks)]
table = figures.efficiency(pd.read_csv(snakemake.input.accuracy, sep="\t"), pd.read_csv(snakemake.input.cost, sep="\t"),
                           figures.wall_times(benchmarks))
write_table(table, snakemake.output.table)
figures.efficiency_figure(table, snakemake.output.png, snakemake.output.pdf)
