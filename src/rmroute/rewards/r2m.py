"""R2M (Real-Time Aligned Reward Model, arXiv 2601.22664): a frozen classifier RM that reads the
policy's hidden states.

The base RM's last-token state H_last queries a cross-attention over the policy's last-layer
hidden states h of the same prompt + response, q = H_last W_q, k = h W_k, v = h W_v,
Ĥ = softmax(q kᵀ/√d) v W_o; the head φ scores H = (1 − ω)Ĥ + ωH_last with
ω(t) = max(½cos(πt/T) + ½, Ω), t the R2M optimiser steps taken so far and T those of the whole
run. Only the attention block and φ train (the base RM is frozen), on the RM's own best vs worst
response per group, with 0.7·BT + 0.3·GRE (the entropy of the softmax of the group's standardised
rewards). As in the paper, scoring uses the same ω(t) as training (`omega_schedule: paper`): an
R2M that has not trained yet scores as its base RM (ω(0) = 1), and the feedback enters as it
trains; `omega_schedule: floor` scores at ω(T) = Ω from the start.

No public code exists; this follows the paper's description (METHODS.md §4). The controls are
`feedback="noise"` (h replaced by Gaussian noise of the same per-dimension mean and scale),
`feedback="untrained"` (the paper's "w/o train": attention and φ keep their initial weights,
`untrained_freezes: all`; `attention` lets φ train) and `feedback="off"` (the plain base RM: its
own head on H_last, and `update` trains nothing).

In an iterative-DPO loop (the paper uses RLOO), per iteration k of M:
1. rollout: the policy π_{k-1} samples the groups; `policy_hidden_states(π_{k-1}, ...)` gives
   each prompt + response's feedback (one batched forward pass; `save_policy_hidden` keeps it);
2. scoring: `R2M.load(base_dir, state_{k-1})` (or `R2M.from_base(base_dir, policy_dim,
   total_steps=T)` at k = 1, T from `r2m_steps_per_iteration`) scores each training batch's
   groups with `score(prompts, responses, policy_hidden)` at ω(t); those scores label the DPO
   pairs and are R2M's own scores for step 3;
3. `update(prompts, responses, own_scores, policy_hidden)`, with the hidden states of the policy
   just updated: as in the paper after every policy optimiser step, on that step's groups, so the
   next batch is scored with the new weights and ω(t) (`update_every: step`, in
   `rmroute.dpo.RoutedDPOTrainer`), or once on all the iteration's groups after the whole DPO
   update (`update_every: iteration`); then `save(state_k)`, which carries t into iteration k + 1.
`rmroute.stages.r2m_probe` runs steps 2 and 3 for one iteration beside the controls.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rmroute.rewards.sources import R2M_SOURCES, parse_r2m_source  # noqa: F401  (re-exported)
from rmroute.seeding import derive_seed

FEEDBACKS = ("policy", "noise", "untrained", "off")
OMEGA_SCHEDULES = ("paper", "floor")
UPDATE_EVERY = ("step", "iteration")
UNTRAINED_FREEZES = ("all", "attention")


@dataclass
class R2MConfig:
    """R2M settings; the defaults are the paper's where it gives them, scaled to the tiny models."""

    attn_dim: int = 64  # width d of q, k and v (2048 at 8B scale; scaled down with the hidden sizes)
    omega_floor: float = 0.6  # Ω, the floor of ω(t) (the paper uses 0.6-0.7)
    bt_weight: float = 0.7  # weight of the BT term on the RM's own best vs worst pairs
    gre_weight: float = 0.3  # weight of the group reward entropy
    lr: float = 1e-3  # AdamW learning rate of the attention block and φ
    epochs: int = 4  # passes over one update's groups
    batch_groups: int = 32  # groups per optimiser step
    omega_schedule: str = "paper"  # paper: score at the training schedule's ω(t); floor: score at Ω
    update_every: str = "step"  # step: an update after every policy optimiser step (the paper); iteration: one per iteration
    untrained_freezes: str = "all"  # the untrained control: all = attention and φ (the paper's w/o train); attention = φ trains
    feedback: str = "policy"  # policy = R2M; noise / untrained / off = the controls (off = the plain base RM)
    seed: int = 0  # attention initialisation, batch order and the noise control's draws

    def __post_init__(self):
        for name, allowed in (("feedback", FEEDBACKS), ("omega_schedule", OMEGA_SCHEDULES), ("update_every", UPDATE_EVERY),
                              ("untrained_freezes", UNTRAINED_FREEZES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"r2m.{name}: {getattr(self, name)!r} is not one of {allowed}")
        if not 0.0 <= self.omega_floor <= 1.0:
            raise ValueError(f"r2m.omega_floor: {self.omega_floor} is outside [0, 1]")
        for name in ("attn_dim", "epochs", "batch_groups"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"r2m.{name}: {getattr(self, name)} must be at least 1")

    def steps_per_update(self, n_groups: int) -> int:
        """Optimiser steps one update on `n_groups` groups takes (to size the schedule's T)."""
        return self.epochs * math.ceil(n_groups / self.batch_groups)


def omega(t: float, total: float, floor: float) -> float:
    """ω(t) = max(½cos(πt/T) + ½, Ω): 1 at t = 0, decaying to the floor Ω, held there until T."""
    if total <= 0:
        raise ValueError(f"omega: total steps T must be positive, got {total}")
    t = min(max(float(t), 0.0), float(total))
    return max(0.5 * math.cos(math.pi * t / total) + 0.5, floor)


def group_reward_entropy(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over groups (rows) of the entropy of softmax(standardised rewards of the group).

    The standard deviation carries `eps` inside the square root, so a group whose rewards are
    all equal has z = 0, a uniform softmax (the entropy's maximum) and a zero, finite gradient."""
    centred = rewards - rewards.mean(dim=-1, keepdim=True)
    z = centred / torch.sqrt(centred.pow(2).mean(dim=-1, keepdim=True) + eps)
    logp = F.log_softmax(z, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1).mean()


def best_vs_worst_bt(rewards: torch.Tensor, own_scores: torch.Tensor) -> torch.Tensor:
    """BT loss −log σ(r_best − r_worst), best and worst by the RM's own scores of each group.
    Groups whose own scores are all equal give no pair; 0 when no group has one."""
    keep = own_scores.max(dim=-1).values > own_scores.min(dim=-1).values
    if not bool(keep.any()):
        return rewards.sum() * 0.0
    rows = torch.nonzero(keep).squeeze(-1)
    best = own_scores[rows].argmax(dim=-1)
    worst = own_scores[rows].argmin(dim=-1)
    margin = rewards[rows, best] - rewards[rows, worst]
    return -F.logsigmoid(margin).mean()


class PolicyFeedbackAttention(nn.Module):
    """One-query cross-attention: the RM's last-token state attends over the policy's token states."""

    def __init__(self, rm_dim: int, policy_dim: int, attn_dim: int):
        super().__init__()
        self.attn_dim = attn_dim
        self.q = nn.Linear(rm_dim, attn_dim, bias=False)
        self.k = nn.Linear(policy_dim, attn_dim, bias=False)
        self.v = nn.Linear(policy_dim, attn_dim, bias=False)
        self.o = nn.Linear(attn_dim, rm_dim, bias=False)

    def forward(self, h_last: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h_last [B, rm_dim], h [B, L, policy_dim], mask [B, L] (True = a real token) -> Ĥ [B, rm_dim]."""
        q = self.q(h_last).unsqueeze(1)
        logits = (q @ self.k(h).transpose(1, 2)).squeeze(1) / math.sqrt(self.attn_dim)
        weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
        return self.o((weights.unsqueeze(1) @ self.v(h)).squeeze(1))


# ---------------------------------------------------------------- hidden states


def _left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for j, r in enumerate(rows):
        ids[j, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[j, width - len(r):] = 1
    return ids, mask


@torch.no_grad()
def policy_hidden_states(policy, tokenizer, prompts: list[str], responses: list[str], *, batch_size: int = 64,
                         max_length: int = 256, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """The policy's last-layer hidden state of every token of prompt + response (+EOS), one
    [tokens, hidden] tensor per row, from one batched forward pass per `batch_size` rows.

    Prompt and response are tokenised separately and concatenated, as in SFT and DPO, and the
    sequence is left-padded with positions counted from its first real token, as the policy saw
    it while sampling. Rows longer than `max_length` keep their last `max_length` tokens."""
    device = next(policy.parameters()).device
    eos = tokenizer.eos_token or ""
    out: list[torch.Tensor] = []
    for i in range(0, len(prompts), batch_size):
        rows = []
        for p, r in zip(prompts[i:i + batch_size], responses[i:i + batch_size]):
            r = r[:-len(eos)] if eos and r.endswith(eos) else r
            ids = tokenizer(p, add_special_tokens=False)["input_ids"] + tokenizer(r + eos, add_special_tokens=False)["input_ids"]
            rows.append(ids[-max_length:])
        ids, mask = _left_padded(rows, tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                        output_hidden_states=True).hidden_states[-1]
        for j, r in enumerate(rows):
            out.append(hidden[j, hidden.shape[1] - len(r):].to(dtype).cpu())
    return out


def save_policy_hidden(states: list[torch.Tensor], path: str | os.PathLike) -> None:
    """Hidden states of a rollout as one safetensors file (rows concatenated + their offsets),
    written to a temporary name and renamed."""
    from safetensors.torch import save_file

    from rmroute.io import atomic_file

    lengths = torch.tensor([s.shape[0] for s in states], dtype=torch.long)
    with atomic_file(path) as tmp:
        save_file({"states": torch.cat(states).contiguous(), "lengths": lengths}, str(tmp))


def load_policy_hidden(path: str | os.PathLike) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return list(torch.split(tensors["states"], tensors["lengths"].tolist()))


def _pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(s.shape[0] for s in states)
    h = torch.zeros(len(states), width, states[0].shape[1], dtype=torch.float32)
    mask = torch.zeros(len(states), width, dtype=torch.bool)
    for j, s in enumerate(states):
        h[j, : s.shape[0]] = s.float()
        mask[j, : s.shape[0]] = True
    return h, mask


# ---------------------------------------------------------------- the model


class R2M(nn.Module):
    """A frozen base classifier RM + the trainable policy-feedback attention and score head φ.

    `score` rates (prompt, response) rows given the policy's hidden states of those rows; `update`
    trains on one update's groups (one policy step's, or one iteration's); `save` / `load` keep the
    trained state as one safetensors file (attention, φ, the step counter t and the schedule length
    T). AdamW's moments last as long as the loaded model (one iteration of the loop)."""

    STATE_KEYS = ("attn_dim", "omega_floor", "feedback", "policy_dim", "rm_dim")

    def __init__(self, base, tokenizer, policy_dim: int, config: R2MConfig | None = None, *, total_steps: int = 1,
                 max_length: int = 256, batch_size: int = 64):
        super().__init__()
        self.config = config or R2MConfig()
        head = getattr(base, "score", None)
        if not isinstance(head, nn.Linear) or head.out_features != 1:
            raise ValueError(f"R2M needs a sequence-classifier base RM with a one-output linear `score` head reading the "
                             f"last token (Llama, Qwen, Mistral, ...); {type(base).__name__} has none")
        self.base = base.eval()
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.rm_dim, self.policy_dim = head.in_features, int(policy_dim)
        self.max_length, self.batch_size = max_length, batch_size
        with torch.random.fork_rng(devices=[]):  # seed the attention's initial weights without moving the global stream
            torch.manual_seed(self.config.seed)
            self.attention = PolicyFeedbackAttention(self.rm_dim, self.policy_dim, self.config.attn_dim)
        self.head = copy.deepcopy(head).float().requires_grad_(True)  # φ starts as the base RM's head
        if self.config.feedback == "untrained":
            self.attention.requires_grad_(False)
            if self.config.untrained_freezes == "all":
                self.head.requires_grad_(False)
        self.step, self.total_steps = 0, int(total_steps)
        self._optimiser: torch.optim.Optimizer | None = None
        self._noise = torch.Generator().manual_seed(derive_seed(self.config.seed, scheme="r2m_noise"))

    # ---- construction and files

    @classmethod
    def from_base(cls, base_dir: str | os.PathLike, policy_dim: int, config: R2MConfig | None = None, *,
                  total_steps: int = 1, device: str = "cpu", **kwargs) -> R2M:
        """R2M around the classifier RM saved at `base_dir` (a `save_pretrained` directory or hub id)."""
        from rmroute import models

        base = models.load_reward_model(base_dir, device=device)
        tokenizer = models.load_tokenizer(base_dir)
        base.config.pad_token_id = tokenizer.pad_token_id
        return cls(base, tokenizer, policy_dim, config, total_steps=total_steps, **kwargs)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = {f"attention.{k}": v for k, v in self.attention.state_dict().items()}
        state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return state

    def save(self, path: str | os.PathLike) -> None:
        """The trained part and the schedule position as one safetensors file, renamed into place."""
        from safetensors.torch import save_file

        from rmroute.io import atomic_file

        meta = {"step": self.step, "total_steps": self.total_steps, "config": asdict(self.config),
                "policy_dim": self.policy_dim, "rm_dim": self.rm_dim}
        # One metadata entry: safetensors writes its metadata map in an order that changes from
        # process to process, so several entries would make equal states differ byte for byte.
        with atomic_file(path) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.trainable_state().items()}, str(tmp),
                      metadata={"r2m": json.dumps(meta, sort_keys=True)})

    @classmethod
    def load(cls, base_dir: str | os.PathLike, state_path: str | os.PathLike, *, device: str = "cpu", **kwargs) -> R2M:
        """R2M around `base_dir` with the trained state of `state_path` (from `save`)."""
        from safetensors import safe_open

        with safe_open(str(state_path), framework="pt") as fh:
            meta = fh.metadata()
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        # One JSON entry; a state written before that kept each field as its own string entry.
        meta = json.loads(meta["r2m"]) if "r2m" in meta else {**meta, "config": json.loads(meta["config"])}
        model = cls.from_base(base_dir, int(meta["policy_dim"]), R2MConfig(**meta["config"]),
                              total_steps=int(meta["total_steps"]), device=device, **kwargs)
        if model.rm_dim != int(meta["rm_dim"]):
            raise ValueError(f"R2M state {str(state_path)!r} was trained on an RM of width {meta['rm_dim']}, "
                             f"but {str(base_dir)!r} has width {model.rm_dim}")
        model.attention.load_state_dict({k[len("attention."):]: v for k, v in tensors.items() if k.startswith("attention.")})
        model.head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
        model.step = int(meta["step"])
        return model

    # ---- the forward pass

    @torch.no_grad()
    def rm_states(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """H_last of the frozen base RM for each row: its last token's final hidden state, which
        its score head reads (prompt + response + EOS, as in RM training and scoring)."""
        device = next(self.base.parameters()).device
        eos = self.tokenizer.eos_token or ""
        texts = [p + (r if r.endswith(eos) else r + eos) for p, r in zip(prompts, responses)]
        backbone = getattr(self.base, self.base.base_model_prefix)
        rows = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length, add_special_tokens=False).to(device)
            hidden = backbone(**enc).last_hidden_state
            last = enc["attention_mask"].shape[1] - 1 - enc["attention_mask"].flip(-1).argmax(-1)  # rightmost real token
            rows.append(hidden[torch.arange(hidden.shape[0], device=device), last].float().cpu())
        return torch.cat(rows)

    def _feedback(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The policy states, or (noise control) Gaussian noise with their per-dimension mean and std."""
        if self.config.feedback != "noise":
            return h
        real = h[mask]
        mean, std = real.mean(0), real.std(0)
        return torch.randn(h.shape, generator=self._noise) * std + mean

    def rewards_from_states(self, h_last: torch.Tensor, h: torch.Tensor, mask: torch.Tensor, w: float) -> torch.Tensor:
        """φ((1 − ω)Ĥ + ωH_last) for precomputed base states and (padded) policy states."""
        blended = (1.0 - w) * self.attention(h_last, self._feedback(h, mask), mask) + w * h_last
        return self.head(blended).squeeze(-1)

    @torch.no_grad()
    def base_scores(self, h_last: torch.Tensor) -> np.ndarray:
        """The plain base RM's rewards: its own (frozen) head on H_last."""
        head = self.base.score
        return head(h_last.to(head.weight.device, head.weight.dtype)).squeeze(-1).float().cpu().numpy()

    @property
    def score_omega(self) -> float:
        """The ω scoring uses: `paper`, ω(t) at the steps trained so far, as training uses it (1
        before any update: the base head on H_last); `floor`, ω(T) = Ω."""
        t = self.step if self.config.omega_schedule == "paper" else self.total_steps
        return omega(t, self.total_steps, self.config.omega_floor)

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], policy_hidden: list[torch.Tensor]) -> np.ndarray:
        """R2M rewards of (prompt, response) rows, given each row's policy hidden states, at `score_omega`."""
        if not (len(prompts) == len(responses) == len(policy_hidden)):
            raise ValueError(f"score: {len(prompts)} prompts, {len(responses)} responses and {len(policy_hidden)} "
                             "policy hidden-state rows must match")
        return self.score_states(self.rm_states(prompts, responses), policy_hidden)

    @torch.no_grad()
    def score_states(self, h_last: torch.Tensor, policy_hidden: list[torch.Tensor]) -> np.ndarray:
        """`score` from precomputed base states H_last (see `rm_states`)."""
        if self.config.feedback == "off":
            return self.base_scores(h_last)
        out = []
        for i in range(0, len(policy_hidden), self.batch_size):
            h, mask = _pad_states(policy_hidden[i:i + self.batch_size])
            out.append(self.rewards_from_states(h_last[i:i + self.batch_size], h, mask, self.score_omega))
        return torch.cat(out).numpy()

    # ---- training

    def steps_per_update(self, n_groups: int) -> int:
        """Optimiser steps one `update` on `n_groups` groups takes (to size the schedule's T)."""
        return self.config.steps_per_update(n_groups)

    def update(self, prompts: list[str], responses: list[list[str]], own_scores: list[list[float]],
               policy_hidden: list[list[torch.Tensor]]) -> list[dict]:
        """Train the attention block and φ on one update's groups.

        `prompts[g]` has the responses `responses[g]`, the scores this R2M gave them when it
        labelled them (`own_scores[g]`: they choose the best vs worst pair) and the policy's
        hidden states of each prompt + response (`policy_hidden[g]`). Each optimiser step uses
        ω(t) and advances t; the base RM stays frozen. A control with nothing trainable (untrained,
        `untrained_freezes: all`) still takes its steps, without a gradient, so that its t and ω(t)
        follow R2M's and its loss is logged. Returns one log row per step (none for the `off`
        control, which has nothing to train)."""
        if self.config.feedback == "off":
            return []
        n = {len(r) for r in responses}
        if len(n) != 1 or min(n) < 2:
            raise ValueError(f"update: every group needs the same number (≥ 2) of responses, got sizes {sorted(n)}")
        if not (len(prompts) == len(responses) == len(own_scores) == len(policy_hidden)):
            raise ValueError("update: prompts, responses, own_scores and policy_hidden must have one entry per group")
        size = n.pop()
        flat_prompts = [p for p, group in zip(prompts, responses) for _ in group]
        h_last = self.rm_states(flat_prompts, [r for group in responses for r in group]).view(len(prompts), size, -1)
        own = torch.tensor(own_scores, dtype=torch.float32)
        params = [p for p in (*self.attention.parameters(), *self.head.parameters()) if p.requires_grad]
        if params and self._optimiser is None:
            self._optimiser = torch.optim.AdamW(params, lr=self.config.lr)
        order = torch.Generator().manual_seed(derive_seed(self.config.seed, self.step, scheme="r2m_update"))
        log = []
        self.train()
        for _ in range(self.config.epochs):
            perm = torch.randperm(len(prompts), generator=order).tolist()
            for i in range(0, len(perm), self.config.batch_groups):
                batch = perm[i:i + self.config.batch_groups]
                h, mask = _pad_states([s for g in batch for s in policy_hidden[g]])
                w = omega(self.step, self.total_steps, self.config.omega_floor)
                with torch.set_grad_enabled(bool(params)):
                    rewards = self.rewards_from_states(h_last[batch].reshape(-1, self.rm_dim), h, mask, w).view(len(batch), size)
                    bt = best_vs_worst_bt(rewards, own[batch])
                    gre = group_reward_entropy(rewards)
                    loss = self.config.bt_weight * bt + self.config.gre_weight * gre
                if params:
                    self._optimiser.zero_grad()
                    loss.backward()
                    self._optimiser.step()
                log.append({"step": self.step, "omega": w, "loss": loss.item(), "bt": bt.item(), "gre": gre.item()})
                self.step += 1
        self.eval()
        return log


# ---------------------------------------------------------------- R2M as a member of the routed pool

R2M_SETTING_KEYS = ("attn_dim", "omega_floor", "bt_weight", "gre_weight", "lr", "epochs", "batch_groups",
                    "omega_schedule", "update_every", "untrained_freezes")  # of the `r2m:` block


def r2m_steps_per_iteration(settings: dict, batch_sizes: list[int]) -> int:
    """R2M optimiser steps in one iteration whose training batches hold `batch_sizes` groups: an
    update on each batch's groups (`update_every: step`) or one on all of them (`iteration`). The
    schedule's T is this times the number of iterations (a routed R2M that scores fewer groups
    reaches its floor Ω later)."""
    config = R2MConfig(**{k: v for k, v in settings.items() if k in R2M_SETTING_KEYS})
    if config.update_every == "step":
        return sum(config.steps_per_update(n) for n in batch_sizes)
    return config.steps_per_update(sum(batch_sizes))


class R2MRewardModel:
    """R2M as one RM of the pool inside the training loop (sheet row `source: r2m:<base>`).

    Per iteration: `begin_iteration(policy, tokenizer, groups)` takes the hidden states of the
    policy that sampled the iteration's rollouts (the policy entering the iteration; one batched
    forward pass over every prompt + response); `score` then rates rows like any `RewardModel`,
    remembering its own scores. An update trains the attention block and head on the groups this
    RM scored whole (its own best vs worst), with the hidden states of the policy as just updated:
    `after_step(policy, tokenizer, groups, policy_step)`, called by the trainer after each policy
    optimiser step with that step's groups (`update_every: step`), or `end_iteration(...)` after
    the whole DPO update with all the iteration's groups (`update_every: iteration`); each is a
    no-op under the other setting. `log` holds one row per R2M optimiser step, with the policy
    step the update followed and its number of groups; `save` writes the state the next
    iteration loads."""

    def __init__(self, rm_id: str, base_dir: str, feedback: str, settings: dict, *, total_steps: int,
                 state_path: str | None = None, seed: int = 0, device: str = "cpu", max_length: int = 256,
                 batch_size: int = 64):
        self.rm_id, self.base_dir, self.device = rm_id, base_dir, device
        self.feedback, self.settings, self.total_steps, self.state_path = feedback, dict(settings), total_steps, state_path
        self.seed, self.max_length, self.batch_size = seed, max_length, batch_size
        self.calls, self.seconds = 0, 0.0
        self.log: list[dict] = []
        self._model: R2M | None = None
        self._hidden: dict[tuple[str, str], torch.Tensor] = {}
        self._own: dict[tuple[str, str], float] = {}

    @property
    def model(self) -> R2M:
        if self._model is None:
            raise RuntimeError(f"R2M {self.rm_id!r}: call begin_iteration before scoring")
        return self._model

    def begin_iteration(self, policy, tokenizer, groups: list[dict]) -> None:
        if self.state_path:
            self._model = R2M.load(self.base_dir, self.state_path, device=self.device, max_length=self.max_length,
                                   batch_size=self.batch_size)
        else:
            config = R2MConfig(**{**self.settings, "feedback": self.feedback, "seed": self.seed})
            self._model = R2M.from_base(self.base_dir, policy.config.hidden_size, config, total_steps=self.total_steps,
                                        device=self.device, max_length=self.max_length, batch_size=self.batch_size)
        self._hidden = self._policy_states(policy, tokenizer, groups)
        self._own = {}

    def observe(self, policy, tokenizer, groups: list[dict]) -> None:
        """Online trainers (rmroute.rl): keep the hidden states of `policy`, the policy that just
        sampled `groups`, for scoring them (begin_iteration takes a DPO iteration's rollouts at once)."""
        self._hidden.update(self._policy_states(policy, tokenizer, groups))

    def _policy_states(self, policy, tokenizer, groups):
        rows = [(g["prompt"], r) for g in groups for r in g["responses"]]
        if not rows:
            return {}
        training = policy.training
        policy.eval()  # no dropout in the feedback
        states = policy_hidden_states(policy, tokenizer, [p for p, _ in rows], [r for _, r in rows],
                                      max_length=self.max_length)
        policy.train(training)
        return dict(zip(rows, states))

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import time

        model = self.model
        start = time.perf_counter()
        try:
            hidden = [self._hidden[(p, r)] for p, r in zip(prompts, responses)]
        except KeyError:
            raise ValueError(f"R2M {self.rm_id!r} scores only the iteration's rollouts (it needs their policy hidden "
                             "states); a row was not among them") from None
        out = model.score(prompts, responses, hidden).tolist()
        self._own.update({(p, r): s for p, r, s in zip(prompts, responses, out)})
        self.seconds += time.perf_counter() - start
        self.calls += len(prompts)
        return out

    def after_step(self, policy, tokenizer, groups: list[dict], policy_step: int) -> int:
        """`update_every: step`: train on the policy step's groups; returns how many it trained on."""
        return self._train(policy, tokenizer, groups, policy_step) if self.model.config.update_every == "step" else 0

    def end_iteration(self, policy, tokenizer, groups: list[dict], policy_step: int) -> int:
        """`update_every: iteration`: train on the iteration's groups after its last policy step
        `policy_step`; returns how many it trained on."""
        return self._train(policy, tokenizer, groups, policy_step) if self.model.config.update_every == "iteration" else 0

    def _train(self, policy, tokenizer, groups: list[dict], policy_step: int) -> int:
        """Train on the groups of `groups` this RM scored whole, with `policy`'s hidden states."""
        whole = [g for g in groups if all((g["prompt"], r) in self._own for r in g["responses"])]
        if not whole or self.feedback == "off":
            return 0
        hidden = self._policy_states(policy, tokenizer, whole)
        rows = self.model.update(
            [g["prompt"] for g in whole], [g["responses"] for g in whole],
            [[self._own[(g["prompt"], r)] for r in g["responses"]] for g in whole],
            [[hidden[(g["prompt"], r)] for r in g["responses"]] for g in whole])
        self.log += [{"policy_step": policy_step, "groups": len(whole), **row} for row in rows]
        return len(whole)

    def save(self, path) -> None:
        self.model.save(path)
