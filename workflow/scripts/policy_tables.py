"""Policy accuracy per iteration (test, and the validation split), the LASeR and BayesianRouter
Table-1-shaped summaries, whose best single RM is chosen on validation, and the figure (rule policy_tables)."""
import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w")

from rmroute import report  # noqa: E402
from rmroute.published import BAYES_TABLE1, LASER_TABLE1  # noqa: E402
from rmroute.io import write_table, write_text  # noqa: E402

files = [(m, s, i, path) for (m, s, i), path in zip(snakemake.params.runs, snakemake.input.evals)]
validation_files = [(m, s, i, path) for (m, s, i), path in zip(snakemake.params.runs, snakemake.input.validation)]
accuracy = report.policy_accuracy(files, snakemake.input.sft, snakemake.params.methods, snakemake.params.seeds)
validation = report.run_accuracy(validation_files)
write_table(accuracy, snakemake.output.accuracy)
write_table(validation, snakemake.output.validation)
write_table(report.win_rates(files), snakemake.output.win_rate)
# (output, published numbers, title, the recipe of the paper's method: its best single RM trains with it)
tables = [("laser", LASER_TABLE1, "LASeR Table 1 analogue", "laser"),
          ("bayesian", BAYES_TABLE1, "BayesianRouter Table 1 analogue", "bayesian")]
for output, published, title, recipe in tables:
    summary, note = report.paper_table(accuracy, validation, snakemake.params.final_iteration, published, recipe,
                                       snakemake.params.best_single_candidates.get(recipe, []),
                                       snakemake.params.validation_split, snakemake.params.recipe_methods.get(recipe, []))
    print(f"{output}: {note}")
    write_table(summary, snakemake.output[output])
    write_text(report.summary_markdown(summary, f"{title} ({snakemake.params.run_name}): accuracy after the last iteration", note),
               Path(snakemake.output[output]).with_suffix(".md"))
report.accuracy_figure(accuracy, snakemake.output.png, snakemake.output.pdf)
