"""The published claims (METHODS.md, "The published claims our report must test"), each tested on
our runs: one row per claim (claims 2, 3 and 6 have two parts) with the paired 95% CI over seeds,
the minimum detectable difference and a verdict.

Every claim is turned into one statistic oriented so that the paper's direction is positive, with
a null value (0 for a difference, 1 for a time ratio, 0.5 for "most of the time") and the
published value of the same statistic in our units. The verdict rule separates direction from size. It is applied to the 95% CI [ci_low, ci_high]
of the statistic and to its Holm-adjusted p-value `p_holm` (the family is every row with a test,
so the ~13 rows together keep a 5% family-wise error rate):

* `reproduced`: ci_low > null and p_holm < 0.05 (the effect is there, in the paper's direction),
  and ci_high >= published (an effect as large as the paper's is not ruled out);
* `smaller than published`: the effect is there (as above) but ci_high < published;
* `not reproduced`: no effect shown, and ci_high < published (an effect as large as the paper's
  is ruled out; this includes a CI entirely on the wrong side of the null);
* `inconclusive`: otherwise (the CI holds both the null and the published value, or the effect
  is not significant after the Holm correction), and whenever the CI cannot carry a verdict:
  fewer than three paired seeds, no spread across the seeds (a point "CI" says nothing about
  sampling error), or the experiment was not run (see `note`).

Beside the verdict: `ratio` = (ours - null) / published_effect with its CI (`ratio_low`,
`ratio_high`; 1 = the paper's size), and `prob_improvement`, the share of paired seeds on the
paper's side of the null (ties count half; rliable's probability of improvement for paired runs).

The CI is the paired t-interval of the per-seed statistic (the two arms share each seed's data,
SFT policy and first rollouts); claim 6, with one trained offline router, uses the Wilson
interval over held-out pairs. MDD = (t_{0.975,n-1} + t_{0.80,n-1}) * sd / sqrt(n) is the effect
a two-sided 5% paired t-test detects with 80% power at the observed sd; `seeds_needed` is the
smallest n whose MDD is at most the published effect (`required_seeds`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from rmroute.config import check_claims
from rmroute.evaluate import best_single
from rmroute.methods import ConfigError
from rmroute.published import BSR_TABLE1_SHIFT, CLAIM_FIGURES

VERDICTS = ("reproduced", "smaller than published", "not reproduced", "inconclusive")
COLUMNS = ["claim", "statement", "source", "paper", "published_effect", "statistic", "ours", "ci_low", "ci_high",
           "ratio", "ratio_low", "ratio_high", "prob_improvement", "n_seeds", "test", "p_value", "p_holm", "mdd",
           "seeds_needed", "verdict", "note"]
ALPHA = 0.05  # family-wise error rate of the Holm correction
VALUES_KEY = "_values"  # a row's per-seed statistic (claims_values.tsv), which pooling over instances reads
ROLES = ("routed", "best_single", "ensemble")  # config `claims:` roles naming one method each
NOISY_ROLES = ("routed", "best_single")  # config `claims.noisy:` roles: that method with a noisy RM
AUTO = "auto"  # claims.best_single absent or auto: chosen on the validation split (resolve_best_single)
PAIRED_T = "paired t over seeds"
BSR_SPLIT = "mutual_ood"  # the BSR claims are read on the mutually-OOD split (claim 7's split)
# BSR Table 1: the share of BT's effective-rank shift that BSR keeps (0.14 / 10.42)
BSR_SHIFT_KEPT = BSR_TABLE1_SHIFT["bsr"] / BSR_TABLE1_SHIFT["bt"]


@dataclass(frozen=True)
class Claim:
    claim: str  # "1", "2a", ...
    statement: str
    source: str
    paper: str  # the published figure, at its scale, as text
    null: float
    published: float | None  # the statistic's published value in our units (None: set from our data)
    statistic: str


def _claim(claim: str, statement: str, null: float, statistic: str) -> Claim:
    """A claim with its published figure (source, the paper's text, our units) from rmroute.published."""
    source, paper, published = CLAIM_FIGURES[claim]
    return Claim(claim, statement, source, paper, null, published, statistic)


CLAIMS = {c.claim: c for c in [
    _claim("1", "routing beats the best single RM",
           0.0, "accuracy(routed) - accuracy(best_single), mean over domains, last iteration"),
    _claim("2a", "routing beats the RM-score ensemble",
           0.0, "accuracy(routed) - accuracy(ensemble), mean over domains, last iteration"),
    _claim("2b", "... at about half the wall time",
           1.0, "train_iteration wall time ensemble / routed, summed over iterations (ratio per seed)"),
    _claim("3a", "BayesianRouter labels pairs more accurately than LASeR",
           0.0, "labelling accuracy thompson - linucb, routing simulation test stream"),
    _claim("3b", "BayesianRouter labels pairs more accurately than majority vote",
           0.0, "labelling accuracy thompson - majority-vote, routing simulation test stream"),
    _claim("4", "the offline prior helps the online router",
           0.0, "labelling accuracy thompson - thompson-noprior (same lambda0), routing simulation test stream"),
    _claim("5", "the online stage helps over the offline router alone",
           0.0, "labelling accuracy thompson - offline-only, routing simulation test stream"),
    _claim("6a", "the offline router picks a correct RM most of the time, in domain",
           0.5, "offline router accuracy on test pairs where the RMs disagree"),
    _claim("6b", "the offline router picks a correct RM most of the time, out of domain",
           0.5, "offline router accuracy on test_ood pairs where the RMs disagree"),
    _claim("7", "BSR raises out-of-distribution Kendall tau",
           0.0, "Kendall tau(bsr) - tau(bt), mutual_ood"),
    _claim("8", "BSR keeps hidden-state norms from dispersing",
           0.0, "abs(effective-rank shift of bt) - abs(shift of bsr), mutual_ood minus train"),
    _claim("9", "R2M raises RM accuracy on the moving policy's samples",
           0.0, "gold pair accuracy r2m - base RM, next iteration's fresh rollouts, all domains"),
    _claim("10", "routing is robust to a noisy RM",
           0.0, "accuracy drop (clean - noisy) of best_single minus that of routed, mean over domains, last iteration"),
]}


# ---------------------------------------------------------------- statistics


def t_quantile(q: float, df: int) -> float:
    return float(stats.t.ppf(q, df))


def mdd(sd_diff: float, n: int, alpha: float = 0.05, power: float = 0.80) -> float:
    """Minimum detectable difference of a two-sided paired t-test of n pairs at the given power."""
    if n < 2:
        return math.nan
    return (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd_diff / math.sqrt(n)


def required_seeds(sd_diff: float, effect: float, alpha: float = 0.05, power: float = 0.80) -> int:
    """The fewest paired seeds (at least 2) whose MDD at the standard deviation `sd_diff` of the
    per-seed differences is at most `effect`."""
    if not effect > 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    if not np.isfinite(sd_diff) or sd_diff < 0:
        raise ValueError(f"sd_diff must be a finite number >= 0, got {sd_diff}")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, math.ceil((z * sd_diff / effect) ** 2))  # the normal approximation never overshoots
    while mdd(sd_diff, n, alpha, power) > effect:
        n += 1
    return n


MIN_SEEDS = 3  # paired seeds below which a t-interval carries no verdict


def verdict(ci_low: float, ci_high: float, null: float, published: float) -> str:
    """The verdict rule of the module docstring on the CI alone (the statistic oriented so the
    paper's side is up); `apply_holm` then downgrades an effect that the correction does not keep."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "inconclusive"
    if ci_low > null:
        return "reproduced" if ci_high >= published else "smaller than published"
    if ci_high < published:
        return "not reproduced"
    return "inconclusive"


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def apply_holm(table: pd.DataFrame) -> pd.DataFrame:
    """Fill `p_holm` over the rows with a test and downgrade to `inconclusive` an effect whose CI
    clears the null but whose adjusted p-value does not (the family-wise 5% rule)."""
    table = table.copy()
    table["p_holm"] = holm(table["p_value"].to_numpy(dtype=float))
    shown = table["verdict"].isin(["reproduced", "smaller than published"])
    lost = shown & ~(table["p_holm"] < ALPHA)
    table.loc[lost, "verdict"] = "inconclusive"
    table.loc[lost, "note"] = [_join(n, f"CI clears the null, but not after the Holm correction (p_holm = {p:.3g})")
                               for n, p in zip(table.loc[lost, "note"], table.loc[lost, "p_holm"])]
    return table


def _size(row: dict, claim: Claim, published: float | None, values: np.ndarray | None = None) -> dict:
    """The ratio to the published effect (with its CI) and, from per-seed values, the probability
    of improvement."""
    effect = math.nan if published is None else published - claim.null
    if np.isfinite(effect) and effect > 0:
        row.update(ratio=(row["ours"] - claim.null) / effect, ratio_low=(row["ci_low"] - claim.null) / effect,
                   ratio_high=(row["ci_high"] - claim.null) / effect)
    if values is not None and len(values):
        row["prob_improvement"] = float(np.mean(values > claim.null) + 0.5 * np.mean(values == claim.null))
    return row


def paired_result(values: pd.Series, claim: Claim, published: float | None = None, note: str = "") -> dict:
    """A claims row from the per-seed statistic (`values`, one per seed)."""
    published = claim.published if published is None else published
    values = values.dropna().astype(float)
    n = len(values)
    row = _row(claim, published, note, n_seeds=n, test=f"{PAIRED_T} (n={n})")
    row[VALUES_KEY] = values
    if n == 0:
        return {**row, "note": note or "no paired seeds"}
    mean = float(values.mean())
    row["ours"] = mean
    if n < 2:
        return {**row, "note": _join(note, "fewer than 2 paired seeds: no CI")}
    sd = float(values.std(ddof=1))
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    effect = published - claim.null
    row.update(ci_low=mean - half, ci_high=mean + half, mdd=mdd(sd, n),
               seeds_needed=required_seeds(sd, effect) if effect > 0 else math.nan,
               p_value=float(stats.ttest_1samp(values, claim.null).pvalue) if sd > 0 else math.nan)
    _size(row, claim, published, values.to_numpy())
    row["verdict"] = verdict(row["ci_low"], row["ci_high"], claim.null, published)
    if n < MIN_SEEDS:
        row.update(verdict="inconclusive", note=_join(note, f"fewer than {MIN_SEEDS} paired seeds: no verdict"))
    elif sd == 0:
        row.update(verdict="inconclusive", note=_join(note, "no spread across seeds: the CI is a point, no verdict"))
    return row


def wilson_interval(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    z = stats.norm.ppf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def binomial_result(accuracy: float, n_pairs: int, claim: Claim, note: str = "") -> dict:
    """A claims row for one router's accuracy over `n_pairs` pairs against the null share."""
    row = _row(claim, claim.published, note, n_seeds=1, test=f"one router: Wilson 95% CI over pairs (n={n_pairs})")
    if not n_pairs or not np.isfinite(accuracy):
        return {**row, "n_seeds": 0, "note": note or "no held-out pairs on which the RMs disagree"}
    low, high = wilson_interval(accuracy * n_pairs, n_pairs)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.80)
    # The binomial analogue of the MDD, at the null's variance; "seeds" needed are pairs here.
    sd = math.sqrt(claim.null * (1 - claim.null))
    row.update(ours=float(accuracy), ci_low=low, ci_high=high, mdd=z * sd / math.sqrt(n_pairs),
               seeds_needed=math.nan, verdict=verdict(low, high, claim.null, claim.published),
               p_value=float(stats.binomtest(round(accuracy * n_pairs), n_pairs, claim.null).pvalue))
    row[VALUES_KEY] = pd.Series({"successes": accuracy * n_pairs, "pairs": float(n_pairs)})
    return _size(row, claim, claim.published)


