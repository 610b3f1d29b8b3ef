"""The BSR evaluation's measurements against direct computations, and the BT/BSR and R2M stages
end to end on tiny local models."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from rmroute import models, stages
from rmroute.io import read_jsonl, write_jsonl
from rmroute.rewards.bsr_eval import (
    effective_rank,
    effective_rank_shift,
    kendall_tau_groups,
    last_hidden_states,
    norm_statistics,
    summary_table,
)
from rmroute.rewards.pool import preference_pairs
from rmroute.rewards.r2m import R2M
from rmroute.settings import RMTraining
from rmroute.testbed import score_record
from tiny_artefacts import tiny_splits, tiny_tokenizer, tiny_classifier

torch.set_num_threads(1)


def test_kendall_tau_averages_prompts_and_skips_gold_ties():
    scores = [[0.1, 0.5, 0.3, 0.9], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 2.0, 0.0]]
    gold = [[0, 1, 0, 1], [1, 1, 1, 1], [1, 0, 0, 0], [0.0, 0.5, 1.0, 0.5]]
    tau, counted = kendall_tau_groups(scores, gold)
    expected = np.mean([stats.kendalltau(scores[0], gold[0]).statistic, 0.0,  # a constant RM ranks nothing
                        stats.kendalltau(scores[3], gold[3]).statistic])
    assert counted == 3  # the all-equal gold prompt has no order to recover
    assert tau == pytest.approx(expected)
    assert kendall_tau_groups([[1, 2, 3]], [[0, 0.5, 1]])[0] == pytest.approx(1.0)
    assert kendall_tau_groups([[3, 2, 1]], [[0, 0.5, 1]])[0] == pytest.approx(-1.0)


def test_effective_rank_and_norm_statistics():
    assert effective_rank(np.eye(5)) == pytest.approx(5.0)
    assert effective_rank(np.outer(np.arange(1, 7), np.ones(4))) == pytest.approx(1.0)
    s = np.array([3.0, 1.0])
    p = s / s.sum()
    assert effective_rank(np.diag(s)) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(50, 8)) * rng.uniform(0.5, 3.0, size=(50, 1))
    out = norm_statistics(hidden)
    assert set(norm_statistics(hidden, "residual_norm")) == {"residual_norm_mean", "residual_norm_std", "residual_norm_cv",
                                                            "residual_norm_skew"}
    norms = np.linalg.norm(hidden, axis=1)
    assert out["norm_mean"] == pytest.approx(norms.mean())
    assert out["norm_std"] == pytest.approx(norms.std())
    assert out["norm_cv"] == pytest.approx(norms.std() / norms.mean())
    assert out["norm_skew"] == pytest.approx(stats.skew(norms))


def test_effective_rank_shift_and_summary():
    table = pd.DataFrame([
        {"loss": loss, "seed": seed, "split": split, "metric": "effective_rank", "value": value + seed}
        for loss, base in (("bt", 10.0), ("bsr", 12.0)) for seed in (0, 1, 2)
        for split, value in (("train", base), ("mutual_ood", base + 3.0))
    ] + [{"loss": loss, "seed": seed, "split": "mutual_ood", "metric": "kendall_tau", "value": 0.1 * seed}
         for loss in ("bt", "bsr") for seed in (0, 1, 2)])
    shift = effective_rank_shift(table)
    assert set(shift["metric"]) == {"effective_rank_shift"} and np.allclose(shift["value"], 3.0)
    summary = summary_table(pd.concat([table, shift]))
    row = summary[(summary["loss"] == "bsr") & (summary["metric"] == "kendall_tau")].iloc[0]
    assert row["mean"] == pytest.approx(0.1) and row["n_seeds"] == 3 and row["paper"] == 0.611
    assert summary[(summary["loss"] == "bt") & (summary["metric"] == "kendall_tau")]["paper"].iloc[0] == 0.587


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Testbed splits, a tokenizer, a tiny SFT-like policy and its pairs, saved as a results tree."""
    root = tmp_path_factory.mktemp("bsr")
    splits = tiny_splits(rollout=12, test=6)
    tok = tiny_tokenizer(splits)
    torch.manual_seed(0)
    policy = models.build_policy(tok, 32, 1, 2, 64, 128)
    models.save_atomic(policy, tok, root / "sft")
    for name in ("test", "test_ood", "rm_train"):
        write_jsonl(splits[name], root / f"{name}.jsonl")
    for name in ("rm_train", "test"):
        groups = models.generate(policy, tok, [r["prompt"] for r in splits[name]], n=3, temperature=1.0, max_new_tokens=6)
        write_jsonl(preference_pairs(splits[name], groups, 0), root / f"pairs_{name}.jsonl")
    return root, tok, splits


