"""The response-OOD policy of the BSR evaluation: the SFT run stopped early (rule bsr_response_policy)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import train_sft_policy  # noqa: E402

train_sft_policy(snakemake.input.sft, snakemake.params.policy, snakemake.params.sft, snakemake.params.seed,
                 snakemake.threads, snakemake.params.device, snakemake.output.policy)
