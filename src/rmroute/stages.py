"""One function per workflow stage: read the stage's input files, call the library, write its
outputs atomically. The Snakemake scripts only unpack `snakemake.*` and call these, so every
stage can be run and tested without Snakemake.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from rmroute import models
from rmroute.io import read_jsonl, save_router_state, write_jsonl, write_table
from rmroute.testbed import DOMAINS, TestbedConfig, generate_splits, score_record

HELD_OUT_SPLITS = ("test", "test_ood")  # the offline router's in- and out-of-domain evaluation


# ---------------------------------------------------------------- data and policy


def prepare_data(testbed: dict, seed: int, out_dir: str | os.PathLike, hf_data: dict | None = None) -> None:
    """The testbed's splits, generated, or filled from Hugging Face datasets at paper scale."""
    if hf_data:
        from rmroute.hf_data import hf_splits

        splits = {**hf_splits(hf_data, testbed["split_sizes"], testbed.get("ood_size", 0), seed), "facts": []}
    else:
        splits = generate_splits(TestbedConfig(seed=seed, **testbed))
    for name, records in splits.items():
        write_jsonl(records, Path(out_dir) / f"{name}.jsonl")


def band_margin(accuracy: dict[str, float], band: tuple[float, float]) -> float:
    """How deep inside [lo, hi] the worst domain lies (negative when some domain is outside)."""
    lo, hi = band
    return min(min(a - lo, hi - a) for a in accuracy.values())


def train_sft_policy(sft_path: str, policy: dict, sft: dict, seed: int, threads: int, device: str, out_dir: str,
                     val_path: str | None = None, selection_path: str | None = None, max_new_tokens: int = 24) -> None:
    """Tokenizer + tiny Llama (policy.source = build) or an existing causal LM, then SFT.

    With `sft.select: band` the policy is evaluated (greedy, per domain) on the validation prompts
    every `sft.select_every` steps and the checkpoint whose worst domain lies deepest inside
    `sft.band` is kept. Where each domain's accuracy rises during training moves with the
    floating-point details of the machine; choosing the step on held-out prompts keeps every
    domain's starting point in the band on any machine, where a fixed step count does not. The test split is never read here; greedy answers
    are cut at `max_new_tokens`, as in the evaluation.
    """
    import torch

    from rmroute.sft import train_sft

    models.set_threads(threads)
    models.set_seed(seed)
    records = read_jsonl(sft_path)
    model, tokenizer = models.initial_policy(policy, [r["prompt"] + r["answer"] + r.get("demonstration", "") for r in records], device)
    select = sft.get("select", "last")
    if select == "band" and not val_path:
        raise ValueError("sft.select: band needs validation prompts (val_path)")
    val = read_jsonl(val_path) if select == "band" else []
    rows: list[dict] = []
    best: dict = {"margin": float("-inf"), "step": 0, "state": None}
    band = tuple(sft.get("band", (0.25, 0.75)))

    def evaluate(step: int, current) -> None:
        from rmroute.evaluate import evaluation_table, greedy_outputs

        rng = torch.get_rng_state()  # greedy decoding must not move the training's random stream
        outputs = greedy_outputs(current, tokenizer, val, max_new_tokens)
        torch.set_rng_state(rng)
        table = evaluation_table(val, outputs, None)
        accuracy = dict(zip(table["domain"], table["value"].astype(float)))
        margin = band_margin(accuracy, band)
        rows.extend({"step": step, "domain": d, "accuracy": a, "margin": margin} for d, a in accuracy.items())
        print(f"SFT step {step}: " + " ".join(f"{d} {a:.3f}" for d, a in accuracy.items()) + f" (margin {margin:+.3f})", flush=True)
        if margin > best["margin"]:  # the earliest checkpoint of the deepest margin
            best.update(margin=margin, step=step, state={k: v.detach().clone() for k, v in current.state_dict().items()})

    if sft["steps"] > 0:
        every = int(sft.get("select_every", 50)) if select == "band" else 0
        train_sft(model, tokenizer, records, steps=sft["steps"], batch_size=sft["batch_size"], lr=sft["lr"],
                  warmup_steps=sft.get("warmup_steps", 0), seed=seed, mix=sft["mix"], use_cpu=device == "cpu",
                  max_length=int(policy.get("max_length", 256)),
                  eval_every=every, eval_fn=evaluate if every else None)
    if select == "band":
        if not rows or rows[-1]["step"] != sft["steps"]:
            evaluate(sft["steps"], model.eval())
        model.load_state_dict(best["state"])
        print(f"SFT: kept step {best['step']} of {sft['steps']} (worst domain {best['margin']:+.3f} inside the band {band})")
    if selection_path:
        table = pd.DataFrame(rows, columns=["step", "domain", "accuracy", "margin"])
        table["selected"] = table["step"] == best["step"] if select == "band" else False
        write_table(table, selection_path)
    models.save_atomic(model.eval(), tokenizer, out_dir)


def evaluate_policy(policy_dir: str, test_path: str, max_new_tokens: int, threads: int, device: str,
                    out_tsv: str, sft_outputs: str | None = None, out_outputs: str | None = None) -> pd.DataFrame:
    """Greedy test accuracy per domain (+ win rate vs SFT when SFT outputs are given)."""
    return evaluate_policies([policy_dir], test_path, max_new_tokens, threads, device, [out_tsv], sft_outputs=sft_outputs,
                             out_outputs=[out_outputs] if out_outputs else None)[0]


