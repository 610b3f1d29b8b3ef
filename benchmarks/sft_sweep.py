"""SFT step-count sweep: greedy test accuracy per domain every N SFT steps, to pick `sft.steps` so
that every domain starts routed DPO between 25% and 75% (room to improve, and to get worse).

Builds the testbed, tokenizer and tiny policy exactly as the workflow does from a config file,
trains with `rmroute.sft.train_sft`, and evaluates inside the training loop. Step s of a sweep is
the policy a run with `sft.steps: s` trains only when the learning-rate schedule and the batch
order do not depend on the total step count (see `rmroute.sft`); confirm the chosen value with
the workflow's SFT accuracy table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
import pandas as pd
import yaml

from rmroute import models
from rmroute.io import atomic_file
from rmroute.settings import SFT
from rmroute.testbed import TestbedConfig, generate_splits, score_record

BAND = (0.25, 0.75)


def in_band_ranges(table: pd.DataFrame, band=BAND) -> list[tuple[int, int]]:
    """Contiguous runs of evaluated steps at which every domain's accuracy lies inside `band`."""
    wide = table.pivot(index="step", columns="domain", values="accuracy").sort_index()
    ok = ((wide >= band[0]) & (wide <= band[1])).all(axis=1)
    ranges, start, last = [], None, None
    for step, inside in ok.items():
        if inside and start is None:
            start = step
        if not inside and start is not None:
            ranges.append((start, last))
            start = None
        last = step
    if start is not None:
        ranges.append((start, last))
    return ranges


def save_figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.axhspan(*BAND, color="0.9", zorder=0, label="25-75% band")
    sns.lineplot(data=table, x="step", y="accuracy", hue="domain", marker="o", ax=ax)
    ax.set(xlabel="SFT step", ylabel="greedy test accuracy", ylim=(0, 1))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=150)
    plt.close(fig)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--steps", type=int, default=1000, help="SFT steps to train (the sweep's last step)")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's `threads`)")
    parser.add_argument("--out", default=str(common.OUT_DIR))
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    threads = args.threads or int(config.get("threads", 1))
    models.set_threads(threads)
    print(f"torch threads: {threads}; config {args.config}; {args.steps} steps, evaluated every {args.eval_every}")

    seed, policy_cfg, sft = int(config["seed"]), config["policy"], SFT.from_config(config["sft"])  # the schema's defaults
    splits = generate_splits(TestbedConfig(seed=seed, **config["testbed"]))
    records, test = splits["sft"], splits["test"]
    models.set_seed(seed)
    model, tokenizer = models.initial_policy(policy_cfg, [r["prompt"] + r["answer"] for r in records], config["device"])
    max_new_tokens = int(config["evaluation"]["max_new_tokens"])
    rows = []
    started = time.perf_counter()

    def evaluate(step: int, policy) -> None:
        outputs = models.generate(policy, tokenizer, [r["prompt"] for r in test], max_new_tokens=max_new_tokens)
        scores = pd.DataFrame({"domain": [r["domain"] for r in test],
                               "score": [score_record(r, o[0]) for r, o in zip(test, outputs)]})
        for domain, acc in scores.groupby("domain")["score"].mean().items():
            rows.append({"step": step, "domain": domain, "accuracy": float(acc)})
        line = "  ".join(f"{d} {a:.2f}" for d, a in scores.groupby("domain")["score"].mean().items())
        print(f"step {step:5d} ({time.perf_counter() - started:6.0f} s): {line}", flush=True)

    evaluate(0, model.eval())
    model.train()
    from rmroute.sft import train_sft

    train_sft(model, tokenizer, records, steps=args.steps, batch_size=sft.batch_size, lr=sft.lr,
              warmup_steps=sft.warmup_steps, seed=seed, mix=sft.mix, threads=threads,
              eval_every=args.eval_every, eval_fn=evaluate, use_cpu=config.get("device", "cpu") == "cpu")
    if args.steps % args.eval_every:
        evaluate(args.steps, model.eval())
    table = pd.DataFrame(rows)
    path = common.write_tsv(table, "sft_sweep.tsv", args.out)
    figure = Path(args.out) / "sft_sweep.png"
    save_figure(table, figure)
    print(f"wrote {path} and {figure}")
    ranges = in_band_ranges(table)
    if ranges:
        spans = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in ranges)
        print(f"every domain within {BAND[0]:.0%}-{BAND[1]:.0%} at steps: {spans} (config sft.steps = {sft.steps})")
    else:
        print(f"no evaluated step has every domain within {BAND[0]:.0%}-{BAND[1]:.0%}; widen --steps or lower --eval-every")
    return table


if __name__ == "__main__":
    main()