def missing(claim: Claim, note: str) -> dict:
    """The row of a claim whose experiment did not run: inconclusive, 0 seeds, `note` says why."""
    return _row(claim, claim.published, note, n_seeds=0, test="")


def _row(claim: Claim, published: float | None, note: str, n_seeds: int, test: str) -> dict:
    return {"claim": claim.claim, "statement": claim.statement, "source": claim.source, "paper": claim.paper,
            "published_effect": math.nan if published is None else published - claim.null,
            "statistic": claim.statistic, "ours": math.nan, "ci_low": math.nan, "ci_high": math.nan,
            "ratio": math.nan, "ratio_low": math.nan, "ratio_high": math.nan, "prob_improvement": math.nan,
            "n_seeds": n_seeds, "test": test, "p_value": math.nan, "p_holm": math.nan, "mdd": math.nan,
            "seeds_needed": math.nan,
            "verdict": "inconclusive", "note": note}


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _paired(a: pd.Series, b: pd.Series) -> tuple[pd.Series, str]:
    """a - b over the seeds both have, and a note naming any seed left without its partner."""
    both = a.index.intersection(b.index)
    dropped = sorted(set(a.index) ^ set(b.index))
    return (a.loc[both] - b.loc[both]), (f"seeds without a partner dropped: {dropped}" if dropped else "")


