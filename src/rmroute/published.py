"""Every published number the report sets beside ours, each once, with where it comes from
(METHODS.md has the papers). The tables keep each paper's own units and scale; `CLAIM_FIGURES`
states each published claim from them, as text and as the value of our statistic (a fraction, or
the ratio of claim 2b), which `rmroute.claims` tests.

Readers: `rmroute.report` (Table 1 analogues), `rmroute.rewards.bsr_eval` (BSR Table 5),
`rmroute.stages` (R2M tables) and `rmroute.claims` (the claims).
"""

from __future__ import annotations

from typing import NamedTuple

# ---------------------------------------------------------------- LASeR

LASER_TABLE1 = {  # Llama-3-8B accuracy %, LASeR Table 1 (secondary summary)
    "sft": {"StrategyQA": 80.41, "GSM8K": 69.43, "MMLU": 65.66, "avg": 71.83},
    "best-single-rm": {"StrategyQA": 84.29, "GSM8K": 73.16, "MMLU": 67.15, "avg": 74.87},
    "random": {"StrategyQA": 84.37, "GSM8K": 71.99, "MMLU": 67.85, "avg": 74.74},
    "ensemble-mean": {"StrategyQA": 82.96, "GSM8K": 70.94, "MMLU": 67.04, "avg": 73.65},
    "laser": {"StrategyQA": 85.96, "GSM8K": 74.75, "MMLU": 68.24, "avg": 76.32},
}
LASER_ABSTRACT = {  # LASeR abstract: against the RM-score ensemble
    "avg_gain_over_ensemble": 2.67,  # average accuracy, percentage points
    "speedup_over_ensemble": 2.0,  # "about 2x faster" (training wall time)
}
LASER_NOISE_DROP = {  # LASeR noise test: GSM8K accuracy drop (percentage points) with one RM's scores noised, sigma 0.3
    "laser": 0.55, "best-single-rm": 1.6,
}

# ---------------------------------------------------------------- BayesianRouter

BAYES_TABLE1 = {  # BayesianRouter Table 1 (secondary summary): GSM8K and MMLU accuracy %
    "sft": {"GSM8K": 67.63, "MMLU": 54.29}, "best-single-rm": {"GSM8K": 74.22, "MMLU": 57.03},
    "majority-vote": {"GSM8K": 74.22, "MMLU": 56.71}, "ensemble-uncertainty": {"GSM8K": 74.30, "MMLU": 56.43},
    "laser": {"GSM8K": 74.00, "MMLU": 56.35}, "bayesian": {"GSM8K": 75.66, "MMLU": 57.39},
    "bayesian-noprior": {"GSM8K": 74.37}, "offline-only": {"GSM8K": 74.68},
}
BAYES_SIMULATION = {  # BayesianRouter controlled simulation: labelling accuracy %
    "bayesian": 88.23, "laser": 85.54, "majority-vote": 85.64,
}
BAYES_ABLATION = {  # BayesianRouter ablation: Arena-Hard win rate %
    "bayesian": 66.20, "bayesian-noprior": 63.20, "offline-only": 64.40,
}
BAYES_TABLE2 = {  # BayesianRouter Table 2: offline router accuracy %, in domain and out of domain
    "in_domain": 90.31, "ood": 87.92,
}

# ---------------------------------------------------------------- BSR (Hong et al., ICML 2025)

BSR_TABLE1_SHIFT = {  # BSR Table 1: effective-rank shift of the last hidden state, train to evaluation
    "bt": 10.42, "bsr": 0.14,
}
BSR_TABLE5 = {  # Kendall τ and in-domain accuracy, Qwen2.5-3B, BT -> BT-BSR (METHODS.md §3)
    ("prompt_ood", "kendall_tau"): (0.705, 0.720), ("response_ood", "kendall_tau"): (0.592, 0.599),
    ("mutual_ood", "kendall_tau"): (0.587, 0.611), ("in_domain", "pair_accuracy"): (0.850, 0.854),
}

# ---------------------------------------------------------------- R2M (arXiv 2601.22664)

R2M_TABLE3 = {"base": 72.3, "r2m": 78.6}  # RM accuracy on held-out pairs, vanilla -> R2M (LLaMA3-8B, RLOO; METHODS.md §4)


