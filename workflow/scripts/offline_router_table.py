"""Offline router accuracy in-domain and OOD beside single RMs and majority vote (rule offline_router_table)."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import torch  # noqa: E402

from rmroute.io import write_table  # noqa: E402
from rmroute.stages import offline_router_table  # noqa: E402

torch.set_num_threads(snakemake.threads)
pairs = {Path(p).stem: p for p in snakemake.input.pairs}
write_table(offline_router_table(snakemake.input.model, pairs, snakemake.input.behaviour), snakemake.output.table)
