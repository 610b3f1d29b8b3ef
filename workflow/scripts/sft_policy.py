"""Build (or load) the policy and run the SFT warm start (rule sft_policy)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute.stages import train_sft_policy  # noqa: E402

torch_threads = snakemake.params.torch_threads
train_sft_policy(snakemake.input.sft, snakemake.params.policy, snakemake.params.sft, snakemake.params.seed,
                 torch_threads, snakemake.params.device, snakemake.output.policy,
                 val_path=snakemake.input.val or None, selection_path=snakemake.output.selection,
                 max_new_tokens=snakemake.params.max_new_tokens,
                 select_worker=snakemake.threads > torch_threads)  # a core beyond training's: the selection's worker
