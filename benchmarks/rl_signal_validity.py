"""Which bandit reward tells good RMs from bad ones inside GRPO / RLOO, measured on validation prompts.

Runs the workflow's online iteration (`rmroute.stages.online_rl.rl_iteration`) with a random
router per prompt group (every RM gets groups in every domain, whatever the signals say) on the
validation split (`evaluation.validation_split`, never the test split), from an existing results
directory's SFT policy and RM pool, and logs every signal for every decision. Prints, per signal,
the rank correlation between a decision's raw reward and the routed RM's gold ranking agreement on
that group (`spearman_reward_gold`), per domain and pooled, and whether the RMs' mean rewards rank
them as gold does (`spearman_arms`); writes the full `report.reward_validity` table. The recipe's
default signal is chosen from this output (docs/online_rl.md).

    python benchmarks/rl_signal_validity.py --results results/grpo            # after `make grpo` (or make workflow: --results results)
    python benchmarks/rl_signal_validity.py --results results --trainer rloo --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402,F401  (one torch thread, as every workflow job)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from rmroute import report  # noqa: E402
from rmroute.config import load_config  # noqa: E402
from rmroute.io import read_jsonl, write_table  # noqa: E402
from rmroute.methods import Method, Recipe  # noqa: E402
from rmroute.rl import SIGNALS, spearman  # noqa: E402
from rmroute.stages.online_rl import rl_iteration  # noqa: E402
from rmroute.testbed import DOMAINS  # noqa: E402


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "config/grpo.yaml"))
    parser.add_argument("--results", default=None, help="results directory with data/, models/sft, rms/ (default: the config's)")
    parser.add_argument("--trainer", default="grpo", choices=["grpo", "rloo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(ROOT / "results/benchmarks/rl_signal_validity.tsv"))
    args = parser.parse_args(argv)

    config, sheet, _ = load_config(yaml.safe_load(Path(args.config).read_text()), ROOT)
    base = Path(args.results or ROOT / config["results_dir"])
    pool = sheet.to_dict("records")
    for row in pool:
        row["path"] = str(base / "rms" / row["rm_id"]) if row["source"] == "train" else row["source"]
    pool = [row for row in pool if not str(row["source"]).startswith("r2m")]
    split = config.get("evaluation", {}).get("validation_split", "router_offline")
    prompts = base / "data" / f"{split}.jsonl"
    budget = dict(config["budget"])
    per_domain = min(sum(r["domain"] == d for r in read_jsonl(prompts)) for d in DOMAINS)
    budget["prompts_per_iteration"] = len(DOMAINS) * (per_domain // budget["batch_prompts"]) * budget["batch_prompts"]
    recipe = Recipe(trainer=args.trainer, lr=0.0001, normaliser="quantile-laser", signal="prior_rank")
    method = replace(Method(name=f"random-query@{args.trainer}", router="random", granularity="query", recipe=recipe,
                            batch_prompts=budget["batch_prompts"]), rms=tuple(r["rm_id"] for r in pool))
    print(f"{len(pool)} RMs, {budget['prompts_per_iteration']} {split} prompts per seed, {args.trainer}, "
          f"random RM per prompt group, seeds {args.seeds}")
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            start = time.perf_counter()
            out = Path(tmp) / str(seed)
            rl_iteration(policy_dir=str(base / "models" / "sft"), prompts_path=str(prompts), method=method.to_dict(),
                         pool_rows=pool, previous_state=None, budget=budget, batch_order=budget["batch_order"], seed=seed,
                         it=1, threads=1, device="cpu", out_policy=str(out / "policy"), out_state=str(out / "state.json"),
                         out_decisions=str(out / "decisions.parquet"), out_samples=str(out / "samples.jsonl"))
            frames.append(pd.read_parquet(out / "decisions.parquet"))
            print(f"seed {seed}: {time.perf_counter() - start:.1f} s")
    decisions = pd.concat(frames, ignore_index=True)
    table = report.reward_validity(decisions, by="reward_signal", variants=SIGNALS)
    write_table(table, args.out)
    rows = []
    d = decisions[decisions["n_pairs"] > 0]
    for signal in SIGNALS:
        column = "bandit_reward_raw" if signal == "prior_rank" else f"bandit_reward_raw_{signal}"
        part = table[(table["reward_signal"] == signal) & (table["rm"] == "all")]
        both = d[[column, "gold_agreement"]].dropna()  # a group with constant scores or log-probs has no rank correlation
        row = {"signal": signal, "pooled": spearman(both[column], both["gold_agreement"]), "decisions": len(both)}
        row.update({dom: v for dom, v in zip(part["domain"], part["spearman_reward_gold"])})
        row["arms_mean"] = float(np.nanmean(part["spearman_arms"]))
        rows.append(row)
    summary = pd.DataFrame(rows)
    print("\nSpearman(raw reward of a decision, routed RM's gold ranking agreement on its group), "
          "per domain and pooled; arms_mean = mean over domains of Spearman(RM's mean reward, RM's gold agreement):")
    print(summary.round(3).to_string(index=False))
    print(f"\nfull table: {args.out}")
    return summary


if __name__ == "__main__":
    main()
