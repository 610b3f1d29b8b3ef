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
from rmroute.evaluate import single_rm_methods  # noqa: E402
from rmroute.hub import check_hub_cache  # noqa: E402
from rmroute.rewards.sources import parse_r2m_source  # noqa: E402
from rmroute.settings import RM_SCORING_COLUMNS, SFT, Budget, Evaluation, RMTraining  # noqa: E402
from rmroute.testbed import OOD_SPLIT, SPLITS  # noqa: E402
from snakemake.logging import logger  # noqa: E402

_, RM_SHEET, METHODS = load_config(config, PROJECT)
# Every hub id the config loads must be in the local HF cache: an error now, not in the first job
# that loads it; a warning under `snakemake -n`. At parse time `workflow.dryrun` is still False
# (Snakemake 9 sets it when execution starts); the CLI's -n is in output_settings.dryrun.
for _message in check_hub_cache(config, RM_SHEET, METHODS, PROJECT,
                                dry_run=bool(getattr(workflow.output_settings, "dryrun", False) or workflow.dryrun)):
    logger.warning(f"Warning: {_message}")
RM_IDS = list(RM_SHEET["rm_id"])
SEEDS = [int(s) for s in config["seeds"]]
# The blocks rm_training, sft, budget and evaluation as typed settings (rmroute.settings): each
# rule's params take only the keys its job reads, so a changed key re-runs only the jobs that read it.
RM_TRAINING = RMTraining.from_config(config["rm_training"])
SFT_SETTINGS = SFT.from_config(config["sft"])
BUDGET = Budget.from_config(config["budget"])
EVALUATION = Evaluation.from_config(config["evaluation"])
ITERATIONS = list(range(1, BUDGET.iterations + 1))
RUNS = [(m, s, i) for m in METHODS for s in SEEDS for i in ITERATIONS]  # every (method, seed, iteration)
# Methods whose recipe trains online (`trainer: grpo | rloo`): they sample inside train_iteration,
# so they have no rollout jobs and no DPO pairs.
ONLINE = {m for m in METHODS if METHODS[m].recipe.online}
DPO_RUNS = [run for run in RUNS if run[0] not in ONLINE]
# `seed_jobs`: `together` runs all seeds of a method in one job of each per-run rule (rollout_sft,
# rollout, train_iteration, evaluate, collect_decisions), one after the other in one process, so
# the library start-up (~5 s a job on a CPU: torch, the transformers model stack, TRL) is paid
# once per method and iteration instead of once per seed; `separate` gives every seed its own jobs
# (a cluster, where each job gets its own GPU). Each seed's work is seeded alike either way: the outputs are the same
# files with the same bytes. SEED_PARTS is what the per-seed path patterns put where the seed
# goes: the wildcard, or every seed.
SEPARATE_SEEDS = config["seed_jobs"] == "separate"
SEED_PARTS = ["{seed}"] if SEPARATE_SEEDS else [str(s) for s in SEEDS]
SEED_DIR = "{seed}/" if SEPARATE_SEEDS else ""  # where a per-job log or benchmark path puts the seed
R = config["results_dir"]
ALL_SPLITS = [*SPLITS, OOD_SPLIT, "facts"]
PAIR_SPLITS = ["rm_train", "router_offline", "test", OOD_SPLIT]  # splits turned into gold-labelled pairs
BEHAVIOUR_SPLITS = ["router_offline", "test", OOD_SPLIT]  # splits every RM scores offline
NEEDS_OFFLINE_ROUTER = any(m.needs_offline_router for m in METHODS.values())
# The budget keys a rollout uses: changing another budget key re-runs no rollout.
ROLLOUT_BUDGET = BUDGET.rollout()
# vLLM pins its own transformers and numpy, so its rollouts run in an environment of their own.
ROLLOUT_ENV = "../../envs/vllm.yaml" if config.get("rollout", {}).get("backend") == "vllm" else "../../envs/rmroute.yaml"
# The BSR evaluation (block `bsr_eval`): one BT and one BSR RM per seed, on the data of one sheet row.
BSR_EVAL = config.get("bsr_eval", {})
BSR_LOSSES = ["bt", "bsr"]
BSR_SEEDS = [int(s) for s in BSR_EVAL.get("seeds", [])]
BSR_ROW = RM_SHEET.set_index("rm_id").loc[BSR_EVAL["rm"]].to_dict() if BSR_EVAL else {}
# The response-OOD policy: the SFT run stopped early (the same seed, data order and schedule).
BSR_RESPONSE_SFT = SFT_SETTINGS.stopped_at(BSR_EVAL["response_policy_steps"]).params() if BSR_EVAL else {}
# R2M for one iteration (block `r2m`): its base RM is the RM of the single-RM method it names.
R2M_CONFIG = config.get("r2m", {})
R2M_ROWS = [r for r in RM_IDS if parse_r2m_source(RM_SHEET.set_index("rm_id").loc[r, "source"])]  # R2M in the loop
R2M_VARIANT_NAMES = ["r2m", "r2m-noise", "r2m-untrained"]
R2M_PROBE = bool(R2M_CONFIG.get("method"))
R2M_COMPARE = R2M_CONFIG.get("compare", {})  # variant -> single-RM method, for r2m.tsv
# The claims table (block `claims`): which method plays which role in the published claims.
CLAIMS = config.get("claims", {})
# Where choices between methods (the best single RM) are made: never the test split. The testbed
# draws no prompt twice across splits, and at paper scale (hf_data) router_offline and rm_train are
# slices of each dataset's `split` while test is read from its `test_split`, so either is disjoint
# from test (router_offline, the default, is also the held-out split of SFT checkpoint selection).
VALIDATION_SPLIT = EVALUATION.validation_split
# claims.best_single absent or `auto`: chosen on validation among the single-RM methods of the
# routed method's recipe (rmroute.claims.resolve_best_single).
CLAIMS_AUTO_BEST_SINGLE = bool(CLAIMS) and CLAIMS.get("best_single", "auto") == "auto"


