"""BayesianRouter's offline stage: a multi-task router trained on every RM's verdicts on offline pairs.

It maps a preference pair to a unit vector h and each RM to a unit embedding E[n]; ⟨h, E[n]⟩ says
how likely RM n is to rank the pair right. h is the online Thompson router's context and E its
prior mean. Inputs are sentence-encoder vectors of prompt+chosen (e) and prompt+rejected (e').
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rmroute.routers.offline_only import OfflineOnlyRouter  # noqa: F401  (the router over its embeddings)


class OfflineRouter(nn.Module):
    """`h = L2norm(LayerNorm(ReLU(W [(e+e')/2 ; |e−e'|])))`, scores `s_n = ⟨h, E[n]⟩`.

    With `cls_head`, per-RM classification logits `a·s_n + c_n` (a shared learned scale, c_n a
    learned per-RM bias) are trained with BCE on whether RM n was right.
    """

    def __init__(self, enc_dim: int, dim: int, n_arms: int, cls_head: bool):
        super().__init__()
        for field, value in (("enc_dim", enc_dim), ("dim", dim), ("n_arms", n_arms)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        enc_dim, dim, n_arms = int(enc_dim), int(dim), int(n_arms)
        self.config = {"enc_dim": enc_dim, "dim": dim, "n_arms": n_arms, "cls_head": bool(cls_head)}
        self.proj = nn.Linear(2 * enc_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.arm_embedding = nn.Parameter(F.normalize(torch.randn(n_arms, dim), dim=-1))
        if cls_head:
            self.cls_scale = nn.Parameter(torch.ones(()))
            self.cls_bias = nn.Parameter(torch.zeros(n_arms))

    def pair_embedding(self, e: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        features = torch.cat([(e + e2) / 2, (e - e2).abs()], dim=-1)
        return F.normalize(self.norm(F.relu(self.proj(features))), dim=-1)

    def unit_arm_embeddings(self) -> torch.Tensor:
        # Normalised on every use, so the optimiser moves E freely and scores stay cosines.
        return F.normalize(self.arm_embedding, dim=-1)

    def forward(self, e: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Router scores (B, n_arms)."""
        return self.pair_embedding(e, e2) @ self.unit_arm_embeddings().T

    def cls_logits(self, scores: torch.Tensor) -> torch.Tensor:
        if not self.config["cls_head"]:
            raise ValueError("cls_logits needs a model built with cls_head=True")
        return self.cls_scale * scores + self.cls_bias

    def save(self, directory: str | Path) -> None:
        """Write `model.safetensors` and `config.json` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {key: value.detach().contiguous() for key, value in self.state_dict().items()}
        save_file(tensors, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps(self.config, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> OfflineRouter:
        directory = Path(directory)
        model = cls(**json.loads((directory / "config.json").read_text()))
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        return model


# ---------------------------------------------------------------- loss


def _right(correct: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    # Labels may be 0/1 ints, floats or bools; "right" is anything above one half.
    return correct > 0.5


def balanced_row_weights(correct: np.ndarray) -> np.ndarray:
    """Row weights that make every RM win exactly as much BT weight as it loses.

    Within a row every (right RM, wrong RM) pair is averaged, so RM n gets winner weight 1/|right|
    when right and loser weight 1/|wrong| when wrong. A row with the complementary pattern (every
    verdict flipped) gives each RM exactly the opposite, so rows are grouped into classes
    {pattern, complement} and each side of a class gets half the class's rows' total weight:
    a row on a side with m rows in a class of M weighs M/(2m). Then each RM's winner weight
    equals its loser weight. A class seen on one side only cannot be balanced and weighs 0, as do
    rows where all RMs agree. The router thus learns where each RM is right relative to the
    others, not which RM is right most often overall.
    """
    right = _right(np.asarray(correct))
    weights = np.zeros(len(right))
    usable = np.flatnonzero(right.any(axis=1) & ~right.all(axis=1))
    if usable.size == 0:
        return weights
    patterns = right[usable]
    on_first_side = patterns[:, 0]
    canonical = np.where(on_first_side[:, None], patterns, ~patterns)
    _, klass = np.unique(canonical, axis=0, return_inverse=True)
    for c in np.unique(klass):
        sides = on_first_side[klass == c]
        n_first, n_second = int(sides.sum()), int((~sides).sum())
        if n_first and n_second:
            total = n_first + n_second
            weights[usable[klass == c]] = np.where(sides, total / (2 * n_first), total / (2 * n_second))
    return weights


def router_bt_loss(
    scores: torch.Tensor, correct: torch.Tensor, row_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Bradley–Terry loss over (right RM w, wrong RM l) pairs: `softplus(−(s_w − s_l))`.

    Each row's loss is the mean over all its (w, l) pairs, rows are then averaged with
    `row_weights` (from `balanced_row_weights`; None = equal). Rows where all RMs agree have no
    pair and contribute nothing.
    """
    right = _right(correct)
    pair_mask = (right[:, :, None] & ~right[:, None, :]).to(scores.dtype)
    pair_count = pair_mask.sum(dim=(1, 2))
    margins = scores[:, :, None] - scores[:, None, :]
    row_loss = (F.softplus(-margins) * pair_mask).sum(dim=(1, 2)) / pair_count.clamp(min=1)
    weights = (pair_count > 0).to(scores.dtype)
    if row_weights is not None:
        weights = weights * row_weights.to(scores.dtype)
    if weights.sum() == 0:
        return scores.sum() * 0.0
    return (weights * row_loss).sum() / weights.sum()


