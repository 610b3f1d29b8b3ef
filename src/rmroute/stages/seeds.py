"""Running one per-run rule's work for several seeds in one job (`seed_jobs: together`).

A job of rollout_sft, rollout, train_iteration, evaluate or collect_decisions gets one path per
seed in each named input and output, in the order of its `seeds`; `each_seed` runs the seeds'
stage calls one after the other and writes each seed's own seconds. Every stage seeds itself
from its seed and iteration when it starts, so a seed's outputs do not depend on the seeds run
before it in the same process (tests/test_seed_jobs.py holds that to the byte).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pandas as pd

from rmroute.io import as_list, write_table  # noqa: F401  (as_list re-exported for the stage scripts)


def seed_seconds_row(seconds: float) -> pd.DataFrame:
    """One seed's seconds in the columns of a Snakemake benchmark file that the tables read (`s`,
    `h:m:s`)."""
    whole = int(seconds)
    return pd.DataFrame({"s": [round(float(seconds), 4)],
                         "h:m:s": [f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"]})


def each_seed(seeds: Sequence[int], work: Callable[[int, int], None], seconds_paths: Sequence[str] | None = None) -> None:
    """Call `work(k, seed)` for the k-th seed of the job, in order. With `seconds_paths`, write the
    wall seconds of each seed's call (its own models, routing, training and saving; the process
    and library start-up that the job pays once is not in it) to the k-th path."""
    seeds = [int(s) for s in seeds]
    if seconds_paths is not None and len(seconds_paths) != len(seeds):
        raise ValueError(f"{len(seconds_paths)} seconds paths for {len(seeds)} seeds")
    for k, seed in enumerate(seeds):
        if len(seeds) > 1:
            print(f"=== seed {seed} ({k + 1} of {len(seeds)}) ===", flush=True)
        start = time.perf_counter()
        work(k, seed)
        if seconds_paths is not None:
            write_table(seed_seconds_row(time.perf_counter() - start), seconds_paths[k])
