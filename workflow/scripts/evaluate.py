"""Greedy evaluation on the test split (rules evaluate_sft and evaluate)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import evaluate_policy  # noqa: E402

evaluate_policy(snakemake.input.policy, snakemake.input.test, snakemake.params.max_new_tokens, snakemake.threads,
                snakemake.params.device, snakemake.output.table,
                sft_outputs=snakemake.input.get("sft_outputs"), out_outputs=snakemake.output.get("outputs"))
