"""Whether each online bandit signal agrees with gold, per method, signal, domain and RM (rule online_reward_validity)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute import report  # noqa: E402
from rmroute.io import write_table  # noqa: E402
from rmroute.rl import SIGNALS  # noqa: E402

decisions = pd.concat([pd.read_parquet(p) for p in snakemake.input.decisions], ignore_index=True)
write_table(report.reward_validity(decisions, by="reward_signal", variants=SIGNALS), snakemake.output.table)
