"""Routed scoring (one RM per decision) against the K-RM mean ensemble (every RM scores every
response), for K = 2, 4, 8 tiny RMs on the same rollout groups. The ideal ratio is K.

Both go through `rmroute.online.route_batches` (the training loop's labeler, batch by batch,
without training), so the time includes tokenisation, the RM forward passes, score caching and
pair building. Each comparison runs both methods at the same
granularity; the `workflow` rows pair the workflow's defaults (per-batch routing, per-query ensemble).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import common
import pandas as pd

from rmroute.methods import Method, Recipe
from rmroute.online import route_batches
from rmroute.routers import make_router


def time_methods(groups, methods: dict, pool, k: int, repeats: int) -> dict:
    """Per method: median and minimum seconds, RM calls of one run and median seconds inside the RMs.

    Repeats are interleaved (every method once per round) so that load from other processes
    falls on all methods alike rather than on whichever ran during a busy spell.
    """
    seconds = {name: [] for name in methods}
    rm_seconds = {name: [] for name in methods}
    calls = {}
    for round_ in range(max(3, repeats) + 1):  # round 0 warms up and is not kept
        for name, method in methods.items():
            router = make_router("single", k, 1, arm=0) if method.router == "single" else None
            common.reset_counters(pool)
            start = time.perf_counter()
            route_batches(groups, method, pool, router)
            if round_:
                seconds[name].append(time.perf_counter() - start)
                rm_seconds[name].append(sum(rm.seconds for rm in pool))
            calls[name] = sum(rm.calls for rm in pool)
    return {name: {"s": statistics.median(seconds[name]), "min_s": min(seconds[name]), "calls": calls[name],
                   "rm_s": statistics.median(rm_seconds[name])} for name in methods}


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-prompts", type=int, default=16, help="prompts per routing decision (budget.batch_prompts)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(common.OUT_DIR))
    args = parser.parse_args(argv)
    print(common.pin_threads())

    splits = common.testbed()
    tokenizer = common.build_tokenizer(splits)
    groups = common.rollout_groups(common.interleave_domains(splits["rollout"]), args.prompts, args.samples)
    print(f"{args.prompts} prompts x {args.samples} responses = {args.prompts * args.samples} responses per method; "
          f"median of {max(3, args.repeats)} interleaved repeats after one warm-up round")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs = common.save_reward_models(tokenizer, max(args.ks), tmp)
        for k in args.ks:
            pool = common.load_pool(dirs[:k])
            methods = {}
            for granularity in ("batch", "query"):
                shared = dict(granularity=granularity, batch_prompts=args.batch_prompts, pairs_per_prompt=2, recipe=Recipe())
                methods["routed", granularity] = Method(name="routed", router="single", arm=0, **shared)
                methods["ensemble", granularity] = Method(name="ensemble", router="ensemble", combine="mean", **shared)
            measured = time_methods(groups, methods, pool, k, args.repeats)
            for label, routed_g, ensemble_g in (("batch", "batch", "batch"), ("query", "query", "query"),
                                                ("workflow", "batch", "query")):
                routed, ensemble = measured["routed", routed_g], measured["ensemble", ensemble_g]
                ratio = ensemble["s"] / routed["s"]
                rows.append({
                    "K": k, "comparison": label, "routed_granularity": routed_g, "ensemble_granularity": ensemble_g,
                    "routed_s": routed["s"], "ensemble_s": ensemble["s"], "ratio": ratio, "ratio_over_K": ratio / k,
                    "goal_met": ratio >= 0.9 * k, "ratio_of_min": ensemble["min_s"] / routed["min_s"],
                    "rm_calls_routed": routed["calls"], "rm_calls_ensemble": ensemble["calls"],
                    "routed_rm_s": routed["rm_s"], "ensemble_rm_s": ensemble["rm_s"],
                })
            print(f"K={k} done", flush=True)
    table = pd.DataFrame(rows)
    path = common.write_tsv(table, "scoring.tsv", args.out)
    common.print_table(table, f"routed vs ensemble scoring (goal: ratio >= 0.9*K) -> {path}")
    return table


if __name__ == "__main__":
    main()
