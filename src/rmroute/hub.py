"""Every Hugging Face hub id a config loads must already be in the local hub cache.

The workflow runs offline (`HF_HUB_OFFLINE=1`, set in workflow/rules/common.smk), so a hub id
that was never downloaded would only fail inside the first job that loads it, possibly hours into
a run. `check_hub_cache` looks each one up when the Snakefile is parsed and names the field or
sheet row, the cache it looked in and the command that fetches it.

What is checked: `policy.source`, the `source` of every RM sheet row (R2M rows wrap another row,
which is checked itself) and `offline_router.encoder` when a method uses the offline router; each
only where it is a hub id (`org/name` that is not a path in the project, `rmroute.config.
looks_like_hub_id`), never `build`, `train`, `minilm` or a local directory. A model is cached
when the hub cache holds a snapshot of its `main` revision with `config.json` (or a PEFT
`adapter_config.json`) and its safetensors weights, every shard of a sharded checkpoint
included: the files `from_pretrained(..., use_safetensors=True)` reads offline.

A missing id is an error for a run that executes jobs and a warning for a dry run (`snakemake -n`),
so a config can be planned on a machine without the models; `RMROUTE_HUB_CHECK=error` or `warn`
overrides either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from rmroute.config import looks_like_hub_id
from rmroute.methods import ConfigError
from rmroute.rewards.sources import parse_r2m_source

__all__ = ["CHECK_ENV", "check_hub_cache", "hub_cache_dir", "hub_sources", "hub_home", "missing_from_cache"]

CHECK_ENV = "RMROUTE_HUB_CHECK"  # auto (default) | error | warn
CHECK_MODES = ("auto", "error", "warn")
CONFIG_FILES = ("config.json", "adapter_config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def hub_home() -> Path:
    """HF_HOME as huggingface_hub resolves it, read now (not at import) so a changed env counts."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface")
    return Path(_expand(os.getenv("HF_HOME", default)))


def hub_cache_dir() -> Path:
    """The hub cache (`HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`, else HF_HOME/hub)."""
    return Path(_expand(os.getenv("HF_HUB_CACHE", os.getenv("HUGGINGFACE_HUB_CACHE", str(hub_home() / "hub")))))


def hub_sources(config: dict, sheet: pd.DataFrame, methods: dict, root: str | os.PathLike) -> list[tuple[str, str]]:
    """(field, hub id) of every hub id the workflow of this config loads, in config order."""
    found = []
    source = str(config["policy"]["source"])
    if source != "build" and looks_like_hub_id(source, root):
        found.append(("policy.source", source))
    for rm_id, source in zip(sheet["rm_id"], sheet["source"]):
        source = str(source)
        if source != "train" and not parse_r2m_source(source) and looks_like_hub_id(source, root):
            found.append((f"rm_pool[{rm_id}].source", source))
    encoder = str(config.get("offline_router", {}).get("encoder", "minilm"))
    if (encoder != "minilm" and looks_like_hub_id(encoder, root)
            and any(getattr(m, "needs_offline_router", False) for m in methods.values())):
        found.append(("offline_router.encoder", encoder))
    return found


def _not_cached(repo_id: str, cache_dir: Path) -> str | None:
    """Why `repo_id` cannot be loaded offline from `cache_dir`, or None when it can."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> str | None:
        path = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        return path if isinstance(path, str) else None  # None, or the "known not to exist" marker

    if not any(cached(name) for name in CONFIG_FILES):
        return "is not in the local Hugging Face cache"
    weights = {name: cached(name) for name in WEIGHT_FILES}
    if not any(weights.values()):
        return ("is only partly in the local Hugging Face cache (no safetensors weights: "
                f"{' / '.join(WEIGHT_FILES[:2])})")
    index = weights["model.safetensors.index.json"]
    if index and not weights["model.safetensors"]:
        try:
            shards = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError):
            return "is only partly in the local Hugging Face cache (its model.safetensors.index.json is unreadable)"
        missing = [shard for shard in shards if not cached(shard)]
        if missing:
            return (f"is only partly in the local Hugging Face cache ({len(missing)} of {len(shards)} weight shards "
                    f"missing, e.g. {missing[0]})")
    return None


def missing_from_cache(config: dict, sheet: pd.DataFrame, methods: dict, root: str | os.PathLike) -> list[str]:
    """One message per hub id of the config that is not (wholly) in the local hub cache."""
    cache = hub_cache_dir()
    where = f"HF_HOME={hub_home()}" + ("" if cache == hub_home() / "hub" else f", HF_HUB_CACHE={cache}")
    messages = []
    for field, repo_id in hub_sources(config, sheet, methods, root):
        reason = _not_cached(repo_id, cache)
        if reason:
            messages.append(f"{field}: {repo_id!r} {reason} ({where}); the workflow never downloads (HF_HUB_OFFLINE=1), "
                            f"so fetch it once with `hf download {repo_id}` (`huggingface-cli download {repo_id}` "
                            "with an older huggingface_hub) on a machine with network access and the same HF_HOME")
    return messages


def check_hub_cache(config: dict, sheet: pd.DataFrame, methods: dict, root: str | os.PathLike, *,
                    dry_run: bool = False) -> list[str]:
    """Raise a ConfigError naming every uncached hub id (one per line), or, for a dry run (or with
    RMROUTE_HUB_CHECK=warn), return those messages for the caller to print as warnings.
    RMROUTE_HUB_CHECK=error makes a dry run strict too; `auto` (or unset) is the default."""
    mode = os.getenv(CHECK_ENV, "auto").strip().lower() or "auto"
    if mode not in CHECK_MODES:
        raise ConfigError(f"{CHECK_ENV}: {mode!r} is not one of {list(CHECK_MODES)}")
    messages = missing_from_cache(config, sheet, methods, root)
    strict = mode == "error" or (mode == "auto" and not dry_run)
    if messages and strict:
        raise ConfigError("\n".join(messages))
    return messages
