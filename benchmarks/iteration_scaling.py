"""How one iteration's work grows with its size: wall time and peak RSS of generation (tiny policy)
and of routing + scoring (LinUCB per batch over 4 tiny RMs) at three sizes of prompts x samples,
with a least-squares fit time = a + b * responses and its R²; and peak RSS against the number of
RMs loaded (K = 2, 4, 8, all scoring, as the ensemble does).

Every measurement runs in a fresh subprocess, so each peak RSS belongs to one size or one K.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import common
import numpy as np
import pandas as pd

from rmroute import models

MAX_NEW_TOKENS = 24  # budget.max_new_tokens


def worker(spec: dict) -> dict:
    """One measurement in this (fresh) process; returns times in seconds and RSS in MiB."""
    from rmroute.methods import Method, Recipe, build_router
    from rmroute.online import route_batches

    common.pin_threads()
    root = Path(spec["root"])
    records = common.interleave_domains(common.testbed()["rollout"])
    if spec["stage"] == "generate":
        tokenizer = models.load_tokenizer(root / "policy")
        policy = models.load_policy(root / "policy", device="cpu")
        prompts = [r["prompt"] for r in records[: spec["prompts"]]]
        before = common.current_rss_mib()
        seconds, times = common.median_time(lambda: models.generate(
            policy, tokenizer, prompts, n=spec["samples"], temperature=1.0, max_new_tokens=MAX_NEW_TOKENS, seed=0),
            spec["repeats"])
        return {"time_s": seconds, "time_min_s": min(times), "rss_before_mib": before, "peak_rss_mib": common.peak_rss_mib()}
    pool = common.load_pool(spec["rm_dirs"][: spec["k"]])
    groups = common.rollout_groups(records, spec["prompts"], spec["samples"])
    before = common.current_rss_mib()
    linucb = Method(name="laser", router="linucb", batch_prompts=16, pairs_per_prompt=2, recipe=Recipe())
    contexts = {g["prompt"]: g["context"] for g in groups}
    prompt_context = lambda prompts: np.array([contexts[p] for p in prompts])  # noqa: E731
    if spec["stage"] == "score":
        k = spec["k"]
        seconds, times = common.median_time(lambda: route_batches(
            groups, linucb, pool, build_router(linucb, k, common.POLICY_HIDDEN, 0), prompt_context=prompt_context),
            spec["repeats"])
    else:  # rss_k: every loaded RM scores, so each one's activations count towards the peak
        ensemble = Method(name="ensemble", router="ensemble", granularity="query", batch_prompts=16, recipe=Recipe())
        seconds, times = common.median_time(lambda: route_batches(groups, ensemble, pool), 3, 0)
    return {"time_s": seconds, "time_min_s": min(times), "rss_before_mib": before, "peak_rss_mib": common.peak_rss_mib()}


def run_fresh(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"worker {spec['stage']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def linear_fit(x, y) -> tuple[float, float, float]:
    """(a, b, R²) of the least-squares line y = a + b x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(x, y, 1)
    residual = ((y - (a + b * x)) ** 2).sum()
    total = ((y - y.mean()) ** 2).sum()
    return float(a), float(b), float(1 - residual / total) if total > 0 else float("nan")


def main(argv=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--k", type=int, default=4, help="RMs in the pool for the scoring stage")
    parser.add_argument("--rss-ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--rss-prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(common.OUT_DIR))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return None
    print(common.pin_threads(), "(in every subprocess)")

    splits = common.testbed()
    tokenizer = common.build_tokenizer(splits)
    with tempfile.TemporaryDirectory() as tmp:
        rm_dirs = common.save_reward_models(tokenizer, max([args.k, *args.rss_ks]), tmp)
        models.set_seed(0)
        policy = models.build_policy(tokenizer, common.POLICY_HIDDEN, common.RM_SHAPE["layers"], common.RM_SHAPE["heads"],
                                     common.RM_SHAPE["intermediate_size"], common.RM_SHAPE["max_length"])
        models.save_atomic(policy, tokenizer, Path(tmp) / "policy")
        base = {"root": tmp, "rm_dirs": rm_dirs, "samples": args.samples, "repeats": args.repeats}
        rows = []
        for stage in ("generate", "score"):
            for prompts in args.prompts:
                result = run_fresh({**base, "stage": stage, "prompts": prompts, "k": args.k})
                rows.append({"stage": stage, "prompts": prompts, "samples": args.samples,
                             "responses": prompts * args.samples, **result})
                print(f"{stage} {prompts}x{args.samples}: {result['time_s']:.3f} s, peak RSS {result['peak_rss_mib']:.0f} MiB",
                      flush=True)
        rss_rows = []
        for k in args.rss_ks:
            result = run_fresh({**base, "stage": "rss_k", "prompts": args.rss_prompts, "k": k})
            rss_rows.append({"K": k, "prompts": args.rss_prompts, "samples": args.samples,
                             "rss_after_load_mib": result["rss_before_mib"], "peak_rss_mib": result["peak_rss_mib"],
                             "ensemble_s": result["time_s"]})
    table = pd.DataFrame(rows)
    for stage, part in table.groupby("stage"):
        a, b, r2 = linear_fit(part["responses"], part["time_s"])
        table.loc[part.index, ["fit_a_s", "fit_b_ms_per_response", "r2"]] = [a, b * 1e3, r2]
        # Other processes only ever add time, so the fastest repeat is the least disturbed one.
        table.loc[part.index, "r2_min"] = linear_fit(part["responses"], part["time_min_s"])[2]
    table["goal_met"] = table["r2"] >= 0.98
    rss = pd.DataFrame(rss_rows)
    _, slope, r2 = linear_fit(rss["K"], rss["peak_rss_mib"])
    rss["mib_per_rm"], rss["r2"] = slope, r2
    path = common.write_tsv(table, "iteration_scaling.tsv", args.out)
    rss_path = common.write_tsv(rss, "rss_vs_k.tsv", args.out)
    common.print_table(table, f"iteration scaling (goal: R² >= 0.98) -> {path}")
    for stage, part in table.groupby("stage"):
        print(f"{stage}: time = {part['fit_a_s'].iloc[0]:.3f} s + {part['fit_b_ms_per_response'].iloc[0]:.3f} ms x responses, "
              f"R² = {part['r2'].iloc[0]:.4f} (medians; {part['r2_min'].iloc[0]:.4f} on the fastest repeats)")
    common.print_table(rss, f"peak RSS vs K -> {rss_path}")
    return table, rss


if __name__ == "__main__":
    main()