wildcard_constraints:
    method="|".join(METHODS),
    seed=r"\d+",
    it=r"\d+",
    rm="|".join(RM_IDS),
    loss="|".join(BSR_LOSSES),
    bsr_seed=r"\d+",


def rm_dir(rm_id):
    """A trained testbed RM lives under results/; an R2M row wraps its base RM's directory; any
    other source is used where it is."""
    source = RM_SHEET.set_index("rm_id").loc[rm_id, "source"]
    r2m = parse_r2m_source(source)
    if r2m:
        return rm_dir(r2m[1])
    return f"{R}/rms/{rm_id}" if source == "train" else source


def trained_rm_dirs():
    return [rm_dir(r) for r in RM_IDS if RM_SHEET.set_index("rm_id").loc[r, "source"] == "train"]


def rm_pool_records(static=False):
    """The sheet's scoring columns (RM_SCORING_COLUMNS: no training column, no description), with
    every RM's directory or hub id resolved as `path`; `static`: only the rows that score without
    the policy (no R2M rows)."""
    rows = [r for r in RM_SHEET.to_dict("records") if not (static and parse_r2m_source(r["source"]))]
    return [{**{k: row[k] for k in RM_SCORING_COLUMNS if k in row}, "path": rm_dir(row["rm_id"])} for row in rows]


def get_method_rm_dirs(wildcards):
    """The trained RMs a method's jobs load (R2M rows: their base's): a run waits for its own RMs
    only, not for the whole pool's training."""
    trained = set(trained_rm_dirs())
    return sorted({rm_dir(r) for r in METHODS[wildcards.method].rms} & trained)


def get_method_pool(wildcards):
    """The sheet rows of the method's pool (`rms`), as rm_pool_records gives them: a method's jobs
    see only their own RMs, so adding a row another method holds re-runs nothing here."""
    rows = {r["rm_id"]: r for r in rm_pool_records()}
    return [rows[r] for r in RM_IDS if r in METHODS[wildcards.method].rms]


def get_rm_job(wildcards):
    """What training the RM reads (rmroute.settings.RMTraining.job): its sheet row's training
    columns and the rm_training keys of its kind, never `description`, so editing bsr_coef
    re-trains only the BSR RMs."""
    return RM_TRAINING.job(RM_SHEET.set_index("rm_id").loc[wildcards.rm]).params()


def get_bsr_rm_job(wildcards):
    """One RM of the BT/BSR comparison: the sheet row `bsr_eval.rm`'s data with the loss of the job."""
    return RM_TRAINING.job(BSR_ROW, loss=wildcards.loss).params()


def get_sft_validation(wildcards):
    """The held-out prompts of the SFT checkpoint selection (`sft.select: band` only)."""
    return f"{R}/data/{SFT_SETTINGS.select_split}.jsonl" if SFT_SETTINGS.select == "band" else []


def get_rm_init(wildcards):
    """What a trained RM starts from (the sheet's `init`): the SFT policy, or another RM's directory."""
    init = RM_SHEET.set_index("rm_id").loc[wildcards.rm, "init"]
    return f"{R}/models/sft" if init == "sft" else rm_dir(init)


def get_bsr_init(wildcards):
    """The BSR comparison's RMs start where the sheet row they copy starts."""
    return f"{R}/models/sft" if BSR_ROW["init"] == "sft" else rm_dir(BSR_ROW["init"])


def get_bsr_seed(wildcards):
    return int(wildcards.bsr_seed)


