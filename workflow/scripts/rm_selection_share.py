"""Share of each routed method's decisions labelled by each RM, per domain and iteration (rule rm_selection_share)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute import figures  # noqa: E402

shares = figures.selection_shares(pd.read_csv(snakemake.input.choices, sep="\t"), snakemake.params.routed)
figures.selection_share_figure(shares, snakemake.output.png, snakemake.output.pdf)
