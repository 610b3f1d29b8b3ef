"""The BSR paper's measurements (Tables 1 and 5): BT vs BSR RMs on the same data, their norms and OOD accuracy."""

from __future__ import annotations

import pandas as pd

from rmroute import models
from rmroute.io import read_jsonl, write_jsonl, write_table
from rmroute.seeding import derive_seed
from rmroute.stages.rewards import fit_rm
from rmroute.testbed import score_record


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
                                 max_new_tokens=max_new_tokens, seed=derive_seed(seed, k, scheme="bsr_sampling"))
        out += [{"split": split, "id": r["id"], "domain": r["domain"], "prompt": r["prompt"], "responses": group,
                 "gold": [score_record(r, s) for s in group]} for r, group in zip(records, groups)]
    write_jsonl(out, out_path)


def bsr_rm(init_dir: str, tokenizer_dir: str, pairs_path: str, test_pairs_path: str, groups_path: str, rm,
           data_seed: int, seed: int, threads: int, device: str, out_dir: str, out_table: str, out_norms: str) -> None:
    """Train one RM of a BT/BSR comparison and take every BSR measurement of it.

    `rm` (`rmroute.settings.RMJob` or its params: `RMTraining.job(row, loss)`) holds the sheet
    row's training data (domain mix, pair count, label noise, drawn with `data_seed`, the same for
    both losses and every seed), its loss, `bt` or `bsr` (with λ and its batch-size switch), and
    the classifier training settings; `seed` seeds the head's initialisation and the batch order.
    Writes the RM, its tidy rows (loss, seed, split, metric, value) and its hidden-state norms
    (loss, seed, split, norm)."""
    from rmroute.rewards.bsr_eval import evaluate_rm
    from rmroute.rewards.pool import parse_mix, rm_training_pairs
    from rmroute.settings import CLASSIFIER_LOSSES, RMJob

    rm = RMJob.from_params(rm)
    loss = rm.loss
    if loss not in CLASSIFIER_LOSSES:
        raise ValueError(f"bsr_rm: loss {loss!r} is not a classifier loss {CLASSIFIER_LOSSES}")
    models.set_threads(threads)
    models.set_seed(seed)
    tokenizer = models.load_tokenizer(tokenizer_dir)
    mix = parse_mix(rm.domain_mix)
    pairs = rm_training_pairs(read_jsonl(pairs_path), mix, rm.n_pairs, rm.label_noise, data_seed)
    model = fit_rm(init_dir, tokenizer, pairs, rm, seed, device)
    models.save_atomic(model, tokenizer, out_dir)
    rows, norms = evaluate_rm(model, tokenizer, pairs, read_jsonl(test_pairs_path), read_jsonl(groups_path),
                              [d for d, w in mix.items() if w > 0], max_length=rm.max_length, seed=seed)
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
