"""Gold-labelled preference pairs from the SFT policy's samples (rule rm_pairs)."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import build_rm_pairs  # noqa: E402

splits = {Path(p).stem: p for p in snakemake.input.splits}
outs = {Path(p).stem: p for p in snakemake.output.pairs}
build_rm_pairs(snakemake.input.policy, splits, snakemake.params.samples, snakemake.params.temperature,
               snakemake.params.seed, snakemake.threads, snakemake.params.device, outs,
               max_new_tokens=snakemake.params.max_new_tokens)
