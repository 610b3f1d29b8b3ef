"""Bad input stops with a ConfigError that names the field, before any job runs.

Every case starts from the real default (config/config.yaml and config/rm_pool.tsv) and breaks
one thing. Cases run against a throw-away project root holding the real schemas and a copy of
the sheet, so sheet edits and relative paths never touch the repository.
"""

from __future__ import annotations

import copy
import re
import csv
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from rmroute.config import ConfigError, load_config
from rmroute.methods import Method

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
# The cases break keys of methods declared under `methods:`; the default's baselines are generated
# (`baselines:`), so three of them are declared here by hand to have keys to break.
DEFAULT_CONFIG["methods"].update({"random": {"router": "random"}, "rm-arith-mc": {"router": "single", "rm": "rm_arith_mc"},
                                  "ensemble-mean": {"router": "ensemble", "combine": "mean"}})


# ---------------------------------------------------------------- edits

Edit = Callable[[dict], None]
SheetEdit = Callable[[list[str], list[dict]], None]  # (columns, rows), edited in place


def put(path: str, value: Any) -> Edit:
    """Set a dotted config key (method names may contain '-', never '.')."""
    *parents, last = path.split(".")

    def edit(config: dict) -> None:
        node = config
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


def drop(path: str) -> Edit:
    *parents, last = path.split(".")

    def edit(config: dict) -> None:
        node = config
        for key in parents:
            node = node[key]
        del node[last]

    return edit


def cell(rm_id: str, column: str, value: str) -> SheetEdit:
    def edit(columns: list[str], rows: list[dict]) -> None:
        next(r for r in rows if r["rm_id"] == rm_id)[column] = value

    return edit


def drop_column(column: str) -> SheetEdit:
    def edit(columns: list[str], rows: list[dict]) -> None:
        columns.remove(column)
        for row in rows:
            del row[column]

    return edit


def add_column(column: str, value: str) -> SheetEdit:
    def edit(columns: list[str], rows: list[dict]) -> None:
        columns.append(column)
        for row in rows:
            row[column] = value

    return edit


def init(rm_id: str, value: str) -> SheetEdit:
    """Set a row's `init`, adding the optional column (as `sft`) where the sheet lacks it."""
    def edit(columns: list[str], rows: list[dict]) -> None:
        if "init" not in columns:
            add_column("init", "sft")(columns, rows)
        cell(rm_id, "init", value)(columns, rows)

    return edit


def no_rows(columns: list[str], rows: list[dict]) -> None:
    rows.clear()


def no_text(columns: list[str], rows: list[dict]) -> None:
    columns.clear()
    rows.clear()


def duplicate_first_row(columns: list[str], rows: list[dict]) -> None:
    rows.append(dict(rows[0]))


def write_sheet(path: Path, edits: list[SheetEdit]) -> None:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        columns, rows = list(reader.fieldnames), list(reader)
    for edit in edits:
        edit(columns, rows)
    lines = ["\t".join(columns)] + ["\t".join(row[c] for c in columns) for row in rows] if columns else []
    path.write_text("".join(line + "\n" for line in lines))


@dataclass
class Case:
    id: str
    fields: tuple[str, ...]  # every one must appear in the error message
    config: list[Edit] = field(default_factory=list)
    sheet: list[SheetEdit] = field(default_factory=list)


