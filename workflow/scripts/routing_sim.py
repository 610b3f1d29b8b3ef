"""Controlled routing simulation: labelling accuracy and regret of every router (rule routing_sim)."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import torch  # noqa: E402

from rmroute.io import write_table  # noqa: E402
from rmroute.report import ci95  # noqa: E402
from rmroute.simulation import regret_figure, routing_simulation  # noqa: E402

torch.set_num_threads(snakemake.threads)
pairs = {Path(p).stem: p for p in snakemake.input.pairs}
table, curve = routing_simulation(pairs, snakemake.input.behaviour, snakemake.input.model,
                                  routers=snakemake.params.routers, seeds=snakemake.params.seeds,
                                  batch_size=snakemake.params.batch_size)
write_table(table, snakemake.output.table)
summary = table.groupby("router", sort=False)["labelling_accuracy"].agg(mean="mean", ci95=ci95, n_seeds="size").reset_index()
write_table(summary, snakemake.output.summary)
write_table(curve, snakemake.output.curve)
regret_figure(curve, snakemake.output.png, snakemake.output.pdf)