# ---------------------------------------------------------------- training


@dataclass
class OfflineTrainConfig:
    """Training settings of the offline router. METHODS.md gives no optimiser values; these are ours."""

    dim: int = 128  # size of h and of each RM embedding
    epochs: int = 30  # passes over the training rows
    batch_size: int = 64  # pairs per optimiser step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay
    cls_weight: float = 1.0  # λ on the BCE head; 0 drops the head (the paper's no-head ablation)
    val_fraction: float = 0.1  # share of the offline rows held out to pick the checkpoint
    balance_pairs: bool = True  # BT row weights from balanced_row_weights (the paper's balancing)
    seed: int = 0  # seeds the split, the initial weights and the batch order


def _as_tensor(name: str, values: Any, shape: tuple[int | None, ...]) -> torch.Tensor:
    tensor = values.float() if torch.is_tensor(values) else torch.as_tensor(np.asarray(values, dtype=np.float32))
    if tensor.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, tensor.shape)):
        wanted = tuple("N" if s is None else s for s in shape)
        raise ValueError(f"{name} must have shape {wanted}, got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite, found {tensor[~torch.isfinite(tensor)][0].item()!r}")
    return tensor


def _check_pairs(emb_chosen: Any, emb_rejected: Any, correct: Any = None, n_arms: int | None = None):
    e = _as_tensor("emb_chosen", emb_chosen, (None, None))
    e2 = _as_tensor("emb_rejected", emb_rejected, tuple(e.shape))
    if correct is None:
        return e, e2
    return e, e2, _as_tensor("correct", correct, (len(e), n_arms))


def router_accuracy(model: OfflineRouter, emb_chosen: Any, emb_rejected: Any, correct: Any) -> float:
    """Mean of `correct[row, argmax_n s_n]` over the rows where the RMs disagree."""
    e, e2, c = _check_pairs(emb_chosen, emb_rejected, correct, model.config["n_arms"])
    right = _right(c)
    disagree = right.any(dim=1) & ~right.all(dim=1)
    if not disagree.any():
        raise ValueError("correct has no row where the RMs disagree; router accuracy is undefined")
    with torch.no_grad():
        picks = model(e[disagree], e2[disagree]).argmax(dim=1)
    return c[disagree].gather(1, picks[:, None]).double().mean().item()