# ---------------------------------------------------------------- reading the tables


def final_accuracy(policy_accuracy: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (method, seed) after the last iteration, the mean over domains: index method,
    column per seed."""
    last = policy_accuracy[policy_accuracy["iteration"] == policy_accuracy["iteration"].max()]
    return last.groupby(["method", "seed"])["accuracy"].mean().unstack("seed")


def train_seconds(benchmarks: list[tuple[str, int, str]]) -> pd.DataFrame:
    """Wall seconds of train_iteration per (method, seed), summed over iterations, from the per-seed
    seconds files given as (method, seed, path) (a seed's own work in its job, without the job's
    library start-up, `benchmarks/seeds/train_iteration/`): index method, column per seed."""
    rows = [{"method": m, "seed": int(s), "s": float(pd.read_csv(p, sep="\t")["s"].iloc[0])} for m, s, p in benchmarks]
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).groupby(["method", "seed"])["s"].sum().unstack("seed")


def simulation_accuracy(routing_sim: pd.DataFrame, stream: str = "test") -> tuple[pd.DataFrame, float | None]:
    """Labelling accuracy per router (index) and seed (columns) on `stream`, Thompson routers at
    the λ0 chosen on the validation stream (the smallest λ0 when there is none), and that λ0."""
    from rmroute.simulation import best_lambda0

    lam = None
    thompson = routing_sim[routing_sim["router"].str.startswith("thompson")]
    if len(thompson):
        try:
            lam = best_lambda0(routing_sim)
        except ValueError:
            lam = float(thompson["lambda0"].min())
    rows = routing_sim[(routing_sim["stream"] == stream)
                       & (~routing_sim["router"].str.startswith("thompson") | np.isclose(routing_sim["lambda0"], lam or 0))]
    return rows.pivot_table(index="router", columns="seed", values="labelling_accuracy"), lam


def r2m_accuracy(r2m: pd.DataFrame) -> pd.DataFrame:
    """Gold pair accuracy (a fraction) per R2M variant (index: `r2m`, `base`, controls) and seed
    (columns) on the last iteration's fresh rollouts, sampled by the moved policy after R2M has
    trained on every earlier iteration. The one place that knows r2m.tsv's layout."""
    rows = r2m[r2m["metric"] == "rm_pair_accuracy"]
    rows = rows[rows["iteration"] == rows["iteration"].max()]
    return rows.pivot_table(index="variant", columns="seed", values="value") / 100.0


def bsr_values(bsr: pd.DataFrame, metric: str, split: str = BSR_SPLIT) -> pd.DataFrame:
    """A bsr.tsv metric on one split: index loss (bt, bsr), column per seed."""
    rows = bsr[(bsr["split"] == split) & (bsr["metric"] == metric)]
    return rows.pivot_table(index="loss", columns="seed", values="value")


# ---------------------------------------------------------------- the table


def check_roles(claims: dict, methods) -> None:
    """Every method the `claims:` block names must be a method of the config (`rmroute.config`;
    given only method names, their routers are not checked)."""
    if isinstance(methods, dict):
        check_claims({"claims": claims}, methods)
        return
    methods = list(methods)
    named = [(f"claims.{r}", claims[r]) for r in ROLES if r in claims and (r, claims[r]) != ("best_single", AUTO)]
    named += [(f"claims.noisy.{r}", n) for r, n in claims.get("noisy", {}).items()]
    for field, name in named:
        if name not in methods:
            raise ConfigError(f"{field}: {name!r} is not a method of the config ({sorted(methods)})")


def resolve_best_single(roles: dict, validation_accuracy: pd.DataFrame | None,
                        candidates: list[str] | None) -> tuple[dict, str]:
    """`roles` with claims.best_single as a method name, and the note claim 1 carries about it.
    A name the config gives stays (note ''). Absent or `auto`, it is the candidate with the
    highest validation accuracy after the last iteration (rmroute.evaluate.best_single), the
    candidates being the single-RM methods of claims.routed's recipe without score noise
    (rmroute.evaluate.single_rm_methods); without candidates or validation accuracy the role
    stays unset and the note says why."""
    if roles.get("best_single", AUTO) != AUTO:
        return roles, ""
    unset = {k: v for k, v in roles.items() if k != "best_single"}
    if "routed" not in roles:
        return unset, "claims.best_single auto needs claims.routed, whose recipe its candidates share"
    if not candidates:
        return unset, (f"claims.best_single auto: no single-RM method without score noise (R2M rows aside) "
                       f"trains with the recipe of {roles['routed']}")
    if validation_accuracy is None:
        return unset, "claims.best_single auto: no validation accuracy to choose it on"
    chosen = best_single(validation_accuracy, candidates)
    return {**unset, "best_single": chosen}, (
        f"best single RM {chosen}: chosen on the validation split (highest mean accuracy after the last "
        f"iteration among {', '.join(candidates)}), never on test")


def _row_of(frame: pd.DataFrame | None, key: str) -> pd.Series | None:
    if frame is None or key not in frame.index:
        return None
    return frame.loc[key].dropna()


def claims_table(
    roles: dict, methods, *, policy_accuracy: pd.DataFrame, train_time: pd.DataFrame | None = None,
    routing_sim: pd.DataFrame | None = None, offline_router: pd.DataFrame | None = None,
    bsr: pd.DataFrame | None = None, r2m: pd.DataFrame | None = None,
    validation_accuracy: pd.DataFrame | None = None, best_single_candidates: list[str] | None = None,
    with_values: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Every claim of CLAIMS as one row (COLUMNS); an input that is None is an experiment not run.
    `validation_accuracy` (tables/validation_accuracy.tsv) and `best_single_candidates` resolve an
    absent or `auto` claims.best_single (resolve_best_single). `with_values`: also return the
    statistic of every seed (or the pairs and successes of a one-router claim) that each row was
    made from, as `claims_values.tsv` holds them for `pool_instances`."""
    check_roles(roles, methods)
    roles, best_note = resolve_best_single(roles, validation_accuracy, best_single_candidates)
    rows = []
    acc = final_accuracy(policy_accuracy)

    def method_pair(claim, a_role, b_role, frame, what, role_note=""):
        a, b = roles.get(a_role), roles.get(b_role)
        if a is None or b is None:
            unset = [f"claims.{r}" for r, v in ((a_role, a), (b_role, b)) if v is None]
            return missing(claim, role_note or f"config sets no {', '.join(unset)}")
        if frame is None or not len(frame):
            return missing(claim, _join(f"no {what}", role_note))
        va, vb = _row_of(frame, a), _row_of(frame, b)
        if va is None or vb is None:
            return missing(claim, _join(f"no {what} of {a if va is None else b}", role_note))
        diff, note = _paired(va, vb)
        return paired_result(diff, claim, note=_join(f"{a} vs {b}", role_note, note))

    rows.append(method_pair(CLAIMS["1"], "routed", "best_single", acc, "policy accuracy", best_note))
    rows.append(method_pair(CLAIMS["2a"], "routed", "ensemble", acc, "policy accuracy"))
    # 2b: the per-seed ratio ensemble / routed of train_iteration wall time.
    claim = CLAIMS["2b"]
    routed, ens = roles.get("routed"), roles.get("ensemble")
    tr = _row_of(train_time, routed) if routed else None
    te = _row_of(train_time, ens) if ens else None
    if routed is None or ens is None:
        rows.append(missing(claim, "config sets no claims.routed or claims.ensemble"))
    elif tr is None or te is None:
        rows.append(missing(claim, "no train_iteration benchmarks"))
    else:
        both = tr.index.intersection(te.index)
        rows.append(paired_result(te.loc[both] / tr.loc[both], claim, note=f"{ens} / {routed}"))

    # 3-5: the controlled routing simulation.
    sim_rows = [("3a", "thompson", "linucb"), ("3b", "thompson", "majority-vote"),
                ("4", "thompson", "thompson-noprior"), ("5", "thompson", "offline-only")]
    if routing_sim is None:
        rows += [missing(CLAIMS[c], "the routing simulation did not run (no method needs the offline router)")
                 for c, _, _ in sim_rows]
    else:
        sim, lam = simulation_accuracy(routing_sim)
        for c, a, b in sim_rows:
            va, vb = _row_of(sim, a), _row_of(sim, b)
            if va is None or vb is None:
                absent = [r for r, v in ((a, va), (b, vb)) if v is None]
                rows.append(missing(CLAIMS[c], f"routing_sim.routers lacks {', '.join(absent)}"))
                continue
            diff, note = _paired(va, vb)
            lam_note = f"lambda0 = {lam:g} (chosen on the validation stream)" if lam is not None else ""
            rows.append(paired_result(diff, CLAIMS[c], note=_join(lam_note, note)))

    # 6: one trained offline router, in domain (test) and out of domain (test_ood).
    for c, split in (("6a", "test"), ("6b", "test_ood")):
        if offline_router is None:
            rows.append(missing(CLAIMS[c], "the offline router did not run (no method needs it)"))
            continue
        hit = offline_router[offline_router["split"] == split]
        if hit.empty or "router_accuracy" not in hit or pd.isna(hit["router_accuracy"].iloc[0]):
            rows.append(missing(CLAIMS[c], f"no {split} pairs on which the RMs disagree"))
            continue
        rows.append(binomial_result(float(hit["router_accuracy"].iloc[0]), int(hit["n_pairs"].iloc[0]), CLAIMS[c]))

    # 7-8: BSR vs BT, paired by training seed.
    if bsr is None:
        rows += [missing(CLAIMS[c], "bsr_eval did not run (config has no bsr_eval block)") for c in ("7", "8")]
    else:
        tau = bsr_values(bsr, "kendall_tau")
        if {"bt", "bsr"} <= set(tau.index):
            diff, note = _paired(tau.loc["bsr"].dropna(), tau.loc["bt"].dropna())
            rows.append(paired_result(diff, CLAIMS["7"], note=note))
        else:
            rows.append(missing(CLAIMS["7"], f"bsr.tsv has no kendall_tau value on {BSR_SPLIT} for both losses "
                                             "(empty where gold orders no prompt's responses)"))
        shift = bsr_values(bsr, "effective_rank_shift").abs()
        if {"bt", "bsr"} <= set(shift.index):
            diff, note = _paired(shift.loc["bt"].dropna(), shift.loc["bsr"].dropna())
            # Effective rank scales with the hidden size: the published effect is BSR removing
            # (1 - 0.14/10.42) of BT's shift, applied to our BT's mean |shift|.
            published = (1 - BSR_SHIFT_KEPT) * float(shift.loc["bt"].loc[diff.index].mean()) if len(diff) else None
            rows.append(paired_result(diff, CLAIMS["8"], published=published,
                                      note=_join(f"published effect = {1 - BSR_SHIFT_KEPT:.1%} of our BT's mean abs(shift)",
                                                 note)))
        else:
            rows.append(missing(CLAIMS["8"], f"bsr.tsv has no effective_rank_shift on {BSR_SPLIT} for both losses"))

    # 9: R2M vs its plain base RM.
    if r2m is None:
        rows.append(missing(CLAIMS["9"], "R2M did not run (config has no r2m block)"))
    else:
        r2 = r2m_accuracy(r2m)
        va, vb = _row_of(r2, "r2m"), _row_of(r2, "base")
        if va is None or vb is None:
            rows.append(missing(CLAIMS["9"], "r2m.tsv has no gold pair accuracy of r2m and base on the fresh rollouts "
                                             "(variant missing, or no pairs gold can tell apart)"))
        else:
            diff, note = _paired(va, vb)
            rows.append(paired_result(diff, CLAIMS["9"], note=note))

    # 10: the drop a noisy RM causes, best single RM minus router.
    claim, noisy = CLAIMS["10"], roles.get("noisy", {})
    # The clean twin of the noisy single RM: claims.noisy.best_single_clean where the best single
    # RM is chosen on validation (a noisy twin has to be named before the run), else best_single.
    names = {r: (noisy.get(f"{r}_clean", roles.get(r)), noisy.get(r)) for r in NOISY_ROLES}
    if any(v is None for pair in names.values() for v in pair):
        rows.append(missing(claim, "noisy-RM experiment not run: config sets no claims.noisy.routed and "
                                   "claims.noisy.best_single (or their clean roles)"))
    else:
        drops = {}
        for role, (clean, dirty) in names.items():
            vc, vd = _row_of(acc, clean), _row_of(acc, dirty)
            if vc is None or vd is None:
                drops = None
                break
            drops[role], _ = _paired(vc, vd)
        if drops is None:
            rows.append(missing(claim, "no policy accuracy of the noisy methods"))
        else:
            diff, note = _paired(drops["best_single"], drops["routed"])
            rows.append(paired_result(diff, claim, note=_join(
                f"drop of {names['best_single'][0]} minus drop of {names['routed'][0]}", note)))
    table = apply_holm(pd.DataFrame(rows, columns=COLUMNS))
    if not with_values:
        return table
    values = [{"claim": r["claim"], "unit": str(unit), "value": float(v)}
              for r in rows for unit, v in r.get(VALUES_KEY, pd.Series(dtype=float)).items()]
    return table, pd.DataFrame(values, columns=VALUE_COLUMNS)


# ---------------------------------------------------------------- testbed instances, pooled

VALUE_COLUMNS = ["claim", "unit", "value"]
INSTANCE_COLUMNS = ["instance", "claim", "ours", "ci_low", "ci_high", "ratio", "n_seeds", "verdict"]


def pool_instances(instances: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Claims pooled over testbed instances (each a claims table and its values, keyed by the
    instance's name): (the pooled table, the per-instance rows beside it).

    The pooling rule (config/README.md): every (instance, seed) run is one unit, so the pooled
    statistic is the mean over all runs (equal seeds per instance = equal weight per instance)
    and its CI the t-interval over them; a one-router claim (6) pools its pairs. The verdict
    rule is the single-instance one, Holm over the pooled rows. `instances_agree` counts the
    instances whose own estimate lies on the pooled estimate's side of the null: a verdict that
    rests on one calibration shows there."""
    pooled, per_instance = [], []
    for name, (table, _) in instances.items():
        per_instance.append(table.assign(instance=name)[INSTANCE_COLUMNS])
    for claim in CLAIMS.values():
        units, rows = [], []
        for name, (table, values) in instances.items():
            mine = values[values["claim"] == claim.claim]
            units.append(pd.Series(mine["value"].to_numpy(), index=[f"{name}/{u}" for u in mine["unit"]]))
            rows.append(table.set_index("claim").loc[claim.claim])
        note = f"pooled over {len(instances)} testbed instances"
        both = pd.concat(units)
        if claim.claim.startswith("6"):
            successes, pairs = both.filter(like="/successes").sum(), both.filter(like="/pairs").sum()
            row = binomial_result(successes / pairs if pairs else math.nan, int(pairs), claim, note=note)
        elif both.empty:
            row = missing(claim, _join(note, "; ".join(dict.fromkeys(str(r["note"]) for r in rows))))
        else:
            # Claim 8's published effect is set from our BT runs: the mean over the instances' own.
            published = None if claim.published is not None else claim.null + float(np.nanmean(
                [r["published_effect"] for r in rows]))
            row = paired_result(both, claim, published=published, note=note)
            row["test"] = f"paired t over instance x seed runs (n={len(both.dropna())})"
        side = np.sign(row["ours"] - claim.null) if np.isfinite(row["ours"]) else 0
        agree = sum(np.sign(r["ours"] - claim.null) == side for r in rows if np.isfinite(r["ours"]))
        row["instances_agree"] = f"{agree}/{len(rows)}" if side else ""
        pooled.append(row)
    table = apply_holm(pd.DataFrame(pooled, columns=[*COLUMNS, "instances_agree"]))
    return table, pd.concat(per_instance, ignore_index=True)


def instances_markdown(per_instance: pd.DataFrame) -> str:
    """Each instance's estimate and verdict beside the others, one row per claim."""
    wide = per_instance.pivot_table(index="claim", columns="instance", values="ours", aggfunc="first", sort=False)
    verdicts = per_instance.pivot_table(index="claim", columns="instance", values="verdict", aggfunc="first", sort=False)
    cells = wide.map(lambda v: "--" if not np.isfinite(v) else f"{v:.4g}") + " (" + verdicts + ")"
    return "Per testbed instance (ours, verdict):\n\n" + cells.reindex(list(CLAIMS)).to_markdown() + "\n"


# ---------------------------------------------------------------- Markdown and LaTeX

RULE = ("Verdict on the 95% CI of each statistic, oriented so the paper's direction is positive, and its "
        "Holm-adjusted p-value over all rows (family-wise 5%): "
        "**reproduced** when the CI lies above the null (0; 1 for the time ratio; 0.5 for claim 6), p_holm < 0.05 "
        "and the CI reaches the published value, null + published_effect; **smaller than published** when the effect "
        "is there but the CI lies below the published value; "
        "otherwise **not reproduced** when the CI lies below the published value (an effect as large as the paper's "
        "is ruled out, a CI on the wrong side of the null included); otherwise **inconclusive** "
        "(also whenever the CI cannot carry a verdict: fewer than 3 paired seeds, no spread across seeds, "
        "or the experiment did not run). ratio: our effect over the published one (1 = the paper's size), with its CI; "
        "P(impr.): share of paired seeds on the paper's side. "
        "MDD: the effect a paired two-sided 5% t-test detects with 80% power at the observed sd; "
        "seeds_needed: the seeds for MDD <= the published effect.")


def claims_markdown(table: pd.DataFrame, title: str) -> str:
    cols = ["claim", "statement", "source", "paper", "published_effect", "ours", "ci_low", "ci_high", "ratio",
            "ratio_low", "ratio_high", "prob_improvement", "n_seeds", "test", "p_holm", "mdd", "seeds_needed",
            "verdict", "note"]
    cols += [c for c in ("instances_agree",) if c in table]  # a table pooled over testbed instances
    note = ("Tiny-scale analogue on the embedded testbed: our statistic is in our units (accuracy as a fraction), "
            "beside the paper's figure at its scale, which is not directly comparable.")
    return (f"# {title}\n\n{note}\n\n{RULE}\n\n" + table[cols].to_markdown(index=False, floatfmt=".4g")
            + "\n\nStatistics:\n\n" + "\n".join(f"* {c}: {s}" for c, s in zip(table["claim"], table["statistic"])) + "\n")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "->": r"$\to$", "λ": r"$\lambda$", "τ": r"$\tau$", "σ": r"$\sigma$", "±": r"$\pm$", "−": "-",
                  "|": r"$|$", "<=": r"$\leq$", "<": r"$<$", ">": r"$>$"}


def latex_escape(text) -> str:
    text = str(text)
    out, i = [], 0
    while i < len(text):
        for key in sorted(_LATEX_SPECIAL, key=len, reverse=True):
            if text.startswith(key, i):
                out.append(_LATEX_SPECIAL[key])
                i += len(key)
                break
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _num(x, fmt: str = ".3g") -> str:
    return "--" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt)


