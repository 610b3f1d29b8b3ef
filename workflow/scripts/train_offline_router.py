"""Train BayesianRouter's offline multi-task router on RM behaviour data (rule train_offline_router)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import torch  # noqa: E402

from rmroute.stages import train_offline_router_stage  # noqa: E402

torch.set_num_threads(snakemake.threads)
train_offline_router_stage(snakemake.input.pairs, snakemake.input.behaviour, snakemake.params.encoder,
                           snakemake.params.train, snakemake.params.seed, snakemake.output.model, snakemake.output.history)
