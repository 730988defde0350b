"""Evaluation: the fast paths (2x2 max pooling without gradients, small forward batches, the
per-weights results the simulation's voters and round evaluation share) give exactly what the
plain computation gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from flock_pipeline import evaluation
from flock_pipeline.config import load_config
from flock_pipeline.evaluation import (
    Evaluation,
    GroupLosses,
    evaluate,
    evaluate_many,
    sample_losses,
)
from flock_pipeline.models import build_network
from flock_pipeline.models.layers import MaxPool2x2
from flock_pipeline.round import evaluate_round, held_out_losses, prepare_federation, voter_set
from flock_pipeline.simulation import run_simulation


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("shape", [(6, 4, 28, 28), (3, 2, 7, 9), (2, 5, 6), (1, 1, 2, 2)])
@pytest.mark.parametrize("special", [None, 0.0, -0.0, float("nan"), float("inf"), -1.0])
def test_max_pool_2x2_gives_max_pool2d_bits_with_ties_zeros_nan_and_odd_sizes(shape, special):
    # Prepare: post-ReLU activations with many ties, some with a special value sprinkled in
    torch.manual_seed(0)
    x = torch.randn(shape).round().relu()
    if special is not None:
        x.view(-1)[::5] = special
    pool = MaxPool2x2()

    # Execute / Assert: without gradients (the fast path where it applies)
    with torch.no_grad():
        assert torch.equal(_bits(pool(x)), _bits(F.max_pool2d(x, 2)))
    # and with them: the same outputs and gradients as nn.MaxPool2d
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = pool(a), nn.MaxPool2d(2)(b)
    grad = torch.randn(out_a.shape)
    out_a.backward(grad)
    out_b.backward(grad)
    assert torch.equal(_bits(out_a.detach()), _bits(out_b.detach()))
    assert a.grad is not None and b.grad is not None
    assert torch.equal(_bits(a.grad), _bits(b.grad))


def test_max_pool_2x2_has_no_state_so_the_cnn_keeps_its_weights_names():
    assert not list(MaxPool2x2().state_dict())
    keys = set(build_network("cnn", (1, 28, 28), 10).state_dict())
    assert keys == {
        "features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
        "features.4.weight", "features.4.bias", "features.5.weight", "features.5.bias",
        "head.1.weight", "head.1.bias",
    }  # fmt: skip


@pytest.fixture(scope="module")
def model_and_sets() -> tuple[nn.Module, dict[str, torch.Tensor], list[tuple]]:
    torch.manual_seed(1)
    net = build_network("cnn", (1, 12, 12), 10)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(0)
    sets = [
        (rng.random((n, 1, 12, 12), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64))
        for n in (300, 0, 37, 129)
    ]
    return net, weights, sets


def test_results_do_not_depend_on_the_forward_batch(model_and_sets, monkeypatch):
    # Prepare
    net, weights, sets = model_and_sets
    x, y = sets[0]

    def run() -> tuple:
        return (
            evaluate(net, weights, x, y, batch_size=256),
            sample_losses(net, weights, x, y).tobytes(),
            evaluate_many(net, weights, sets),
        )

    # Execute: the default forward batch, small ones (a sample left over: 300 = 23 * 13 + 1
    # in one set, 466 = 3 * 155 + 1 in all of them), and all at once
    default = run()
    others = []
    for size in (2, 13, 155, 4096):
        monkeypatch.setattr(evaluation, "FORWARD_BATCH", size)
        others.append(run())

    # Assert: the same results up to the last bits. A CPU may take other kernels for other
    # batch sizes (seen on one CI machine), so equality to the bit is one machine's property;
    # the empty set's loss and accuracy are NaN whatever the batch.
    def close(a: object, b: object) -> bool:
        if isinstance(a, (tuple, list)):
            return len(a) == len(b) and all(close(u, v) for u, v in zip(a, b, strict=True))  # type: ignore[arg-type]
        if isinstance(a, bytes):
            return np.allclose(np.frombuffer(a), np.frombuffer(b), rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]
        if isinstance(a, Evaluation):
            return a.num_samples == b.num_samples and close(  # type: ignore[attr-defined]
                (a.loss, a.accuracy),
                (b.loss, b.accuracy),  # type: ignore[attr-defined]
            )
        return bool(np.isclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True))  # type: ignore[arg-type]

    assert all(close(other, default) for other in others)
    assert np.isnan(default[2][1].loss) and default[2][1].num_samples == 0


class _Counting(nn.Module):
    """A network that counts the samples it is run on."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples += len(x)
        out: torch.Tensor = self.net(x)
        return out

    def load_state_dict(self, state, strict=True, assign=False):  # type: ignore[no-untyped-def]
        return self.net.load_state_dict(state, strict, assign)


