"""The claims table: each published claim tested on our runs, TSV + Markdown + LaTeX (rule claims)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

import pandas as pd  # noqa: E402

from rmroute.claims import claims_latex, claims_markdown, claims_table, train_seconds  # noqa: E402
from rmroute.io import write_table, write_text  # noqa: E402


def optional(name):
    """A table the config may not produce (its experiment did not run): None when absent."""
    return pd.read_csv(snakemake.input[name], sep="\t") if name in snakemake.input.keys() else None


benchmarks = [(m, s, path) for (m, s), path in zip(snakemake.params.benchmarks, snakemake.input.get("benchmarks", []))]
table, values = claims_table(
    snakemake.params.roles, snakemake.params.methods,
    policy_accuracy=pd.read_csv(snakemake.input.policy_accuracy, sep="\t"), train_time=train_seconds(benchmarks),
    routing_sim=optional("routing_sim"), offline_router=optional("offline_router"), bsr=optional("bsr"), r2m=optional("r2m"),
    validation_accuracy=optional("validation_accuracy"), best_single_candidates=snakemake.params.best_single_candidates,
    with_values=True,
)
print(table.to_string())
title = f"Published claims tested on {snakemake.params.run_name}"
write_table(table, snakemake.output.table)
write_table(values, snakemake.output.values)  # the per-seed statistics, for pooling testbed instances
write_text(claims_markdown(table, title), snakemake.output.markdown)  # replaces write_table's plain twin
write_text(claims_latex(table, title), snakemake.output.latex)
