"""LoRA on the tiny Llama policy: a few routed DPO steps (RoutedDPOTrainer, TRL's DPOTrainer)
through a peft adapter, the adapter and the merged checkpoints saved with save_pretrained and
reloaded, both agreeing with the model in memory, and the DPO reference equal to the base model."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from trl.trainer.utils import use_adapter

from rmroute import lora, models
from rmroute.dpo import RoutedDPOTrainer, routed_dpo_config
from rmroute.methods import Method, Recipe, build_router
from rmroute.online import RoutedLabeler
from rmroute.routers import make_normaliser
from tiny_artefacts import tiny_splits, tiny_tokenizer

BLOCK = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "save": "adapter"}
METHOD = Method(name="rm", router="single", arm=0, batch_prompts=4, pairs_per_prompt=1,
                recipe=Recipe(loss="dpo_nll", beta=0.1, nll_weight=1.0, lr=0.02, epochs=2))


class PrefersGold:
    """A stub RM: the gold answer beats anything else."""

    rm_id = "gold"

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def score(self, prompts, responses):
        return [1.0 if self.answers[p] == r else 0.0 for p, r in zip(prompts, responses)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("lora")
    splits = tiny_splits()
    tok = tiny_tokenizer(splits)
    torch.manual_seed(0)
    models.save_atomic(models.build_policy(tok, 32, 1, 2, 64, 128), tok, root / "base")
    pairs = [{"prompt": r["prompt"], "chosen": r["answer"], "rejected": " zz zz"} for r in splits["sft"][:12]]
    return root, tok, pairs


def logits(model, tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        return model(**enc).logits.float()


@pytest.fixture(scope="module")
def trained(tiny):
    """The base policy with a fresh adapter after a few DPO steps (reference: the policy it entered with)."""
    root, tok, pairs = tiny
    policy = lora.wrap_policy(root / "base", BLOCK, device="cpu")
    assert 0 < lora.trainable_fraction(policy) < 0.2
    reference = lora.dpo_reference(root / "base", root / "base", device="cpu")
    assert reference is None  # TRL keeps a frozen copy of the entering adapter instead of a second model
    models.set_seed(0)
    groups = [{"id": str(i), "prompt": p["prompt"], "responses": [p["chosen"], p["rejected"]]} for i, p in enumerate(pairs)]
    labeler = RoutedLabeler([PrefersGold({p["prompt"]: p["chosen"] for p in pairs})], METHOD,
                            build_router(METHOD, 1, 1, 0), make_normaliser("quantile"))
    trainer = RoutedDPOTrainer(model=policy, ref_model=reference, processing_class=tok, labeler=labeler,
                               batches=[groups[i : i + 4] for i in range(0, len(groups), 4)], epochs=METHOD.recipe.epochs,
                               args=routed_dpo_config(str(root / "trainer"), METHOD.recipe, seed=0, max_length=128))
    trainer.train()
    # Per-pair losses came from the adapter's own forward passes, and average to TRL's loss.
    assert len(trainer.step_log) == 6 and all(e["pairs"] == 4 and e["loss_check"] <= 1e-6 for e in trainer.step_log)
    assert labeler.updates == 3
    return policy.eval()


def test_dpo_trains_the_adapter_and_leaves_the_base_weights(tiny, trained):
    root, tok, pairs = tiny
    base = models.load_policy(root / "base", device="cpu")
    lora_b = [p for n, p in trained.named_parameters() if "lora_B.default" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # zero-initialised, so it trained
    frozen = {n.replace("base_model.model.", "").replace("base_layer.", ""): p
              for n, p in trained.named_parameters() if "lora_" not in n}
    for name, weight in base.named_parameters():
        assert torch.equal(frozen[name], weight), name
    texts = [p["prompt"] + p["chosen"] for p in pairs[:4]]
    assert not torch.allclose(logits(trained, tok, texts), logits(base, tok, texts), atol=1e-4)


def test_the_reference_is_the_base_model(tiny, trained):
    """TRL's frozen "ref" adapter is a copy of the fresh adapter: exactly the base model, as is
    the policy with every adapter disabled."""
    root, tok, pairs = tiny
    assert lora.REFERENCE_ADAPTER in trained.peft_config
    base = models.load_policy(root / "base", device="cpu")
    texts = [p["prompt"] + p["chosen"] for p in pairs[:4]]
    expected = logits(base, tok, texts)
    for adapter in (lora.REFERENCE_ADAPTER, None):  # TRL's frozen copy, and every adapter disabled
        with use_adapter(trained, adapter):
            assert torch.allclose(logits(trained, tok, texts), expected, atol=1e-6)
    assert trained.active_adapter == "default"  # the trained adapter is active again


def test_adapter_and_merged_checkpoints_reload_to_the_same_model(tiny, trained, tmp_path):
    root, tok, pairs = tiny
    texts = [p["prompt"] + p["chosen"] for p in pairs[:6]]
    policy = copy.deepcopy(trained)
    expected = logits(policy, tok, texts)

    lora.save_policy(copy.deepcopy(policy), tok, tmp_path / "adapter", "adapter")
    saved = tmp_path / "adapter"
    assert lora.is_adapter(saved) and (saved / "adapter_model.safetensors").exists()
    assert not (saved / "model.safetensors").exists() and not (saved / lora.REFERENCE_ADAPTER).exists()
    assert json.loads((saved / "adapter_config.json").read_text())["r"] == BLOCK["r"]
    assert lora.adapter_base(saved) == str(root / "base")
    assert torch.allclose(logits(models.load_policy(saved, device="cpu"), tok, texts), expected, atol=1e-5)
    again = lora.wrap_policy(saved, BLOCK, device="cpu")  # the next iteration trains the same adapter on
    assert any(p.requires_grad for n, p in again.named_parameters() if "lora_" in n)
    assert torch.allclose(logits(again.eval(), tok, texts), expected, atol=1e-5)

    merged_dir = tmp_path / "merged"
    merged = lora.save_policy(copy.deepcopy(policy), tok, merged_dir, "merged")
    assert not lora.is_adapter(merged_dir) and (merged_dir / "model.safetensors").exists()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(logits(models.load_policy(merged_dir, device="cpu"), tok, texts), expected, atol=1e-5)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_changed_block_is_refused_on_a_saved_adapter(tiny, trained, tmp_path):
    _, tok, _ = tiny
    lora.save_policy(copy.deepcopy(trained), tok, tmp_path / "adapter", "adapter")
    with pytest.raises(ValueError, match="lora.r"):
        lora.wrap_policy(tmp_path / "adapter", {**BLOCK, "r": 8}, device="cpu")
    with pytest.raises(ValueError, match="lora.save"):
        lora.settings({"save": "both"})


def test_a_reference_other_than_the_entering_policy_is_loaded(tiny, tmp_path):
    root, tok, _ = tiny
    models.save_atomic(models.load_policy(root / "base", device="cpu"), tok, tmp_path / "other")
    reference = lora.dpo_reference(root / "base", tmp_path / "other", device="cpu")
    assert reference is not None and not reference.training
    text = ["Q: 1 + 1?\nA: 2"]
    assert torch.equal(logits(reference, tok, text), logits(models.load_policy(root / "base", device="cpu"), tok, text))


def test_models_never_imports_lora():
    """No import cycle: lora builds on models, and models reads adapter checkpoints on its own."""
    import ast
    import inspect

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(models))):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    assert "rmroute.lora" not in imported
    assert lora.is_adapter is models.is_adapter and lora.adapter_base is models.adapter_base
    assert lora.ADAPTER_FILE == models.ADAPTER_FILE == "adapter_config.json"
