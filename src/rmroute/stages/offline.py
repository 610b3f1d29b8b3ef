"""BayesianRouter's offline stage: the offline router and its in- and out-of-domain table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from rmroute import models
from rmroute.io import atomic_dir, write_table


HELD_OUT_SPLITS = ("test", "test_ood")  # the offline router's in- and out-of-domain evaluation


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
    a rename, `model.safetensors`, `config.json` and `encoder.json` (encoder, enc_dim, rm_ids, and
    validation_pair_ids: the offline pairs held out to pick the checkpoint).
    The history TSV has epoch, train_loss, val_accuracy and `selected` (1 on the kept epoch).
    """
    from dataclasses import fields

    from rmroute.behaviour import scored_pairs
    from rmroute.encoders import ENCODER_FILE, encode_pairs, load_encoder
    from rmroute.routers import (
        OfflineTrainConfig,
        train_offline_router,
        validation_split,
    )

    models.set_threads(threads)
    known = {f.name for f in fields(OfflineTrainConfig)} - {"seed"}
    if train_cfg.get("encoder", encoder_name) != encoder_name:
        raise ValueError(f"train_cfg['encoder'] is {train_cfg['encoder']!r} but encoder_name is {encoder_name!r}")
    settings = {key: value for key, value in train_cfg.items() if key != "encoder"}
    if unknown := set(settings) - known:
        raise ValueError(f"train_cfg has unknown key(s) {sorted(unknown)}; valid: {sorted(known)}")
    behaviour = pd.read_parquet(behaviour_path)
    # train_offline_router would drop the rows where all RMs agree; they are not even encoded.
    pairs, correct, rm_ids = scored_pairs(pairs_path, behaviour, "router_offline")
    encoder = load_encoder(encoder_name, device)
    emb_chosen, emb_rejected = encode_pairs(encoder, pairs)
    cfg = OfflineTrainConfig(seed=int(seed), **settings)
    model, history = train_offline_router(emb_chosen, emb_rejected, correct, cfg)

    with atomic_dir(out_dir) as tmp:
        model.save(tmp)
        # The offline rows it never trained on: the controlled simulation's validation stream.
        _, val_rows = validation_split(correct, cfg.val_fraction, cfg.seed)
        meta = {"encoder": encoder_name, "enc_dim": encoder.dim, "rm_ids": rm_ids,
                "validation_pair_ids": [pairs[i]["id"] for i in sorted(val_rows)]}
        (tmp / ENCODER_FILE).write_text(json.dumps(meta, indent=1))

    frame = pd.DataFrame(history)
    best = frame["val_accuracy"].to_numpy()
    # train_offline_router keeps the first epoch reaching the best validation accuracy.
    frame["selected"] = (np.arange(len(frame)) == int(np.argmax(best))).astype(int)
    write_table(frame, out_history_tsv)


def offline_router_table(
    offline_dir: str, pair_paths: dict[str, str], behaviour_path: str, *, device: str = "cpu", threads: int = 1
) -> pd.DataFrame:
    """Accuracy of the offline router's argmax pick on the held-out splits `test` (in domain) and
    `test_ood` (out of domain), whichever of them `pair_paths` names, beside every single RM,
    majority vote and the oracle on the same rows: pairs with a gold preference where the RMs
    disagree. Columns: split, n_pairs, router_accuracy, acc_<rm>..., acc_majority_vote, acc_oracle.
    """
    import sys

    from rmroute.behaviour import majority_vote, scored_pairs
    from rmroute.encoders import (
        check_rm_order,
        encode_pairs,
        load_encoder,
        load_offline,
    )
    from rmroute.routers import router_accuracy

    models.set_threads(threads)
    splits = [s for s in HELD_OUT_SPLITS if s in pair_paths]
    if not splits:
        raise ValueError(f"pair_paths must name at least one of {HELD_OUT_SPLITS}, got {sorted(pair_paths)}")
    model, meta = load_offline(offline_dir)
    encoder = load_encoder(meta["encoder"], device)
    behaviour = pd.read_parquet(behaviour_path)
    rows = []
    for split in splits:
        try:
            pairs, correct, rm_ids = scored_pairs(pair_paths[split], behaviour, split)
        except ValueError as err:  # a small split where the RMs never disagree: report, don't fail
            print(f"offline_router_table: {err}", file=sys.stderr)
            rows.append({"split": split, "n_pairs": 0})
            continue
        check_rm_order(meta, rm_ids, offline_dir)
        row = {"split": split, "n_pairs": len(pairs),
               "router_accuracy": router_accuracy(model, *encode_pairs(encoder, pairs), correct)}
        row.update({f"acc_{rm}": float(correct[:, k].mean()) for k, rm in enumerate(rm_ids)})
        row["acc_majority_vote"] = float(majority_vote(correct).mean())
        row["acc_oracle"] = float((correct > 0.5).any(axis=1).mean())
        rows.append(row)
    return pd.DataFrame(rows)
