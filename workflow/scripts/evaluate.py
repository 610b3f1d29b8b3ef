"""Greedy evaluation on the test split (rules evaluate_sft, and evaluate: every iteration of one
run, or of every seed of a method under `seed_jobs: together`, on the validation split as well)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import as_list, evaluate_policies  # noqa: E402

outputs = snakemake.output.get("outputs")
validation = snakemake.output.get("validation")
evaluate_policies(
    policy_dirs=as_list(snakemake.input.policies),
    test_path=snakemake.input.test,
    max_new_tokens=snakemake.params.max_new_tokens,
    threads=snakemake.threads,
    device=snakemake.params.device,
    out_tsvs=as_list(snakemake.output.tables),
    sft_outputs=snakemake.input.get("sft_outputs"),
    out_outputs=[outputs] if outputs else None,
    validation_path=snakemake.input.validation if validation else None,
    out_validation_tsvs=as_list(validation) if validation else None,
)