CASES = [
    # wrong types
    Case("iterations-is-a-string", ("budget.iterations",), [put("budget.iterations", "3")]),
    Case("split-sizes-is-a-list", ("testbed.split_sizes",), [put("testbed.split_sizes", [2000, 400, 200, 400, 150])]),
    Case("sft-is-a-list", ("sft",), [put("sft", [1200, 64])]),
    Case("seeds-is-an-int", ("seeds",), [put("seeds", 0)]),
    Case("lr-is-a-word", ("sft.lr",), [put("sft.lr", "fast")]),
    Case("recipe-name-is-a-number", ("methods.laser.recipe",), [put("methods.laser.recipe", 1)]),
    # unknown or missing keys
    Case("unknown-top-level-key", ("iteration",), [put("iteration", 3)]),
    Case("typo-in-method-key", ("methods.laser", "alpah"), [put("methods.laser.alpah", 0.2)]),
    Case("typo-in-budget-key", ("budget", "pairs"), [put("budget.pairs", 2)]),
    Case("typo-in-recipe-key", ("recipes.laser", "betta"), [put("recipes.laser.betta", 0.1)]),
    Case("missing-budget-section", ("budget",), [drop("budget")]),
    Case("missing-recipes-section", ("recipes",), [drop("recipes")]),
    Case("missing-router", ("methods.random", "router"), [drop("methods.random.router")]),
    Case("build-policy-without-heads", ("policy.heads",), [drop("policy.heads")]),
    # routers and methods
    Case("unknown-router", ("methods.laser.router",), [put("methods.laser.router", "ucb")]),
    Case("single-rm-unknown-id", ("methods.rm-arith-mc.rm",), [put("methods.rm-arith-mc.rm", "rm_generalist")]),
    Case("single-rm-without-rm", ("methods.rm-arith-mc.rm",), [drop("methods.rm-arith-mc.rm")]),
    Case("rm-given-to-linucb", ("methods.laser.rm",), [put("methods.laser.rm", "rm_arith_mc_bt")]),
    Case("unknown-combiner", ("methods.ensemble-mean.combine",), [put("methods.ensemble-mean.combine", "median")]),
    Case("unknown-thompson-prior", ("methods.ts.prior",), [put("methods.ts", {"router": "thompson", "prior": "flat"})]),
    Case("pair-granularity-with-linucb", ("methods.laser.granularity",), [put("methods.laser.granularity", "pair")]),
    Case("pair-granularity-with-ensemble", ("methods.ensemble-mean.granularity",),
         [put("methods.ensemble-mean.granularity", "pair")]),
    Case("thompson-per-batch", ("methods.ts.granularity",), [put("methods.ts", {"router": "thompson", "granularity": "batch"})]),
    Case("pair-granularity-with-top-vs-next", ("methods.random.pair_rule",), [put("methods.random.granularity", "pair")]),
    Case("method-name-with-space", ("methods", "laser v2"), [put("methods.laser v2", {"router": "linucb"})]),
    Case("no-methods", ("methods",), [put("methods", {})]),
    # recipes
    Case("recipe-missing", ("methods.laser.recipe", "laser"), [drop("recipes.laser"), drop("baselines")]),
    Case("baselines-recipe-missing", ("baselines.laser", "not defined under recipes"), [drop("recipes.laser")]),
    Case("unknown-recipe-name", ("methods.laser.recipe", "lasr"), [put("methods.laser.recipe", "lasr")]),
    Case("bad-loss-in-recipe", ("recipes.laser.loss",), [put("recipes.laser.loss", "ipo")]),
    Case("bad-loss-in-method", ("methods.laser.loss",), [put("methods.laser.loss", "kto")]),
    Case("zero-beta-in-recipe", ("recipes.laser.beta",), [put("recipes.laser.beta", 0)]),
    Case("negative-beta-in-method", ("methods.laser.beta",), [put("methods.laser.beta", -0.1)]),
    Case("recipe-without-lr", ("recipes.bayesian", "lr"), [drop("recipes.bayesian.lr")]),
    # RM training
    Case("generative-rm-zero-steps", ("rm_training.generative.steps",), [put("rm_training.generative", {"steps": 0, "batch_size": 8, "lr": 0.001})]),
    Case("generative-rm-unknown-key", ("rm_training.generative", "epochs"),
         [put("rm_training.generative", {"steps": 5, "batch_size": 8, "lr": 0.001, "epochs": 2})]),
    # budgets
    Case("zero-iterations", ("budget.iterations",), [put("budget.iterations", 0)]),
    Case("negative-iterations", ("budget.iterations",), [put("budget.iterations", -1)]),
    Case("zero-prompts", ("budget.prompts_per_iteration",), [put("budget.prompts_per_iteration", 0)]),
    Case("negative-prompts", ("budget.prompts_per_iteration",), [put("budget.prompts_per_iteration", -8)]),
    Case("zero-samples", ("budget.samples_per_prompt",), [put("budget.samples_per_prompt", 0)]),
    Case("one-sample", ("budget.samples_per_prompt",), [put("budget.samples_per_prompt", 1)]),
    Case("zero-pairs", ("budget.pairs_per_prompt",), [put("budget.pairs_per_prompt", 0)]),
    Case("pairs-equal-samples-top-vs-next", ("budget.pairs_per_prompt",), [put("budget.pairs_per_prompt", 4)]),
    Case("pairs-above-samples-top-vs-next", ("budget.pairs_per_prompt",),
         [put("budget.samples_per_prompt", 3), put("budget.pairs_per_prompt", 5)]),
    Case("rollout-budget-exceeds-split", ("budget.prompts_per_iteration", "testbed.split_sizes.rollout"),
         [put("budget.iterations", 10)]),
    Case("unknown-batch-order", ("budget.batch_order",), [put("budget.batch_order", "random")]),
    Case("recipe-batch-size-removed", ("recipes.laser", "batch_size"), [put("recipes.laser.batch_size", 16)]),
    Case("unknown-reward-timing", ("recipes.laser.reward_timing",), [put("recipes.laser.reward_timing", "later")]),
    Case("method-reward-timing-unknown", ("methods.laser.reward_timing",), [put("methods.laser.reward_timing", "end")]),
    Case("epochs-below-one", ("recipes.laser.epochs",), [put("recipes.laser.epochs", 0.5)]),
    Case("sim-lambda0-zero", ("routing_sim.lambda0s",), [put("routing_sim.lambda0s", [1, 0])]),
    Case("sim-lambda0s-empty", ("routing_sim.lambda0s",), [put("routing_sim.lambda0s", [])]),
    Case("negative-sft-steps", ("sft.steps",), [put("sft.steps", -1)]),
    # top-level values
    Case("results-dir-escapes", ("results_dir",), [put("results_dir", "../x")]),
    Case("results-dir-absolute-elsewhere", ("results_dir",), [put("results_dir", "/tmp/rmroute-results")]),
    Case("policy-source-escapes", ("policy.source",), [put("policy.source", "../outside/model")]),
    Case("policy-source-missing", ("policy.source",), [put("policy.source", "models/sft/checkpoint")]),
    Case("hidden-size-not-divisible", ("policy.heads", "hidden_size"), [put("policy.hidden_size", 130)]),
    Case("seeds-repeated", ("seeds",), [put("seeds", [0, 1, 0])]),
    Case("seeds-empty", ("seeds",), [put("seeds", [])]),
    Case("unknown-device", ("device",), [put("device", "tpu")]),
    Case("zero-threads", ("threads",), [put("threads", 0)]),
    Case("run-name-with-space", ("run_name",), [put("run_name", "my run")]),
    Case("sft-mix-all-zero", ("sft.mix",), [put("sft.mix", {"arith": 0, "facts_mc": 0})]),
    Case("sft-mix-unknown-domain", ("sft.mix", "math"), [put("sft.mix", {"math": 1.0})]),
    Case("too-many-mc-options", ("testbed.mc_options",), [put("testbed.mc_options", 7)]),
    Case("more-mc-options-than-values", ("testbed.mc_options",), [put("testbed.mc_options", 5)]),
    Case("reverse-min-above-max", ("testbed.reverse_min_words",),
         [put("testbed.reverse_min_words", 8), put("testbed.reverse_max_words", 5)]),
    Case("yesno-gap-not-below-max", ("testbed.yesno_max_gap",),
         [put("testbed.yesno_max_number", 5), put("testbed.yesno_max_gap", 5)]),
    Case("yesno-gap-zero", ("testbed.yesno_max_gap",), [put("testbed.yesno_max_gap", 0)]),
    Case("sft-band-reversed", ("sft.band",), [put("sft.band", [0.75, 0.25])]),
    Case("sft-band-one-edge", ("sft.band",), [put("sft.band", [0.25])]),
    Case("sft-band-above-one", ("sft.band",), [put("sft.band", [0.25, 1.5])]),
    Case("sft-select-unknown", ("sft.select",), [put("sft.select", "best")]),
    Case("sft-select-on-test", ("sft.select_split",), [put("sft.select_split", "test")]),
    Case("validation-split-is-test", ("evaluation.validation_split", "test"), [put("evaluation.validation_split", "test")]),
    Case("val-fraction-one", ("offline_router.val_fraction",), [put("offline_router.val_fraction", 1.0)]),
    Case("rm-pool-missing", ("rm_pool",), [put("rm_pool", "config/rm_pools.tsv")]),
    Case("rm-pool-is-a-directory", ("rm_pool",), [put("rm_pool", "config")]),
    # LoRA and the rollout backend
    Case("lora-rank-zero", ("lora.r",), [put("lora", {"r": 0})]),
    Case("lora-dropout-one", ("lora.dropout",), [put("lora", {"dropout": 1.0})]),
    Case("lora-no-targets", ("lora.target_modules",), [put("lora", {"target_modules": []})]),
    Case("lora-unknown-target", ("lora.target_modules", "qkv"), [put("lora", {"target_modules": ["q_proj", "qkv"]})]),
    Case("lora-unknown-save", ("lora.save",), [put("lora", {"save": "both"})]),
    Case("lora-typo", ("lora", "rank"), [put("lora", {"rank": 16})]),
    Case("rollout-unknown-backend", ("rollout.backend",), [put("rollout", {"backend": "sglang"})]),
    Case("rollout-vllm-on-cpu", ("rollout.backend", "device"), [put("rollout", {"backend": "vllm"})]),
    Case("rollout-memory-above-one", ("rollout.gpu_memory_utilization",),
         [put("rollout", {"backend": "vllm", "gpu_memory_utilization": 1.5})]),
    # the RM sheet
    Case("sheet-missing-column", ("rm_pool", "label_noise"), sheet=[drop_column("label_noise")]),
    Case("sheet-r2m-unknown-base", ("rm_pool[rm_arith_mc_bt].source", "rm_none"), sheet=[cell("rm_arith_mc_bt", "source", "r2m:rm_none")]),
    Case("sheet-r2m-over-a-generative-rm", ("rm_pool[rm_arith_mc_bt].source", "rm_arith_mc", "loss"),
         sheet=[cell("rm_arith_mc_bt", "source", "r2m:rm_arith_mc"), cell("rm_arith_mc_bt", "init", "sft")]),
    Case("sheet-unknown-column", ("rm_pool[rm_arith_mc]", "weight"), sheet=[add_column("weight", "1")]),
    Case("sheet-duplicated-rm-id", ("rm_pool.rm_id", "rm_arith_mc"), sheet=[duplicate_first_row]),
    Case("sheet-rm-id-with-dash", ("rm_pool[rm-yesno-ins-noisy].rm_id",), sheet=[cell("rm_yesno_ins_noisy", "rm_id", "rm-yesno-ins-noisy")]),
    Case("sheet-unknown-domain", ("rm_pool[rm_arith_mc_bt].domain_mix", "math"),
         sheet=[cell("rm_arith_mc_bt", "domain_mix", "math:0.5,arith:0.5")]),
    Case("sheet-negative-weight", ("rm_pool[rm_arith_mc_bt].domain_mix",), sheet=[cell("rm_arith_mc_bt", "domain_mix", "arith:-0.5")]),
    Case("sheet-weight-not-a-number", ("rm_pool[rm_arith_mc_bt].domain_mix",), sheet=[cell("rm_arith_mc_bt", "domain_mix", "arith:1.2.3")]),
    Case("sheet-weights-all-zero", ("rm_pool[rm_arith_mc_bt].domain_mix",), sheet=[cell("rm_arith_mc_bt", "domain_mix", "arith:0,instruct:0")]),
    Case("sheet-label-noise-a-word", ("rm_pool[rm_yesno_ins_noisy].label_noise",), sheet=[cell("rm_yesno_ins_noisy", "label_noise", "high")]),
    Case("sheet-label-noise-above-half", ("rm_pool[rm_yesno_ins_noisy].label_noise",), sheet=[cell("rm_yesno_ins_noisy", "label_noise", "0.6")]),
    Case("sheet-label-noise-negative", ("rm_pool[rm_yesno_ins_noisy].label_noise",), sheet=[cell("rm_yesno_ins_noisy", "label_noise", "-0.1")]),
    Case("sheet-trust-remote-code-maybe", ("rm_pool[rm_yesno_ins_noisy].trust_remote_code",),
         sheet=[cell("rm_yesno_ins_noisy", "trust_remote_code", "maybe")]),
    Case("sheet-source-escapes", ("rm_pool[rm_arith_mc_bt].source",), sheet=[cell("rm_arith_mc_bt", "source", "../../etc")]),
    Case("sheet-source-absolute-elsewhere", ("rm_pool[rm_arith_mc_bt].source",), sheet=[cell("rm_arith_mc_bt", "source", "/etc")]),
    Case("sheet-source-neither", ("rm_pool[rm_arith_mc_bt].source",), sheet=[cell("rm_arith_mc_bt", "source", "my_rm_checkpoint")]),
    Case("sheet-source-deep-missing-path", ("rm_pool[rm_arith_mc_bt].source",),
         sheet=[cell("rm_arith_mc_bt", "source", "models/rms/general")]),
    Case("sheet-empty", ("rm_pool", "no RM rows"), sheet=[no_rows]),
    Case("sheet-zero-bytes", ("rm_pool", "empty"), sheet=[no_text]),
    Case("sheet-bad-dtype", ("rm_pool[rm_arith_mc_bt].dtype",), sheet=[cell("rm_arith_mc_bt", "dtype", "int8")]),
    Case("sheet-bad-loss", ("rm_pool[rm_arith_mc_bt].loss",), sheet=[cell("rm_arith_mc_bt", "loss", "hinge")]),
    Case("sheet-bad-chat-template", ("rm_pool[rm_arith_mc_bt].chat_template",), sheet=[cell("rm_arith_mc_bt", "chat_template", "chatml")]),
    Case("sheet-fractional-n-pairs", ("rm_pool[rm_arith_mc_bt].n_pairs",), sheet=[cell("rm_arith_mc_bt", "n_pairs", "1.5")]),
    Case("sheet-infinite-n-pairs", ("rm_pool[rm_arith_mc_bt].n_pairs",), sheet=[cell("rm_arith_mc_bt", "n_pairs", "inf")]),
    Case("sheet-zero-n-pairs", ("rm_pool[rm_arith_mc_bt].n_pairs",), sheet=[cell("rm_arith_mc_bt", "n_pairs", "0")]),
    Case("sheet-max-length-a-word", ("rm_pool[rm_arith_mc_bt].max_length",), sheet=[cell("rm_arith_mc_bt", "max_length", "long")]),
    Case("sheet-batch-size-blank", ("rm_pool[rm_arith_mc_bt].batch_size",), sheet=[cell("rm_arith_mc_bt", "batch_size", "")]),
    # the sheet's optional init column
    Case("sheet-init-unknown-rm", ("rm_pool[rm_arith_mc_bt].init", "rm_none"), sheet=[init("rm_arith_mc_bt", "rm_none")]),
    Case("sheet-init-itself", ("rm_pool[rm_arith_mc_bt].init", "itself"), sheet=[init("rm_arith_mc_bt", "rm_arith_mc_bt")]),
    Case("sheet-init-cycle", ("rm_pool[rm_arith_mc_bt].init", "cycle"),
         sheet=[init("rm_arith_mc_bt", "rm_yesno_ins_noisy"), init("rm_yesno_ins_noisy", "rm_arith_mc_bt")]),
    Case("sheet-init-generative-from-classifier", ("rm_pool[rm_arith_mc].init", "rm_arith_mc_bt"),
         sheet=[init("rm_arith_mc", "rm_arith_mc_bt")]),
    Case("sheet-init-a-path", ("rm_pool[rm_arith_mc_bt].init",), sheet=[init("rm_arith_mc_bt", "../models/x")]),
    Case("sheet-init-on-a-hub-row", ("rm_pool[rm_arith_mc_bt].init", "train"),
         sheet=[cell("rm_arith_mc_bt", "source", "org/some-rm"), init("rm_arith_mc_bt", "rm_arith_mc")]),
    Case("sheet-init-from-a-hub-row", ("rm_pool[rm_yesno_ins_noisy].init", "org/some-rm"),
         sheet=[cell("rm_arith_mc_bt", "source", "org/some-rm"), init("rm_arith_mc_bt", "sft"),
                init("rm_yesno_ins_noisy", "rm_arith_mc_bt")]),
    # the BSR evaluation and R2M blocks
    Case("bsr-eval-without-rm", ("bsr_eval", "rm"), [put("bsr_eval", {"seeds": [0, 1, 2]})]),
    Case("bsr-eval-unknown-rm", ("bsr_eval.rm", "rm_none"), [put("bsr_eval", {"rm": "rm_none"})]),
    Case("bsr-eval-generative-rm", ("bsr_eval.rm", "rm_arith_mc"), [put("bsr_eval", {"rm": "rm_arith_mc"})]),
    Case("bsr-eval-seeds-repeated", ("bsr_eval.seeds",), [put("bsr_eval", {"rm": "rm_arith_mc_bt", "seeds": [0, 0, 1]})]),
    Case("bsr-eval-one-sample", ("bsr_eval.samples_per_prompt",),
         [put("bsr_eval", {"rm": "rm_arith_mc_bt", "samples_per_prompt": 1})]),
    Case("bsr-eval-response-policy-not-earlier", ("bsr_eval.response_policy_steps", "sft.steps"),
         [put("bsr_eval", {"rm": "rm_arith_mc_bt", "response_policy_steps": 1200})]),
    Case("r2m-compare-unknown-method", ("r2m.compare.r2m", "rm-none"), [put("r2m", {"compare": {"r2m": "rm-none"}})]),
    Case("r2m-compare-not-an-r2m-row", ("r2m.compare.r2m", "rm_arith_mc_bt"),
         [put("r2m", {"compare": {"r2m": "rm-arith-mc-bt"}}), put("methods.rm-arith-mc-bt", {"router": "single", "rm": "rm_arith_mc_bt"})]),
    Case("r2m-compare-base-is-r2m", ("r2m.compare.base", "laser"), [put("r2m", {"compare": {"base": "laser"}})]),
    Case("r2m-unknown-method", ("r2m.method", "rm-none"), [put("r2m", {"method": "rm-none"})]),
    Case("r2m-method-not-single", ("r2m.method", "linucb"), [put("r2m", {"method": "laser"})]),
    Case("r2m-generative-base", ("r2m.method", "rm_arith_mc"), [put("r2m", {"method": "rm-arith-mc"})]),
    Case("r2m-one-iteration", ("r2m.method", "budget.iterations"),
         [put("methods.rm-arith-mc-bt", {"router": "single", "rm": "rm_arith_mc_bt"}), put("budget.iterations", 1),
          put("r2m", {"method": "rm-arith-mc-bt"})]),
    Case("r2m-omega-floor-above-one", ("r2m.omega_floor",), [put("r2m", {"method": "rm-arith-mc", "omega_floor": 1.5})]),
    Case("r2m-unknown-key", ("r2m", "feedback"), [put("r2m", {"method": "rm-arith-mc", "feedback": "noise"})]),
]


