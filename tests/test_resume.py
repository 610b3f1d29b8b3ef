"""Reliability of the workflow on the `.test/config/resume.yaml` config (one seed, two iterations,
LASeR and BayesianRouter):

* resume: a run killed with SIGKILL inside a training job while it saves, inside a rollout job,
  between two iterations and inside the training loop (the router mid-iteration), each time
  resumed the documented way (`snakemake --unlock`, then `snakemake --rerun-incomplete`), ends with the same tables, decision logs and final policies as an
  uninterrupted run, leaves no temporary file behind and leaves Snakemake nothing to redo;
* determinism: two runs of the same config and seed agree on every artefact (CPU), apart from
  wall-clock columns, logs, benchmarks and figures.

The killed-and-resumed run is the second run of the determinism check: it starts from an empty
results directory, and each of its outputs is written by one complete execution of its job in
a fresh process, as in a second uninterrupted run. RMROUTE_CLEAN_SECOND_RUN=1 adds a third,
uninterrupted run and checks it against the reference too (about 1.5 minutes more on 2 cores).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".test" / "config" / "resume.yaml"
BASE = Path(".test") / "results-resume"  # relative to ROOT; the config's own results_dir
REFERENCE, RESUMED, CLEAN = BASE / "reference", BASE / "resumed", BASE / "clean"
METHODS = ("laser", "bayesian")
FINAL_IT = 2
RUN_TIMEOUT = 900  # seconds for one complete run (about 3 minutes on 2 cores)
KILL_TIMEOUT = 600  # seconds to reach one kill point
CLEAN_SECOND_RUN = bool(os.environ.get("RMROUTE_CLEAN_SECOND_RUN"))

pytestmark = pytest.mark.workflow


def snakemake_command(results: Path, *extra: str) -> list[str]:
    # results_dir is a top-level string, so --config overrides it on top of the --configfile.
    return [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(CONFIG),
            "--config", f"results_dir={results.as_posix()}", *extra]


def run_snakemake(results: Path, *extra: str, timeout: int = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(results, *extra), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def complete_run(results: Path) -> None:
    shutil.rmtree(ROOT / results, ignore_errors=True)
    result = run_snakemake(results)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


# ---------------------------------------------------------------- killing a run


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies excluded)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@dataclass
class KillPoint:
    """Where to kill: `reached(results_dir, started)` polled every `poll` seconds, then `delay`."""

    name: str
    reached: Callable[[Path, float], bool]
    delay: float = 0.0
    poll: float = 0.2


def fresh(path: Path, started: float) -> bool:
    """The path exists and was written during the current attempt."""
    try:
        return path.stat().st_mtime >= started
    except FileNotFoundError:
        return False


def run_until_killed(results: Path, point: KillPoint, log: Path, *extra: str) -> None:
    """Start snakemake in its own process group, wait for the kill point, SIGKILL the whole group
    (snakemake and every job it runs) and wait until none of them is left."""
    root = ROOT / results
    started = time.time() - 1.0  # file mtimes may be truncated to the second
    with open(log, "a") as out:
        out.write(f"\n===== until kill point: {point.name}\n")
        out.flush()
        # Unbuffered, so the log keeps what snakemake printed up to the kill.
        proc = subprocess.Popen(snakemake_command(results, *extra), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + KILL_TIMEOUT
        while not point.reached(root, started):
            if proc.poll() is not None:
                pytest.fail(f"snakemake ended (exit {proc.returncode}) before kill point {point.name!r}:\n"
                            + log.read_text()[-4000:])
            if time.time() > deadline:
                pytest.fail(f"kill point {point.name!r} not reached in {KILL_TIMEOUT} s:\n" + log.read_text()[-4000:])
            time.sleep(point.poll)
        time.sleep(point.delay)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        deadline = time.time() + 30
        while group_alive(proc.pid):
            assert time.time() < deadline, "jobs of the killed run are still running"
            time.sleep(0.1)
    print(f"killed {point.name!r}: temporary files {sorted(str(p.relative_to(root)) for p in leftovers(results))}, "
          f"outputs marked incomplete {incomplete_markers(results)}")


def incomplete_markers(results: Path) -> list[str]:
    """Outputs under `results` that Snakemake marked as started but not finished."""
    markers = ROOT / ".snakemake" / "incomplete"
    names = []
    for path in markers.rglob("*") if markers.is_dir() else []:
        if path.is_file():
            try:
                encoded = "".join(part.lstrip("@") for part in path.relative_to(markers).parts)
                name = base64.urlsafe_b64decode(encoded).decode()
            except ValueError:
                continue
            if name.startswith(f"{results.as_posix()}/"):
                names.append(name[len(results.as_posix()) + 1 :])
    return sorted(names)


def run_dir(method: str, it: int) -> str:
    return f"runs/{method}/0/it{it}"


KILL_POINTS = [
    # In the train_iteration job of iteration 1 while it writes its outputs: the new policy is
    # being saved (or has just been renamed into place) and the router state and decision log are
    # not yet written.
    KillPoint("inside train_iteration laser it1, writing the policy",
              lambda r, t: (r / run_dir("laser", 1) / "policy.tmp").exists() or (r / run_dir("laser", 1) / "policy").exists(),
              poll=0.01),
    # In the rollout job of iteration 2, one second after it started: mid-import or mid-generation.
    KillPoint("inside rollout laser it2",
              lambda r, t: fresh(r / "logs" / "rollout" / "laser" / "it2.log", t), delay=1.0),
    # Between iterations: iteration 1's router state and policy are on disk, iteration 2's rollouts
    # have just been renamed into place, and no training of iteration 2 has started.
    KillPoint("between laser it1 and it2 (it2 rollouts just written)",
              lambda r, t: fresh(r / run_dir("laser", 2) / "rollouts.jsonl", t), poll=0.01),
    # Inside the training loop: the router has routed and been updated on at least one batch of
    # iteration 2 (the trainer's progress bar counts a finished step) and nothing of it is saved.
    KillPoint("inside train_iteration laser it2, mid-training",
              lambda r, t: bool(STEP_DONE.search(_text(r / "logs" / "train_iteration" / "laser" / "it2.log", t))),
              poll=0.05),
]
STEP_DONE = re.compile(r"\| *[1-9]\d*/\d+ \[")  # tqdm's "| 3/8 [": a finished optimiser step


def _text(path: Path, started: float) -> str:
    return path.read_text(errors="replace") if fresh(path, started) else ""


# ---------------------------------------------------------------- comparing two runs


def leftovers(results: Path) -> list[Path]:
    return [p for p in (ROOT / results).rglob("*") if ".tmp" in p.name]


def wall_clock(name: str, frame: pd.DataFrame) -> list[str]:
    """Columns that hold measured seconds: the decision logs' route_seconds, the per-stage
    `<stage>_s` columns of the cost table and the wall-time columns of the efficiency table."""
    columns = [c for c in frame.columns if c == "route_seconds"]
    if name in ("cost.tsv", "cost.md"):
        columns += [c for c in frame.columns if c.endswith("_s")]
    if name in ("efficiency.tsv", "efficiency.md"):  # training wall time per seed and per stage
        columns += [c for c in frame.columns if c.startswith("wall_s") or c.endswith("_s_mean")]
    return columns


def read_frame(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, sep="\t")
    return frame.drop(columns=wall_clock(path.name, frame))


def assert_same_frame(a: Path, b: Path) -> None:
    try:
        pd.testing.assert_frame_equal(read_frame(a), read_frame(b), check_exact=True)
    except AssertionError as err:
        raise AssertionError(f"{a} and {b} differ: {err}") from None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_results(a: Path, b: Path) -> None:
    """Tables, decision logs and final policies of two results directories are identical."""
    a, b = ROOT / a, ROOT / b
    tables = sorted(p.name for p in (a / "tables").glob("*.tsv"))
    assert tables and tables == sorted(p.name for p in (b / "tables").glob("*.tsv"))
    for name in tables:
        assert_same_frame(a / "tables" / name, b / "tables" / name)
    for method in METHODS:
        assert_same_frame(a / "decisions" / method / "0.parquet", b / "decisions" / method / "0.parquet")
        weights = Path(run_dir(method, FINAL_IT)) / "policy" / "model.safetensors"
        assert sha256(a / weights) == sha256(b / weights), f"final {method} policy differs"


SKIPPED_PARTS = {"logs", "benchmarks", "figures"}  # timings, progress bars, PDF creation dates


def artefacts(results: Path) -> set[Path]:
    return {p.relative_to(results) for p in results.rglob("*")
            if p.is_file() and not SKIPPED_PARTS.intersection(p.relative_to(results).parts)
            and p.name not in (".snakemake_timestamp", "cost.md", "efficiency.md")}


def assert_same_artefacts(a: Path, b: Path) -> None:
    """Every artefact of two results directories is identical: byte for byte, except the frames
    that hold wall-clock columns, which are compared without them."""
    a, b = ROOT / a, ROOT / b
    files = artefacts(a)
    assert files == artefacts(b), sorted(files ^ artefacts(b))
    differ = []
    for rel in sorted(files):
        if rel.suffix == ".parquet" or rel.name in ("cost.tsv", "efficiency.tsv"):
            assert_same_frame(a / rel, b / rel)
        elif (a / rel).read_bytes() != (b / rel).read_bytes():
            differ.append(str(rel))
    assert not differ, f"{len(differ)} artefacts differ: {differ}"


# ---------------------------------------------------------------- runs


def sources_fingerprint() -> str:
    """Hash of the code and configs the runs execute, to tell a real difference between two runs
    from sources edited while they ran."""
    digest = hashlib.sha256()
    files = [ROOT / "Snakefile", *sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "workflow").rglob("*")),
             *sorted((ROOT / ".test" / "config").glob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def unlock(results: Path) -> None:
    result = run_snakemake(results, "--unlock")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def kill_and_resume(results: Path, log: Path) -> None:
    """The run killed at every kill point in turn and each time resumed the documented way.

    A SIGKILLed snakemake leaves its locks behind, and the next run stops with LockException
    unless `snakemake --unlock` comes first. An output renamed into place just before a kill is
    on disk but still marked incomplete: unless its job has to run anyway, the next run stops with
    IncompleteFilesException without --rerun-incomplete.
    """
    shutil.rmtree(ROOT / results, ignore_errors=True)
    run_until_killed(results, KILL_POINTS[0], log)
    for point in KILL_POINTS[1:]:
        unlock(results)
        run_until_killed(results, point, log, "--rerun-incomplete")
    unlock(results)
    final = run_snakemake(results, "--rerun-incomplete")
    assert final.returncode == 0, final.stdout[-4000:] + final.stderr[-4000:]


def stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start_run(results: Path, log: Path) -> subprocess.Popen:
    """A complete run in the background, in its own process group."""
    shutil.rmtree(ROOT / results, ignore_errors=True)
    with open(log, "w") as out:
        return subprocess.Popen(snakemake_command(results), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


@pytest.fixture(scope="module")
def runs():
    """An uninterrupted reference run and a run killed at every kill point and resumed (and, with
    RMROUTE_CLEAN_SECOND_RUN=1, a second uninterrupted run).

    They run side by side, in their own results directories so that Snakemake's locks do not
    collide: the DAG is mostly one chain, so a single run leaves a core idle most of the time.
    """
    (ROOT / BASE).mkdir(parents=True, exist_ok=True)
    clean = [CLEAN] if CLEAN_SECOND_RUN else []
    logs = {results: ROOT / BASE / f"{results.name}.log" for results in (REFERENCE, RESUMED, *clean)}
    logs[RESUMED].unlink(missing_ok=True)
    sources = sources_fingerprint()
    start = time.time()
    background = {results: start_run(results, logs[results]) for results in (REFERENCE, *clean)}
    try:
        kill_and_resume(RESUMED, logs[RESUMED])
        timings = {"killed and resumed": time.time() - start}
        for results, proc in background.items():
            returncode = proc.wait(timeout=RUN_TIMEOUT)
            assert returncode == 0, logs[results].read_text()[-5000:]
            timings[results.name] = time.time() - start
        print("runs done after " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
        if sources_fingerprint() != sources:
            pytest.fail("the code or the configs changed while the runs were going; their outputs cannot be compared")
        yield {"reference": REFERENCE, "resumed": RESUMED, **({"clean": CLEAN} if clean else {})}
    finally:
        for proc in background.values():
            stop_group(proc)
        if not os.environ.get("RMROUTE_KEEP_RESULTS"):  # set it to look into a failure
            for results, log in logs.items():
                shutil.rmtree(ROOT / results, ignore_errors=True)
                log.unlink(missing_ok=True)
            if (ROOT / BASE).is_dir() and not any((ROOT / BASE).iterdir()):
                (ROOT / BASE).rmdir()


def test_resumed_run_matches_uninterrupted_run(runs):
    assert_same_results(runs["reference"], runs["resumed"])


def test_resumed_run_is_complete(runs):
    """No temporary file or unfinished output is left, and Snakemake has nothing left to rerun
    (no finished job is redone because of the kills, e.g. for a newer input mtime)."""
    for results in runs.values():
        found = leftovers(results)
        assert not found, found
        assert not incomplete_markers(results), incomplete_markers(results)
    dry = run_snakemake(runs["resumed"], "--dry-run")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


def test_two_runs_give_identical_artefacts(runs):
    assert_same_artefacts(runs["reference"], runs["resumed"])


@pytest.mark.skipif(not CLEAN_SECOND_RUN, reason="set RMROUTE_CLEAN_SECOND_RUN=1 for a third, clean run")
def test_clean_second_run_is_identical(runs):
    assert_same_results(runs["reference"], runs["clean"])
    assert_same_artefacts(runs["reference"], runs["clean"])
