"""BayesianRouter's offline router: it learns a context rule, is deterministic, balances its BT pairs."""

import numpy as np
import pytest
import torch

from rmroute.routers import (
    OfflineOnlyRouter,
    OfflineRouter,
    arm_embeddings,
    balanced_row_weights,
    pair_vector,
    router_accuracy,
    router_bt_loss,
    train_offline_router,
)

FAST = dict(dim=16, epochs=25, lr=3e-3, batch_size=64)


def synthetic_pairs(n: int, seed: int, enc_dim: int = 8):
    """RM 0 is right when the prompt's feature 0 is positive, RM 1 otherwise."""
    rng = np.random.default_rng(seed)
    prompt = rng.normal(size=(n, enc_dim))
    chosen = prompt + 0.1 * rng.normal(size=(n, enc_dim))
    rejected = prompt + 0.1 * rng.normal(size=(n, enc_dim))
    correct = np.column_stack([prompt[:, 0] > 0, prompt[:, 0] <= 0]).astype(np.float32)
    return chosen.astype(np.float32), rejected.astype(np.float32), correct


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained():
    model, history = train_offline_router(*synthetic_pairs(600, seed=0), seed=0, **FAST)
    return model, history


def test_training_learns_the_context_rule(trained):
    model, history = trained
    assert router_accuracy(model, *synthetic_pairs(400, seed=1)) > 0.9
    assert [h["epoch"] for h in history] == list(range(1, FAST["epochs"] + 1))
    assert set(history[0]) == {"epoch", "train_loss", "val_accuracy"}
    assert max(h["val_accuracy"] for h in history) >= history[-1]["val_accuracy"]


def test_same_seed_same_weights_and_other_seed_differs(trained):
    model, _ = trained
    again, _ = train_offline_router(*synthetic_pairs(600, seed=0), seed=0, **FAST)
    other, _ = train_offline_router(*synthetic_pairs(600, seed=0), seed=1, **FAST)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    assert not torch.equal(model.proj.weight, other.proj.weight)


def test_save_load_round_trip_gives_identical_scores(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "router")
    loaded = OfflineRouter.load(tmp_path / "router")
    e, e2, _ = synthetic_pairs(50, seed=2)
    np.testing.assert_array_equal(pair_vector(loaded, e, e2), pair_vector(model, e, e2))
    np.testing.assert_array_equal(arm_embeddings(loaded), arm_embeddings(model))
    assert loaded.config == model.config and model.config["cls_head"]


def test_online_exports_are_unit_vectors_and_offline_only_router_uses_them(trained):
    model, _ = trained
    e, e2, _ = synthetic_pairs(100, seed=3)
    h, E = pair_vector(model, e, e2), arm_embeddings(model)
    assert h.shape == (100, 16) and E.shape == (2, 16) and h.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1, atol=1e-6)
    router = OfflineOnlyRouter(2, 16, seed=0, arm_embeddings=E)
    with torch.no_grad():
        expected = model(torch.as_tensor(e), torch.as_tensor(e2)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(router.select(h), expected)


def test_bt_loss_averages_pairs_per_row_and_skips_agreement():
    scores = torch.tensor([[1.0, 0.0, 0.5], [0.3, 0.2, 0.1], [0.0, 2.0, 0.0]])
    correct = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 1, 0]])
    softplus = torch.nn.functional.softplus
    row0 = (softplus(torch.tensor(-1.0)) + softplus(torch.tensor(-0.5))) / 2  # pairs (0,1), (2,1)
    row2 = (softplus(torch.tensor(-2.0)) + softplus(torch.tensor(-2.0))) / 2  # pairs (1,0), (1,2)
    torch.testing.assert_close(router_bt_loss(scores, correct), (row0 + row2) / 2)
    torch.testing.assert_close(router_bt_loss(scores, correct, torch.tensor([3.0, 5.0, 1.0])), (3 * row0 + row2) / 4)
    assert router_bt_loss(scores[1:2], correct[1:2]).item() == 0.0


def test_balanced_weights_hand_example():
    # 30 rows where RM 0 alone is right, 10 where RM 1 alone is right, 5 where both agree:
    # the class has 40 rows, each side gets 20: weights 20/30 and 20/10.
    correct = np.array([[1, 0]] * 30 + [[0, 1]] * 10 + [[1, 1]] * 5)
    weights = balanced_row_weights(correct)
    np.testing.assert_allclose(weights[:30], 2 / 3)
    np.testing.assert_allclose(weights[30:40], 2.0)
    np.testing.assert_array_equal(weights[40:], 0.0)
    # A pattern whose complement never occurs cannot be balanced and is left out.
    np.testing.assert_array_equal(balanced_row_weights(np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]])), [0, 1, 1])


def test_balanced_weights_make_every_rm_win_as_much_as_it_loses():
    rng = np.random.default_rng(0)
    # RM 0 is right far more often than RM 2, so unweighted pairs would favour it overall.
    correct = (rng.random((500, 3)) < np.array([0.8, 0.5, 0.3])).astype(float)
    weights = balanced_row_weights(correct)
    right = correct > 0.5
    n_right, n_wrong = right.sum(1, keepdims=True), (~right).sum(1, keepdims=True)
    won = (weights[:, None] * right / np.maximum(n_right, 1)).sum(0)
    lost = (weights[:, None] * ~right / np.maximum(n_wrong, 1)).sum(0)
    np.testing.assert_allclose(won, lost, atol=1e-9)
    assert won.min() > 0

    # Same statement through the loss: with all scores equal, no RM's overall offset is pushed.
    offsets = torch.zeros(3, requires_grad=True)
    scores = torch.zeros(500, 3) + offsets
    router_bt_loss(scores, torch.as_tensor(correct), torch.as_tensor(weights)).backward()
    torch.testing.assert_close(offsets.grad, torch.zeros(3), atol=1e-7, rtol=0)
    offsets.grad = None
    router_bt_loss(torch.zeros(500, 3) + offsets, torch.as_tensor(correct)).backward()
    assert offsets.grad[0] < -1e-3  # unbalanced, the often-right RM is pushed up


def test_training_without_head_or_balancing_runs():
    e, e2, c = synthetic_pairs(200, seed=4)
    model, history = train_offline_router(e, e2, c, seed=0, cls_weight=0.0, balance_pairs=False, dim=8, epochs=2)
    assert not model.config["cls_head"] and len(history) == 2
    with pytest.raises(ValueError, match="cls_head"):
        model.cls_logits(torch.zeros(1, 2))


def test_bad_offline_inputs_name_the_argument():
    e, e2, c = synthetic_pairs(40, seed=5)
    e_nan = e.copy()
    e_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="emb_chosen"):
        train_offline_router(e_nan, e2, c, epochs=1)
    with pytest.raises(ValueError, match="emb_rejected"):
        train_offline_router(e, e2[:, :4], c, epochs=1)
    with pytest.raises(ValueError, match="correct"):
        train_offline_router(e, e2, c[:10], epochs=1)
    with pytest.raises(ValueError, match="val_fraction"):
        train_offline_router(e, e2, c, epochs=1, val_fraction=0.0)
    with pytest.raises(ValueError, match="epochs.*0"):
        train_offline_router(e, e2, c, epochs=0)
    with pytest.raises(ValueError, match="unknown setting"):
        train_offline_router(e, e2, c, epoch=1)
    with pytest.raises(ValueError, match="arm_embeddings"):
        OfflineOnlyRouter(3, 4, arm_embeddings=np.zeros((2, 4)))