def get_r2m_base(wildcards):
    return rm_dir(METHODS[R2M_CONFIG["method"]].rm)


def get_r2m_policy(wildcards):
    """R2M reads the policy after iteration 1 of its single-RM method, the policy that sampled iteration 2."""
    return f"{R}/runs/{R2M_CONFIG['method']}/{wildcards.seed}/it1/policy"


def get_r2m_fresh_rollouts(wildcards):
    return f"{R}/runs/{R2M_CONFIG['method']}/{wildcards.seed}/it2/rollouts.jsonl"


def get_method(wildcards):
    """The resolved method as a plain dict (a job param: editing a method re-runs only its jobs)."""
    return METHODS[wildcards.method].to_dict()


def iteration_number(wildcards):
    return int(wildcards.it)


def job_seeds(wildcards):
    """The seeds one job runs under `seed_jobs`, in order: its wildcard's, or every seed."""
    return [int(wildcards.seed)] if SEPARATE_SEEDS else SEEDS


def per_seed(path_of):
    """An input function giving `path_of(wildcards, seed)` for each seed of the job, in order
    (a path of [] adds nothing)."""

    def paths(wildcards):
        out = []
        for seed in job_seeds(wildcards):
            path = path_of(wildcards, seed)
            out += path if isinstance(path, list) else [path]
        return out

    return paths


def previous_policy(method, seed, it):
    return f"{R}/models/sft" if it == 1 else f"{R}/runs/{method}/{seed}/it{it - 1}/policy"


get_decision_logs = per_seed(lambda w, s: [f"{R}/runs/{w.method}/{s}/it{i}/decisions.parquet" for i in ITERATIONS])
get_run_policies = per_seed(lambda w, s: [f"{R}/runs/{w.method}/{s}/it{i}/policy" for i in ITERATIONS])
get_previous_policy = per_seed(lambda w, s: previous_policy(w.method, s, int(w.it)))
# A recipe with `reference: sft` keeps the SFT policy; otherwise the reference is the entering policy.
get_reference_policy = per_seed(lambda w, s: [] if w.method in ONLINE
                                else f"{R}/models/sft" if METHODS[w.method].recipe.reference == "sft"
                                else previous_policy(w.method, s, int(w.it)))
# Every method starts from the same SFT policy, so iteration 1 shares one set of rollouts per seed.
# An online method samples inside its trainer: it reads the prompt split (rmroute.stages.online_rl).
get_rollouts = per_seed(lambda w, s: f"{R}/data/rollout.jsonl" if w.method in ONLINE
                        else f"{R}/rollouts/sft/{s}.jsonl" if int(w.it) == 1
                        else f"{R}/runs/{w.method}/{s}/it{w.it}/rollouts.jsonl")


def get_online_budget(wildcards):
    """The budget an online method's trainer samples and steps by (none for DPO methods, whose
    rollouts were sampled by the rollout rule: their job params stay as they were)."""
    return config["budget"] if wildcards.method in ONLINE else {}


# The router state (and the R2M states: a directory, empty for a pool without R2M) the previous
# iteration wrote; none at iteration 1.
get_previous_router_state = per_seed(lambda w, s: [] if int(w.it) == 1
                                     else f"{R}/runs/{w.method}/{s}/it{int(w.it) - 1}/router_state.json")
get_previous_router_arrays = per_seed(lambda w, s: [] if int(w.it) == 1
                                      else f"{R}/runs/{w.method}/{s}/it{int(w.it) - 1}/router_state.safetensors")
get_previous_r2m = per_seed(lambda w, s: [] if int(w.it) == 1 else f"{R}/runs/{w.method}/{s}/it{int(w.it) - 1}/r2m")


def get_r2m_settings(wildcards):
    """The `r2m:` block's model and training settings, for a method whose pool holds an R2M row
    (others get none, so editing the block re-runs only those methods)."""
    if not set(METHODS[wildcards.method].rms) & set(R2M_ROWS):
        return {}
    settings = {k: v for k, v in R2M_CONFIG.items() if k not in ("method", "compare")}
    return {**settings, "iterations": config["budget"]["iterations"]}


def get_offline_router(wildcards):
    return f"{R}/offline_router/model" if METHODS[wildcards.method].needs_offline_router else []


def eval_files():
    files = [f"{R}/eval/sft.tsv"]
    files += [f"{R}/runs/{m}/{s}/it{i}/eval.tsv" for m, s, i in RUNS]
    return files


def decision_files():
    return [f"{R}/decisions/{m}/{s}.parquet" for m in METHODS for s in SEEDS]