def evaluate_policies(policy_dirs: list[str], test_path: str, max_new_tokens: int, threads: int, device: str,
                      out_tsvs: list[str], sft_outputs: str | None = None,
                      out_outputs: list[str] | None = None, validation_path: str | None = None,
                      out_validation_tsvs: list[str] | None = None) -> list[pd.DataFrame]:
    """`evaluate_policy` for several policies in one process (one run's iterations): the test
    split, the SFT outputs and the libraries are loaded once instead of once per policy.

    With `validation_path`, each loaded policy is also evaluated greedily on those prompts
    (accuracy per domain, the same table layout without win rates) into `out_validation_tsvs`:
    the accuracy that choices such as the best single RM are made on, never the test split's."""
    from rmroute.evaluate import evaluation_table, greedy_outputs

    if len(policy_dirs) != len(out_tsvs):
        raise ValueError(f"{len(policy_dirs)} policies but {len(out_tsvs)} output tables")
    if (validation_path is None) != (out_validation_tsvs is None):
        raise ValueError(f"validation_path ({validation_path!r}) and out_validation_tsvs ({out_validation_tsvs!r}) "
                         "go together")
    if out_validation_tsvs is not None and len(out_validation_tsvs) != len(policy_dirs):
        raise ValueError(f"{len(policy_dirs)} policies but {len(out_validation_tsvs)} validation tables")
    models.set_threads(threads)
    records = read_jsonl(test_path)
    validation = read_jsonl(validation_path) if validation_path else None
    base = [r["output"] for r in read_jsonl(sft_outputs)] if sft_outputs else None
    tables = []
    for i, (policy_dir, out_tsv) in enumerate(zip(policy_dirs, out_tsvs)):
        policy, tokenizer = models.load_policy(policy_dir, device=device), models.load_tokenizer(policy_dir)
        outputs = greedy_outputs(policy, tokenizer, records, max_new_tokens)
        tables.append(evaluation_table(records, outputs, base))
        write_table(tables[-1], out_tsv)
        if out_outputs:
            write_jsonl([{"id": r["id"], "output": o} for r, o in zip(records, outputs)], out_outputs[i])
        if validation is not None:
            write_table(evaluation_table(validation, greedy_outputs(policy, tokenizer, validation, max_new_tokens), None),
                        out_validation_tsvs[i])
    return tables


def of_domains(rows: list[dict], domains) -> list[dict]:
    """The rows (prompts or rollout groups) of `domains`, a method's `domains`; empty or None = every domain."""
    return [r for r in rows if not domains or r["domain"] in domains]


def iteration_prompts(records: list[dict], prompts_per_iteration: int, seed: int, it: int) -> list[dict]:
    """The prompts of iteration `it` for run seed `seed`: equal share per domain, disjoint across
    iterations, the same for every method (so methods are compared on the same prompts)."""
    per_domain = prompts_per_iteration // len(DOMAINS)
    chosen = []
    for domain in DOMAINS:
        pool = sorted((r for r in records if r["domain"] == domain), key=lambda r: r["id"])
        random.Random(f"{seed}-{domain}").shuffle(pool)
        chosen += pool[(it - 1) * per_domain : it * per_domain]
    return chosen


def rollout(policy_dir: str, rollout_path: str, budget: dict, seed: int, it: int, threads: int, device: str, out_path: str,
            backend: dict | None = None, domains: list[str] | None = None) -> None:
    """n samples per prompt from the current policy, with their gold scores (analysis only).

    `budget` needs prompts_per_iteration, samples_per_prompt, temperature and max_new_tokens;
    `backend` is the config's `rollout:` block (rmroute.backends): transformers or vLLM sampling.
    `domains` (a method's `domains`) keeps only those domains' prompts; empty or None = every domain."""
    from rmroute import backends

    models.set_threads(threads)
    records = iteration_prompts(read_jsonl(rollout_path), budget["prompts_per_iteration"], seed, it)
    records = of_domains(records, domains)
    prompts = [r["prompt"] for r in records]
    sampling = dict(n=budget["samples_per_prompt"], temperature=budget["temperature"], max_new_tokens=budget["max_new_tokens"],
                    seed=seed * 1000 + it)
    if backends.settings(backend)["backend"] == "vllm":
        samples = backends.vllm_generate(policy_dir, prompts, block=backend, **sampling)
    else:
        samples = models.generate(models.load_policy(policy_dir, device=device), models.load_tokenizer(policy_dir), prompts,
                                  progress=True, **sampling)
    write_jsonl([{**r, "responses": group, "gold": [score_record(r, s) for s in group]} for r, group in zip(records, samples)],
                out_path)


# ---------------------------------------------------------------- reward models


def build_rm_pairs(sft_dir: str, split_paths: dict[str, str], samples: int, temperature: float, seed: int,
                   threads: int, device: str, out_paths: dict[str, str]) -> None:
    """Gold-labelled pairs from the SFT policy's own samples, one file per split."""
    from rmroute.rewards.pool import preference_pairs

    models.set_threads(threads)
    policy = models.load_policy(sft_dir, device=device)
    tokenizer = models.load_tokenizer(sft_dir)
    for i, (split, path) in enumerate(sorted(split_paths.items())):
        records = read_jsonl(path)
        groups = models.generate(policy, tokenizer, [r["prompt"] for r in records], n=samples, temperature=temperature,
                                 max_new_tokens=24, seed=seed + 7919 * (i + 1), progress=True)
        write_jsonl(preference_pairs(records, groups, seed + i), out_paths[split])


