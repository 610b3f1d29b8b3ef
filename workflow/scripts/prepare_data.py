"""Generate the testbed splits (rule prepare_data)."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import prepare_data  # noqa: E402

prepare_data(snakemake.params.testbed, snakemake.params.seed, Path(snakemake.output.splits[0]).parent,
             snakemake.params.hf_data)