def validation_split(correct: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) among the rows where the RMs disagree, drawn by `seed`: the
    split `train_offline_router` uses, so a caller can tell which offline rows it never trained on."""
    right = _right(np.asarray(correct))
    usable = np.flatnonzero(right.any(axis=1) & ~right.all(axis=1))
    n_val = max(1, round(val_fraction * len(usable)))
    if len(usable) - n_val < 1:
        raise ValueError(f"only {len(usable)} rows where the RMs disagree; need at least 2 to train and validate")
    order = np.random.default_rng(seed).permutation(usable)
    return order[n_val:], order[:n_val]


def train_offline_router(
    emb_chosen: Any, emb_rejected: Any, correct: Any, config: OfflineTrainConfig | None = None, **overrides: Any
) -> tuple[OfflineRouter, list[dict]]:
    """Train on the rows where the RMs disagree; keep the epoch with the best validation accuracy.

    `correct` is (N, n_arms): did RM n rank row i's gold-chosen response higher. The validation
    rows are drawn, by seed, from this offline data only. Settings come from `config` with any
    keyword `overrides` (the `OfflineTrainConfig` field names). Returns the model at its best
    epoch and one history dict per epoch: epoch, train_loss, val_accuracy.
    """
    known = {f.name for f in fields(OfflineTrainConfig)}
    if unknown := set(overrides) - known:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; valid: {sorted(known)}")
    cfg = replace(config or OfflineTrainConfig(), **overrides)
    if not 0 < cfg.val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {cfg.val_fraction!r}")
    for field in ("epochs", "batch_size"):
        if not isinstance(getattr(cfg, field), int) or getattr(cfg, field) < 1:
            raise ValueError(f"{field} must be a positive integer, got {getattr(cfg, field)!r}")
    if not cfg.lr > 0 or not cfg.cls_weight >= 0:
        raise ValueError(f"need lr > 0 and cls_weight >= 0, got lr={cfg.lr!r}, cls_weight={cfg.cls_weight!r}")
    e, e2 = _check_pairs(emb_chosen, emb_rejected)
    c = _as_tensor("correct", correct, (len(e), None))
    right = _right(c)
    train, val = (torch.as_tensor(rows) for rows in validation_split(c.numpy(), cfg.val_fraction, cfg.seed))
    weights = torch.ones(len(train))
    if cfg.balance_pairs:
        balanced = torch.as_tensor(balanced_row_weights(c[train].numpy()), dtype=torch.float32)
        if balanced.sum() > 0:
            weights = balanced
        else:
            # Every disagreement pattern is one-sided (one RM always the right one): nothing can be
            # balanced, so the rows keep equal weights rather than the router learning nothing.
            warnings.warn("offline router: no verdict pattern occurs with its complement; training unbalanced")

    # Seeded inside a forked RNG so the caller's global torch state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = OfflineRouter(e.shape[1], cfg.dim, c.shape[1], cls_head=cfg.cls_weight > 0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    best_accuracy, best_state, history = -1.0, None, []
    for epoch in range(1, cfg.epochs + 1):
        total, seen = 0.0, 0
        for batch in torch.randperm(len(train), generator=shuffle).split(cfg.batch_size):
            rows = train[batch]
            scores = model(e[rows], e2[rows])
            loss = router_bt_loss(scores, c[rows], weights[batch])
            if cfg.cls_weight > 0:
                loss = loss + cfg.cls_weight * F.binary_cross_entropy_with_logits(
                    model.cls_logits(scores), right[rows].float()
                )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, seen = total + loss.item() * len(rows), seen + len(rows)
        accuracy = router_accuracy(model, e[val], e2[val], c[val])
        history.append({"epoch": epoch, "train_loss": total / seen, "val_accuracy": accuracy})
        if accuracy > best_accuracy:
            best_accuracy, best_state = accuracy, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, history


# ---------------------------------------------------------------- what the online stage uses


def pair_vector(model: OfflineRouter, e: Any, e2: Any) -> np.ndarray:
    """h for each pair, (B, dim) float64: the Thompson router's context."""
    e, e2 = _check_pairs(e, e2)
    with torch.no_grad():
        return model.pair_embedding(e, e2).double().numpy()


def arm_embeddings(model: OfflineRouter) -> np.ndarray:
    """Unit-norm RM embeddings E, (n_arms, dim) float64: the Thompson router's prior means."""
    with torch.no_grad():
        return model.unit_arm_embeddings().double().numpy()
