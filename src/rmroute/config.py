"""Config checks that a JSON schema cannot express, then the resolution of each method into the
typed settings its jobs use (`rmroute.methods`).

Everything here runs when the Snakefile is parsed, so a bad config stops before any job starts,
with an error that names the field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from rmroute.rewards.sources import parse_r2m_source

from rmroute.methods import ConfigError, Method, resolve_methods
from rmroute.routers.registry import load_plugins
from rmroute.testbed import ATTRIBUTES, DOMAINS

__all__ = ["ConfigError", "check_claims", "check_config", "check_rm_sheet", "load_config", "read_rm_sheet"]

LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # policy.source build
RM_SHEET_COLUMNS = ("rm_id", "source", "loss", "domain_mix", "label_noise", "n_pairs", "chat_template", "max_length",
                    "dtype", "batch_size", "trust_remote_code")
# Optional columns -> the value a sheet without the column, or a row that leaves the cell out, gets.
RM_SHEET_OPTIONAL = {"init": "sft", "description": ""}
NO_MIX = "-"  # the domain_mix of an RM that is not trained here


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def looks_like_hub_id(source: str, root: str | os.PathLike = ".") -> bool:
    """'org/name' that is not a path existing under the project root."""
    return ("/" in source and not source.startswith((".", "/")) and source.count("/") == 1
            and not (Path(root) / source).exists())


def check_rm_sheet(sheet: pd.DataFrame, root: str | os.PathLike, domains: tuple[str, ...]) -> None:
    """Row-level checks of config/rm_pool.tsv beyond its schema."""
    root = Path(root)
    if sheet["rm_id"].duplicated().any():
        raise ConfigError(f"rm_pool.rm_id: duplicated ids {sorted(sheet.loc[sheet['rm_id'].duplicated(), 'rm_id'])}")
    for _, row in sheet.iterrows():
        where = f"rm_pool[{row['rm_id']}]"
        source = str(row["source"])
        r2m = parse_r2m_source(source)
        if r2m:
            base = r2m[1]
            if base not in set(sheet["rm_id"]):
                raise ConfigError(f"{where}.source: R2M base {base!r} is not an rm_id of the sheet ({list(sheet['rm_id'])})")
            base_row = sheet.set_index("rm_id").loc[base]
            if parse_r2m_source(base_row["source"]) or base_row["loss"] not in ("bt", "bsr"):
                raise ConfigError(f"{where}.source: R2M reads a classifier RM's last-token state; its base {base!r} has "
                                  f"source {base_row['source']!r} and loss {base_row['loss']!r} (needs loss bt or bsr)")
        elif source == "train":
            if str(row["domain_mix"]) == NO_MIX:
                raise ConfigError(f"{where}.domain_mix: an RM trained here (source train) needs its domains, e.g. "
                                  "'arith:0.5,facts_mc:0.5'; '-' is only for RMs that are not trained here")
            total = 0.0
            for part in str(row["domain_mix"]).split(","):
                domain, _, weight = part.partition(":")
                if domain.strip() not in domains:
                    raise ConfigError(f"{where}.domain_mix: unknown domain {domain.strip()!r}; expected one of {list(domains)}")
                try:
                    w = float(weight) if weight else 1.0  # a domain without a weight counts 1, as parse_mix reads it
                except ValueError:
                    raise ConfigError(f"{where}.domain_mix: weight {weight!r} of {domain.strip()!r} is not a number") from None
                if w < 0:
                    raise ConfigError(f"{where}.domain_mix: weight of {domain.strip()!r} is negative ({w})")
                total += w
            if total <= 0:
                raise ConfigError(f"{where}.domain_mix: weights sum to {total}; at least one must be positive")
        elif not looks_like_hub_id(source, root):
            path = (root / source) if not os.path.isabs(source) else Path(source)
            if not _inside(path, root):
                raise ConfigError(f"{where}.source: path {source!r} escapes the project directory {str(root)!r}")
            if not path.exists():
                raise ConfigError(f"{where}.source: {source!r} is neither 'train', an existing path nor a hub id 'org/name'")
    check_rm_init(sheet)


def check_rm_init(sheet: pd.DataFrame) -> None:
    """The `init` column: `sft` or the rm_id of another row; a generative RM starts only from the
    SFT policy or another generative RM; rows not trained here keep `sft`; no cycles."""
    rows = sheet.set_index("rm_id")
    for rm_id, row in rows.iterrows():
        where, init = f"rm_pool[{rm_id}].init", row["init"]
        if init == "sft":
            continue
        if row["source"] != "train":
            raise ConfigError(f"{where}: {init!r}, but only rows with source 'train' are trained here; use 'sft'")
        if init == rm_id:
            raise ConfigError(f"{where}: an RM cannot start from itself; use 'sft' or another rm_id")
        if init not in rows.index:
            raise ConfigError(f"{where}: {init!r} is neither 'sft' nor an rm_id of the sheet ({list(rows.index)})")
        if rows.loc[init, "source"] != "train":
            raise ConfigError(f"{where}: {init!r} is not trained here (its source is {rows.loc[init, 'source']!r}); "
                              "a trained RM starts from 'sft' or from another row with source 'train'")
        if row["loss"] == "lm" and rows.loc[init, "loss"] != "lm":
            raise ConfigError(f"{where}: generative RM (loss lm) can start only from 'sft' or another generative RM, "
                              f"not {init!r} (loss {rows.loc[init, 'loss']})")
        seen, current = [rm_id], init
        while current != "sft":
            if current in seen:
                raise ConfigError(f"{where}: the init chain {' -> '.join([*seen, current])} is a cycle")
            seen.append(current)
            current = rows.loc[current, "init"]


def read_rm_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """The RM sheet with typed columns; unparseable numbers become NaN so the schema names them."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"rm_pool: sheet {str(path)!r} does not exist or is not a file")
    try:
        sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"rm_pool: sheet {str(path)!r} is empty; it needs a header and one row per RM") from None
    except pd.errors.ParserError as err:
        raise ConfigError(f"rm_pool: sheet {str(path)!r} is not a tab-separated table: {err}") from None
    missing = [c for c in RM_SHEET_COLUMNS if c not in sheet.columns]
    if missing:
        raise ConfigError(f"rm_pool: sheet {str(path)!r} lacks column(s) {missing}")
    if sheet.empty:
        raise ConfigError(f"rm_pool: sheet {str(path)!r} has no RM rows")
    for column, value in RM_SHEET_OPTIONAL.items():
        if column not in sheet.columns:
            sheet[column] = value
        # A row shorter than the header (the README's one-line example appended to the sheet) leaves
        # its last cells empty: they take the default too.
        sheet[column] = sheet[column].fillna(value).replace("", value)
    for column in ("label_noise", "n_pairs", "max_length", "batch_size"):
        numbers = pd.to_numeric(sheet[column], errors="coerce")
        wanted = "a number"
        invalid = numbers.isna()
        if column != "label_noise":  # counts: a fraction or inf must not be truncated silently
            wanted = "a whole number"
            invalid |= ~numbers.isna() & ((numbers % 1 != 0) | numbers.isin([float("inf"), float("-inf")]))
        bad = sheet.loc[invalid, "rm_id"].tolist()
        if bad:
            raise ConfigError(f"rm_pool[{bad[0]}].{column}: {sheet.loc[invalid, column].iloc[0]!r} is not {wanted}")
        sheet[column] = numbers.astype(float if column == "label_noise" else int)
    flags = sheet["trust_remote_code"].str.strip().str.lower()
    bad = sheet.loc[~flags.isin(["true", "false"]), "rm_id"].tolist()
    if bad:
        raise ConfigError(f"rm_pool[{bad[0]}].trust_remote_code: expected true or false")
    sheet["trust_remote_code"] = flags == "true"
    return sheet


