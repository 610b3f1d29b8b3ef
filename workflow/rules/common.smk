# Config validation, the RM sheet, resolved methods, wildcard constraints and input functions.
import os
import sys
from pathlib import Path

PROJECT = Path(workflow.basedir)
# Jobs import the library from src/ whether or not it is pip-installed in their environment.
sys.path.insert(0, str(PROJECT / "src"))
os.environ.update(
    PYTHONPATH=str(PROJECT / "src"),
    HF_HUB_OFFLINE="1",  # nothing is downloaded at run time
    TOKENIZERS_PARALLELISM="false",
)

from rmroute.config import load_config  # noqa: E402
from rmroute.testbed import OOD_SPLIT, SPLITS  # noqa: E402

_, RM_SHEET, METHODS = load_config(config, PROJECT)
RM_IDS = list(RM_SHEET["rm_id"])
SEEDS = [int(s) for s in config["seeds"]]
ITERATIONS = list(range(1, config["budget"]["iterations"] + 1))
RUNS = [(m, s, i) for m in METHODS for s in SEEDS for i in ITERATIONS]  # every (method, seed, iteration)
R = config["results_dir"]
ALL_SPLITS = [*SPLITS, OOD_SPLIT, "facts"]
PAIR_SPLITS = ["rm_train", "router_offline", "test", OOD_SPLIT]  # splits turned into gold-labelled pairs
BEHAVIOUR_SPLITS = ["router_offline", "test", OOD_SPLIT]  # splits every RM scores offline
NEEDS_OFFLINE_ROUTER = any(m.needs_offline_router for m in METHODS.values())
# The budget keys a rollout uses: changing another budget key re-runs no rollout.
ROLLOUT_BUDGET = {k: config["budget"][k] for k in ("prompts_per_iteration", "samples_per_prompt", "temperature", "max_new_tokens")}
# vLLM pins its own transformers and numpy, so its rollouts run in an environment of their own.
ROLLOUT_ENV = "../../envs/vllm.yaml" if config.get("rollout", {}).get("backend") == "vllm" else "../../envs/rmroute.yaml"


wildcard_constraints:
    method="|".join(METHODS),
    seed=r"\d+",
    it=r"\d+",
    rm="|".join(RM_IDS),


def rm_dir(rm_id):
    """A trained testbed RM lives under results/; any other source is used where it is."""
    source = RM_SHEET.set_index("rm_id").loc[rm_id, "source"]
    return f"{R}/rms/{rm_id}" if source == "train" else source


def trained_rm_dirs():
    return [rm_dir(r) for r in RM_IDS if RM_SHEET.set_index("rm_id").loc[r, "source"] == "train"]


def rm_pool_records():
    """The sheet as the scripts need it, with every RM's directory or hub id resolved."""
    rows = RM_SHEET.to_dict("records")
    for row in rows:
        row["path"] = rm_dir(row["rm_id"])
    return rows


def get_rm_row(wildcards):
    return RM_SHEET.set_index("rm_id").loc[wildcards.rm].to_dict()


def get_method(wildcards):
    """The resolved method as a plain dict (a job param: editing a method re-runs only its jobs)."""
    return METHODS[wildcards.method].to_dict()


def iteration_number(wildcards):
    return int(wildcards.it)


def get_decision_logs(wildcards):
    return [f"{R}/runs/{wildcards.method}/{wildcards.seed}/it{i}/decisions.parquet" for i in ITERATIONS]


def get_run_policies(wildcards):
    return [f"{R}/runs/{wildcards.method}/{wildcards.seed}/it{i}/policy" for i in ITERATIONS]


def get_previous_policy(wildcards):
    it = int(wildcards.it)
    return f"{R}/models/sft" if it == 1 else f"{R}/runs/{wildcards.method}/{wildcards.seed}/it{it - 1}/policy"


def get_reference_policy(wildcards):
    if METHODS[wildcards.method].recipe.reference == "sft":
        return f"{R}/models/sft"
    return get_previous_policy(wildcards)


def get_rollouts(wildcards):
    # Every method starts from the same SFT policy, so iteration 1 shares one set of rollouts per seed.
    it = int(wildcards.it)
    if it == 1:
        return f"{R}/rollouts/sft/{wildcards.seed}.jsonl"
    return f"{R}/runs/{wildcards.method}/{wildcards.seed}/it{it}/rollouts.jsonl"


def get_previous_router_state(wildcards):
    it = int(wildcards.it)
    if it == 1:
        return []
    run = f"{R}/runs/{wildcards.method}/{wildcards.seed}/it{it - 1}"
    return [f"{run}/router_state.json", f"{run}/router_state.safetensors"]


def get_offline_router(wildcards):
    return f"{R}/offline_router/model" if METHODS[wildcards.method].needs_offline_router else []


def eval_files():
    files = [f"{R}/eval/sft.tsv"]
    files += [f"{R}/runs/{m}/{s}/it{i}/eval.tsv" for m, s, i in RUNS]
    return files


def decision_files():
    return [f"{R}/decisions/{m}/{s}.parquet" for m in METHODS for s in SEEDS]


def all_targets():
    targets = [
        f"{R}/tables/sft_accuracy.tsv",
        f"{R}/tables/rm_accuracy.tsv",
        f"{R}/figures/rm_accuracy.png",
        f"{R}/tables/policy_accuracy.tsv",
        f"{R}/tables/laser_table1.tsv",
        f"{R}/tables/bayesian_table1.tsv",
        f"{R}/tables/router_choices.tsv",
        f"{R}/figures/accuracy_vs_iteration.png",
        f"{R}/figures/router_choices.png",
        f"{R}/tables/pair_quality.tsv",
        f"{R}/figures/pair_quality.png",
        f"{R}/tables/reward_validity.tsv",
        f"{R}/figures/reward_validity.png",
    ]
    if NEEDS_OFFLINE_ROUTER:
        targets += [f"{R}/tables/offline_router.tsv", f"{R}/tables/routing_sim.tsv", f"{R}/figures/routing_regret.png"]
    return targets
