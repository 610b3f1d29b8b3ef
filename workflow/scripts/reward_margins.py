"""Chosen - rejected reward per RM, in routed training decisions and on gold-ordered pairs (rule reward_margins)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute import figures  # noqa: E402

decisions = pd.concat([pd.read_parquet(p) for p in snakemake.input.decisions], ignore_index=True)
margins = figures.reward_margins(decisions, pd.read_parquet(snakemake.input.behaviour))
figures.margin_figure(margins, snakemake.output.png, snakemake.output.pdf)
