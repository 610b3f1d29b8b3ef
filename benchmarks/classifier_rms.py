"""Classifier-RM recipes on the testbed: held-out pair accuracy per domain of a BT classifier
trained through `rmroute.rewards.pool.train_reward_model` with one recipe, on the pairs of a
results directory that holds the data, the SFT policy and the RM pool (`make workflow`, or
`snakemake results/tables/rm_accuracy.tsv`).

Each recipe is an init (the SFT policy or a trained RM of the pool), a domain mix and pair count
(drawn as `train_rm` draws them, seed 0), steps, learning rate, new layers and whether the init
stays frozen. The measurement is the one of `tables/rm_accuracy.tsv`: the `test` pairs that gold
can tell apart, one accuracy per domain. Appends one row per run to `--out`.

    python benchmarks/classifier_rms.py --recipe yes-no-over-specialist --results results
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
import pandas as pd

from rmroute import models
from rmroute.io import read_jsonl, write_table
from rmroute.rewards.pool import RewardModel, parse_mix, rm_training_pairs, train_reward_model

ALL = "arith:0.25,facts_mc:0.25,facts_yesno:0.25,instruct:0.25"
AMC, YI = "arith:0.5,facts_mc:0.5", "facts_yesno:0.5,instruct:0.5"
# name -> (init, domain mix, pairs, label noise, steps, lr, new layers, freeze init)
RECIPES = {
    "general-as-before": ("sft", ALL, 500, 0.0, 300, 1e-3, 0, False),
    "general-over-arith-mc-specialist": ("rm_arith_mc", ALL, 500, 0.0, 300, 1e-3, 0, False),
    "general-from-sft-2-new": ("sft", ALL, 4000, 0.0, 600, 5e-4, 2, False),
    "arith-mc-from-sft": ("sft", AMC, 2000, 0.0, 300, 1e-3, 0, False),
    "arith-mc-over-specialist": ("rm_arith_mc", AMC, 2000, 0.0, 300, 1e-3, 0, False),
    "arith-mc-over-specialist-1500-steps": ("rm_arith_mc", AMC, 2000, 0.0, 1500, 1e-3, 0, False),
    "arith-mc-over-specialist-2-new": ("rm_arith_mc", AMC, 2000, 0.0, 600, 5e-4, 2, False),
    "yes-no-over-specialist": ("rm_yesno_ins", YI, 2000, 0.0, 300, 1e-3, 0, False),
    "yes-no-over-specialist-1500-steps": ("rm_yesno_ins", YI, 2000, 0.0, 1500, 1e-3, 0, False),
    "yes-no-over-specialist-2-new-frozen-300-steps": ("rm_yesno_ins", YI, 2000, 0.0, 300, 1e-3, 2, True),
    "yes-no-over-specialist-2-new-frozen-1500-steps": ("rm_yesno_ins", YI, 2000, 0.0, 1500, 3e-3, 2, True),
    "yes-no-over-specialist-2-new-1500-steps": ("rm_yesno_ins", YI, 2000, 0.0, 1500, 3e-4, 2, False),
    "yes-no-over-specialist-2-new": ("rm_yesno_ins", YI, 2000, 0.0, 600, 5e-4, 2, False),
}
DOMAINS = ("arith", "facts_mc", "facts_yesno", "instruct")


def held_out_accuracy(rm: RewardModel, pairs: list[dict]) -> dict[str, float]:
    out = {}
    for domain in DOMAINS:
        rows = [p for p in pairs if p["domain"] == domain and p["chosen_gold"] != p["rejected_gold"]]
        prompts = [p["prompt"] for p in rows]
        chosen = rm.score(prompts, [p["chosen"] for p in rows])
        rejected = rm.score(prompts, [p["rejected"] for p in rows])
        out[domain] = sum(a > b for a, b in zip(chosen, rejected)) / len(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    parser.add_argument("--results", default="results", help="results directory with data/, models/sft and rms/")
    parser.add_argument("--out", default=str(common.OUT_DIR / "classifier_rms.tsv"))
    args = parser.parse_args()
    print(common.pin_threads())
    init, mix, n_pairs, noise, steps, lr, new_layers, freeze = RECIPES[args.recipe]
    results = Path(args.results)
    tokenizer = models.load_tokenizer(results / "models" / "sft")
    models.set_seed(0)
    pairs = rm_training_pairs(read_jsonl(results / "data" / "pairs" / "rm_train.jsonl"), parse_mix(mix), n_pairs, noise, 0)
    source = results / "models" / "sft" if init == "sft" else results / "rms" / init
    start = time.perf_counter()
    model = train_reward_model(str(source), tokenizer, pairs, loss="bt", steps=steps, batch_size=32, lr=lr, seed=0,
                               new_layers=new_layers, freeze_init=freeze)
    seconds = time.perf_counter() - start
    out_dir = results / "benchmarks" / "classifier_rms" / args.recipe
    models.save_atomic(model, tokenizer, out_dir)
    accuracy = held_out_accuracy(RewardModel(args.recipe, str(out_dir), device="cpu"),
                                 read_jsonl(results / "data" / "pairs" / "test.jsonl"))
    row = {"recipe": args.recipe, "init": init, "domain_mix": mix, "n_pairs": n_pairs, "steps": steps, "lr": lr,
           "new_layers": new_layers, "freeze_init": freeze, **accuracy, "train_s": round(seconds, 1)}
    print(row)
    out = Path(args.out)
    table = pd.concat([pd.read_csv(out, sep="\t"), pd.DataFrame([row])]) if out.exists() else pd.DataFrame([row])
    write_table(table, out)


if __name__ == "__main__":
    main()