ROW = {"loss": "bt", "domain_mix": "arith:1,instruct:1", "n_pairs": 12, "label_noise": 0.0, "max_length": 128, "init": "sft"}
RM_TRAINING = RMTraining.from_config({"steps": 3, "batch_size": 4, "lr": 1e-3, "bsr_coef": 1e-3, "bsr_batch_scale": False})


def test_bsr_stages_write_the_tidy_table_and_the_figure(tiny, tmp_path):
    root, tok, _ = tiny
    stages.bsr_groups(str(root / "sft"), str(root / "sft"), {"test": root / "test.jsonl", "test_ood": root / "test_ood.jsonl"},
                      4, 1.0, 6, 0, 1, "cpu", str(tmp_path / "groups.jsonl"))
    groups = read_jsonl(tmp_path / "groups.jsonl")
    assert {g["split"] for g in groups} == {"in_domain", "prompt_ood", "response_ood", "mutual_ood"}
    assert all(len(g["responses"]) == 4 and len(g["gold"]) == 4 for g in groups)
    by_id = {r["id"]: r for name in ("test", "test_ood") for r in read_jsonl(root / f"{name}.jsonl")}
    assert all(g["gold"] == [score_record(by_id[g["id"]], s) for s in g["responses"]] for g in groups)
    tables, norms = [], []
    for loss in ("bt", "bsr"):
        for seed in (0, 1):
            out = tmp_path / loss / str(seed)
            stages.bsr_rm(str(root / "sft"), str(root / "sft"), str(root / "pairs_rm_train.jsonl"),
                          str(root / "pairs_test.jsonl"), str(tmp_path / "groups.jsonl"), RM_TRAINING.job(ROW, loss).params(), 0, seed,
                          1, "cpu", str(out / "rm"), str(out / "table.parquet"), str(out / "norms.parquet"))
            tables.append(str(out / "table.parquet"))
            norms.append(str(out / "norms.parquet"))
    stages.bsr_tables(tables, norms, str(tmp_path / "tables" / "bsr.tsv"), str(tmp_path / "tables" / "bsr_summary.tsv"),
                      str(tmp_path / "bsr.png"), str(tmp_path / "bsr.pdf"))
    table = pd.read_csv(tmp_path / "tables" / "bsr.tsv", sep="\t")
    assert list(table.columns) == ["loss", "seed", "split", "metric", "value"]
    assert set(table["loss"]) == {"bt", "bsr"} and set(table["seed"]) == {0, 1}
    assert {"kendall_tau", "pair_accuracy", "norm_std", "norm_skew", "effective_rank", "effective_rank_shift",
            "residual_norm_cv"} <= set(table["metric"])
    assert set(table.loc[table["metric"] == "kendall_tau", "split"]) <= {"in_domain", "prompt_ood", "response_ood", "mutual_ood"}
    assert table.loc[table["metric"] == "kendall_tau", "value"].dropna().between(-1, 1).all()
    assert (tmp_path / "tables" / "bsr.md").exists() and (tmp_path / "bsr.png").stat().st_size > 0
    # the same data for both losses: their training-set norms are measured on the same texts
    counts = pd.read_parquet(norms[0]).groupby("split").size()
    assert counts.equals(pd.read_parquet(norms[2]).groupby("split").size())