def claims_benchmarks():
    """(method, seed) of every train_iteration benchmark claim 2's wall-time ratio reads, per iteration."""
    names = [CLAIMS[r] for r in ("routed", "ensemble") if r in CLAIMS]
    return [(m, s) for m in names for s in SEEDS for _ in ITERATIONS]


def best_single_candidates(recipe):
    """The single-RM methods the best single RM of `recipe` is chosen among (no score noise, no
    R2M row: rmroute.evaluate.single_rm_methods)."""
    return single_rm_methods(METHODS, recipe, exclude_rms=R2M_ROWS)


def claims_best_single_candidates():
    """The candidates of an `auto` claims.best_single: those of claims.routed's recipe ([] when the
    config names the best single RM, or names no routed method)."""
    if not CLAIMS_AUTO_BEST_SINGLE or "routed" not in CLAIMS:
        return []
    return best_single_candidates(METHODS[CLAIMS["routed"]].recipe_name)


def claims_inputs(wildcards):
    """The tables the claims read; those of experiments the config does not run are left out."""
    names = [CLAIMS[r] for r in ("routed", "ensemble") if r in CLAIMS]
    inputs = {
        "policy_accuracy": f"{R}/tables/policy_accuracy.tsv",
        "benchmarks": [f"{R}/benchmarks/seeds/train_iteration/{m}/{s}/it{i}.tsv" for m in names for s in SEEDS for i in ITERATIONS],
    }
    if CLAIMS_AUTO_BEST_SINGLE:
        inputs["validation_accuracy"] = f"{R}/tables/validation_accuracy.tsv"
    if NEEDS_OFFLINE_ROUTER:
        inputs.update(routing_sim=f"{R}/tables/routing_sim.tsv", offline_router=f"{R}/tables/offline_router.tsv")
    if BSR_EVAL:
        inputs["bsr"] = f"{R}/tables/bsr.tsv"
    if {"r2m", "base"} <= set(R2M_COMPARE):
        inputs["r2m"] = f"{R}/tables/r2m.tsv"
    return inputs


def efficiency_benchmarks():
    """(method, seed, stage, benchmark file) of every job a method's training needs: its rollouts
    (iteration 1's are the SFT policy's, shared, and counted for every method) and routed DPO."""
    rows = []
    for m, s, i in RUNS:
        if m not in ONLINE:  # an online method samples inside its train_iteration job
            rollout = f"rollout_sft/{s}" if i == 1 else f"rollout/{m}/{s}/it{i}"
            rows.append((m, s, "rollout", f"{R}/benchmarks/seeds/{rollout}.tsv"))
        rows.append((m, s, "train_iteration", f"{R}/benchmarks/seeds/train_iteration/{m}/{s}/it{i}.tsv"))
    return rows


def all_targets():
    targets = [
        f"{R}/tables/sft_accuracy.tsv",
        f"{R}/tables/rm_accuracy.tsv",
        f"{R}/figures/rm_accuracy.png",
        f"{R}/tables/policy_accuracy.tsv",
        f"{R}/tables/validation_accuracy.tsv",
        f"{R}/tables/laser_table1.tsv",
        f"{R}/tables/bayesian_table1.tsv",
        f"{R}/tables/router_choices.tsv",
        f"{R}/figures/accuracy_vs_iteration.png",
        f"{R}/figures/router_choices.png",
        f"{R}/tables/pair_quality.tsv",
        f"{R}/figures/pair_quality.png",
        f"{R}/tables/reward_validity.tsv",
        f"{R}/figures/reward_validity.png",
        f"{R}/figures/rm_selection_share.png",
        f"{R}/tables/rm_agreement.tsv",
        f"{R}/figures/rm_agreement.png",
        f"{R}/figures/reward_margins.png",
        f"{R}/tables/efficiency.tsv",
        f"{R}/figures/efficiency.png",
    ]
    if NEEDS_OFFLINE_ROUTER:
        targets += [f"{R}/tables/offline_router.tsv", f"{R}/tables/routing_sim.tsv", f"{R}/figures/routing_regret.png"]
    if BSR_EVAL:
        targets += [f"{R}/tables/bsr.tsv", f"{R}/tables/bsr_summary.tsv", f"{R}/figures/bsr_norms.png"]
    if R2M_PROBE:
        targets += [f"{R}/tables/r2m_probe.tsv", f"{R}/tables/r2m_probe_summary.tsv"]
    if R2M_COMPARE:
        targets += [f"{R}/tables/r2m.tsv", f"{R}/tables/r2m_summary.tsv"]
    if ONLINE:
        targets += [f"{R}/tables/online_reward_validity.tsv"]
    if CLAIMS:
        targets += [f"{R}/tables/claims.tsv", f"{R}/tables/claims.md", f"{R}/tables/claims.tex", f"{R}/tables/claims_values.tsv"]
    return targets
