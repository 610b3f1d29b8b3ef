"""The atomic writers of rmroute.io: a file or directory appears whole under its name or not at all."""

from __future__ import annotations

import pandas as pd
import pytest

from rmroute import io
from rmroute.io import atomic_dir, atomic_file, read_jsonl, tmp_dir_path, write_jsonl, write_table


def test_atomic_file_renames_on_success_and_removes_the_temp_on_error(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    with atomic_file(path) as tmp:
        assert tmp == tmp_path / "sub" / ".a.tmp.txt" and tmp.parent.is_dir()
        tmp.write_text("one")
        assert not path.exists()
    assert path.read_text() == "one" and not tmp.exists()
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "one" and not tmp.exists()


def test_atomic_dir_replaces_the_directory_and_leaves_it_on_error(tmp_path):
    out = tmp_path / "policy"
    assert tmp_dir_path(out) == tmp_path / "policy.tmp"  # test_resume's kill point watches this name
    tmp_dir_path(out).mkdir()
    (tmp_dir_path(out) / "stale").write_text("a killed job's leftover")
    with atomic_dir(out) as tmp:
        assert tmp == tmp_dir_path(out) and list(tmp.iterdir()) == []  # the leftover is gone
        (tmp / "model").write_text("v1")
    assert (out / "model").read_text() == "v1" and not tmp.exists()
    with atomic_dir(out) as tmp:
        (tmp / "other").write_text("v2")
    assert sorted(p.name for p in out.iterdir()) == ["other"]  # replaced whole, not merged
    with pytest.raises(ValueError), atomic_dir(out) as tmp:
        (tmp / "half").write_text("")
        raise ValueError("failed")
    assert sorted(p.name for p in out.iterdir()) == ["other"] and not tmp.exists()


def test_writers_leave_no_temporary_files(tmp_path):
    write_jsonl([{"b": 1, "a": 2}], tmp_path / "r.jsonl")
    write_table(pd.DataFrame({"x": [1.0]}), tmp_path / "tables" / "t.tsv")
    assert read_jsonl(tmp_path / "r.jsonl") == [{"a": 2, "b": 1}]
    assert (tmp_path / "tables" / "t.md").exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert io.tmp_path(tmp_path / "x.tsv").name == ".x.tmp.tsv"
