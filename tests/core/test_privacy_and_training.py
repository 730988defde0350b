"""Local training: the loss goes down, DP accounting equals Opacus, budgets persist and hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from flock_pipeline.config import PrivacyConfig, TrainingConfig
from flock_pipeline.data import load_dataset
from flock_pipeline.errors import PrivacyBudgetExceeded
from flock_pipeline.models import build_network
from flock_pipeline.privacy import LedgerStore, PrivacyLedger
from flock_pipeline.training import local, plan_spend, train_local


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds.x[:600], ds.y[:600], ds.input_shape


def _fresh(shape, seed=0):
    torch.manual_seed(seed)
    net = build_network("cnn", shape, 10)
    return net, {k: v.clone() for k, v in net.state_dict().items()}


def test_local_training_without_dp_lowers_the_loss(digits):
    x, y, shape = digits
    net, w0 = _fresh(shape)
    update = train_local(
        "p0",
        net,
        w0,
        x,
        y,
        TrainingConfig(local_epochs=3, lr=0.05),
        PrivacyConfig(enabled=False),
        seed=1,
    )
    assert update.metrics["train_loss_last"] < 0.7 * update.metrics["train_loss_first"]
    assert update.epsilon is None and update.num_samples == 600


def test_local_training_with_dp_lowers_the_loss_and_reports_epsilon(digits):
    x, y, shape = digits
    net, w0 = _fresh(shape)
    ledger = PrivacyLedger("p0", delta=1e-5, budget=None)
    update = train_local(
        "p0",
        net,
        w0,
        x,
        y,
        TrainingConfig(local_epochs=3),
        PrivacyConfig(noise_multiplier=0.8),
        ledger,
        seed=1,
    )
    assert update.metrics["train_loss_last"] < update.metrics["train_loss_first"]
    assert update.epsilon is not None and update.epsilon > 0


def test_epsilon_equals_opacus_accountant_for_the_same_history(digits):
    # Prepare
    x, y, shape = digits
    training, privacy = (
        TrainingConfig(local_epochs=2, batch_size=50),
        PrivacyConfig(noise_multiplier=1.1, delta=1e-5),
    )
    ledger = PrivacyLedger("p0", delta=1e-5, budget=None)
    net, w = _fresh(shape)
    # Execute: two rounds, the second from the first's weights
    u1 = train_local("p0", net, w, x, y, training, privacy, ledger, seed=1)
    u2 = train_local("p0", net, u1.weights, x, y, training, privacy, ledger, seed=2)
    # Assert: an accountant stepped by hand through both rounds gives the same epsilon
    accountant = RDPAccountant()
    for _ in range(2):
        for _ in range(2 * 12):  # epochs × ceil(600 / 50) optimizer steps
            accountant.step(noise_multiplier=1.1, sample_rate=1 / 12)
    assert u2.epsilon == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-12)
    assert u1.epsilon is not None and u2.epsilon > u1.epsilon
    # and the ledger recorded exactly the optimizer steps Lightning took
    assert u1.metrics["steps"] == 24 and ledger.history[0].steps == 24


def test_target_epsilon_spends_about_that_much_per_round(digits):
    x, y, shape = digits
    net, w = _fresh(shape)
    ledger = PrivacyLedger("p0", delta=1e-5, budget=None)
    privacy = PrivacyConfig(target_epsilon=2.0, noise_multiplier=None)
    update = train_local("p0", net, w, x, y, TrainingConfig(local_epochs=1), privacy, ledger)
    assert update.epsilon == pytest.approx(2.0, abs=0.05)


def test_round_past_the_budget_is_refused_before_training(digits, tmp_path):
    # Prepare: a budget that fits one round but not two, persisted between the rounds
    x, y, shape = digits
    training, privacy = TrainingConfig(local_epochs=1), PrivacyConfig(noise_multiplier=1.0)
    one_round = PrivacyLedger.epsilon_of([plan_spend(600, training, privacy)], 1e-5)
    store = LedgerStore(tmp_path)
    ledger = store.load("p0", 1e-5, budget=one_round * 1.2)
    net, w = _fresh(shape)
    train_local("p0", net, w, x, y, training, privacy, ledger, seed=1)
    store.save(ledger)
    # Execute: a new process would load the ledger from disk
    reloaded = store.load("p0", 1e-5, budget=one_round * 1.2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(PrivacyBudgetExceeded, match=r"p0.*past its budget"):
        train_local("p0", net, w, x, y, training, privacy, reloaded, seed=2)
    # Assert: nothing trained, nothing recorded
    assert len(reloaded.history) == 1
    assert reloaded.epsilon == pytest.approx(one_round)
    assert all(torch.equal(net.state_dict()[k], before[k]) for k in before)


def test_ledger_at_another_delta_is_refused(tmp_path):
    store = LedgerStore(tmp_path)
    store.save(PrivacyLedger("p0", delta=1e-5))
    from flock_pipeline.errors import DataError

    with pytest.raises(DataError, match="delta"):
        store.load("p0", 1e-6, None)


def _train_twice(digits, privacy, epochs=1):
    """Two trainings of the same config and seed from the same start; their updates, ledgers."""
    x, y, shape = digits
    out = []
    for _ in range(2):
        net, w = _fresh(shape)
        ledger = PrivacyLedger("p0", delta=1e-5) if privacy.enabled else None
        u = train_local(
            "p0", net, w, x, y, TrainingConfig(local_epochs=epochs), privacy, ledger, seed=5
        )
        out.append((u, ledger))
    return out


def test_same_seed_gives_different_weights_with_dp(digits):
    # The noise and the Poisson draw are secret: nobody who knows the config and the seed can
    # regenerate them, so two runs of the same config never give the same update.
    privacy = PrivacyConfig(noise_multiplier=0.8)
    (a, ledger_a), (b, ledger_b) = _train_twice(digits, privacy, epochs=3)
    assert a.hash != b.hash
    assert any(not torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    # ... while everything that is not random is the same: shapes, budget spent, progress
    assert {k: v.shape for k, v in a.weights.items()} == {k: v.shape for k, v in b.weights.items()}
    assert all(bool(torch.isfinite(v).all()) for u in (a, b) for v in u.weights.values())
    assert a.epsilon == b.epsilon and ledger_a.history == ledger_b.history
    for u in (a, b):
        assert u.metrics["train_loss_last"] < u.metrics["train_loss_first"]


def test_same_seed_gives_identical_weights_without_dp(digits):
    (a, _), (b, _) = _train_twice(digits, PrivacyConfig(enabled=False))
    assert a.hash == b.hash


def test_every_random_draw_of_dp_training_comes_from_the_secret_generator(digits, monkeypatch):
    # With the secret generator pinned, two DP runs agree bit for bit: the noise and the
    # sampling come from it alone, not from torch's global generator or the task seed.
    calls = []

    def pinned():
        calls.append(1)
        return torch.Generator().manual_seed(1234)

    monkeypatch.setattr(local, "secret_generator", pinned)
    (a, _), (b, _) = _train_twice(digits, PrivacyConfig())
    assert a.hash == b.hash and len(calls) == 2
    _train_twice(digits, PrivacyConfig(enabled=False))
    assert len(calls) == 2  # without DP nothing secret is drawn


def test_dp_training_runs_opacus_in_secure_mode():
    engine = local._secure_engine()
    assert engine.secure_mode is True
    assert isinstance(engine.secure_rng, torch.Generator)
    # a fresh seed from the OS each time, never a fixed one
    assert engine.secure_rng.initial_seed() != local._secure_engine().secure_rng.initial_seed()


def test_fedprox_keeps_weights_closer_to_the_global_model(digits):
    x, y, shape = digits
    dist = {}
    for mu in (0.0, 1.0):
        net, w = _fresh(shape)
        u = train_local(
            "p0",
            net,
            w,
            x,
            y,
            TrainingConfig(local_epochs=2, proximal_mu=mu),
            PrivacyConfig(enabled=False),
            seed=3,
        )
        dist[mu] = sum(float((u.weights[k] - w[k]).norm() ** 2) for k in w)
    assert dist[1.0] < dist[0.0]
    assert np.isfinite(dist[1.0])
