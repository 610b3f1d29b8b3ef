"""The claims table: the verdict rule, the MDD and required seeds, missing experiments, the
config checks of the `claims` block, and the table the .test workflow writes."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from rmroute import claims as C
from rmroute.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
METHODS = ["rm-a", "ensemble-mean", "laser", "laser-noisy", "rm-a-noisy"]
ROLES = {"routed": "laser", "best_single": "rm-a", "ensemble": "ensemble-mean"}
SEEDS = [0, 1, 2, 3, 4]


def policy(acc: dict[str, list[float]], domains=("arith", "facts_mc")) -> pd.DataFrame:
    """policy_accuracy.tsv rows: every method's per-seed accuracy at iteration 2 in every domain
    (and an iteration-1 row that must be ignored)."""
    rows = []
    for method, values in acc.items():
        for seed, value in zip(SEEDS, values):
            for d in domains:
                rows.append({"method": method, "seed": seed, "iteration": 2, "domain": d, "accuracy": value})
                rows.append({"method": method, "seed": seed, "iteration": 1, "domain": d, "accuracy": 0.0})
    return pd.DataFrame(rows)


def row(table: pd.DataFrame, claim: str) -> pd.Series:
    return table.set_index("claim").loc[claim]


BASE = [0.50, 0.52, 0.48, 0.51, 0.49]


def test_clear_effect_in_the_papers_direction_is_reproduced():
    table = C.claims_table(ROLES, METHODS, policy_accuracy=policy({
        "laser": [b + 0.10 + 0.002 * i for i, b in enumerate(BASE)], "rm-a": BASE, "ensemble-mean": BASE}))
    r = row(table, "1")
    assert r["verdict"] == "reproduced"
    assert r["n_seeds"] == 5 and r["ci_low"] > 0
    assert r["ours"] == pytest.approx(0.104)
    assert r["test"].startswith("paired t")


def test_clear_effect_against_the_paper_is_not_reproduced():
    table = C.claims_table(ROLES, METHODS, policy_accuracy=policy({
        "laser": [b - 0.10 + 0.002 * i for i, b in enumerate(BASE)], "rm-a": BASE, "ensemble-mean": BASE}))
    r = row(table, "1")
    assert r["ci_high"] < 0
    assert r["verdict"] == "not reproduced"


def test_a_null_tightly_below_the_published_effect_is_not_reproduced():
    # differences of about 0 with a CI narrower than the published +1.45 points
    table = C.claims_table(ROLES, METHODS, policy_accuracy=policy({
        "laser": [b + d for b, d in zip(BASE, [0.001, -0.001, 0.0005, -0.0005, 0.0])], "rm-a": BASE,
        "ensemble-mean": BASE}))
    r = row(table, "1")
    assert r["ci_low"] < 0 < r["ci_high"] < C.CLAIMS["1"].published
    assert r["verdict"] == "not reproduced"


def test_noise_is_inconclusive():
    noise = [0.08, -0.07, 0.05, -0.09, 0.04]
    table = C.claims_table(ROLES, METHODS, policy_accuracy=policy({
        "laser": [b + n for b, n in zip(BASE, noise)], "rm-a": BASE, "ensemble-mean": BASE}))
    r = row(table, "1")
    assert r["ci_low"] < 0 and r["ci_high"] > C.CLAIMS["1"].published
    assert r["verdict"] == "inconclusive"


def test_verdict_rule_edges():
    assert C.verdict(0.01, 0.2, 0.0, 0.05) == "reproduced"
    assert C.verdict(-0.3, -0.1, 0.0, 0.05) == "not reproduced"
    assert C.verdict(-0.01, 0.04, 0.0, 0.05) == "not reproduced"
    assert C.verdict(-0.01, 0.06, 0.0, 0.05) == "inconclusive"
    assert C.verdict(1.2, 3.0, 1.0, 2.0) == "reproduced"  # a ratio against its null of 1
    assert C.verdict(math.nan, math.nan, 0.0, 0.05) == "inconclusive"
    # Direction apart from size: an effect that is there but whose CI stops short of the paper's.
    assert C.verdict(0.001, 0.008, 0.0, 0.05) == "smaller than published"
    assert C.verdict(0.04, 0.06, 0.0, 0.05) == "reproduced"
    assert set(C.VERDICTS) == {"reproduced", "smaller than published", "not reproduced", "inconclusive"}


def test_holm_adjusts_by_rank_and_stays_monotone():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.005])
    adjusted = C.holm(p)
    # sorted: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) -> max(0.06, 0.04) = 0.06
    assert adjusted[4] == pytest.approx(0.02) and adjusted[0] == pytest.approx(0.03)
    assert adjusted[3] == pytest.approx(0.06) and adjusted[1] == pytest.approx(0.06)
    assert np.isnan(adjusted[2])


def test_small_effect_reads_smaller_than_published_with_its_ratio():
    # +0.4 points every seed (a little spread) against LASeR's published +1.45: there, but a quarter the size
    diffs = [0.004, 0.0042, 0.0038, 0.0041, 0.0039]
    table = C.claims_table(ROLES, METHODS, policy_accuracy=policy({
        "laser": [b + d for b, d in zip(BASE, diffs)], "rm-a": BASE, "ensemble-mean": BASE}))
    r = row(table, "1")
    assert r["verdict"] == "smaller than published"
    assert r["ratio"] == pytest.approx(np.mean(diffs) / 0.0145)
    assert r["ratio_low"] < r["ratio"] < r["ratio_high"] < 1
    assert r["prob_improvement"] == 1.0
    assert r["p_holm"] >= r["p_value"]


def test_an_effect_lost_to_the_holm_correction_is_inconclusive():
    # A CI that just clears the null (unadjusted p a little under 0.05) does not survive a family of 13 rows.
    diffs = np.array([0.03, -0.001, 0.03, 0.01, 0.02])
    assert stats.ttest_1samp(diffs, 0).pvalue < 0.05
    table = C.claims_table(ROLES, METHODS, policy_accuracy=policy({
        "laser": [b + d for b, d in zip(BASE, diffs)], "rm-a": BASE, "ensemble-mean": BASE}))
    r = row(table, "1")
    assert r["ci_low"] > 0 and r["p_holm"] >= 0.05
    assert r["verdict"] == "inconclusive" and "Holm" in r["note"]
    assert r["prob_improvement"] == pytest.approx(0.8)


def test_mdd_matches_a_direct_computation():
    diffs = np.array([0.03, -0.01, 0.05, 0.02, 0.00])
    n, sd = len(diffs), diffs.std(ddof=1)
    direct = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.80, n - 1)) * sd / np.sqrt(n)
    assert C.mdd(sd, n) == pytest.approx(direct)
    table = C.claims_table(ROLES, METHODS, policy_accuracy=policy({
        "laser": list(np.array(BASE) + diffs), "rm-a": BASE, "ensemble-mean": BASE}))
    r = row(table, "1")
    assert r["mdd"] == pytest.approx(direct)
    half = stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert r["seeds_needed"] == C.required_seeds(sd, C.CLAIMS["1"].published)
    assert math.isnan(C.mdd(sd, 1))


def test_required_seeds_is_the_fewest_with_mdd_at_most_the_effect():
    for sd, effect in [(0.02, 0.0145), (0.1, 0.03), (1.0, 0.5), (0.001, 0.5)]:
        n = C.required_seeds(sd, effect)
        assert n >= 2 and C.mdd(sd, n) <= effect
        assert n == 2 or C.mdd(sd, n - 1) > effect
    assert C.required_seeds(0.0, 0.01) == 2
    with pytest.raises(ValueError):
        C.required_seeds(0.1, 0.0)


def test_missing_experiments_are_inconclusive_with_a_note():
    table = C.claims_table(ROLES, METHODS, policy_accuracy=policy({"laser": BASE, "rm-a": BASE, "ensemble-mean": BASE}))
    assert list(table.columns) == C.COLUMNS
    assert list(table["claim"]) == list(C.CLAIMS)
    assert {c.rstrip("ab") for c in table["claim"]} == {str(i) for i in range(1, 11)}
    for claim, words in [("2b", "benchmarks"), ("3a", "routing simulation"), ("6a", "offline router"),
                         ("7", "bsr_eval"), ("8", "bsr_eval"), ("9", "r2m"), ("10", "noisy")]:
        r = row(table, claim)
        assert r["verdict"] == "inconclusive" and r["n_seeds"] == 0
        assert words in r["note"], (claim, r["note"])


def test_noisy_claim_pairs_the_drops_by_seed():
    roles = {**ROLES, "noisy": {"routed": "laser-noisy", "best_single": "rm-a-noisy"}}
    acc = {"laser": BASE, "rm-a": BASE, "ensemble-mean": BASE,
           "laser-noisy": [b - 0.005 for b in BASE],  # the router drops half a point
           "rm-a-noisy": [b - 0.10 - 0.003 * i for i, b in enumerate(BASE)]}  # the single RM about ten
    r = row(C.claims_table(roles, METHODS, policy_accuracy=policy(acc)), "10")
    assert r["ours"] == pytest.approx(0.10 + 0.006 - 0.005)
    assert r["verdict"] == "reproduced" and r["n_seeds"] == 5


def test_simulation_bsr_r2m_offline_and_time_claims():
    sim = pd.DataFrame([{"stream": stream, "router": router, "lambda0": lam, "seed": s,
                         "labelling_accuracy": acc + 0.001 * s, "regret": 0.0}
                        for stream in ("validation", "test") for s in range(4)
                        for router, lam, acc in [("thompson", 1.0, 0.90), ("thompson", 50.0, 0.70),
                                                 ("thompson-noprior", 1.0, 0.80), ("linucb", np.nan, 0.85),
                                                 ("majority-vote", np.nan, 0.95), ("offline-only", np.nan, 0.9)]])
    sim.loc[(sim["router"] == "offline-only"), "labelling_accuracy"] += [0.01, -0.01, 0.02, -0.02] * 2
    sim.loc[(sim["router"] == "majority-vote"), "labelling_accuracy"] += [0.004, -0.004, 0.002, -0.002] * 2
    sim.loc[(sim["router"] == "thompson-noprior"), "labelling_accuracy"] += [0.004, -0.004, 0.002, -0.002] * 2
    offline = pd.DataFrame([{"split": "test", "n_pairs": 200, "router_accuracy": 0.9},
                            {"split": "test_ood", "n_pairs": 4, "router_accuracy": 0.75}])
    jitter = {0: 0.003, 1: -0.003, 2: 0.0}  # spread across seeds, mean zero
    bsr = pd.DataFrame([{"loss": loss, "seed": s, "split": "mutual_ood", "metric": m,
                         "value": v + 0.01 * s + (jitter[s] if (loss, m) == ("bsr", "kendall_tau") else 0.0)}
                        for s in range(3) for loss, m, v in [("bt", "kendall_tau", 0.5), ("bsr", "kendall_tau", 0.6),
                                                             ("bt", "effective_rank_shift", -4.0),
                                                             ("bsr", "effective_rank_shift", 0.5)]])
    r2m = pd.DataFrame([{"variant": v, "seed": s, "iteration": it, "metric": "rm_pair_accuracy",
                         "value": 100 * (a + 0.01 * s) - (20 if it == 1 else 0)}
                        for s in range(3) for it in (1, 2) for v, a in [("r2m", 0.7), ("base", 0.6)]])
    bench = {("laser", s): 10.0 + s for s in SEEDS} | {("ensemble-mean", s): 21.0 + 2 * s for s in SEEDS}
    train_time = pd.Series(bench).rename_axis(["method", "seed"]).unstack("seed")
    table = C.claims_table(ROLES, METHODS, policy_accuracy=policy({"laser": BASE, "rm-a": BASE, "ensemble-mean": BASE}),
                           train_time=train_time, routing_sim=sim, offline_router=offline, bsr=bsr, r2m=r2m)
    assert row(table, "3a")["ours"] == pytest.approx(0.05)  # lambda0 = 1, chosen on the validation stream
    assert "lambda0 = 1" in row(table, "3a")["note"]
    assert row(table, "3b")["verdict"] == "not reproduced"  # majority vote labels better here
    assert row(table, "4")["verdict"] == "reproduced"
    assert row(table, "5")["verdict"] == "inconclusive"
    assert row(table, "6a")["verdict"] == "reproduced" and row(table, "6a")["n_seeds"] == 1
    assert row(table, "6b")["verdict"] == "inconclusive"  # 3 of 4 pairs: the CI holds 0.5 and 0.8792
    assert row(table, "7")["ours"] == pytest.approx(0.1) and row(table, "7")["verdict"] == "reproduced"
    assert row(table, "8")["ours"] == pytest.approx(3.48)
    assert row(table, "8")["published_effect"] == pytest.approx((1 - 0.14 / 10.42) * 3.99)
    assert row(table, "9")["ours"] == pytest.approx(0.1) and row(table, "9")["n_seeds"] == 3
    assert row(table, "2b")["ours"] == pytest.approx(np.mean([(21 + 2 * s) / (10 + s) for s in SEEDS]))
    assert row(table, "2b")["verdict"] == "reproduced"
    md = C.claims_markdown(table, "t")
    tex = C.claims_latex(table, "t")
    assert "reproduced" in md and r"\begin{tabular}" in tex and r"\toprule" in tex
    assert "_" not in tex.replace(r"\_", "")  # every underscore escaped


def test_latex_escape():
    assert C.latex_escape("a_b & 5% -> |x| <= τ") == r"a\_b \& 5\% $\to$ $|$x$|$ $\leq$ $\tau$"


# ---------------------------------------------------------------- the config block


DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("block, fields", [
    ({"routed": "laser-x"}, ["claims.routed", "laser-x"]),
    ({"best_single": "laser"}, ["claims.best_single", "single"]),
    ({"ensemble": "rm-arith-mc"}, ["claims.ensemble", "ensemble"]),
    ({"noisy": {"routed": "laser-noisy"}}, ["claims.noisy.routed", "laser-noisy"]),
    ({"routed": "laser", "extra": "x"}, ["claims", "extra"]),
])
def test_claims_block_names_methods_of_the_config(project: Path, block, fields):
    config = copy.deepcopy(DEFAULT)
    config["claims"] = block
    with pytest.raises(ConfigError) as info:
        load_config(config, project)
    for name in fields:
        assert name in str(info.value)


def test_claims_table_checks_its_roles_too():
    with pytest.raises(ConfigError, match="claims.ensemble"):
        C.claims_table({"ensemble": "nope"}, METHODS, policy_accuracy=policy({"laser": BASE}))


def test_default_claims_block_loads(project: Path):
    config, _, methods = load_config(copy.deepcopy(DEFAULT), project)
    assert set(config["claims"].values()) - {C.AUTO} <= set(methods)


def test_best_single_auto_is_accepted_and_a_name_still_checked(project: Path):
    config = copy.deepcopy(DEFAULT)
    config["claims"] = {"routed": "laser", "best_single": "auto"}
    load_config(config, project)
    config["claims"]["best_single"] = "laser"
    with pytest.raises(ConfigError, match="claims.best_single"):
        load_config(config, project)


# ---------------------------------------------------------------- the best single RM, chosen on validation


def validation(acc: dict[str, float]) -> pd.DataFrame:
    """validation_accuracy.tsv rows: method -> accuracy after the last iteration (2) in every seed
    and domain, and an iteration-1 row that favours the other way."""
    return pd.DataFrame([{"method": m, "seed": s, "iteration": it, "domain": d, "accuracy": a if it == 2 else 1 - a}
                         for m, a in acc.items() for s in SEEDS for it in (1, 2) for d in ("arith", "facts_mc")])


def test_auto_best_single_is_the_candidate_best_on_validation():
    acc = {"laser": [b + 0.10 + 0.002 * i for i, b in enumerate(BASE)], "rm-a": BASE, "ensemble-mean": BASE,
           "rm-b": [b + 0.2 for b in BASE]}  # rm-b is best on test but not on validation
    for roles in ({"routed": "laser", "ensemble": "ensemble-mean"}, {**ROLES, "best_single": "auto"}):
        table = C.claims_table(roles, [*METHODS, "rm-b"], policy_accuracy=policy(acc),
                               validation_accuracy=validation({"rm-a": 0.6, "rm-b": 0.5}),
                               best_single_candidates=["rm-a", "rm-b"])
        r = row(table, "1")
        assert r["ours"] == pytest.approx(0.104)  # laser vs rm-a, on test
        assert "best single RM rm-a: chosen on the validation split" in r["note"] and "laser vs rm-a" in r["note"]


def test_an_explicit_best_single_overrides_the_choice():
    acc = {"laser": [b + 0.10 for b in BASE], "rm-a": BASE, "ensemble-mean": BASE, "rm-b": [b + 0.05 for b in BASE]}
    table = C.claims_table({**ROLES, "best_single": "rm-b"}, [*METHODS, "rm-b"], policy_accuracy=policy(acc),
                           validation_accuracy=validation({"rm-a": 0.6, "rm-b": 0.5}), best_single_candidates=["rm-a", "rm-b"])
    assert row(table, "1")["ours"] == pytest.approx(0.05)
    assert "validation" not in row(table, "1")["note"]


@pytest.mark.parametrize("roles, candidates, val, words", [
    ({"routed": "laser"}, [], True, "no single-RM method"),
    ({"routed": "laser"}, ["rm-a"], False, "no validation accuracy"),
    ({"best_single": "auto"}, ["rm-a"], True, "needs claims.routed"),
])
def test_auto_best_single_that_cannot_be_chosen_leaves_claim_1_inconclusive(roles, candidates, val, words):
    table = C.claims_table(roles, METHODS, policy_accuracy=policy({"laser": BASE, "rm-a": BASE}),
                           validation_accuracy=validation({"rm-a": 0.6}) if val else None, best_single_candidates=candidates)
    r = row(table, "1")
    assert r["verdict"] == "inconclusive" and r["n_seeds"] == 0 and words in r["note"], r["note"]


# ---------------------------------------------------------------- the workflow's table


def test_tiny_run_writes_all_ten_claims(tiny_run):
    table = pd.read_csv(tiny_run / "tables" / "claims.tsv", sep="\t", dtype={"claim": str})
    assert list(table.columns) == C.COLUMNS
    assert {c.rstrip("ab") for c in table["claim"]} == {str(i) for i in range(1, 11)}
    assert set(table["verdict"]) <= set(C.VERDICTS)
    assert (tiny_run / "tables" / "claims.md").read_text().startswith("# Published claims")
    assert r"\begin{tabular}" in (tiny_run / "tables" / "claims.tex").read_text()
    ten = table.set_index("claim").loc["10"]
    assert ten["n_seeds"] == 0 and "noisy" in ten["note"]  # the .test config names no noisy pair of methods
    # best_single: auto, and rm-a the only candidate (r2m-a is an R2M row)
    assert "best single RM rm-a: chosen on the validation split" in table.set_index("claim").loc["1", "note"]


# ---------------------------------------------------------------- testbed instances, pooled


def test_instances_pool_their_runs_and_report_each_beside_the_pooled(tmp_path):
    """Two instances of five seeds: claim 1 pools ten runs; an instance whose own estimate lies on
    the other side shows in instances_agree; claim 6 pools its pairs; the CLI writes every table."""
    from rmroute import claims_pool

    offline = {"a": 0.9, "b": 0.8}
    shift = {"a": [0.012, 0.014, 0.013, 0.015, 0.011], "b": [-0.002, 0.001, -0.001, 0.0, -0.003]}
    for name in ("a", "b"):
        acc = {"laser": [x + d for x, d in zip(BASE, shift[name])], "rm-a": BASE, "ensemble-mean": BASE}
        table, values = C.claims_table(ROLES, METHODS, policy_accuracy=policy(acc), with_values=True,
                                       offline_router=pd.DataFrame([{"split": "test", "n_pairs": 100,
                                                                     "router_accuracy": offline[name]}]))
        assert set(values.loc[values["claim"] == "1", "unit"]) == {str(s) for s in SEEDS}
        (tmp_path / name / "tables").mkdir(parents=True)
        table.to_csv(tmp_path / name / "tables" / "claims.tsv", sep="\t", index=False)
        values.to_csv(tmp_path / name / "tables" / "claims_values.tsv", sep="\t", index=False)
    claims_pool.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "pooled")])
    pooled = pd.read_csv(tmp_path / "pooled" / "tables" / "claims.tsv", sep="\t")
    r = row(pooled, "1")
    assert r["n_seeds"] == 10 and r["ours"] == pytest.approx(np.mean(shift["a"] + shift["b"]))
    assert r["instances_agree"] == "1/2"  # instance b's own mean is below zero
    six = row(pooled, "6a")
    assert six["ours"] == pytest.approx(0.85) and "n=200" in six["test"]
    assert row(pooled, "7")["verdict"] == "inconclusive" and row(pooled, "7")["n_seeds"] == 0
    per = pd.read_csv(tmp_path / "pooled" / "tables" / "claims_instances.tsv", sep="\t")
    assert set(per["instance"]) == {"a", "b"} and len(per) == 2 * len(C.CLAIMS)
    assert "Per testbed instance" in (tmp_path / "pooled" / "tables" / "claims.md").read_text()
    with pytest.raises(FileNotFoundError, match="make claims"):
        claims_pool.main([str(tmp_path / "missing"), "--out", str(tmp_path / "x")])


def test_the_claims_take_their_published_figures_from_one_table_unchanged():
    """Each claim's source, paper text and published value come from rmroute.published, derived from
    its tables; pinned here to the figures the claims table has always stated, bit for bit."""
    pinned = {
        "1": ("LASeR Table 1", "avg 76.32 vs 74.87 (accuracy %, Llama-3-8B)", 0.0145),
        "2a": ("LASeR abstract", "+2.67 avg accuracy (%)", 0.0267),
        "2b": ("LASeR abstract", "about 2x faster", 2.0),
        "3a": ("BayesianRouter controlled simulation", "88.23 vs 85.54 (labelling accuracy %)", 0.0269),
        "3b": ("BayesianRouter controlled simulation", "88.23 vs 85.64 (labelling accuracy %)", 0.0259),
        "4": ("BayesianRouter ablation", "Arena-Hard 63.20 -> 66.20 (win rate %)", 0.0300),
        "5": ("BayesianRouter ablation", "Arena-Hard 64.40 -> 66.20 (win rate %)", 0.0180),
        "6a": ("BayesianRouter Table 2", "90.31 (router accuracy %)", 0.9031),
        "6b": ("BayesianRouter Table 2", "87.92 (router accuracy %)", 0.8792),
        "7": ("BSR Table 5", "mutual-OOD 0.587 -> 0.611", 0.024),
        "8": ("BSR Table 1", "effective-rank shift +10.42 -> +0.14", None),
        "9": ("R2M Table 3", "72.3 -> 78.6 (RM accuracy %)", 0.063),
        "10": ("LASeR noise test", "GSM8K -0.55 vs -1.6 (accuracy drop, sigma 0.3)", 0.0105),
    }
    assert {c: (claim.source, claim.paper, claim.published) for c, claim in C.CLAIMS.items()} == pinned
    assert list(C.CLAIMS) == list(pinned)
    assert C.BSR_SHIFT_KEPT == 0.14 / 10.42