def claims_latex(table: pd.DataFrame, title: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}), the notes as a list under it."""
    lines = [r"% " + latex_escape(title), r"\begin{table}[t]", r"\centering\scriptsize",
             r"\begin{tabular}{lp{3.2cm}p{2.2cm}p{2.4cm}rrrrrrlrrrl}", r"\toprule",
             r"\# & claim & source & paper & ours & CI low & CI high & ratio & P(impr.) & $n$ & test & $p$ Holm & "
             r"MDD & seeds needed & verdict \\",
             r"\midrule"]
    for r in table.itertuples():
        needed = "--" if not np.isfinite(r.seeds_needed) else f"{int(r.seeds_needed)}"
        lines.append(" & ".join([latex_escape(r.claim), latex_escape(r.statement), latex_escape(r.source),
                                 latex_escape(r.paper), _num(r.ours), _num(r.ci_low), _num(r.ci_high),
                                 _num(r.ratio), _num(r.prob_improvement), str(int(r.n_seeds)),
                                 latex_escape(r.test.replace(PAIRED_T, "paired t")), _num(r.p_holm),
                                 _num(r.mdd), needed, latex_escape(r.verdict)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + latex_escape(title) + ". " + latex_escape(
        RULE.replace("**", "")) + "}", r"\end{table}", r"\begin{itemize}\scriptsize"]
    for r in table.itertuples():
        lines.append(r"\item " + latex_escape(f"{r.claim}: {r.statistic}" + (f" ({r.note})" if r.note else "")))
    lines.append(r"\end{itemize}")
    return "\n".join(lines) + "\n"
