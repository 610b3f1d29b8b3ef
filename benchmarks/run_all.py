"""Run the benchmarks (scoring, router overhead, iteration scaling, end to end; not the SFT sweep),
each in its own process, and print a summary of every goal against its measurement.

Each benchmark writes its TSVs under --out through a temp file and a rename.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def run(script: str, args: list[str]) -> float:
    print(f"\n######## {script} {' '.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)
    return time.perf_counter() - start


def summary(out: Path) -> list[str]:
    lines = []
    scoring = pd.read_csv(out / "scoring.tsv", sep="\t")
    for _, r in scoring.iterrows():
        lines.append(f"scoring   K={r.K} {r.comparison:<8} ensemble/routed = {r.ratio:5.2f}x "
                     f"(goal >= {0.9 * r.K:.1f}x: {'met' if r.goal_met else 'NOT met'}; ratio of minima {r.ratio_of_min:.2f}x)")
    overhead = pd.read_csv(out / "router_overhead.tsv", sep="\t")
    for _, r in overhead.iterrows():
        lines.append(f"router    {r.router:<8} K={r.K} dim={r.dim:<3} {r.per_decision_us:7.1f} us/decision x "
                     f"{r.decisions_per_iteration} = {r.router_s_per_iteration:.3f} s = {r.fraction:.2%} of a "
                     f"{r.iteration_s:.1f} s iteration (goal <= 1%: {'met' if r.goal_met else 'NOT met'})")
    scaling = pd.read_csv(out / "iteration_scaling.tsv", sep="\t").drop_duplicates("stage")
    for _, r in scaling.iterrows():
        lines.append(f"scaling   {r.stage:<8} time = {r.fit_a_s:.3f} s + {r.fit_b_ms_per_response:.3f} ms/response, "
                     f"R² = {r.r2:.4f} (goal >= 0.98: {'met' if r.goal_met else 'NOT met'}; fastest repeats {r.r2_min:.4f})")
    rss = pd.read_csv(out / "rss_vs_k.tsv", sep="\t")
    lines.append(f"memory    peak RSS {rss.peak_rss_mib.min():.0f}-{rss.peak_rss_mib.max():.0f} MiB for K = "
                 f"{rss.K.min()}-{rss.K.max()}, {rss.mib_per_rm.iloc[0]:.1f} MiB per extra RM")
    e2e = out / "end_to_end.tsv"
    if e2e.exists():
        total = pd.read_csv(e2e, sep="\t").set_index("rule").loc["TOTAL"]
        wall = total["end_to_end_wall_s"]
        lines.append(f"run       {int(total['jobs'])} jobs, {total['job_wall_s']:.0f} job-seconds, {total['cpu_s']:.0f} CPU seconds, "
                     f"end-to-end wall {'not given' if pd.isna(wall) else f'{wall:.0f} s'}")
    else:
        lines.append("run       no workflow run found (see end_to_end.py's message above)")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--results", default="results", help="results_dir of a workflow run (iteration and job times)")
    parser.add_argument("--wall", type=float, help="end-to-end wall seconds of that run, for end_to_end.py")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    out = Path(args.out)
    common = ["--out", str(out)]
    repeats = ["--repeats", str(args.repeats)]
    seconds = {
        "scoring.py": run("scoring.py", common + repeats),
        "router_overhead.py": run("router_overhead.py", common + repeats + ["--results", args.results]),
        "iteration_scaling.py": run("iteration_scaling.py", common + repeats),
    }
    # end_to_end.py writes nothing when there is no run; drop a table left by an earlier call.
    (out / "end_to_end.tsv").unlink(missing_ok=True)
    seconds["end_to_end.py"] = run("end_to_end.py", common + ["--results", args.results]
                                   + (["--wall", str(args.wall)] if args.wall is not None else []))
    print("\n######## summary")
    for line in summary(out):
        print(line)
    print("benchmark seconds: " + ", ".join(f"{name} {s:.0f}" for name, s in seconds.items()))
    print(f"tables under {out}/")


if __name__ == "__main__":
    main()
