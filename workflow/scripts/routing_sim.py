"""Controlled routing simulation: labelling accuracy and regret of every router (rule routing_sim)."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute import models  # noqa: E402
from rmroute.io import write_table  # noqa: E402
from rmroute.simulation import regret_figure, routing_simulation, simulation_summary  # noqa: E402

models.set_threads(snakemake.threads)
policy = models.load_policy(snakemake.input.policy, device=snakemake.params.device)
tokenizer = models.load_tokenizer(snakemake.input.policy)
table, curve = routing_simulation(
    {Path(p).stem: p for p in snakemake.input.pairs}, snakemake.input.behaviour, snakemake.input.model,
    # LinUCB's context as online: the policy's last-token hidden state of each prompt (the SFT policy here).
    prompt_context=lambda prompts: models.prompt_embeddings(policy, tokenizer, prompts, "last_hidden"),
    routers=snakemake.params.routers, seeds=snakemake.params.seeds, batch_size=snakemake.params.batch_size,
    batch_order=snakemake.params.batch_order, lambda0s=snakemake.params.lambda0s, device=snakemake.params.device,
)
write_table(table, snakemake.output.table)
write_table(simulation_summary(table), snakemake.output.summary)
write_table(curve, snakemake.output.curve)
regret_figure(curve, snakemake.output.png, snakemake.output.pdf)