def train_rm(sft_dir: str, pairs_path: str, row: dict, rm_training: dict, seed: int, threads: int, device: str, out_dir: str,
             init_dir: str | None = None) -> None:
    """One testbed RM of the sheet, a classifier (bt/bsr) or a generative RM (lm), initialised from
    `init_dir` (the row's `init`: the SFT policy, or another RM of the sheet) and tokenised with the
    SFT policy's tokenizer."""
    from rmroute.rewards.pool import parse_mix, rm_training_pairs

    models.set_threads(threads)
    models.set_seed(seed)
    tokenizer = models.load_tokenizer(sft_dir)
    pairs = rm_training_pairs(read_jsonl(pairs_path), parse_mix(row["domain_mix"]), int(row["n_pairs"]),
                              float(row["label_noise"]), seed)
    model = fit_rm(init_dir or sft_dir, tokenizer, pairs, row["loss"], rm_training, seed, device)
    models.save_atomic(model, tokenizer, out_dir)


def fit_rm(init_dir: str, tokenizer, pairs: list[dict], loss: str, rm_training: dict, seed: int, device: str):
    """An RM of kind `loss` trained on `pairs` from `init_dir` with the `rm_training` settings."""
    from rmroute.rewards.pool import rm_kind, train_generative_rm, train_reward_model

    if rm_kind(loss) == "generative":
        lm = rm_training["generative"]
        return train_generative_rm(init_dir, tokenizer, pairs, steps=lm["steps"], batch_size=lm["batch_size"], lr=lm["lr"],
                                   seed=seed, use_cpu=device == "cpu")
    return train_reward_model(init_dir, tokenizer, pairs, loss=loss, steps=rm_training["steps"],
                              batch_size=rm_training["batch_size"], lr=rm_training["lr"], seed=seed,
                              bsr_coef=rm_training.get("bsr_coef", 1e-3),
                              bsr_batch_scale=rm_training.get("bsr_batch_scale", True),
                              new_layers=rm_training.get("new_layers", 0), freeze_init=rm_training.get("freeze_init", False),
                              use_cpu=device == "cpu")


def load_pool(pool_rows: list[dict], device: str, *, r2m: dict | None = None, r2m_states: str | None = None,
              r2m_total_steps: int = 1, seed: int = 0):
    """The RMs of `pool_rows` in order. R2M rows (`source: r2m:<base>` and its controls; `path` is
    the base RM's) become `R2MRewardModel`s with the settings `r2m` (the config's `r2m:` block),
    continuing from `<r2m_states>/<rm_id>.safetensors` where that file exists."""
    from rmroute.rewards.pool import RewardModel
    from rmroute.rewards.r2m import R2M_SETTING_KEYS, R2MRewardModel, parse_r2m_source

    pool = []
    for r in pool_rows:
        parsed = parse_r2m_source(r["source"])
        if parsed is None:
            pool.append(RewardModel(rm_id=r["rm_id"], source=r["path"], dtype=r["dtype"], batch_size=int(r["batch_size"]),
                                    max_length=int(r["max_length"]), trust_remote_code=bool(r["trust_remote_code"]),
                                    chat_template=r.get("chat_template", "none"), loss=r.get("loss", "bt"), device=device))
            continue
        state = Path(r2m_states or "") / f"{r['rm_id']}.safetensors"
        settings = {k: v for k, v in (r2m or {}).items() if k in R2M_SETTING_KEYS}
        pool.append(R2MRewardModel(r["rm_id"], r["path"], parsed[0], settings, total_steps=r2m_total_steps,
                                   state_path=str(state) if r2m_states and state.exists() else None, seed=seed,
                                   device=device, max_length=int(r["max_length"]), batch_size=int(r["batch_size"])))
    return pool


def static_pool_rows(pool_rows: list[dict]) -> list[dict]:
    """The sheet rows that score without the policy (everything but R2M rows): what offline
    behaviour data, the RM accuracy table and the offline router cover."""
    from rmroute.rewards.sources import parse_r2m_source

    return [r for r in pool_rows if parse_r2m_source(r["source"]) is None]


def rm_behaviour(pool_rows: list[dict], pair_paths: dict[str, str], threads: int, device: str, out_path: str) -> None:
    """Every RM scores every pair of the given splits (offline only): one row per pair and RM."""
    models.set_threads(threads)
    rows = []
    for rm in load_pool(static_pool_rows(pool_rows), device):
        for split, path in sorted(pair_paths.items()):
            pairs = read_jsonl(path)
            prompts = [p["prompt"] for p in pairs]
            sc = rm.score(prompts, [p["chosen"] for p in pairs])
            sr = rm.score(prompts, [p["rejected"] for p in pairs])
            for p, a, b in zip(pairs, sc, sr):
                rows.append({"split": split, "pair_id": p["id"], "domain": p["domain"], "rm": rm.rm_id,
                             "score_chosen": a, "score_rejected": b, "correct": int(a > b),
                             "gold_tie": int(p["chosen_gold"] == p["rejected_gold"])})
    write_table(pd.DataFrame(rows), out_path)


