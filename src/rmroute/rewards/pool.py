"""The RM pool: preference pairs from policy samples, RM training, and routed scoring.

Two kinds of RM, chosen by the sheet's `loss` column:
* classifier RMs (`bt`, `bsr`): a sequence classifier with one output, trained with TRL's
  RewardTrainer (Bradley-Terry) or its BSR subclass; the reward is the classifier's logit;
* generative RMs (`lm`): a causal LM fine-tuned with TRL's SFTTrainer on the chosen responses of
  its preference pairs; the reward is the mean token log-prob of the response (+EOS) given the
  prompt, the reference-free likelihood reward of SimPO and of log-prob LLM judges.
Testbed RMs are trained here on different domain mixes so their strengths genuinely differ;
paper-scale RMs are any checkpoint of either kind. Both are loaded and called through
`RewardModel`, which counts every call so ensemble costs are reported honestly.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import dataclass, field

from datasets import Dataset

from rmroute import models
from rmroute.settings import CLASSIFIER_LOSSES, GENERATIVE_LOSSES  # the sheet's loss column
from rmroute.testbed import corrupt_answer, score_record


def parse_mix(text: str) -> dict[str, float]:
    """'arith:0.5,facts_mc:0.5' -> {'arith': 0.5, 'facts_mc': 0.5}."""
    mix = {}
    for part in str(text).split(","):
        name, _, weight = part.partition(":")
        mix[name.strip()] = float(weight) if weight else 1.0
    return mix


def preference_pairs(records: list[dict], samples: list[list[str]], seed: int) -> list[dict]:
    """One gold-labelled pair per prompt from the policy's samples.

    chosen = a best-scoring sample, rejected = a worst-scoring one. Where all samples score the
    same, the gold answer (all wrong) or a corrupted gold answer (all right) fills the gap, so
    every prompt yields a pair and domains the policy already solves still teach the RM.
    """
    rng = random.Random(seed)
    pairs = []
    for rec, group in zip(records, samples):
        scored = [(score_record(rec, s), s) for s in group]
        best = max(scored, key=lambda t: t[0])
        worst = min(scored, key=lambda t: t[0])
        if best[0] == worst[0]:
            if best[0] >= 1.0:
                worst = (None, corrupt_answer(rec["domain"], rec["answer"], rng))
            else:
                best = (None, rec["answer"])
        chosen, rejected = best[1], worst[1]
        pairs.append({
            "id": rec["id"], "domain": rec["domain"], "prompt": rec["prompt"], "chosen": chosen, "rejected": rejected,
            "chosen_gold": score_record(rec, chosen), "rejected_gold": score_record(rec, rejected),
        })
    return pairs


def rm_training_pairs(pairs: list[dict], mix: dict[str, float], n_pairs: int, label_noise: float, seed: int) -> list[dict]:
    """n_pairs drawn with the RM's domain mix; a share `label_noise` of them has chosen/rejected swapped."""
    rng = random.Random(seed)
    by_domain: dict[str, list[dict]] = {}
    for p in pairs:
        by_domain.setdefault(p["domain"], []).append(p)
    unknown = [d for d in mix if d not in by_domain]
    if unknown:
        raise ValueError(f"domain_mix names domains {unknown} with no training pairs; known: {sorted(by_domain)}")
    total = sum(mix.values())
    out = []
    for domain, weight in sorted(mix.items()):
        k = round(n_pairs * weight / total)
        pool = by_domain[domain]
        chosen = rng.sample(pool, k) if k <= len(pool) else [rng.choice(pool) for _ in range(k)]
        for p in chosen:
            if rng.random() < label_noise:
                p = {**p, "chosen": p["rejected"], "rejected": p["chosen"]}
            out.append({"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]})
    rng.shuffle(out)
    return out


def rm_kind(loss: str) -> str:
    """'classifier' or 'generative' from the sheet's loss column."""
    if loss in CLASSIFIER_LOSSES:
        return "classifier"
    if loss in GENERATIVE_LOSSES:
        return "generative"
    raise ValueError(f"rm_pool loss {loss!r}: expected one of {CLASSIFIER_LOSSES + GENERATIVE_LOSSES}")


def train_generative_rm(init_source: str, tokenizer, pairs: list[dict], *, steps: int, batch_size: int, lr: float,
                        seed: int, max_length: int = 256, use_cpu: bool = True):
    """A causal-LM RM initialised from `init_source` and fine-tuned with TRL's SFTTrainer on the
    chosen side of its pairs (loss on the response only). Label noise reaches it as it reaches a
    classifier: a flipped pair teaches the rejected response. A prompt + chosen response longer
    than `max_length` tokens (the sheet's max_length) is an error."""
    from rmroute.sft import train_sft

    model = models.load_policy(init_source, device="cpu" if use_cpu else "auto").train()
    records = [{"id": str(i), "domain": "rm", "prompt": p["prompt"], "answer": p["chosen"]} for i, p in enumerate(pairs)]
    train_sft(model, tokenizer, records, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=max(1, steps // 20),
              seed=seed, mix={"rm": 1.0}, use_cpu=use_cpu, max_length=max_length)
    return model.eval()


def train_reward_model(init_source: str, tokenizer, pairs: list[dict], *, loss: str, steps: int, batch_size: int,
                       lr: float, seed: int, bsr_coef: float = 1e-3, bsr_batch_scale: bool = True, new_layers: int = 0,
                       freeze_init: bool = False, max_length: int = 256, use_cpu: bool = True):
    """A sequence-classifier RM initialised from `init_source` (the SFT policy, or an RM fine-tuned
    on the RM's domains such as a generative specialist), trained with TRL's RewardTrainer (BT) or
    its BSR subclass.

    `new_layers` identity-initialised decoder layers go on top of the init's (see
    `models.load_reward_model`); with `freeze_init` the init's embeddings and layers stay as they
    are and only the new layers, the final norm and the score head train. Why: a classifier reads
    the last token only, and in a shallow backbone the answer the backbone would give is complete
    only at the top of the position that predicts it, where no later position can compare it with
    the response; layers above the backbone can. A pair whose chosen or rejected text is longer
    than `max_length` tokens (the sheet's max_length, what scoring keeps) is left out, as TRL's
    RewardTrainer does; an error when none is left."""
    from trl import RewardConfig, RewardTrainer

    from rmroute.rewards.losses import BSRRewardTrainer

    if loss not in CLASSIFIER_LOSSES:
        raise ValueError(f"rm_pool loss {loss!r}: expected one of {CLASSIFIER_LOSSES}")
    model = models.load_reward_model(init_source, device="cpu" if use_cpu else "auto", new_layers=new_layers)
    model.config.pad_token_id = tokenizer.pad_token_id
    if freeze_init:
        backbone = getattr(model, model.base_model_prefix)
        backbone.get_input_embeddings().requires_grad_(False)
        for layer in backbone.layers[: len(backbone.layers) - new_layers]:
            layer.requires_grad_(False)
    data = Dataset.from_list(pairs)
    epochs = max(1, math.ceil(steps * batch_size / max(1, len(pairs))))
    with tempfile.TemporaryDirectory() as tmp:
        args = RewardConfig(
            output_dir=tmp, max_steps=steps, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
            learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20),
            logging_steps=max(1, steps // 10), max_length=max_length, **models.trainer_settings(use_cpu, seed),
        )
        if loss == "bsr":
            trainer = BSRRewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                       bsr_coef=bsr_coef, bsr_batch_scale=bsr_batch_scale)
        else:
            trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        kept = len(trainer.train_dataset)
        if not kept:
            raise ValueError(f"every one of the {len(pairs)} RM training pairs is longer than max_length={max_length} "
                             "tokens; raise the RM sheet's max_length")
        if kept < len(pairs):
            print(f"train_reward_model: {len(pairs) - kept} of {len(pairs)} pairs longer than max_length={max_length} "
                  "tokens left out", flush=True)
        trainer.train()
    return model.eval()


@dataclass
class RewardModel:
    """One RM of the pool, loaded lazily, with a call counter and timer for cost accounting."""

    rm_id: str
    source: str
    dtype: str = "float32"
    batch_size: int = 64
    max_length: int = 256
    trust_remote_code: bool = False
    chat_template: str = "none"  # "tokenizer": wrap (prompt, response) in the RM tokenizer's chat template
    loss: str = "bt"  # the sheet's loss column: bt/bsr = classifier RM, lm = generative RM
    device: str = "auto"
    calls: int = 0
    seconds: float = 0.0
    _model: object = field(default=None, repr=False)
    _tokenizer: object = field(default=None, repr=False)

    @property
    def generative(self) -> bool:
        """True for a generative RM (`loss: lm`): a causal LM scored by likelihood."""
        return rm_kind(self.loss) == "generative"

    def load(self):
        if self._model is None:
            if self.generative:
                self._model = models.load_policy(self.source, self.dtype, self.device, self.trust_remote_code)
            else:
                self._model = models.load_reward_model(self.source, self.dtype, self.device, self.trust_remote_code)
            self._tokenizer = models.load_tokenizer(self.source)
        return self

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Rewards for (prompt, response) rows; responses end with EOS as in RM training."""
        self.load()
        start = time.perf_counter()
        if self.generative:
            out = self._likelihood_scores(prompts, responses)
            texts = responses
        else:
            if self.chat_template == "tokenizer":
                texts = [self._tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                                             tokenize=False) for p, r in zip(prompts, responses)]
                prompts = [""] * len(texts)
            else:
                eos = self._tokenizer.eos_token or ""
                texts = [r if r.endswith(eos) else r + eos for r in responses]
            out = models.rm_scores(self._model, self._tokenizer, prompts, texts, batch_size=self.batch_size, max_length=self.max_length)
        self.seconds += time.perf_counter() - start
        self.calls += len(prompts)
        bad = [i for i, s in enumerate(out) if not math.isfinite(s)]
        if bad:
            raise ValueError(f"RM {self.rm_id!r} returned non-finite scores for rows {bad[:5]} (text {texts[bad[0]][:60]!r})")
        return out

    def _likelihood_scores(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Generative RM reward: mean log-prob per response token (+EOS), so length does not decide."""
        eos = self._tokenizer.eos_token or ""
        responses = [r[: -len(eos)] if eos and r.endswith(eos) else r for r in responses]
        if self.chat_template == "tokenizer":
            prompts = [self._tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                           add_generation_prompt=True) for p in prompts]
        _, mean = models.completion_logprobs(self._model, self._tokenizer, prompts, responses, batch_size=self.batch_size,
                                             max_length=self.max_length)
        return [float(x) for x in mean]