def load(project: Path, case: Case):
    config = copy.deepcopy(DEFAULT_CONFIG)
    for edit in case.config:
        edit(config)
    if case.sheet:
        write_sheet(project / "config" / "rm_pool.tsv", case.sheet)
    return load_config(config, project)


def test_there_are_many_cases():
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_names_the_field(project: Path, case: Case):
    with pytest.raises(ConfigError) as info:
        load(project, case)
    for name in case.fields:
        assert name in str(info.value), f"{name!r} not in {str(info.value)!r}"


def test_default_config_and_sheet_resolve_every_method(project: Path):
    config, sheet, methods = load(project, Case("default", ()))
    assert list(sheet["rm_id"]) == ["rm_arith_mc", "rm_yesno_ins", "rm_arith_mc_bt", "rm_yesno_ins_noisy"]
    assert sheet["trust_remote_code"].dtype == bool
    rms = list(sheet["rm_id"])
    generated = {f"{b}@{recipe}" for recipe, items in DEFAULT_CONFIG["baselines"].items() for item in items
                 for b in (rms if item == "single" else [item if isinstance(item, str) else next(iter(item))])}
    assert set(methods) == set(DEFAULT_CONFIG["methods"]) | generated
    for name, method in methods.items():
        assert method.name == name
        assert method.recipe_name in config["recipes"]
        assert method.granularity in ("batch", "query", "pair")
        assert method.pairs_per_prompt == config["budget"]["pairs_per_prompt"]
        assert Method.from_dict(method.to_dict()) == method  # what a job receives as a param
    assert methods["rm-arith-mc"].arm == 0
    assert methods["laser"].recipe.beta == config["recipes"]["laser"]["beta"]
    assert methods["bayesian"].recipe_name == "bayesian"  # a thompson method takes the bayesian recipe
    assert methods["laser"].recipe.reward_timing == "step"  # the papers' timing unless a recipe says otherwise
    assert config["budget"]["batch_order"] == "interleaved"
    assert config["offline_router"]["encoder"] == "minilm"  # schema defaults are filled in


