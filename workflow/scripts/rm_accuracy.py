"""RewardBench-style RM x domain accuracy table and heatmap (rule rm_accuracy)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute.io import write_table  # noqa: E402
from rmroute.report import heatmap, rm_accuracy, rm_complementarity  # noqa: E402

table = rm_accuracy(pd.read_parquet(snakemake.input.behaviour))
write_table(table, snakemake.output.table)
write_table(rm_complementarity(table), snakemake.output.complementarity)
heatmap(table, "rm", "domain", "accuracy", "RM pair accuracy on held-out test pairs", snakemake.output.png, snakemake.output.pdf)
