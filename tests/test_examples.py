"""The runnable example of README's "Route your own RMs in a TRL loop", run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_route_your_own_rms_example_runs(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "route_your_own_rms.py"), "--prompts", "16",
                             "--batch-prompts", "4"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if ":" in line}
    picks = lines["RM picked per batch"].split(":", 1)[1].split()
    assert len(picks) == 4 and set(picks) <= {"checker", "brevity"}  # one routed decision per batch
    assert "router updates: 4" in lines["picks"]  # the router learned after every step
    assert len(lines["step losses"].split(":", 1)[1].split()) == 4