def test_defaults_that_the_schema_leaves_open(project: Path):
    """Optional keys get defaults, and a thompson method picks the bayesian recipe by itself."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    del config["sft"]["mix"], config["recipes"]["bayesian"]["tie_threshold"]
    config["methods"]["bayesian-router"] = {"router": "thompson"}
    config["methods"]["no-prior"] = {"router": "thompson", "prior": "zero"}
    config, _, methods = load_config(config, project)
    assert config["sft"]["mix"] == {"arith": 1.0, "facts_mc": 1.0, "facts_yesno": 1.0, "instruct": 1.0}
    assert methods["bayesian-router"].recipe_name == "bayesian"
    assert methods["bayesian-router"].granularity == "pair"
    assert methods["bayesian-router"].prior == "offline"
    assert methods["bayesian-router"].recipe.tie_threshold == 0.0
    assert methods["no-prior"].prior == "zero"


def test_hub_and_local_sources(project: Path):
    """A hub id 'org/name' passes without a download; a local directory inside the project passes."""
    (project / "models" / "my_rm").mkdir(parents=True)
    write_sheet(project / "config" / "rm_pool.tsv", [
        cell("rm_arith_mc_bt", "source", "OpenAssistant/reward-model-deberta-v3-large-v2"), init("rm_arith_mc_bt", "sft"),
        cell("rm_yesno_ins_noisy", "source", "models/my_rm"), init("rm_yesno_ins_noisy", "sft"),
        cell("rm_arith_mc", "domain_mix", "arith,facts_mc:2"),  # a weight left out counts 1
    ])
    _, sheet, _ = load_config(copy.deepcopy(DEFAULT_CONFIG), project)
    assert sheet.set_index("rm_id").loc["rm_yesno_ins_noisy", "source"] == "models/my_rm"


def test_init_column_is_optional_and_may_name_a_trained_rm(project: Path):
    """Without the column every RM starts from the SFT policy; with it a classifier may start from a
    generative specialist, and a generative RM from another one."""
    def without_init(columns: list[str], rows: list[dict]) -> None:
        if "init" in columns:
            drop_column("init")(columns, rows)

    write_sheet(project / "config" / "rm_pool.tsv", [without_init])
    _, sheet, _ = load_config(copy.deepcopy(DEFAULT_CONFIG), project)
    assert set(sheet["init"]) == {"sft"}
    write_sheet(project / "config" / "rm_pool.tsv", [init("rm_arith_mc_bt", "rm_arith_mc"), init("rm_yesno_ins_noisy", "rm_arith_mc_bt"),
                                                    init("rm_yesno_ins", "rm_arith_mc")])
    _, sheet, _ = load_config(copy.deepcopy(DEFAULT_CONFIG), project)
    assert sheet.set_index("rm_id")["init"].to_dict() == {
        "rm_arith_mc": "sft", "rm_yesno_ins": "rm_arith_mc", "rm_arith_mc_bt": "rm_arith_mc", "rm_yesno_ins_noisy": "rm_arith_mc_bt"}


@pytest.mark.workflow
def test_snakemake_stops_before_scheduling(tmp_path: Path):
    if not (REPO / "workflow" / "rules" / "iterate.smk").exists():
        pytest.skip("the workflow's rule files are not all in place yet (workflow/rules/iterate.smk is missing)")
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["budget"]["iterations"] = 0
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    run = subprocess.run([str(snakemake), "-n", "--cores", "1", "--configfile", str(configfile)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "budget.iterations" in output
    assert "Job stats" not in output


@pytest.mark.parametrize("name", ["claims.yaml", "claims_cluster.yaml", "full.yaml", "paper.yaml", "grpo.yaml"])
def test_shipped_configs_resolve(name: str):
    """The claims and full configs and the paper-scale config validate and resolve every method."""
    config = yaml.safe_load((REPO / "config" / name).read_text())
    _, sheet, methods = load_config(config, REPO)
    assert set(config["methods"]) <= set(methods)
    if name.startswith("claims"):  # the claims compare within LASeR's recipe
        assert methods["laser"].recipe_name == "laser" and methods["ensemble-mean@laser"].recipe_name == "laser"
    elif name == "grpo.yaml":  # online recipes: every method and baseline trains inside GRPO or RLOO
        assert all(m.recipe.online for m in methods.values())
        assert methods["laser-grpo-loss"].recipe.signal == "loss" and methods["laser-grpo"].recipe.signal == "prior_rank"
        assert methods["ensemble-normalize_then_sum@grpo"].combine == "normalize_then_sum"
        assert methods["r2m-rloo"].recipe.trainer == "rloo"
    elif name == "full.yaml":
        assert methods["nll-only"].recipe.loss == "nll"  # a method key overrides its recipe
        assert methods["shared-bayesian"].recipe.pair_rule == methods["shared-laser"].recipe.pair_rule == "random_routed"
    else:
        assert sheet["trust_remote_code"].tolist() == [False, False, True]  # only where the sheet says so


def test_lora_and_rollout_blocks_get_their_defaults(project: Path):
    """An empty `lora:` block switches LoRA on with the documented defaults; `rollout` defaults to hf."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["lora"], config["rollout"] = {}, {}
    config, _, _ = load_config(config, project)
    from rmroute import backends, lora

    assert config["lora"] == {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "save": "adapter"}
    assert config["rollout"] == {"backend": "hf", "gpu_memory_utilization": 0.85}
    assert lora.settings({}) == config["lora"] and backends.settings({}) == config["rollout"]  # code and schema agree
    assert "lora" not in DEFAULT_CONFIG and "rollout" not in DEFAULT_CONFIG  # the testbed default trains every weight


