"""Greedy evaluation on the test split (rules evaluate_sft, and evaluate: every iteration of one
run, on the validation split as well)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import evaluate_policies  # noqa: E402


def as_list(value):
    """A named input or output holding one path is a str; several are a list."""
    return [value] if isinstance(value, str) else list(value)


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
