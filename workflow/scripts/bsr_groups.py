"""Responses per prompt with gold scores for the BSR splits (rule bsr_groups)."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import bsr_groups  # noqa: E402

bsr_groups(snakemake.input.sft, snakemake.input.response, {Path(p).stem: p for p in snakemake.input.prompts},
           snakemake.params.samples, snakemake.params.temperature, snakemake.params.max_new_tokens, snakemake.params.seed,
           snakemake.threads, snakemake.params.device, snakemake.output.groups)