# ---------------------------------------------------------------- BSR evaluation (BSR paper, Tables 1 and 5)


def bsr_groups(sft_dir: str, response_policy_dir: str, split_paths: dict[str, str], samples: int, temperature: float,
               max_new_tokens: int, seed: int, threads: int, device: str, out_path: str) -> None:
    """Responses per prompt, with their gold scores, for the BSR splits: the in-domain (`test`) and
    prompt-OOD (`test_ood`) prompts answered by the SFT policy and by the differently trained
    response-OOD policy (in-domain prompts: response-OOD; OOD prompts: mutual-OOD)."""
    from rmroute.rewards.bsr_eval import SPLIT_SOURCES

    models.set_threads(threads)
    policies = {"sft": sft_dir, "response": response_policy_dir}
    out = []
    for k, (split, (prompt_split, source)) in enumerate(SPLIT_SOURCES.items()):
        policy = models.load_policy(policies[source], device=device)
        tokenizer = models.load_tokenizer(policies[source])
        records = read_jsonl(split_paths[prompt_split])
        groups = models.generate(policy, tokenizer, [r["prompt"] for r in records], n=samples, temperature=temperature,
                                 max_new_tokens=max_new_tokens, seed=seed + 104729 * (k + 1))
        out += [{"split": split, "id": r["id"], "domain": r["domain"], "prompt": r["prompt"], "responses": group,
                 "gold": [score_record(r, s) for s in group]} for r, group in zip(records, groups)]
    write_jsonl(out, out_path)


def bsr_rm(init_dir: str, tokenizer_dir: str, pairs_path: str, test_pairs_path: str, groups_path: str, row: dict,
           rm_training: dict, loss: str, data_seed: int, seed: int, threads: int, device: str, out_dir: str,
           out_table: str, out_norms: str) -> None:
    """Train one RM of a BT/BSR comparison and take every BSR measurement of it.

    The sheet row `row` gives the training data (domain mix, pair count, label noise, drawn with
    `data_seed`, the same for both losses and every seed); `loss` is `bt` or `bsr` (λ and its
    batch-size switch from `rm_training`); `seed` seeds the head's initialisation and the batch
    order. Writes the RM, its tidy rows (loss, seed, split, metric, value) and its hidden-state
    norms (loss, seed, split, norm)."""
    from rmroute.rewards.bsr_eval import evaluate_rm
    from rmroute.rewards.pool import CLASSIFIER_LOSSES, parse_mix, rm_training_pairs

    if loss not in CLASSIFIER_LOSSES:
        raise ValueError(f"bsr_rm: loss {loss!r} is not a classifier loss {CLASSIFIER_LOSSES}")
    models.set_threads(threads)
    models.set_seed(seed)
    tokenizer = models.load_tokenizer(tokenizer_dir)
    mix = parse_mix(row["domain_mix"])
    pairs = rm_training_pairs(read_jsonl(pairs_path), mix, int(row["n_pairs"]), float(row["label_noise"]), data_seed)
    model = fit_rm(init_dir, tokenizer, pairs, loss, rm_training, seed, device)
    models.save_atomic(model, tokenizer, out_dir)
    rows, norms = evaluate_rm(model, tokenizer, pairs, read_jsonl(test_pairs_path), read_jsonl(groups_path),
                              [d for d, w in mix.items() if w > 0], max_length=int(row["max_length"]), seed=seed)
    table = pd.DataFrame(rows)
    table.insert(0, "seed", seed)
    table.insert(0, "loss", loss)
    write_table(table, out_table)
    norms.insert(0, "seed", seed)
    norms.insert(0, "loss", loss)
    write_table(norms, out_norms)


def bsr_tables(tables: list[str], norms: list[str], out_table: str, out_summary: str, png: str, pdf: str) -> None:
    """bsr.tsv (tidy: loss, seed, split, metric, value, plus each split's effective-rank shift from
    the train split), the mean ± 95% CI summary beside the paper's values, and the norm figure."""
    from rmroute.rewards.bsr_eval import effective_rank_shift, norm_figure, summary_table

    table = pd.concat([pd.read_parquet(p) for p in tables], ignore_index=True)
    table = pd.concat([table, effective_rank_shift(table)], ignore_index=True)
    write_table(table, out_table)
    write_table(summary_table(table), out_summary)
    norm_figure(pd.concat([pd.read_parquet(p) for p in norms], ignore_index=True), png, pdf)


# ---------------------------------------------------------------- R2M (one iteration, beside its controls)

R2M_VARIANTS = {"r2m": "policy", "r2m-noise": "noise", "r2m-untrained": "untrained", "base": "off"}  # variant -> feedback
R2M_TRAINED = [v for v, feedback in R2M_VARIANTS.items() if feedback != "off"]  # the variants with a state file


def gold_pair_accuracy(groups: list[dict], scores: list[list[float]]) -> tuple[float, int]:
    """Share of within-prompt response pairs with different gold scores that `scores` order like
    gold (a tie in score counts as wrong), and the number of such pairs."""
    right = total = 0
    for group, s in zip(groups, scores):
        gold = group["gold"]
        for i in range(len(gold)):
            for j in range(i + 1, len(gold)):
                if gold[i] != gold[j]:
                    total += 1
                    right += (s[i] - s[j]) * (gold[i] - gold[j]) > 0
    return (right / total if total else float("nan")), total


