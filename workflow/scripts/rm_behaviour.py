"""Every RM scores every held-out and offline pair (rule rm_behaviour)."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import rm_behaviour  # noqa: E402

pairs = {Path(p).stem: p for p in snakemake.input.pairs}
rm_behaviour(snakemake.params.pool, pairs, snakemake.threads, snakemake.params.device, snakemake.output.behaviour)
