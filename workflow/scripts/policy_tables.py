"""Policy accuracy per iteration, the LASeR Table-1-shaped summary and its figure (rule policy_tables)."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute import report  # noqa: E402
from rmroute.io import write_table, write_text  # noqa: E402

files = [(m, s, i, path) for (m, s, i), path in zip(snakemake.params.runs, snakemake.input.evals)]
accuracy = report.policy_accuracy(files, snakemake.input.sft, snakemake.params.methods, snakemake.params.seeds)
write_table(accuracy, snakemake.output.accuracy)
write_table(report.win_rates(files), snakemake.output.win_rate)
summary = report.summary_table(accuracy, snakemake.params.final_iteration, report.LASER_TABLE1)
write_table(summary, snakemake.output.laser)
write_text(report.summary_markdown(summary, f"LASeR Table 1 analogue ({snakemake.params.run_name}): accuracy after the last iteration"),
           Path(snakemake.output.laser).with_suffix(".md"))
bayes = report.summary_table(accuracy, snakemake.params.final_iteration, report.BAYES_TABLE1)
write_table(bayes, snakemake.output.bayesian)
write_text(report.summary_markdown(bayes, f"BayesianRouter Table 1 analogue ({snakemake.params.run_name}): accuracy after the last iteration"),
           Path(snakemake.output.bayesian).with_suffix(".md"))
report.accuracy_figure(accuracy, snakemake.output.png, snakemake.output.pdf)