def test_group_losses_run_each_set_once_per_weights_and_match_the_plain_functions(
    model_and_sets,
):
    # Prepare: the global model and a candidate; three named sets
    net, old, sets = model_and_sets
    new = {k: v + 0.01 for k, v in old.items()}
    named = {"a": sets[0], "empty": sets[1], "b": sets[2], "c": sets[3]}
    counting = _Counting(net)
    group = GroupLosses(counting, named)
    group.remember(old, new)

    # Execute: a voters' round: judgement on a and b, scores of candidates, then the round's
    # evaluation of the kept model on every set
    judged_old = group.per_sample(old, ["a", "b"])
    judged_new = group.per_sample(new, ["a", "b"])
    candidates = [{k: v * (1 + 0.001 * i) for k, v in old.items()} for i in range(3)]
    mean_a, mean_b = group.mean_loss("a", ["a", "b"]), group.mean_loss("b", ["a", "b"])
    scored = [(mean_a(c), mean_b(c)) for c in candidates]
    after_scoring = counting.samples
    kept = group.evaluations(new)

    # Assert: each (weights, set) ran once
    n_a, n_b, n_c = (len(named[k][1]) for k in "abc")
    assert after_scoring == (2 + len(candidates)) * (n_a + n_b)
    assert counting.samples == after_scoring + n_c  # a and b of the kept model were remembered
    assert group.per_sample(old, ["a"])["a"] is judged_old["a"]  # remembered, not rerun
    assert counting.samples == after_scoring + n_c
    # and the values are the plain functions' exactly
    for k in ("a", "b"):
        x, y = named[k]
        assert judged_old[k].tobytes() == sample_losses(net, old, x, y).tobytes()
        assert judged_new[k].tobytes() == sample_losses(net, new, x, y).tobytes()
    for c, (la, lb) in zip(candidates, scored, strict=True):
        assert la == float(sample_losses(net, c, *named["a"]).mean())
        assert lb == float(sample_losses(net, c, *named["b"]).mean())
    assert repr(list(kept.values())) == repr(evaluate_many(net, new, list(named.values())))
    assert np.isnan(kept["empty"].loss) and kept["empty"].num_samples == 0


def test_a_round_evaluation_with_the_voters_results_is_the_plain_one():
    # Prepare
    cfg = load_config(overrides={"data.dataset": "digits", "participants": 4, "model.name": "cnn"})
    fed = prepare_federation(cfg)
    torch.manual_seed(2)
    weights = {
        k: v.clone()
        for k, v in build_network("cnn", fed.input_shape, fed.num_classes).state_dict().items()
    }
    held_out = held_out_losses(cfg, fed)
    held_out.remember(weights)
    held_out.per_sample(weights, [voter_set(fed, 1), voter_set(fed, 3)])

    # Execute
    shared, plain = evaluate_round(cfg, fed, weights, held_out), evaluate_round(cfg, fed, weights)

    # Assert
    assert shared == plain


def test_the_simulation_reports_the_evaluation_of_the_model_it_keeps(tmp_path):
    # Prepare: two rounds that the voters reject (an unscreened noise attacker spoils every
    # aggregate), so the second round reports the model the first kept
    cfg = load_config(
        overrides={
            "data_dir": str(tmp_path / "flock"),
            "data.dataset": "digits",
            "participants": 4,
            "rounds": 2,
            "model.name": "mlp",
            "privacy.enabled": False,
            "chain.voters_per_round": 4,
            "aggregation.screen.enabled": False,
            "attacks": {"p3": {"kind": "gaussian_noise", "sigma": 1.0}},
        }
    )

    # Execute
    result = run_simulation(cfg)

    # Assert: the situation is the one constructed
    assert [r["outcome"] for r in result.summary["rounds"]] == ["rejected", "rejected"]
    # and the last round's figures are those of a fresh evaluation of the final model
    fed = prepare_federation(cfg)
    fresh = evaluate_round(cfg, fed, result.final_weights)
    last = result.summary["rounds"][-1]
    assert last["global"] == {
        "loss": fresh.global_eval.loss,
        "accuracy": fresh.global_eval.accuracy,
    }
    for p in last["participants"]:
        hold = fresh.holdout[p["id"]]
        assert p["holdout"] == {"loss": hold.loss, "accuracy": hold.accuracy}
