"""Shared pieces of the benchmarks: a testbed tokenizer, K tiny sequence-classifier RMs saved and
loaded through `RewardModel`, rollout-like groups, a median-of-repeats timer and peak RSS.

Benchmarks print and write TSVs; they never assert timings. Torch runs on one thread so that
timings are reproducible and match the workflow's default `threads: 1` per job.
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

# Set before numpy and torch are imported, so their BLAS and OpenMP pools start with one thread
# (a second BLAS thread on a busy 2-core machine slows the routers' small matrix inversions).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForSequenceClassification  # noqa: E402

from rmroute import models  # noqa: E402
from rmroute.io import write_table  # noqa: E402  (temp file + rename)
from rmroute.rewards.pool import RewardModel  # noqa: E402
from rmroute.testbed import (  # noqa: E402
    WORDS,
    TestbedConfig,
    corrupt_answer,
    generate_splits,
    score_record,
)

OUT_DIR = Path("results/benchmarks")
THREADS = 1
# The default testbed RM and policy shape (config/config.yaml: policy.*).
RM_SHAPE = {"hidden_size": 128, "layers": 2, "heads": 4, "intermediate_size": 512, "max_length": 256}
POLICY_HIDDEN = 128
# Small testbed: 100 rollout prompts per domain give up to 400 distinct prompts.
BENCH_SPLITS = {"sft": 250, "rm_train": 10, "router_offline": 10, "rollout": 100, "test": 10}


def pin_threads(threads: int = THREADS) -> str:
    """One torch thread (intra-op and inter-op); returns the line every benchmark prints."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only allowed before the first parallel op; intra-op is what matters here
        pass
    return (f"torch threads pinned to {torch.get_num_threads()} (intra-op) for reproducible timings; "
            f"{os.cpu_count()} CPU cores visible, no GPU used")


def testbed(seed: int = 0) -> dict[str, list[dict]]:
    """The benchmark testbed: the default generators with small split sizes."""
    return generate_splits(TestbedConfig(seed=seed, split_sizes=dict(BENCH_SPLITS), ood_size=10))


def build_tokenizer(splits: dict[str, list[dict]], vocab: int = 1024):
    """Byte-level BPE on the SFT split, as the workflow trains it for the testbed policy."""
    return models.train_tokenizer([r["prompt"] + r["answer"] for r in splits["sft"]], vocab)


def save_reward_models(tokenizer, k: int, root: str | os.PathLike, seed: int = 0) -> list[str]:
    """K randomly initialised tiny Llama sequence classifiers (different seeds) saved with
    `save_pretrained`, each with the tokenizer beside it; returns their directories."""
    dirs = []
    for i in range(k):
        torch.manual_seed(seed + i)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=RM_SHAPE["hidden_size"], num_hidden_layers=RM_SHAPE["layers"],
            num_attention_heads=RM_SHAPE["heads"], num_key_value_heads=RM_SHAPE["heads"],
            intermediate_size=RM_SHAPE["intermediate_size"], max_position_embeddings=RM_SHAPE["max_length"],
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, num_labels=1, tie_word_embeddings=True,
        )
        path = Path(root) / f"rm_{i}"
        LlamaForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        dirs.append(str(path))
    return dirs


def load_pool(dirs: list[str], batch_size: int = 64) -> list[RewardModel]:
    """The RMs as the workflow's pool holds them, loaded now so load time stays out of timings."""
    return [RewardModel(rm_id=f"rm_{i}", source=d, device="cpu", batch_size=batch_size,
                        max_length=RM_SHAPE["max_length"]).load() for i, d in enumerate(dirs)]


def reset_counters(pool: list[RewardModel]) -> None:
    for rm in pool:
        rm.calls, rm.seconds = 0, 0.0


def random_response(record: dict, rng: random.Random) -> str:
    """A sample-like response: the gold answer, a corrupted one, or a few random words."""
    roll = rng.random()
    if roll < 0.3:
        return record["answer"]
    if roll < 0.6:
        return corrupt_answer(record["domain"], record["answer"], rng)
    return " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 10)))


def rollout_groups(records: list[dict], n_prompts: int, samples: int, seed: int = 0,
                   context_dim: int = POLICY_HIDDEN) -> list[dict]:
    """Rollout records as `rmroute.online.route_batches` reads them: prompt, responses, gold
    scores and a context vector (random here, the size of the policy's hidden state; LinUCB reads it
    as the prompt context)."""
    if n_prompts > len(records):
        raise ValueError(f"n_prompts={n_prompts} exceeds the {len(records)} testbed prompts available")
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    groups = []
    for rec in records[:n_prompts]:
        responses = [random_response(rec, rng) for _ in range(samples)]
        groups.append({**rec, "responses": responses, "gold": [score_record(rec, r) for r in responses],
                       "context": gen.standard_normal(context_dim).astype(np.float32)})
    return groups


def interleave_domains(records: list[dict]) -> list[dict]:
    """Records ordered round-robin over domains, so any prefix has every domain in equal share."""
    by_domain: dict[str, list[dict]] = {}
    for r in records:
        by_domain.setdefault(r["domain"], []).append(r)
    columns = list(by_domain.values())
    return [col[i] for i in range(max(map(len, columns))) for col in columns if i < len(col)]


def median_time(fn, repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall seconds of `fn()` over `repeats` runs (at least 3) after `warmup` untimed runs."""
    repeats = max(3, repeats)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    `ru_maxrss` is the kernel's high-water mark (KiB on Linux, bytes on macOS); psutil only
    reports the current RSS on Linux, so it cannot give a peak.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float:
    try:
        import psutil
    except ImportError:
        return float("nan")
    return psutil.Process().memory_info().rss / 2**20


def write_tsv(frame, name: str, out_dir: str | os.PathLike = OUT_DIR) -> Path:
    """Write `out_dir/name` through a temp file and a rename; returns the path."""
    path = Path(out_dir) / name
    write_table(frame, path)
    return path


def print_table(frame, title: str) -> None:
    print(f"\n== {title}")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
