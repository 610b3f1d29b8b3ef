"""Reading and writing every file the workflow produces, each written to a temporary path and
renamed into place, so a job killed half-way leaves nothing half-written in results/: the one
place that does so, for a file (`atomic_file`) or a whole directory (`atomic_dir`: checkpoints,
the offline router, R2M states).

JSON lines for records, TSV or Parquet for tables (a Markdown twin beside every final table),
JSON, figures, and router states (safetensors + a JSON sidecar).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


def as_list(value) -> list:
    """A Snakemake named input or output holding one path is a str; several are a list."""
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def tmp_path(path: str | os.PathLike) -> Path:
    """A hidden temporary sibling of the file `path` (its directory created), to write and then
    rename: `.<stem>.tmp<suffix>`, keeping the suffix for writers that go by it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def tmp_dir_path(path: str | os.PathLike) -> Path:
    """The temporary sibling of the directory `path`: `<name>.tmp` (the resume test watches for
    `policy.tmp` to kill a job mid-save)."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields the temporary path (`tmp_path`) to write the file `path` to; on success it is renamed
    onto `path`, on an error it is removed and `path` is left as it was."""
    tmp = tmp_path(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh, empty temporary directory (`tmp_dir_path`; a leftover of a killed job is
    removed first) to write the directory `path` into; on success it replaces `path` (a directory
    already there is removed), on an error it is removed and `path` is left as it was."""
    out = Path(path)
    tmp = tmp_dir_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(records: list[dict], path: str | os.PathLike) -> None:
    with atomic_file(path) as tmp, open(tmp, "w") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=True) + "\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_json(obj, path: str | os.PathLike) -> None:
    write_text(json.dumps(obj, indent=1, sort_keys=True), path)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """TSV (or Parquet by suffix); a `.md` twin for tables under a `tables/` directory."""
    path = Path(path)
    with atomic_file(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    if path.parent.name == "tables":
        write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n", path.with_suffix(".md"))


def save_figure(fig, png: str | os.PathLike, pdf: str | os.PathLike | None = None) -> None:
    """PNG (150 dpi) and, when given, PDF."""
    for path, options in ((png, {"dpi": 150}), (pdf, {})):
        if path is None:
            continue
        with atomic_file(path) as tmp:
            fig.savefig(tmp, bbox_inches="tight", **options)


def save_router_state(state: dict, json_path: str | os.PathLike) -> None:
    """A router state as `<name>.json` + `<name>.safetensors`, each renamed into place (the
    safetensors first, so a present JSON always has its arrays beside it)."""
    from rmroute.routers import save_state

    json_path = Path(json_path)
    with atomic_file(json_path) as tmp:
        save_state(tmp, state)
        tmp.with_suffix(".safetensors").replace(json_path.with_suffix(".safetensors"))


def load_router_state(json_path: str | os.PathLike) -> dict:
    from rmroute.routers import load_state

    return load_state(json_path)