def r2m_probe(rollouts_path: str, policy_dir: str, base_rm_dir: str, fresh_rollouts_path: str, r2m: dict, seed: int,
              threads: int, device: str, out_table: str, out_states: dict[str, str],
              rollout_policy_dir: str | None = None) -> None:
    """Train R2M and its two controls for one iteration, and measure them beside the plain base RM.

    `rollouts_path` holds the iteration's groups (prompt, responses, gold); `policy_dir` is the
    policy after the iteration's update, whose last-layer hidden states of every prompt +
    response are R2M's feedback (the paper refreshes them with the policy's last update);
    `fresh_rollouts_path` holds the next iteration's groups, sampled by that policy. Each R2M
    variant labels the iteration with its own initial scores (at ω(T), with the hidden states of
    `rollout_policy_dir`, the policy that sampled the iteration, as in the loop where R2M scores
    the rollouts before the update; default `policy_dir`), trains on its own best vs worst pairs,
    and saves its state to `out_states[variant]`. The table's rows (variant, seed,
    split, domain, metric, value) give gold pair accuracy and pair counts on the iteration's
    rollouts (`train`) and on the fresh ones (`fresh`), per domain and over all (`all`)."""
    from rmroute.rewards.r2m import R2M, R2MConfig, policy_hidden_states

    if set(out_states) != set(R2M_TRAINED):
        raise ValueError(f"out_states must name a state file for each of {R2M_TRAINED}, got {sorted(out_states)}")
    models.set_threads(threads)
    policy = models.load_policy(policy_dir, device=device)
    tokenizer = models.load_tokenizer(policy_dir)
    splits = {"train": read_jsonl(rollouts_path), "fresh": read_jsonl(fresh_rollouts_path)}
    size = len(splits["train"][0]["responses"])
    flat = {name: ([g["prompt"] for g in groups for _ in g["responses"]], [r for g in groups for r in g["responses"]])
            for name, groups in splits.items()}
    hidden = {name: policy_hidden_states(policy, tokenizer, *rows) for name, rows in flat.items()}
    policy_dim = policy.config.hidden_size
    labelling = hidden["train"]
    if rollout_policy_dir and rollout_policy_dir != policy_dir:
        before = models.load_policy(rollout_policy_dir, device=device)
        labelling = policy_hidden_states(before, models.load_tokenizer(rollout_policy_dir), *flat["train"])
        del before
    del policy
    settings = {k: v for k, v in r2m.items() if k != "method"}

    def by_group(values, n):
        return [list(values[i:i + n]) for i in range(0, len(values), n)]

    scores: dict[str, dict[str, list[list[float]]]] = {}
    states = None  # the frozen base RM's H_last, the same for every variant
    for variant, feedback in R2M_VARIANTS.items():
        model = R2M.from_base(base_rm_dir, policy_dim, R2MConfig(**settings, feedback=feedback, seed=seed), device=device)
        model.total_steps = model.steps_per_update(len(splits["train"]))
        if states is None:
            states = {name: model.rm_states(*rows) for name, rows in flat.items()}
        own = by_group(model.score_states(states["train"], labelling).tolist(), size)
        model.update([g["prompt"] for g in splits["train"]], [g["responses"] for g in splits["train"]], own,
                     by_group(hidden["train"], size))
        if variant in out_states:
            model.save(out_states[variant])
        scores[variant] = {name: by_group(model.score_states(states[name], hidden[name]).tolist(), size) for name in splits}
    rows = []
    for variant, per_split in scores.items():
        for name, groups in splits.items():
            domains = sorted({g["domain"] for g in groups})
            for domain in ["all", *domains]:
                keep = [i for i, g in enumerate(groups) if domain in ("all", g["domain"])]
                acc, n = gold_pair_accuracy([groups[i] for i in keep], [per_split[name][i] for i in keep])
                rows += [{"variant": variant, "seed": seed, "split": name, "domain": domain, "metric": "gold_pair_accuracy",
                          "value": acc}, {"variant": variant, "seed": seed, "split": name, "domain": domain,
                                          "metric": "n_pairs", "value": float(n)}]
    write_table(pd.DataFrame(rows), out_table)


R2M_PAPER = {"base": 72.3, "r2m": 78.6}  # RM accuracy on held-out pairs, vanilla -> R2M (LLaMA3-8B, RLOO; METHODS.md §4)


def r2m_tables(tables: list[str], out_table: str, out_summary: str) -> None:
    """r2m.tsv (every seed's rows) and the gold pair accuracy per variant, split and domain as
    mean ± 95% CI over seeds, with the paper's RM accuracy beside the fresh-rollout rows (in %;
    theirs is an RLOO run at 8B scale, ours one iteration of iterative DPO on the testbed)."""
    from rmroute.report import ci95

    table = pd.concat([pd.read_parquet(p) for p in tables], ignore_index=True)
    write_table(table, out_table)
    acc = table[table["metric"] == "gold_pair_accuracy"]
    summary = acc.groupby(["variant", "split", "domain"], sort=False)["value"].agg(
        mean="mean", ci95=ci95, n_seeds="size").reset_index()
    summary["paper_pct"] = [R2M_PAPER.get(v, np.nan) if (s, d) == ("fresh", "all") else np.nan
                            for v, s, d in zip(summary["variant"], summary["split"], summary["domain"])]
    write_table(summary, out_summary)


