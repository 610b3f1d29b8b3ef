"""The rollout backend switch: the budget mapped to vLLM's sampling parameters, the config's
`rollout` block, and, on a GPU with vLLM installed, vLLM's greedy answers equal to the HF ones
for a full checkpoint and for a LoRA adapter served through a LoRARequest."""

from __future__ import annotations

import copy

import pytest
import torch

from rmroute import backends, lora, models
from rmroute.testbed import TestbedConfig, generate_splits


def test_sampling_params_follow_the_budget():
    kwargs = backends.sampling_kwargs(n=6, temperature=0.8, max_new_tokens=512, seed=7)
    assert kwargs == {"n": 6, "temperature": 0.8, "top_p": 1.0, "max_tokens": 512, "seed": 7}
    greedy = backends.sampling_kwargs(n=6, temperature=0.0, max_new_tokens=24, seed=7)
    assert greedy["n"] == 1 and greedy["temperature"] == 0.0  # one greedy answer, repeated n times as the hf path does


def test_every_prompt_gets_its_own_seed():
    seeds = backends.prompt_seeds(3, 500)
    assert len(set(seeds)) == 500
    assert set(seeds).isdisjoint(backends.prompt_seeds(4, 500))  # another iteration or run seed, other streams


def test_lora_ranks_round_up_to_what_vllm_serves():
    assert [backends.vllm_lora_rank(r) for r in (1, 8, 9, 16, 100)] == [8, 8, 16, 16, 128]
    with pytest.raises(ValueError, match="lora.r"):
        backends.vllm_lora_rank(1024)


def test_rollout_block_defaults_and_errors():
    assert backends.settings(None) == {"backend": "hf", "gpu_memory_utilization": 0.85}
    assert backends.settings({"backend": "vllm"})["backend"] == "vllm"
    with pytest.raises(ValueError, match="rollout.backend"):
        backends.settings({"backend": "tgi"})


needs_vllm_gpu = pytest.mark.skipif(not (backends.vllm_available() and torch.cuda.is_available()),
                                    reason="needs the vllm package and a CUDA device")


@pytest.mark.gpu
@needs_vllm_gpu
def test_vllm_greedy_equals_hf_greedy_for_full_and_adapter_checkpoints(tmp_path):
    splits = generate_splits(TestbedConfig(n_entities=20, split_sizes={"sft": 60, "rm_train": 4, "router_offline": 4,
                                                                       "rollout": 8, "test": 4}, ood_size=4))
    tok = models.train_tokenizer([r["prompt"] + r["answer"] for r in splits["sft"]], 400)
    torch.manual_seed(0)
    models.save_atomic(models.build_policy(tok, 64, 2, 4, 128, 256), tok, tmp_path / "base")
    policy = lora.wrap_policy(tmp_path / "base", {"r": 8, "alpha": 16, "dropout": 0.0}, device="cpu")
    with torch.no_grad():  # a non-zero adapter, so serving it changes the answers
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    lora.save_policy(copy.deepcopy(policy), tok, tmp_path / "adapter", "adapter")
    prompts = [r["prompt"] for r in splits["rollout"]]

    def hf_greedy(path):
        model = models.load_policy(path, dtype="float32", device="cuda")
        return models.generate(model, tok, prompts, n=2, temperature=0.0, max_new_tokens=8)

    with backends.VLLMSampler(dtype="float32", gpu_memory_utilization=0.3) as sampler:
        full = sampler.load(tmp_path / "base").generate(prompts, n=2, temperature=0.0, max_new_tokens=8, seed=0)
        served = sampler.load(tmp_path / "adapter").generate(prompts, n=2, temperature=0.0, max_new_tokens=8, seed=0)
        sampled = sampler.generate(prompts, n=3, temperature=1.0, max_new_tokens=8, seed=0)
        again = sampler.generate(prompts, n=3, temperature=1.0, max_new_tokens=8, seed=0)
    assert full == hf_greedy(tmp_path / "base")
    assert served == hf_greedy(tmp_path / "adapter") and served != full
    assert sampled == again and all(len(group) == 3 for group in sampled)
