"""Reading and writing every file the workflow produces, each written to a temporary path and
renamed into place, so a job killed half-way leaves nothing half-written in results/.

JSON lines for records, TSV or Parquet for tables (a Markdown twin beside every final table),
JSON, figures, and router states (safetensors + a JSON sidecar).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd


def tmp_path(path: str | os.PathLike) -> Path:
    """A hidden temporary sibling of `path` (its directory created), to write and then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(records: list[dict], path: str | os.PathLike) -> None:
    tmp = tmp_path(path)
    with open(tmp, "w") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    tmp.replace(path)


def write_text(text: str, path: str | os.PathLike) -> None:
    tmp = tmp_path(path)
    tmp.write_text(text)
    tmp.replace(path)


def write_json(obj, path: str | os.PathLike) -> None:
    write_text(json.dumps(obj, indent=1, sort_keys=True), path)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """TSV (or Parquet by suffix); a `.md` twin for tables under a `tables/` directory."""
    path = Path(path)
    tmp = tmp_path(path)
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    tmp.replace(path)
    if path.parent.name == "tables":
        write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n", path.with_suffix(".md"))


def save_figure(fig, png: str | os.PathLike, pdf: str | os.PathLike | None = None) -> None:
    """PNG (150 dpi) and, when given, PDF."""
    for path, options in ((png, {"dpi": 150}), (pdf, {})):
        if path is None:
            continue
        tmp = tmp_path(path)
        fig.savefig(tmp, bbox_inches="tight", **options)
        tmp.replace(path)


def save_router_state(state: dict, json_path: str | os.PathLike) -> None:
    """A router state as `<name>.json` + `<name>.safetensors`, each renamed into place (the
    safetensors first, so a present JSON always has its arrays beside it)."""
    from rmroute.routers import save_state

    json_path = Path(json_path)
    tmp = tmp_path(json_path)
    save_state(tmp, state)
    tmp.with_suffix(".safetensors").replace(json_path.with_suffix(".safetensors"))
    tmp.replace(json_path)


def load_router_state(json_path: str | os.PathLike) -> dict:
    from rmroute.routers import load_state

    return load_state(json_path)