def r2m_loop_tables(decisions: dict[str, list[str]], evals: dict[str, list[str]], out_table: str,
                    out_summary: str) -> None:
    """r2m.tsv: R2M trained in the loop, its two controls and the plain base RM, each the RM of a
    single-RM run (`decisions[variant]` / `evals[variant]`: that run's decision logs per seed and
    eval tables per seed and iteration, paths .../<seed>/it<i>/eval.tsv).

    Per variant, seed and iteration: `rm_pair_accuracy`, the RM's gold pair accuracy over every
    candidate pair of the iteration's fresh rollouts (sampled by the policy entering the
    iteration, before the RM learns from them; gold is read for this table only), and
    `policy_accuracy`, the run's test accuracy after the iteration (mean over domains), both in
    %. The summary gives mean ± 95% CI over seeds beside the paper's RM accuracy (72.3 -> 78.6,
    an RLOO run at 8B scale; ours serves iterative DPO on the testbed)."""
    import re

    from rmroute.report import ci95

    rows = []
    for variant, paths in decisions.items():
        for path in paths:
            log = pd.read_parquet(path)
            for (seed, it), part in log.groupby(["seed", "iteration"]):
                total = part["gold_pairs"].sum()
                rows.append({"variant": variant, "seed": int(seed), "iteration": int(it), "metric": "rm_pair_accuracy",
                             "value": 100.0 * part["gold_pairs_agree"].sum() / total if total else np.nan})
    for variant, paths in evals.items():
        for path in paths:
            seed, it = map(int, re.search(r"/(\d+)/it(\d+)/eval\.tsv$", str(path)).groups())
            table = pd.read_csv(path, sep="\t")
            acc = table[table["metric"] == "accuracy"]["value"].mean()
            rows.append({"variant": variant, "seed": seed, "iteration": it, "metric": "policy_accuracy",
                         "value": 100.0 * acc})
    table = pd.DataFrame(rows).sort_values(["metric", "variant", "seed", "iteration"], ignore_index=True)
    write_table(table, out_table)
    summary = table.groupby(["metric", "variant", "iteration"], sort=False)["value"].agg(
        mean="mean", ci95=ci95, n_seeds="size").reset_index()
    summary["paper_pct"] = [R2M_PAPER.get(v, np.nan) if m == "rm_pair_accuracy" else np.nan
                            for m, v in zip(summary["metric"], summary["variant"])]
    write_table(summary, out_summary)


# ---------------------------------------------------------------- offline router