def load_config(config: dict, root: str | os.PathLike) -> tuple[dict, pd.DataFrame, dict[str, Method]]:
    """Validate config.yaml and the RM sheet (schemas via snakemake.utils.validate, then the
    cross-field checks); returns (config with defaults filled, sheet, resolved methods)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    root = Path(root)
    schemas = root / "workflow" / "schemas"
    try:
        validate(config, schema=str(schemas / "config.schema.yaml"))
    except WorkflowError as err:
        field, message = _schema_error(err)
        raise ConfigError(f"config: {field or '(top level)'}: {message}") from None
    sheet = read_rm_sheet(root / config["rm_pool"])
    try:
        validate(sheet, schema=str(schemas / "rm_pool.schema.yaml"))
    except WorkflowError as err:
        field, message = _schema_error(err)
        row = re.search(r"row (\d+)", str(err))
        where = f"rm_pool[{sheet['rm_id'].iloc[int(row.group(1))]}]" if row else "rm_pool"
        raise ConfigError(f"{where}{'.' + field if field else ''}: {message}") from None
    check_rm_sheet(sheet, root, DOMAINS)
    check_config(config, root)
    r2m_rows = tuple(r for r, source in zip(sheet["rm_id"], sheet["source"]) if parse_r2m_source(source))
    try:  # routers of the user's own, registered on import (docs/routers.md)
        load_plugins(config.get("plugins") or [], root)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    methods = resolve_methods(config, list(sheet["rm_id"]), opt_in=r2m_rows)
    check_rm_experiments(config, sheet, methods)
    check_claims(config, methods)
    check_online(config, methods)
    return config, sheet, methods


def check_online(config: dict, methods: dict) -> None:
    """What the online recipes (trainer grpo | rloo) do not run yet, named before any job: LoRA
    adapters. (A `rollout:` backend serves the DPO methods' rollout jobs; online methods sample
    inside their training job with TRL's generation.)"""
    online = sorted(name for name, m in methods.items() if m.recipe.online)
    if not online:
        return
    if "lora" in config:
        raise ConfigError(f"lora: online recipes train every weight; methods {online} use trainer grpo/rloo "
                          "(drop `lora:` or run them in a config of their own)")


CLAIM_ROLES = {"routed": None, "best_single": "single", "ensemble": "ensemble",
               "best_single_clean": "single"}  # role -> the router it needs


def check_claims(config: dict, methods: dict) -> None:
    """The `claims` block: every role names a method of the config, with the router its role needs
    (`rmroute.claims` reads their runs)."""
    block = config.get("claims")
    if not block:
        return
    named = [(f"claims.{role}", block[role], CLAIM_ROLES[role]) for role in CLAIM_ROLES if role in block]
    named += [(f"claims.noisy.{role}", name, CLAIM_ROLES[role]) for role, name in block.get("noisy", {}).items()]
    # best_single `auto` names no method: it is chosen on the validation split (rmroute.claims).
    named = [n for n in named if n[:2] != ("claims.best_single", "auto")]
    for field, name, router in named:
        if name not in methods:
            raise ConfigError(f"{field}: {name!r} is not a method of the config ({sorted(methods)})")
        if router and methods[name].router != router:
            raise ConfigError(f"{field}: {name!r} has router {methods[name].router!r}; this role needs router {router!r}")


def check_rm_experiments(config: dict, sheet: pd.DataFrame, methods: dict) -> None:
    """The `bsr_eval` and `r2m` blocks: what they name must exist and be a classifier RM."""
    rows = sheet.set_index("rm_id")
    if "bsr_eval" in config:
        block = config["bsr_eval"]
        rm = block["rm"]
        if rm not in rows.index:
            raise ConfigError(f"bsr_eval.rm: {rm!r} is not an rm_id of the RM sheet ({list(rows.index)})")
        if rows.loc[rm, "source"] != "train" or rows.loc[rm, "loss"] not in ("bt", "bsr"):
            raise ConfigError(f"bsr_eval.rm: {rm!r} must be a classifier RM trained here (source train, loss bt or bsr), "
                              f"not source {rows.loc[rm, 'source']!r} with loss {rows.loc[rm, 'loss']!r}")
        if len(set(block["seeds"])) != len(block["seeds"]):
            raise ConfigError(f"bsr_eval.seeds: repeated values in {block['seeds']}")
        if block["response_policy_steps"] >= config["sft"]["steps"]:
            raise ConfigError(f"bsr_eval.response_policy_steps: {block['response_policy_steps']} must be below sft.steps "
                              f"({config['sft']['steps']}): the response-OOD policy is an earlier SFT checkpoint")
    for variant, name in config.get("r2m", {}).get("compare", {}).items():
        where = f"r2m.compare.{variant}"
        if name not in methods:
            raise ConfigError(f"{where}: {name!r} is not a method of the config ({sorted(methods)})")
        if methods[name].router != "single":
            raise ConfigError(f"{where}: {name!r} has router {methods[name].router!r}; the comparison is of single-RM runs")
        parsed = parse_r2m_source(rows.loc[methods[name].rm, "source"])
        wanted = {"r2m": "policy", "r2m-noise": "noise", "r2m-untrained": "untrained", "base": None}[variant]
        if (parsed[0] if parsed else None) != wanted:
            raise ConfigError(f"{where}: the RM of {name!r}, {methods[name].rm!r} (source {rows.loc[methods[name].rm, 'source']!r}), "
                              f"is not {'a plain RM' if wanted is None else 'an R2M row with feedback ' + repr(wanted)}")
    if config.get("r2m", {}).get("method"):
        name = config["r2m"]["method"]
        if name not in methods:
            raise ConfigError(f"r2m.method: {name!r} is not a method of the config ({sorted(methods)})")
        if methods[name].router != "single":
            raise ConfigError(f"r2m.method: {name!r} has router {methods[name].router!r}; R2M's base is one RM, "
                              "so name a method with router 'single'")
        rm = methods[name].rm
        if rows.loc[rm, "loss"] not in ("bt", "bsr"):
            raise ConfigError(f"r2m.method: the RM of {name!r}, {rm!r}, has loss {rows.loc[rm, 'loss']!r}; R2M reads a "
                              "classifier RM's last-token state, so it needs loss bt or bsr")
        if config["budget"]["iterations"] < 2:
            raise ConfigError(f"r2m.method: R2M is measured on iteration 2's fresh rollouts, but budget.iterations is "
                              f"{config['budget']['iterations']}")


def _schema_error(err: Exception) -> tuple[str, str]:
    """(dotted path of the offending field, '' at the top level; jsonschema's message)."""
    cause = err.__cause__ or err.__context__
    field = ".".join(str(p) for p in getattr(cause, "absolute_path", None) or ())
    return field, getattr(cause, "message", str(err))


def check_config(config: dict, root: str | os.PathLike) -> None:
    """Cross-field checks of config.yaml beyond its schema."""
    root = Path(root)
    if not _inside(root / config["results_dir"], root):
        raise ConfigError(f"results_dir: {config['results_dir']!r} escapes the project directory")
    if len(set(config["seeds"])) != len(config["seeds"]):
        raise ConfigError(f"seeds: repeated values in {config['seeds']}")
    testbed = config["testbed"]
    most_options = min(len(values) for values in ATTRIBUTES.values())
    if testbed["mc_options"] > most_options:
        raise ConfigError(f"testbed.mc_options: {testbed['mc_options']} options, but each fact attribute has only "
                          f"{most_options} values; use at most {most_options}")
    if testbed["reverse_min_words"] > testbed["reverse_max_words"]:
        raise ConfigError(f"testbed.reverse_min_words: {testbed['reverse_min_words']} exceeds "
                          f"testbed.reverse_max_words ({testbed['reverse_max_words']})")
    if testbed["yesno_max_gap"] >= testbed["yesno_max_number"]:
        raise ConfigError(f"testbed.yesno_max_gap: {testbed['yesno_max_gap']} must be below "
                          f"testbed.yesno_max_number ({testbed['yesno_max_number']})")
    sft = config["sft"]
    sft.setdefault("mix", {domain: 1.0 for domain in DOMAINS})  # the schema leaves it optional: equal weights
    if sft["band"][0] >= sft["band"][1]:
        raise ConfigError(f"sft.band: lower edge {sft['band'][0]} must be below the upper edge {sft['band'][1]}")
    policy = config["policy"]
    if policy["source"] == "build":
        missing = [k for k in ("layers", "heads", "intermediate_size") if k not in policy]
        if missing:
            raise ConfigError(f"policy.{missing[0]}: required when policy.source is 'build' (missing: {missing})")
    elif not looks_like_hub_id(policy["source"], root):
        path = root / policy["source"]
        if not _inside(path, root):
            raise ConfigError(f"policy.source: path {policy['source']!r} escapes the project directory")
        if not path.exists():
            raise ConfigError(f"policy.source: {policy['source']!r} is neither 'build', an existing path nor a hub id")
    if policy["source"] == "build" and policy["hidden_size"] % policy["heads"]:
        raise ConfigError(f"policy.heads: hidden_size {policy['hidden_size']} is not divisible by heads {policy['heads']}")
    budget = config["budget"]
    per_domain = budget["prompts_per_iteration"] // len(DOMAINS)
    if per_domain * budget["iterations"] > config["testbed"]["split_sizes"]["rollout"]:
        raise ConfigError(
            f"budget.prompts_per_iteration: {budget['iterations']} iterations x {per_domain} prompts per domain exceed "
            f"testbed.split_sizes.rollout ({config['testbed']['split_sizes']['rollout']}); prompts would repeat")
    if sum(sft["mix"].values()) <= 0:
        raise ConfigError("sft.mix: weights sum to zero; at least one domain needs a positive weight")
    if "lora" in config and policy["source"] == "build":
        unknown = [m for m in config["lora"]["target_modules"] if m not in LLAMA_LINEAR_MODULES]
        if unknown:
            raise ConfigError(f"lora.target_modules: {unknown} are not layers of the built Llama policy; "
                              f"choose from {list(LLAMA_LINEAR_MODULES)}")
    backend = config.get("rollout", {}).get("backend", "hf")
    if backend == "vllm" and config["device"] == "cpu":
        raise ConfigError("rollout.backend: 'vllm' samples on a GPU, but device is 'cpu'; use device cuda (or auto), "
                          "or backend hf")
