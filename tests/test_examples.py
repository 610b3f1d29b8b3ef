"""The runnable examples (docs/usage.md: the routing step in your own TRL loop, DPO and GRPO), run as a
user runs it: its output must show the router learning which RM is right on which kind of prompt."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARE = re.compile(r"right RM \((\w+)\) on (\w+): first half (\d+)/(\d+) = \d+%, second half (\d+)/(\d+) = \d+%")


def learned(shares: dict[str, tuple[int, int, int, int]]) -> bool:
    """`shares[kind]` = (right picks, decisions) in the run's first half, then its second half.

    The router learned if, on every kind, at least 3 of 4 of its second-half picks were right,
    and, over both kinds, it was right more often in the second half than in the first. A router
    that picks at random meets the first condition on 12 decisions of one kind with probability
    7% (P[Binomial(12, 1/2) >= 9]), on both kinds with 0.5%; one RM for everything never does."""
    first = sum(s[0] for s in shares.values()) / sum(s[1] for s in shares.values())
    second = sum(s[2] for s in shares.values()) / sum(s[3] for s in shares.values())
    return all(s[2] >= 0.75 * s[3] for s in shares.values()) and second > first


def test_learned_fails_a_router_that_did_not_learn():
    assert learned({"plus": (11, 12, 12, 12), "times": (8, 12, 12, 12)})  # the example's run
    assert not learned({"plus": (5, 12, 7, 12), "times": (9, 12, 5, 12)})  # --router random
    assert not learned({"plus": (0, 12, 0, 12), "times": (11, 12, 12, 12)})  # --normaliser quantile-laser: one RM sunk
    assert not learned({"plus": (11, 12, 11, 12), "times": (11, 12, 10, 12)})  # right from the start, no better later


def test_route_your_own_rms_example_learns(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "route_your_own_rms.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if ":" in line}
    picks = lines["RM picked per batch"].split(":", 1)[1].split()
    assert len(picks) == 48 and set(picks) == {"adder", "multiplier"}  # one routed decision per batch
    assert "router updates: 48" in lines["picks"]  # the router learned after every step
    assert len(lines["step losses"].split(":", 1)[1].split()) == 48
    shares = {kind: tuple(map(int, counts)) for _, kind, *counts in SHARE.findall(result.stdout)}
    assert set(shares) == {"plus", "times"}, result.stdout
    assert sum(s[1] + s[3] for s in shares.values()) == 48  # every decision counted once
    assert learned(shares), result.stdout


def test_route_rewards_in_grpo_example_learns(tmp_path):
    """examples/route_rewards_in_grpo.py: TRL's GRPOTrainer with RoutedReward over two rule RMs;
    one RM scores each batch (half the calls of scoring with both) and the router learns which."""
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "route_rewards_in_grpo.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if ":" in line}
    picks = lines["RM picked per batch"].split(":", 1)[1].split()
    assert len(picks) == 48 and set(picks) == {"adder", "multiplier"}  # one routed decision per optimiser step
    assert "RM calls: 768 (scoring every completion with every RM: 1536)" in lines["picks"]
    shares = {kind: tuple(map(int, counts)) for _, kind, *counts in SHARE.findall(result.stdout)}
    assert set(shares) == {"plus", "times"}, result.stdout
    assert sum(s[1] + s[3] for s in shares.values()) == 48
    assert learned(shares), result.stdout