def train_offline_router_stage(
    pairs_path: str, behaviour_path: str, encoder_name: str, train_cfg: dict, seed: int, out_dir: str,
    out_history_tsv: str, *, device: str = "cpu", threads: int = 1,
) -> None:
    """Train the offline router on the `router_offline` pairs and every RM's verdicts on them.

    Pairs with a gold tie or on which all RMs agree are dropped; `train_offline_router` picks its
    checkpoint on a validation share of these offline rows (never a test split). `train_cfg` holds
    `OfflineTrainConfig` fields (dim, epochs, lr, batch_size, cls_weight, val_fraction, ...) and may
    hold `encoder` (equal to `encoder_name`), so the config block can be passed whole; `seed`
    seeds the split, the weights and the batch order. `out_dir` receives, via a temp directory and
    a rename, `model.safetensors`, `config.json` and `encoder.json` (encoder, enc_dim, rm_ids, and
    validation_pair_ids: the offline pairs held out to pick the checkpoint).
    The history TSV has epoch, train_loss, val_accuracy and `selected` (1 on the kept epoch).
    """
    import shutil
    from dataclasses import fields

    from rmroute.behaviour import scored_pairs
    from rmroute.encoders import ENCODER_FILE, encode_pairs, load_encoder
    from rmroute.routers import (
        OfflineTrainConfig,
        train_offline_router,
        validation_split,
    )

    models.set_threads(threads)
    known = {f.name for f in fields(OfflineTrainConfig)} - {"seed"}
    if train_cfg.get("encoder", encoder_name) != encoder_name:
        raise ValueError(f"train_cfg['encoder'] is {train_cfg['encoder']!r} but encoder_name is {encoder_name!r}")
    settings = {key: value for key, value in train_cfg.items() if key != "encoder"}
    if unknown := set(settings) - known:
        raise ValueError(f"train_cfg has unknown key(s) {sorted(unknown)}; valid: {sorted(known)}")
    behaviour = pd.read_parquet(behaviour_path)
    # train_offline_router would drop the rows where all RMs agree; they are not even encoded.
    pairs, correct, rm_ids = scored_pairs(pairs_path, behaviour, "router_offline")
    encoder = load_encoder(encoder_name, device)
    emb_chosen, emb_rejected = encode_pairs(encoder, pairs)
    cfg = OfflineTrainConfig(seed=int(seed), **settings)
    model, history = train_offline_router(emb_chosen, emb_rejected, correct, cfg)

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(tmp)
    # The offline rows it never trained on: the controlled simulation's validation stream.
    _, val_rows = validation_split(correct, cfg.val_fraction, cfg.seed)
    meta = {"encoder": encoder_name, "enc_dim": encoder.dim, "rm_ids": rm_ids,
            "validation_pair_ids": [pairs[i]["id"] for i in sorted(val_rows)]}
    (tmp / ENCODER_FILE).write_text(json.dumps(meta, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)

    frame = pd.DataFrame(history)
    best = frame["val_accuracy"].to_numpy()
    # train_offline_router keeps the first epoch reaching the best validation accuracy.
    frame["selected"] = (np.arange(len(frame)) == int(np.argmax(best))).astype(int)
    write_table(frame, out_history_tsv)


def offline_router_table(
    offline_dir: str, pair_paths: dict[str, str], behaviour_path: str, *, device: str = "cpu", threads: int = 1
) -> pd.DataFrame:
    """Accuracy of the offline router's argmax pick on the held-out splits `test` (in domain) and
    `test_ood` (out of domain), whichever of them `pair_paths` names, beside every single RM,
    majority vote and the oracle on the same rows: pairs with a gold preference where the RMs
    disagree. Columns: split, n_pairs, router_accuracy, acc_<rm>..., acc_majority_vote, acc_oracle.
    """
    import sys

    from rmroute.behaviour import majority_vote, scored_pairs
    from rmroute.encoders import (
        check_rm_order,
        encode_pairs,
        load_encoder,
        load_offline,
    )
    from rmroute.routers import router_accuracy

    models.set_threads(threads)
    splits = [s for s in HELD_OUT_SPLITS if s in pair_paths]
    if not splits:
        raise ValueError(f"pair_paths must name at least one of {HELD_OUT_SPLITS}, got {sorted(pair_paths)}")
    model, meta = load_offline(offline_dir)
    encoder = load_encoder(meta["encoder"], device)
    behaviour = pd.read_parquet(behaviour_path)
    rows = []
    for split in splits:
        try:
            pairs, correct, rm_ids = scored_pairs(pair_paths[split], behaviour, split)
        except ValueError as err:  # a small split where the RMs never disagree: report, don't fail
            print(f"offline_router_table: {err}", file=sys.stderr)
            rows.append({"split": split, "n_pairs": 0})
            continue
        check_rm_order(meta, rm_ids, offline_dir)
        row = {"split": split, "n_pairs": len(pairs),
               "router_accuracy": router_accuracy(model, *encode_pairs(encoder, pairs), correct)}
        row.update({f"acc_{rm}": float(correct[:, k].mean()) for k, rm in enumerate(rm_ids)})
        row["acc_majority_vote"] = float(majority_vote(correct).mean())
        row["acc_oracle"] = float((correct > 0.5).any(axis=1).mean())
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- one routed iteration


def train_iteration(*, policy_dir: str, reference_dir: str, rollouts_path: str, method: dict, pool_rows: list[dict],
                    previous_state: str | None, offline_dir: str | None, batch_order: str, max_length: int, seed: int,
                    it: int, threads: int, device: str, out_policy: str, out_state: str, out_decisions: str,
                    out_pairs: str, log_both_timings: bool = False, lora_block: dict | None = None,
                    r2m: dict | None = None, previous_r2m: str | None = None, out_r2m: str | None = None,
                    iterations: int = 1) -> None:
    """One routed DPO iteration with the router in the training loop.

    The rollouts are cut into training batches (`batch_order`, the same for every method); for
    each batch in turn the router picks from its current state, only the picked RM scores, the
    pair rule builds pairs, one optimiser step trains on them (TRL's DPOTrainer), and that step's
    per-pair losses reward the router before the next batch is routed. The router, normaliser
    and update count continue from `previous_state` and are written to `out_state`; every
    decision goes to `out_decisions`, every pair to `out_pairs`. With `log_both_timings` every
    batch's losses are also measured under the reward timing the router does not use, for the
    reward-validity table. With `lora_block` (the config's `lora:`) only a peft adapter trains
    (rmroute.lora): a reference equal to the entering policy is then TRL's frozen copy of the
    entering adapter, and the policy is saved as an adapter or merged.

    The pool is the method's RMs that have joined by iteration `it` (`Method.join`); a router
    state saved with fewer arms is extended with the newcomers (`add_arms`), not reset. R2M rows
    of the pool (settings `r2m`) continue from `previous_r2m`, read the entering policy's hidden
    states while they label, train on their own pairs with the updated policy's states after
    every policy optimiser step (`update_every: step`, inside the trainer) or after the whole DPO
    update (`iteration`), and are saved to `out_r2m/<rm_id>.safetensors` with their training log
    (one row per R2M optimiser step). Their schedule's T is `iterations` × this iteration's R2M
    steps (`r2m_steps_per_iteration` of its training batches).
    """
    import copy
    import tempfile

    from rmroute.dpo import RoutedDPOTrainer, routed_dpo_config
    from rmroute.io import load_router_state
    from rmroute.methods import Method, build_router
    from rmroute.online import RoutedLabeler, training_batches
    from rmroute.routers import arm_embeddings, make_normaliser

    method = Method.from_dict(method)
    run_seed = seed * 1000 + it
    models.set_threads(threads)
    models.set_seed(run_seed)
    tokenizer = models.load_tokenizer(policy_dir)
    if lora_block:
        from rmroute import lora

        policy = lora.wrap_policy(policy_dir, lora_block, device=device)
        reference = lora.dpo_reference(policy_dir, reference_dir, device=device)  # None: TRL's frozen adapter copy
    else:
        policy = models.load_policy(policy_dir, device=device).train()
        # The reference is an explicit model: TRL would otherwise reload it from the policy's path.
        same = Path(reference_dir).resolve() == Path(policy_dir).resolve()
        reference = copy.deepcopy(policy).eval() if same else models.load_policy(reference_dir, device=device)
    # `Method.domains` restricts the training stream; iteration 1's rollouts hold every domain.
    groups = of_domains(read_jsonl(rollouts_path), method.domains)
    if not groups:
        raise ValueError(f"methods.{method.name}.domains: no prompt of {list(method.domains)} in {rollouts_path}")
    batches = [[groups[i] for i in batch] for batch in training_batches(groups, method.batch_prompts, batch_order, f"{seed}-{it}")]
    from rmroute.rewards.r2m import R2MRewardModel, parse_r2m_source, r2m_steps_per_iteration

    rows = {r["rm_id"]: r for r in pool_rows}
    active = method.active_rms(it)
    before = len(method.active_rms(it - 1)) if previous_state else len(active)  # arms in the saved router state
    r2m_steps = iterations * r2m_steps_per_iteration(r2m or {}, [len(b) for b in batches])
    pool = load_pool([rows[r] for r in active], device, r2m=r2m, r2m_states=previous_r2m, r2m_total_steps=r2m_steps,
                     seed=run_seed)
    for rm in pool:
        if isinstance(rm, R2MRewardModel):
            rm.begin_iteration(policy, tokenizer, groups)  # the policy that sampled the rollouts

    prior, pair_context, dim = None, None, 1
    if method.needs_offline_router:
        from rmroute.encoders import PairEncoder

        encoder = PairEncoder(offline_dir, device=device)
        encoder.precompute(groups)  # the frozen encoder's vectors of every response, in one pass
        embeddings = arm_embeddings(encoder.model)
        # An R2M row starts from its base RM's prior: it scores as the base RM until it has learned.
        bases = [(parse_r2m_source(rows[r]["source"]) or (None, r))[1] for r in active]
        missing = [b for b in bases if b not in encoder.rm_ids]
        if missing:
            raise ValueError(f"method {method.name!r}: the offline router knows RMs {encoder.rm_ids}, not {missing}")
        prior = embeddings[[encoder.rm_ids.index(b) for b in bases]]
        pair_context, dim = encoder.candidate_contexts, encoder.dim
    elif method.granularity == "pair":  # a context-free router (random, single) routing each pair
        pair_context = lambda group, cands: np.zeros((len(cands), 1))  # noqa: E731
    elif method.router == "linucb":
        dim = int(policy.config.hidden_size)

    def prompt_context(prompts: list[str]) -> np.ndarray:
        # LASeR's context: the *current* policy's embedding of each prompt, at decision time.
        return models.prompt_embeddings(policy, tokenizer, prompts, method.context)

    router = build_router(method, before, dim, seed, None if prior is None else prior[:before])
    normaliser = make_normaliser(method.recipe.normaliser, method.recipe.normaliser_scope,
                                 **({"n_arms": len(pool)} if method.recipe.normaliser == "ema-z" else {}))
    labeler = RoutedLabeler(pool, method, router, normaliser, prompt_context=prompt_context, pair_context=pair_context,
                            seed=run_seed)
    if previous_state:
        labeler.load_state_dict(load_router_state(previous_state))
    if len(pool) > before and router is not None:  # RMs joining at this iteration: extend the state, keep what was learned
        router.add_arms(len(pool) - before, None if prior is None or method.prior != "offline" else prior[before:])
    with tempfile.TemporaryDirectory() as tmp:
        args = routed_dpo_config(tmp, method.recipe, seed=run_seed, max_length=max_length, use_cpu=device == "cpu")
        trainer = RoutedDPOTrainer(model=policy, ref_model=reference, args=args, processing_class=tokenizer, labeler=labeler,
                                   batches=batches, epochs=method.recipe.epochs, reward_timing=method.recipe.reward_timing,
                                   log_both_timings=log_both_timings)
        trainer.train()
    if lora_block:
        lora.save_policy(policy.eval(), tokenizer, out_policy, lora.settings(lora_block)["save"])
    else:
        models.save_atomic(policy.eval(), tokenizer, out_policy)
    save_router_state(labeler.state_dict(), out_state)
    if out_r2m:
        out = Path(out_r2m)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for rm in pool:
            if isinstance(rm, R2MRewardModel):
                rm.end_iteration(policy.eval(), tokenizer, groups, trainer.state.global_step - 1)  # the updated policy's states
                rm.save(tmp / f"{rm.rm_id}.safetensors")
                log = pd.DataFrame(rm.log, columns=["policy_step", "groups", "step", "omega", "loss", "bt", "gre"])
                log.insert(0, "rm", rm.rm_id)
                write_table(log, tmp / f"{rm.rm_id}.log.tsv")
        shutil.rmtree(out, ignore_errors=True)
        tmp.replace(out)
    write_jsonl([pair for b in range(len(batches)) for pair in trainer.labelled.get(b, [])], out_pairs)
    frame = pd.DataFrame(labeler.rows)
    frame.insert(0, "iteration", it)
    frame.insert(0, "seed", seed)
    frame.insert(0, "method", method.name)
    write_table(frame, out_decisions)
