"""End-to-end cost of a workflow run, from the per-job benchmark files Snakemake writes
(`<results>/benchmarks/rules/**/*.tsv`): jobs, summed and median job wall seconds, summed CPU
seconds and the largest peak RSS per rule, plus the run's end-to-end wall time when given
(`--wall`) or read from a Snakemake log (`--snakemake-log`).

Summed job seconds exceed the end-to-end wall time when Snakemake runs jobs in parallel.

With the wall time, it also prints the one-process bound: the run's job seconds without the
process and library start-up that every job pays (measured here, `--startup-repeats` fresh
interpreters importing what a model job imports, `rmroute.stages`, or what a table job imports,
`rmroute.io`), spread over the cores, i.e. the same work in one process per core; and the ratio
of the end-to-end wall time to it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import common
import pandas as pd

HOW_TO_RUN = """No benchmark files under {rules}. Produce a run first, timing it as a whole:

    /usr/bin/time -v make workflow          # or: /usr/bin/time -v .venv/bin/snakemake --cores all

then pass the 'Elapsed (wall clock) time' it prints, in seconds:

    python benchmarks/end_to_end.py --wall SECONDS
"""
# Rules whose jobs load a model (their start-up imports the model stack: torch, transformers, TRL).
MODEL_RULES = {"sft_policy", "evaluate_sft", "rm_pairs", "train_rm", "rm_behaviour", "rollout_sft", "rollout",
               "train_iteration", "evaluate", "routing_sim", "train_offline_router", "bsr", "r2m"}
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def read_job_benchmarks(rules: Path) -> pd.DataFrame:
    """One row per job: its rule (the first path part under rules/) and the columns Snakemake wrote."""
    frames = []
    for path in sorted(rules.rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        frame.insert(0, "rule", path.relative_to(rules).parts[0].removesuffix(".tsv"))
        frame.insert(1, "job", str(path.relative_to(rules).with_suffix("")))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def log_wall_seconds(log: Path) -> float:
    """Seconds from the first to the last job timestamp of a Snakemake log."""
    stamps = [datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
              for line in log.read_text().splitlines() if (m := STAMP.match(line.strip()))]
    if len(stamps) < 2:
        raise ValueError(f"{log}: fewer than two job timestamps; is it a Snakemake run log?")
    return (stamps[-1] - stamps[0]).total_seconds()


def startup_seconds(module: str, repeats: int) -> float:
    """Median wall seconds of a fresh interpreter that imports `module` and exits."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_process_bound(table: pd.DataFrame, cores: int, model_startup_s: float, table_startup_s: float) -> float:
    """Seconds the run's jobs would take in one process per core: their summed wall seconds less
    each job's start-up (a model job's or a table job's), over `cores`."""
    rules = table[table["rule"] != "TOTAL"]
    startup = sum(row.jobs * (model_startup_s if row.rule in MODEL_RULES else table_startup_s) for row in rules.itertuples())
    return (rules["job_wall_s"].sum() - startup) / cores


def main(argv=None) -> pd.DataFrame | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results_dir of the run")
    parser.add_argument("--wall", type=float, help="end-to-end wall seconds of the run (e.g. from /usr/bin/time -v)")
    parser.add_argument("--snakemake-log", help="a .snakemake/log/*.snakemake.log of the run, to read its wall time from")
    parser.add_argument("--out", default=str(common.OUT_DIR))
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores the run had (for the bound)")
    parser.add_argument("--startup-repeats", type=int, default=3, help="fresh interpreters timed per start-up kind")
    args = parser.parse_args(argv)

    rules = Path(args.results) / "benchmarks" / "rules"
    jobs = read_job_benchmarks(rules) if rules.is_dir() else pd.DataFrame()
    if jobs.empty:
        print(HOW_TO_RUN.format(rules=rules))
        return None
    table = (jobs.groupby("rule")
             .agg(jobs=("job", "size"), job_wall_s=("s", "sum"), median_job_s=("s", "median"), cpu_s=("cpu_time", "sum"),
                  max_rss_mib=("max_rss", "max"))
             .reset_index().sort_values("job_wall_s", ascending=False))
    total = pd.DataFrame([{"rule": "TOTAL", "jobs": table["jobs"].sum(), "job_wall_s": table["job_wall_s"].sum(),
                           "median_job_s": jobs["s"].median(), "cpu_s": table["cpu_s"].sum(), "max_rss_mib": table["max_rss_mib"].max()}])
    table = pd.concat([table, total], ignore_index=True)
    wall, source = args.wall, "--wall"
    if wall is None and args.snakemake_log:
        wall, source = log_wall_seconds(Path(args.snakemake_log)), args.snakemake_log
    table["end_to_end_wall_s"] = wall if wall is not None else float("nan")
    path = common.write_tsv(table, "end_to_end.tsv", args.out)
    common.print_table(table, f"job seconds per rule, from {rules} -> {path}")
    if wall is None:
        print("end-to-end wall time: not given; pass --wall SECONDS (from /usr/bin/time -v) or --snakemake-log PATH")
    else:
        overlap = total["job_wall_s"].iloc[0] / wall
        print(f"end-to-end wall time {wall:.0f} s (from {source}); summed job wall / end-to-end = {overlap:.2f} (parallelism)")
        if args.startup_repeats > 0:
            model_s = startup_seconds("rmroute.stages", args.startup_repeats)
            table_s = startup_seconds("rmroute.io", args.startup_repeats)
            bound = one_process_bound(table, args.cores, model_s, table_s)
            print(f"start-up per job: {model_s:.1f} s (model job), {table_s:.1f} s (table job); one-process bound on "
                  f"{args.cores} cores {bound:.0f} s; end-to-end / bound = {wall / bound:.2f}")
        if overlap > (os.cpu_count() or 1):
            print(f"note: more overlap than the {os.cpu_count()} cores allow: the benchmark files hold jobs that ran "
                  "outside the timed invocation (earlier or later runs into the same results directory)")
    expected = {"rollout", "train_iteration", "evaluate"}
    if not expected <= set(table["rule"]):
        print(f"note: the run has no {sorted(expected - set(table['rule']))} jobs yet (incomplete run?)")
    return table


if __name__ == "__main__":
    main()
