"""Rollout backends: how the policy samples its n responses per prompt (`rollout.backend`).

* `hf` (default, the one CI runs): transformers `generate` through `rmroute.models.generate`;
* `vllm`: vLLM's offline engine on a GPU, an optional dependency imported only when chosen.
  Each prompt is one request with its own `SamplingParams` (n, temperature, max_tokens and a seed
  of its own), given as token ids tokenised exactly as the `hf` path does. A full (or merged)
  checkpoint is the engine's model; an adapter checkpoint (`lora.save: adapter`) is served on its
  base model through a `LoRARequest`. `VLLMSampler.load` points a live engine at the policy of the
  next iteration: a new adapter on the same base is swapped in without reloading the base; a
  new full checkpoint rebuilds the engine.

The two backends draw from the same distribution (pure sampling, no top-k or top-p) with
different random streams, so their samples differ; each is deterministic for a seed.
"""

from __future__ import annotations

import gc
import os

from rmroute import lora
from rmroute.seeding import derive_seed

BACKENDS = ("hf", "vllm")
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
DEFAULTS = {"backend": "hf", "gpu_memory_utilization": 0.85}


def settings(block: dict | None) -> dict:
    """The `rollout:` block with its defaults filled in."""
    out = {**DEFAULTS, **(block or {})}
    if out["backend"] not in BACKENDS:
        raise ValueError(f"rollout.backend: {out['backend']!r}; expected one of {BACKENDS}")
    return out


def sampling_kwargs(*, n: int, temperature: float, max_new_tokens: int, seed: int) -> dict:
    """vLLM SamplingParams arguments for one prompt from the rollout budget. Temperature 0 is
    greedy decoding, one sequence (the hf path then repeats it n times, as here)."""
    if temperature <= 0:
        return {"n": 1, "temperature": 0.0, "max_tokens": int(max_new_tokens), "seed": int(seed)}
    return {"n": int(n), "temperature": float(temperature), "top_p": 1.0, "max_tokens": int(max_new_tokens),
            "seed": int(seed)}


def prompt_seeds(seed: int, n_prompts: int) -> list[int]:
    """One seed per request: requests seeded alike would share one random stream."""
    return [derive_seed(seed, i, scheme="vllm_request") for i in range(n_prompts)]


def vllm_lora_rank(r: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of rank r."""
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise ValueError(f"lora.r: {r} exceeds the largest LoRA rank vLLM serves ({VLLM_LORA_RANKS[-1]})")


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


class VLLMSampler:
    """A vLLM engine for one policy at a time (see the module docstring)."""

    def __init__(self, *, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.85, seed: int = 0,
                 max_model_len: int | None = None):
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            raise ImportError("rollout.backend: vllm needs the vllm package on a GPU machine "
                              "(see config/README.md, `rollout`)") from err
        self.engine_args = dict(dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, seed=seed,
                                max_model_len=max_model_len)
        self.llm = None
        self.lora_rank = 0  # max_lora_rank of the engine; 0 = LoRA off
        self.base: str | None = None
        self.lora_request = None
        self._next_lora_id = 1
        self.tokenizer = None

    def load(self, policy_dir: str | os.PathLike) -> "VLLMSampler":
        """Serve the policy at `policy_dir` (full checkpoint or adapter) from now on."""
        from vllm.lora.request import LoRARequest

        adapter = lora.is_adapter(policy_dir)
        base = lora.adapter_base(policy_dir) if adapter else str(policy_dir)
        rank = 0
        if adapter:
            from peft import PeftConfig

            rank = vllm_lora_rank(PeftConfig.from_pretrained(str(policy_dir)).r)
        if self.llm is None or base != self.base or rank > self.lora_rank:
            self.close()
            from vllm import LLM

            kwargs = {k: v for k, v in self.engine_args.items() if v is not None}
            if rank:
                kwargs.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
            self.lora_rank = rank
            self.llm = LLM(model=base, tokenizer=base, **kwargs)
            self.base = base
            from rmroute.models import load_tokenizer

            self.tokenizer = load_tokenizer(base)
        self.lora_request = None
        if adapter:
            self.lora_request = LoRARequest(f"policy-{self._next_lora_id}", self._next_lora_id, str(policy_dir))
            self._next_lora_id += 1  # a new id: vLLM caches adapters by id
        return self

    def generate(self, prompts: list[str], *, n: int, temperature: float, max_new_tokens: int, seed: int) -> list[list[str]]:
        """n responses per prompt, in prompt order (the hf path's output shape)."""
        from vllm import SamplingParams

        if self.llm is None:
            raise RuntimeError("VLLMSampler.generate before load(policy_dir)")
        requests = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
        params = [SamplingParams(**sampling_kwargs(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=s))
                  for s in prompt_seeds(seed, len(prompts))]
        outputs = self.llm.generate(requests, params, lora_request=self.lora_request, use_tqdm=False)
        groups = [[o.text for o in out.outputs] for out in outputs]
        return [g if len(g) == n else g * n for g in groups]

    def close(self) -> None:
        """Free the engine and its GPU memory (before the HF model of the same job loads)."""
        if self.llm is not None:
            self.llm = None
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def __enter__(self) -> "VLLMSampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def vllm_generate(policy_dir: str, prompts: list[str], *, n: int, temperature: float, max_new_tokens: int, seed: int,
                  block: dict | None = None, dtype: str = "bfloat16") -> list[list[str]]:
    """One job's rollouts with a fresh engine that is freed before returning."""
    s = settings(block)
    with VLLMSampler(dtype=dtype, gpu_memory_utilization=s["gpu_memory_utilization"], seed=seed) as sampler:
        return sampler.load(policy_dir).generate(prompts, n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                                                 seed=seed)