def test_last_hidden_states_are_what_the_score_head_reads(tiny):
    root, tok, splits = tiny
    rm = tiny_classifier(tok).eval()
    prompts = [r["prompt"] for r in splits["test"][:5]]
    responses = [" 3", " blue green red", " no", " 12", " yes"]
    rewards, states, residual = last_hidden_states(rm, tok, prompts, responses)
    assert states.shape == residual.shape == (5, 32)
    assert np.allclose(rewards, models.rm_scores(rm, tok, prompts, [r + tok.eos_token for r in responses]), atol=1e-5)
    assert np.allclose(rm.model.norm(torch.from_numpy(residual)).detach().numpy(), states, atol=1e-5)  # the norm's input


def test_r2m_probe_trains_the_variants_and_measures_them_beside_the_base_rm(tiny, tmp_path):
    """One iteration: the SFT-like policy's rollouts of iteration 1 train R2M and its controls,
    the next iteration's rollouts measure them; the state files reload."""
    root, tok, splits = tiny
    write_jsonl(splits["test"] + splits["rm_train"], root / "rollout.jsonl")
    budget = {"prompts_per_iteration": 8, "samples_per_prompt": 4, "temperature": 1.0, "max_new_tokens": 6}
    for it in (1, 2):
        stages.rollout(str(root / "sft"), str(root / "rollout.jsonl"), budget, 0, it, 1, "cpu", str(tmp_path / f"it{it}.jsonl"))
    rm = tiny_classifier(tok)
    models.save_atomic(rm, tok, tmp_path / "base")
    states = {v: str(tmp_path / f"{v}.safetensors") for v in stages.R2M_TRAINED}
    settings = {"method": "rm-a", "attn_dim": 8, "epochs": 2, "batch_groups": 4, "lr": 1e-2}
    stages.r2m_probe(str(tmp_path / "it1.jsonl"), str(root / "sft"), str(tmp_path / "base"), str(tmp_path / "it2.jsonl"),
                     settings, 0, 1, "cpu", str(tmp_path / "r2m.parquet"), states)
    table = pd.read_parquet(tmp_path / "r2m.parquet")
    assert set(table["variant"]) == {"r2m", "r2m-noise", "r2m-untrained", "base"}
    assert set(table["split"]) == {"train", "fresh"}
    acc = table[(table["metric"] == "gold_pair_accuracy") & (table["domain"] == "all")]
    assert acc["value"].dropna().between(0, 1).all() and len(acc) == 8
    n = table[(table["metric"] == "n_pairs") & (table["domain"] == "all")].groupby("split")["value"].nunique()
    assert (n == 1).all()  # every variant is measured on the same pairs
    loaded = R2M.load(tmp_path / "base", states["r2m"])
    assert loaded.step == loaded.total_steps == 2 * math.ceil(8 / 4)
    with pytest.raises(ValueError, match="out_states"):
        stages.r2m_probe(str(tmp_path / "it1.jsonl"), str(root / "sft"), str(tmp_path / "base"),
                         str(tmp_path / "it2.jsonl"), settings, 0, 1, "cpu", str(tmp_path / "x.parquet"), {"r2m": "x"})
    stages.r2m_tables([str(tmp_path / "r2m.parquet")], str(tmp_path / "tables" / "r2m.tsv"),
                      str(tmp_path / "tables" / "r2m_summary.tsv"))
    summary = pd.read_csv(tmp_path / "tables" / "r2m_summary.tsv", sep="\t")
    assert summary.loc[(summary["variant"] == "r2m") & (summary["split"] == "fresh") & (summary["domain"] == "all"),
                       "paper_pct"].iloc[0] == 78.6


def test_gold_pair_accuracy_counts_only_pairs_gold_can_order():
    groups = [{"gold": [1.0, 0.0, 0.0]}, {"gold": [0.5, 0.5]}]
    acc, n = stages.gold_pair_accuracy(groups, [[2.0, 1.0, 3.0], [0.0, 1.0]])
    assert n == 2 and acc == pytest.approx(0.5)  # (0,1) right, (0,2) wrong; (1,2) and group 2 are gold ties
    acc, n = stages.gold_pair_accuracy([{"gold": [1.0, 0.0]}], [[1.0, 1.0]])
    assert n == 1 and acc == pytest.approx(0.5)  # a score tie counts half, as in the decision log (rmroute.gold)
