"""The RM pool's stages: gold-labelled pairs, RM training, loading the pool, offline RM behaviour."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rmroute import models
from rmroute.io import read_jsonl, write_jsonl, write_table
from rmroute.seeding import derive_seed


def build_rm_pairs(sft_dir: str, split_paths: dict[str, str], samples: int, temperature: float, seed: int,
                   threads: int, device: str, out_paths: dict[str, str], *, max_new_tokens: int) -> None:
    """Gold-labelled pairs from the SFT policy's own samples (`samples` per prompt, responses cut at
    `max_new_tokens`, config budget.max_new_tokens as the rollouts), one file per split."""
    from rmroute.rewards.pool import preference_pairs

    models.set_threads(threads)
    policy = models.load_policy(sft_dir, device=device)
    tokenizer = models.load_tokenizer(sft_dir)
    for i, (split, path) in enumerate(sorted(split_paths.items())):
        records = read_jsonl(path)
        groups = models.generate(policy, tokenizer, [r["prompt"] for r in records], n=samples, temperature=temperature,
                                 max_new_tokens=max_new_tokens, seed=derive_seed(seed, i, scheme="rm_pairs_sampling"),
                                 progress=True)
        write_jsonl(preference_pairs(records, groups, derive_seed(seed, i, scheme="rm_pairs")), out_paths[split])


def train_rm(sft_dir: str, pairs_path: str, rm, seed: int, threads: int, device: str, out_dir: str,
             init_dir: str | None = None) -> None:
    """One testbed RM of the sheet, a classifier (bt/bsr) or a generative RM (lm), initialised from
    `init_dir` (the row's `init`: the SFT policy, or another RM of the sheet) and tokenised with the
    SFT policy's tokenizer. `rm` is what its training reads (`rmroute.settings.RMJob`, or its
    `params()` dict: `RMTraining.job` of its sheet row)."""
    from rmroute.rewards.pool import parse_mix, rm_training_pairs
    from rmroute.settings import RMJob

    rm = RMJob.from_params(rm)
    models.set_threads(threads)
    models.set_seed(seed)
    tokenizer = models.load_tokenizer(sft_dir)
    pairs = rm_training_pairs(read_jsonl(pairs_path), parse_mix(rm.domain_mix), rm.n_pairs, rm.label_noise, seed)
    model = fit_rm(init_dir or sft_dir, tokenizer, pairs, rm, seed, device)
    models.save_atomic(model, tokenizer, out_dir)


def fit_rm(init_dir: str, tokenizer, pairs: list[dict], rm, seed: int, device: str):
    """The RM `rm` (`rmroute.settings.RMJob` or its params) trained on `pairs` from `init_dir`."""
    from rmroute.rewards.pool import train_generative_rm, train_reward_model
    from rmroute.settings import RMJob

    rm = RMJob.from_params(rm)
    if rm.generative:
        return train_generative_rm(init_dir, tokenizer, pairs, steps=rm.steps, batch_size=rm.batch_size, lr=rm.lr,
                                   max_length=rm.max_length, seed=seed, use_cpu=device == "cpu")
    # Keys not of this kind are None (bsr_coef of a BT RM): the trainer never reads them.
    kind = {k: v for k, v in (("bsr_coef", rm.bsr_coef), ("bsr_batch_scale", rm.bsr_batch_scale),
                              ("new_layers", rm.new_layers), ("freeze_init", rm.freeze_init)) if v is not None}
    return train_reward_model(init_dir, tokenizer, pairs, loss=rm.loss, steps=rm.steps, batch_size=rm.batch_size,
                              lr=rm.lr, max_length=rm.max_length, seed=seed, use_cpu=device == "cpu", **kind)


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