# ---------------------------------------------------------------- the claims


class Figure(NamedTuple):
    """A published claim's figure: where it is, how the paper states it (at its scale), and the
    value of our statistic it amounts to (None: set from our own data)."""

    source: str
    paper: str
    value: float | None


def fraction(points: float) -> float:
    """Percentage points as a fraction, to the 4 decimals the claims state (76.32 - 74.87 is 0.0145,
    not 0.014499999999999957)."""
    return round(points / 100, 4)


_L, _B, _S = LASER_TABLE1, BAYES_SIMULATION, BAYES_ABLATION
_TAU_BT, _TAU_BSR = BSR_TABLE5[("mutual_ood", "kendall_tau")]
CLAIM_FIGURES = {
    "1": Figure("LASeR Table 1",
                f"avg {_L['laser']['avg']:.2f} vs {_L['best-single-rm']['avg']:.2f} (accuracy %, Llama-3-8B)",
                fraction(_L["laser"]["avg"] - _L["best-single-rm"]["avg"])),
    "2a": Figure("LASeR abstract", f"+{LASER_ABSTRACT['avg_gain_over_ensemble']:.2f} avg accuracy (%)",
                 fraction(LASER_ABSTRACT["avg_gain_over_ensemble"])),
    "2b": Figure("LASeR abstract", f"about {LASER_ABSTRACT['speedup_over_ensemble']:g}x faster",
                 LASER_ABSTRACT["speedup_over_ensemble"]),
    "3a": Figure("BayesianRouter controlled simulation", f"{_B['bayesian']:.2f} vs {_B['laser']:.2f} (labelling accuracy %)",
                 fraction(_B["bayesian"] - _B["laser"])),
    "3b": Figure("BayesianRouter controlled simulation",
                 f"{_B['bayesian']:.2f} vs {_B['majority-vote']:.2f} (labelling accuracy %)",
                 fraction(_B["bayesian"] - _B["majority-vote"])),
    "4": Figure("BayesianRouter ablation", f"Arena-Hard {_S['bayesian-noprior']:.2f} -> {_S['bayesian']:.2f} (win rate %)",
                fraction(_S["bayesian"] - _S["bayesian-noprior"])),
    "5": Figure("BayesianRouter ablation", f"Arena-Hard {_S['offline-only']:.2f} -> {_S['bayesian']:.2f} (win rate %)",
                fraction(_S["bayesian"] - _S["offline-only"])),
    "6a": Figure("BayesianRouter Table 2", f"{BAYES_TABLE2['in_domain']:.2f} (router accuracy %)",
                 fraction(BAYES_TABLE2["in_domain"])),
    "6b": Figure("BayesianRouter Table 2", f"{BAYES_TABLE2['ood']:.2f} (router accuracy %)", fraction(BAYES_TABLE2["ood"])),
    "7": Figure("BSR Table 5", f"mutual-OOD {_TAU_BT:.3f} -> {_TAU_BSR:.3f}", round(_TAU_BSR - _TAU_BT, 4)),
    # Effective rank scales with the hidden size: claim 8's value is set from our BT runs
    # (rmroute.claims, with the share BSR keeps, BSR_TABLE1_SHIFT["bsr"] / BSR_TABLE1_SHIFT["bt"]).
    "8": Figure("BSR Table 1",
                f"effective-rank shift +{BSR_TABLE1_SHIFT['bt']:.2f} -> +{BSR_TABLE1_SHIFT['bsr']:.2f}", None),
    "9": Figure("R2M Table 3", f"{R2M_TABLE3['base']:.1f} -> {R2M_TABLE3['r2m']:.1f} (RM accuracy %)",
                fraction(R2M_TABLE3["r2m"] - R2M_TABLE3["base"])),
    "10": Figure("LASeR noise test",
                 f"GSM8K -{LASER_NOISE_DROP['laser']:.2f} vs -{LASER_NOISE_DROP['best-single-rm']:.1f} "
                 "(accuracy drop, sigma 0.3)",
                 fraction(LASER_NOISE_DROP["best-single-rm"] - LASER_NOISE_DROP["laser"])),
}
