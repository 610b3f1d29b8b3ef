"""SFT accuracy per domain (rule sft_table)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.io import write_table  # noqa: E402
from rmroute.report import sft_accuracy  # noqa: E402

write_table(sft_accuracy(snakemake.input.table), snakemake.output.table)
