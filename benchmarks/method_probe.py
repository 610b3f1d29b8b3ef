"""One method's routed iterations in one process, for calibrating the testbed and the budget.

Runs the workflow's own stage functions (`rmroute.stages.rollout`, `train_iteration`,
`evaluate_policy`) for one method and seed on an existing results directory that already holds
the data, the SFT policy and the RM pool (`snakemake --cores all results/tables/rm_accuracy.tsv`;
and `results/offline_router/model` for thompson and offline-only), without Snakemake's per-job
start-up. `--set key=value` overrides any config key (dotted path, YAML value), so a budget or
recipe can be tried without editing the config. It writes under `--out` only and prints one line
per iteration: accuracy per domain, the pairs trained on and their share that gold prefers.

    python benchmarks/method_probe.py --method oracle --seed 0 --out results/probe/oracle0
    python benchmarks/method_probe.py --method oracle --seed 0 --out /tmp/p --set budget.temperature=0.8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rmroute import stages  # noqa: E402
from rmroute.config import load_config  # noqa: E402
from rmroute.io import read_jsonl  # noqa: E402


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        node, parts = config, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise SystemExit(f"--set {key}: {part!r} is not a config section")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(value)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "config/config.yaml"))
    parser.add_argument("--results", default=None, help="results directory with data/, models/sft, rms/ (default: the config's)")
    parser.add_argument("--method", default="oracle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="where this probe's iterations go")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args()

    config = apply_overrides(yaml.safe_load(Path(args.config).read_text()), args.set)
    config, sheet, methods = load_config(config, ROOT)
    if args.method not in methods:
        raise SystemExit(f"--method {args.method!r}: not in the config's methods {sorted(methods)}")
    method = methods[args.method]
    base = Path(args.results or ROOT / config["results_dir"])
    pool = sheet.to_dict("records")
    for row in pool:
        row["path"] = str(base / "rms" / row["rm_id"]) if row["source"] == "train" else row["source"]
    offline = str(base / "offline_router" / "model") if method.needs_offline_router else None
    sft = base / "models" / "sft"
    sft_table = base / "eval" / "sft.tsv"
    if sft_table.exists():
        import pandas as pd

        acc = pd.read_csv(sft_table, sep="\t").query("metric == 'accuracy'")
        print("SFT: " + " ".join(f"{d}={v:.3f}" for d, v in zip(acc["domain"], acc["value"])) + f" avg={acc['value'].mean():.4f}")
    out = Path(args.out)
    previous, state = str(sft), None
    for it in range(1, config["budget"]["iterations"] + 1):
        start = time.perf_counter()
        d = out / f"it{it}"
        d.mkdir(parents=True, exist_ok=True)
        stages.rollout(previous, str(base / "data/rollout.jsonl"), config["budget"], args.seed, it, 1, "cpu", str(d / "rollouts.jsonl"))
        reference = str(sft) if method.recipe.reference == "sft" else previous
        stages.train_iteration(
            policy_dir=previous, reference_dir=reference, rollouts_path=str(d / "rollouts.jsonl"), method=method.to_dict(),
            pool_rows=pool, previous_state=state, offline_dir=offline, batch_order=config["budget"]["batch_order"],
            max_length=config["policy"]["max_length"], seed=args.seed, it=it, threads=1, device="cpu",
            out_policy=str(d / "policy"), out_state=str(d / "router_state.json"), out_decisions=str(d / "decisions.parquet"),
            out_pairs=str(d / "pairs.jsonl"))
        pairs = read_jsonl(d / "pairs.jsonl")
        right = sum(p["chosen_gold"] > p["rejected_gold"] for p in pairs) / max(1, len(pairs))
        table = stages.evaluate_policy(str(d / "policy"), str(base / "data/test.jsonl"), config["evaluation"]["max_new_tokens"], 1,
                                       "cpu", str(d / "eval.tsv"))
        acc = table[table["metric"] == "accuracy"].set_index("domain")["value"]
        print(f"{args.method} seed={args.seed} it={it}: " + " ".join(f"{k}={v:.3f}" for k, v in acc.items())
              + f" avg={acc.mean():.4f} pairs={len(pairs)} gold_right={right:.2f} ({time.perf_counter() - start:.0f} s)", flush=True)
        previous, state = str(d / "policy"), str(d / "router_state.json")


if __name__ == "__main__":
    main()