def test_the_cluster_claims_config_builds_its_dag():
    """The dry run of config/claims_cluster.yaml (one testbed instance): every policy run, its
    rollouts and evaluations are scheduled, LASeR's per-domain runs included."""
    config = yaml.safe_load((REPO / "config" / "claims_cluster.yaml").read_text())
    _, _, methods = load_config(copy.deepcopy(config), REPO)
    snakemake = Path(sys.executable).with_name("snakemake")
    run = subprocess.run([str(snakemake), "-n", "--cores", "1", "--configfile", "config/claims_cluster.yaml"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts = dict(line.split()[:2] for line in run.stdout.splitlines()
                  if len(line.split()) == 2 and line.split()[1].isdigit())
    runs = len(methods) * len(config["seeds"])
    assert int(counts["train_iteration"]) == runs * config["budget"]["iterations"]
    assert int(counts["evaluate"]) == runs
    assert {"laser-arith", "rm_arith_mc-arith", "laser-perquery", "laser-domainscope"} <= set(methods)
    assert list(methods["rm_arith_mc-arith"].domains) == ["arith"]


def test_the_readmes_rm_line_appended_verbatim_loads(project: Path):
    """The README's one-line RM, appended to the sheet exactly as written (fewer fields than the
    header: the optional columns take their defaults), loads; so the README cannot drift again."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("**A reward model: one line.**", 1)[1].split("```", 2)[1]
    line = next(row for row in block.splitlines() if row.strip())
    assert "\t" in line, "the README's RM line must be tab-separated, as the sheet is"
    sheet = project / "config" / "rm_pool.tsv"
    sheet.write_text(sheet.read_text().rstrip("\n") + "\n" + line + "\n")
    _, rows, methods = load_config(copy.deepcopy(DEFAULT_CONFIG), project)
    row = rows.set_index("rm_id").loc[line.split("\t")[0]]
    assert row["init"] == "sft" and row["description"] == "" and row["domain_mix"] == "-"
    assert line.split("\t")[0] in methods["laser"].rms  # every method's pool picks it up


def test_a_trained_rm_needs_its_domain_mix(project: Path):
    sheet = project / "config" / "rm_pool.tsv"
    rows = sheet.read_text().splitlines()
    fields = rows[1].split("\t")
    fields[3] = "-"
    sheet.write_text("\n".join([rows[0], "\t".join(fields), *rows[2:]]) + "\n")
    with pytest.raises(ConfigError, match=rf"rm_pool\[{fields[0]}\]\.domain_mix: an RM trained here"):
        load_config(copy.deepcopy(DEFAULT_CONFIG), project)


@pytest.mark.parametrize("method,recipe,field", [
    ({"router": "thompson", "recipe": "online"}, {}, "methods.bad.router"),  # pair contexts: no pairs online
    ({"router": "ensemble", "combine": "normalize_then_sum", "recipe": "online"}, {"trainer": "rloo"}, "methods.bad.combine"),
    ({"router": "linucb", "recipe": "online", "join": {"rm_yesno_ins": 2}}, {}, "methods.bad.join"),
    ({"router": "linucb", "recipe": "online"}, {"signal": "reward"}, "recipes.online.signal"),
])
def test_online_recipes_name_the_field_they_cannot_run(project: Path, method, recipe, field):
    """An online recipe (trainer grpo | rloo) stops before any job with the field that cannot work."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["recipes"]["online"] = {"trainer": "grpo", "lr": 1e-4, "normaliser": "quantile", "signal": "prior_rank", **recipe}
    config["methods"]["bad"] = method
    with pytest.raises(ConfigError, match=re.escape(field.split(".")[-1])) as error:
        load_config(config, project)
    assert field.split(".")[0] in str(error.value) or field.rsplit(".", 1)[0] in str(error.value)


@pytest.mark.parametrize("block,field", [({"lora": {}}, "lora")])
def test_online_recipes_refuse_what_they_do_not_run(project: Path, block, field):
    """LoRA adapters are a DPO-path feature: with an online method the run stops, the key named."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["recipes"]["online"] = {"trainer": "grpo", "lr": 1e-4, "normaliser": "quantile", "signal": "prior_rank"}
    config["methods"]["laser-grpo"] = {"router": "linucb", "recipe": "online"}
    config.update(block)
    with pytest.raises(ConfigError, match=re.escape(field)):
        load_config(config, project)
