"""GPU throughput of the rollout and scoring paths (run by benchmarks/gpu_check.sh, never in CI):
rollout tokens/s of transformers `generate` against vLLM on the same policy checkpoint, and RM
scoring rows/s and tokens/s of `rmroute.models.rm_scores` (length-sorted batches) in bf16.

    python benchmarks/gpu_throughput.py --policy .test/results-gpu/models/sft --rm .test/results-gpu/rms/rm_a \
        --prompts .test/results-gpu/data/rollout.jsonl --out benchmarks/out/gpu_throughput.tsv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rmroute import backends, models  # noqa: E402
from rmroute.io import read_jsonl, write_table  # noqa: E402


def new_tokens(tokenizer, groups: list[list[str]]) -> int:
    return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 for group in groups for text in group)


def timed(fn, repeats: int):
    """(result of the last call, median seconds over `repeats` calls after one warm-up call)."""
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return out, sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--rm", required=True, help="a sequence-classifier RM checkpoint")
    parser.add_argument("--prompts", required=True, help="JSON lines with a prompt field")
    parser.add_argument("--n-prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_throughput: no CUDA device")

    records = read_jsonl(args.prompts)
    prompts = [records[i % len(records)]["prompt"] for i in range(args.n_prompts)]
    tokenizer = models.load_tokenizer(args.policy)
    sampling = dict(n=args.samples, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    rows = []

    policy = models.load_policy(args.policy, dtype=args.dtype, device="cuda")
    groups, seconds = timed(lambda: models.generate(policy, tokenizer, prompts, batch_size=64, **sampling), args.repeats)
    rows.append({"what": "rollout", "backend": "hf", "dtype": args.dtype, "rows": len(prompts) * args.samples,
                 "tokens": new_tokens(tokenizer, groups), "seconds": seconds})
    del policy
    torch.cuda.empty_cache()

    if backends.vllm_available():
        with backends.VLLMSampler(dtype=args.dtype, gpu_memory_utilization=0.5) as sampler:
            sampler.load(args.policy)
            groups, seconds = timed(lambda: sampler.generate(prompts, **sampling), args.repeats)
        rows.append({"what": "rollout", "backend": "vllm", "dtype": args.dtype, "rows": len(prompts) * args.samples,
                     "tokens": new_tokens(tokenizer, groups), "seconds": seconds})
    else:
        print("gpu_throughput: vllm is not installed; the vLLM row is missing", file=sys.stderr)

    rm = models.load_reward_model(args.rm, dtype=args.dtype, device="cuda")
    rm_tok = models.load_tokenizer(args.rm)
    responses = [text for group in groups for text in group]
    score_prompts = [p for p in prompts for _ in range(args.samples)]
    _, seconds = timed(lambda: models.rm_scores(rm, rm_tok, score_prompts, responses, batch_size=64), args.repeats)
    tokens = sum(len(rm_tok(p + r, add_special_tokens=False)["input_ids"]) for p, r in zip(score_prompts, responses))
    rows.append({"what": "rm_scoring", "backend": "hf", "dtype": args.dtype, "rows": len(responses), "tokens": tokens,
                 "seconds": seconds})

    table = pd.DataFrame(rows)
    table["tokens_per_s"] = table["tokens"] / table["seconds"]
    table["rows_per_s"] = table["rows"] / table["seconds"]
    table["device"] = torch.cuda.get_device_name(0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_table(table, args.out)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
