"""Router overhead: select + update time per routing decision, and the router's share of one
routed-DPO iteration.

LinUCB (LASeR) decides once per training batch on the policy's hidden state (dim 128), so an
iteration makes prompts_per_iteration / batch_prompts decisions (512 / 16 = 32). Thompson
(BayesianRouter) decides once per candidate pair on the offline router's pair vector (dim 64, or
384 for a MiniLM-sized vector), so an iteration makes prompts x C(samples, 2) decisions (512 x 6).
As in the training loop, `select` is called once per decision (Thompson: once per query, for its
six pairs) and `update` once per training step with the step's decisions (LinUCB: 1; Thompson:
16 x 6); `update_each_us` is the cost if the router were instead updated after every single
decision.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time
from pathlib import Path

import common
import numpy as np
import pandas as pd

from rmroute.routers import make_router

RULE_STAGES = ("rollout", "train_iteration", "evaluate")  # evaluate: one job per run, shared by its iterations
# Used when no run of the default config has per-iteration benchmark files: the median summed
# job seconds of the three iteration rules per (method, seed, iteration) of a default run on a
# 2-core CPU VM (torch 2.13, one thread per job), interpreter start and imports included.
FALLBACK_ITERATION_S = 40.0

# (router, dim, rows per select call, decisions per training step, decisions per iteration) at
# the default budget.
PROMPTS, BATCH_PROMPTS, SAMPLES = 512, 16, 4
PAIRS = math.comb(SAMPLES, 2)
CASES = (
    ("linucb", 128, 1, 1, PROMPTS // BATCH_PROMPTS),
    ("thompson", 64, PAIRS, BATCH_PROMPTS * PAIRS, PROMPTS * PAIRS),
    ("thompson", 384, PAIRS, BATCH_PROMPTS * PAIRS, PROMPTS * PAIRS),
)
ITERATION_METHOD = {"linucb": "laser", "thompson": "bayesian"}


def iteration_seconds(results: Path, method: str) -> tuple[float, str]:
    """Mean over (seed, iteration) of the job seconds of the three iteration rules for `method`,
    else the mean over every method that has them, else the fallback constant.

    A job's seconds are shared equally among the (seed, iteration) runs it holds: with
    `seed_jobs: together` one `rollout` or `train_iteration` job holds every seed of a method and
    iteration, and one `evaluate` job every seed and iteration of a method; with `separate` the seed
    is in the path. Iteration 1 samples from the SFT policy in `rollout_sft` jobs that every method
    shares; each seed's share stands in for that iteration's rollout of every method.
    """
    rules = results / "benchmarks" / "rules"
    runs = {(p.parts[-3], p.parts[-2], p.name) for p in (results / "runs").glob("*/*/it*") if p.is_dir()}

    def seconds(path: Path) -> float:
        return float(pd.read_csv(path, sep="\t")["s"].mean())

    totals: dict[tuple[str, str, str], float] = {}
    stages: dict[tuple[str, str, str], set] = {}
    for stage in (*RULE_STAGES, "rollout_sft"):
        for path in (rules / stage).rglob("*.tsv"):
            parts = path.relative_to(rules / stage).with_suffix("").parts
            methods = {m for m, _, _ in runs} if stage == "rollout_sft" else {parts[0]}
            seeds = [p for p in parts if p.isdigit()]
            its = [p for p in parts if re.fullmatch(r"it\d+", p)] or (["it1"] if stage == "rollout_sft" else [])
            held = {(s, i) for m, s, i in runs if m in methods and (not seeds or s == seeds[0]) and (not its or i == its[0])}
            if not held:
                continue
            share = seconds(path) / len(held)  # rollout_sft: each seed's share, counted for every method
            for m, s, i in runs:
                if m in methods and (s, i) in held:
                    totals[(m, s, i)] = totals.get((m, s, i), 0.0) + share
                    stages.setdefault((m, s, i), set()).add("rollout" if stage == "rollout_sft" else stage)
    complete = {key: s for key, s in totals.items() if stages[key] == set(RULE_STAGES)}
    mine = [s for (m, _, _), s in complete.items() if m == method]
    if mine:
        return statistics.mean(mine), f"{rules} ({method}, {len(mine)} iterations)"
    if complete:
        return statistics.mean(complete.values()), f"{rules} (all methods, {len(complete)} iterations)"
    return FALLBACK_ITERATION_S, "fallback constant"


def contexts(gen: np.random.Generator, n: int, dim: int, unit: bool) -> np.ndarray:
    x = gen.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True) if unit else x


def time_steps(name: str, k: int, dim: int, rows: int, decisions: int, n_decisions: int, seed: int) -> tuple[float, float]:
    """(select µs, amortised update µs) per decision over about n_decisions decisions, taken as
    training steps of `decisions` decisions (select calls of `rows` rows) and one batched update."""
    gen = np.random.default_rng(seed)
    router = make_router(name, k, dim, seed)
    unit = name == "thompson"  # pair vectors are unit length; LinUCB sees raw hidden-state means
    select_s = update_s = 0.0
    done = 0
    while done < n_decisions:
        calls = max(1, decisions // rows)
        ctx = contexts(gen, calls * rows, dim, unit)
        arms = np.empty(len(ctx), dtype=np.int64)
        start = time.perf_counter()
        for c in range(calls):
            arms[c * rows:(c + 1) * rows] = router.select(ctx[c * rows:(c + 1) * rows])
        select_s += time.perf_counter() - start
        rewards = gen.random(len(ctx))
        start = time.perf_counter()
        router.update(ctx, arms, rewards)
        update_s += time.perf_counter() - start
        done += len(ctx)
    return select_s / done * 1e6, update_s / done * 1e6


def time_update_each(name: str, k: int, dim: int, n: int, seed: int) -> float:
    """µs per single-row update (the router refreshes its posterior after every decision)."""
    gen = np.random.default_rng(seed)
    router = make_router(name, k, dim, seed)
    ctx = contexts(gen, n, dim, name == "thompson")
    arms = gen.integers(0, k, size=n)
    start = time.perf_counter()
    for i in range(n):
        router.update(ctx[i:i + 1], arms[i:i + 1], gen.random(1))
    return (time.perf_counter() - start) / n * 1e6


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--decisions", type=int, default=1000, help="decisions timed per case (at least one iteration)")
    parser.add_argument("--update-each", type=int, default=100, help="single-row updates timed per case")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", default="results", help="results_dir of a workflow run to read iteration times from")
    parser.add_argument("--out", default=str(common.OUT_DIR))
    args = parser.parse_args(argv)
    print(common.pin_threads())

    rows = []
    for name, dim, per_select, per_step, decisions in CASES:
        iteration_s, source = iteration_seconds(Path(args.results), ITERATION_METHOD[name])
        for k in args.ks:
            timed = [time_steps(name, k, dim, per_select, per_step, max(args.decisions, decisions), seed)
                     for seed in range(max(3, args.repeats))]
            select_us = statistics.median(t[0] for t in timed)
            update_us = statistics.median(t[1] for t in timed)
            per_decision = select_us + update_us
            router_s = decisions * per_decision / 1e6
            rows.append({
                "router": name, "K": k, "dim": dim, "select_us": select_us, "update_us": update_us,
                "per_decision_us": per_decision, "update_each_us": time_update_each(name, k, dim, args.update_each, 0),
                "decisions_per_step": per_step, "decisions_per_iteration": decisions, "router_s_per_iteration": router_s,
                "iteration_s": iteration_s, "fraction": router_s / iteration_s,
                "goal_met": router_s / iteration_s <= 0.01, "iteration_source": source,
            })
    table = pd.DataFrame(rows)
    path = common.write_tsv(table, "router_overhead.tsv", args.out)
    common.print_table(table.drop(columns=["iteration_source"]), f"router overhead (goal: fraction <= 1%) -> {path}")
    for source in sorted(set(table["iteration_source"])):
        if source == "fallback constant":
            print(f"iteration time: FALLBACK {FALLBACK_ITERATION_S} s (no complete iteration benchmarks under "
                  f"{args.results}/benchmarks/rules; constant measured once, see FALLBACK_ITERATION_S)")
        else:
            print(f"iteration time from {source}")
    return table


if __name__ == "__main__":
    main()
