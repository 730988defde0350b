"""Attacks: each one's effect at small scale, its detection, and clear refusals of bad specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from flock_pipeline.attacks import (
    ATTACK_KINDS,
    VOTE_RESOLUTION,
    AttackSpec,
    check_attacks,
    is_free_rider,
    near_duplicates,
    poison_labels,
    skips_training,
    tamper_score,
    tamper_update,
)
from flock_pipeline.errors import ConfigError, DataError
from flock_pipeline.serialization import Weights, canonical_bytes
from flock_pipeline.update import Update

GLOBAL: Weights = {
    "w": torch.tensor([[1.0, -2.0], [0.5, 0.0]]),
    "b": torch.tensor([0.25, -0.75]),
}


def _update(pid: str, delta: float | list[float], n: int = 10) -> Update:
    """An update whose delta from GLOBAL is ``delta`` (one value per coordinate or shared)."""
    flat = torch.cat([t.reshape(-1) for t in GLOBAL.values()])
    d = torch.tensor(delta).expand_as(flat) if isinstance(delta, float) else torch.tensor(delta)
    out, i = {}, 0
    for name, t in GLOBAL.items():
        out[name] = t + d[i : i + t.numel()].reshape(t.shape)
        i += t.numel()
    return Update(pid, out, n, metrics={"train_loss_last": 0.5})


def _delta(weights: Weights) -> dict[str, torch.Tensor]:
    return {k: weights[k] - GLOBAL[k] for k in GLOBAL}


HONEST = _update("p0", [0.5, -0.25, 0.125, 1.0, -0.5, 0.75], n=37)


# ---------------------------------------------------------------- spec


def test_spec_defaults_and_every_kind_validates():
    spec = AttackSpec(kind="boosted")
    assert (spec.scale, spec.sigma, spec.flip_to, spec.copy_from) == (10.0, 1.0, "reverse", None)
    assert {AttackSpec(kind=k).kind for k in ATTACK_KINDS} == set(ATTACK_KINDS)


def test_unknown_kind_is_a_validation_error_naming_it():
    with pytest.raises(ValidationError) as exc:
        AttackSpec(kind="backdoor")  # type: ignore[arg-type]
    assert "backdoor" in str(exc.value) and "label_flip" in str(exc.value)


@pytest.mark.parametrize(
    "values",
    [
        {"kind": "boosted", "scale": 0},
        {"kind": "gaussian_noise", "sigma": -1.0},
        {"kind": "label_flip", "flip_to": "random"},
        {"kind": "copier", "copy_form": "p1"},
        {"kind": "inflated_samples", "factor": 0.5},
    ],
)
def test_bad_parameters_and_unknown_keys_are_refused(values):
    with pytest.raises(ValidationError):
        AttackSpec.model_validate(values)


def test_check_attacks_names_unknown_participants_and_copy_targets():
    ids = ["p0", "p1", "p2"]
    check_attacks({"p1": AttackSpec(kind="copier", copy_from="p0")}, ids)
    check_attacks({"p2": AttackSpec(kind="copier")}, ids)
    with pytest.raises(ConfigError, match=r"attacks\.p7: no participant 'p7'"):
        check_attacks({"p7": AttackSpec(kind="sign_flip")}, ids)
    with pytest.raises(ConfigError, match=r"attacks\.p1\.copy_from: no participant 'p9'"):
        check_attacks({"p1": AttackSpec(kind="copier", copy_from="p9")}, ids)
    with pytest.raises(ConfigError, match="cannot copy itself"):
        check_attacks({"p1": AttackSpec(kind="copier", copy_from="p1")}, ids)
    with pytest.raises(ConfigError, match="p2 is itself a copier"):
        check_attacks(
            {"p1": AttackSpec(kind="copier", copy_from="p2"), "p2": AttackSpec(kind="copier")},
            ids,
        )


def test_skips_training_only_for_attacks_that_discard_the_honest_weights():
    assert {k for k in ATTACK_KINDS if skips_training(AttackSpec(kind=k))} == {
        "free_rider",
        "copier",
    }
    assert not skips_training(None)


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("flip_to", "expected"),
    [("reverse", [9, 8, 0, 5, 4]), ("next", [1, 2, 0, 5, 6])],
)
def test_label_flip_maps_as_documented_and_keeps_shape_and_dtype(flip_to, expected):
    y = np.array([0, 1, 9, 4, 5], dtype=np.int64)
    out = poison_labels(y, 10, AttackSpec(kind="label_flip", flip_to=flip_to))
    assert out.tolist() == expected
    assert out.dtype == y.dtype and out.shape == y.shape
    assert y.tolist() == [0, 1, 9, 4, 5]  # the input is not modified


def test_label_flip_is_a_permutation_and_other_kinds_leave_labels_alone():
    y = np.arange(10, dtype=np.int64)
    for flip_to in ("reverse", "next"):
        out = poison_labels(y, 10, AttackSpec(kind="label_flip", flip_to=flip_to))
        assert sorted(out.tolist()) == list(range(10)) and not np.array_equal(out, y)
    assert poison_labels(y, 10, AttackSpec(kind="sign_flip")) is y
    assert poison_labels(y, 10, None) is y


def test_label_flip_refuses_labels_outside_the_classes():
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        poison_labels(np.array([0, 3]), 3, AttackSpec(kind="label_flip"))


# ---------------------------------------------------------------- updates


def test_sign_flip_negates_the_delta_exactly():
    out = tamper_update(HONEST, GLOBAL, AttackSpec(kind="sign_flip"), seed=0)
    for name, d in _delta(out.weights).items():
        assert torch.equal(d, -_delta(HONEST.weights)[name])
    assert (out.participant, out.num_samples, out.metrics) == ("p0", 37, HONEST.metrics)


@pytest.mark.parametrize("scale", [10.0, 3.0])
def test_boosted_scales_the_delta(scale):
    out = tamper_update(HONEST, GLOBAL, AttackSpec(kind="boosted", scale=scale), seed=0)
    for name, d in _delta(out.weights).items():
        assert torch.allclose(d, scale * _delta(HONEST.weights)[name], rtol=0, atol=1e-6)


def test_gaussian_noise_is_seeded_and_has_the_asked_std():
    big_global = {"w": torch.full((200, 100), 0.3), "b": torch.zeros(50)}
    honest = Update("p0", {k: v + 1.0 for k, v in big_global.items()}, 5)
    spec = AttackSpec(kind="gaussian_noise", sigma=0.5)
    a = tamper_update(honest, big_global, spec, seed=7)
    b = tamper_update(honest, big_global, spec, seed=7)
    c = tamper_update(honest, big_global, spec, seed=8)
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in big_global)
    assert not torch.equal(a.weights["w"], c.weights["w"])
    noise = torch.cat([(a.weights[k] - big_global[k]).reshape(-1) for k in big_global])
    assert abs(float(noise.mean())) < 0.02  # 20,050 draws: std of the mean ~0.0035
    assert float(noise.std()) == pytest.approx(0.5, rel=0.03)  # the honest delta (+1) is gone


def test_free_rider_submits_the_global_model_with_its_real_sample_count():
    out = tamper_update(HONEST, GLOBAL, AttackSpec(kind="free_rider"), seed=0)
    assert all(torch.equal(out.weights[k], GLOBAL[k]) for k in GLOBAL)
    assert out.weights["w"] is not GLOBAL["w"]  # a copy: the global model stays untouched
    assert (out.participant, out.num_samples) == ("p0", 37)


def test_copier_submits_another_participants_weights_under_its_own_id():
    victim = _update("p2", 0.125, n=500)
    other = _update("p1", -0.5, n=200)
    copier = _update("p3", 0.0, n=12)
    named = tamper_update(
        copier, GLOBAL, AttackSpec(kind="copier", copy_from="p2"), seed=0, others=[other, victim]
    )
    assert named.hash == victim.hash
    assert (named.participant, named.num_samples) == ("p3", 12)
    default = tamper_update(copier, GLOBAL, AttackSpec(kind="copier"), 0, [victim, other, copier])
    first = min([victim, other], key=lambda u: (u.hash, u.participant))
    assert default.hash == first.hash  # the first other proposer in the canonical order


def test_copier_without_a_source_is_a_clear_error():
    copier = _update("p3", 0.0)
    with pytest.raises(ConfigError, match=r"copier p3: copy_from 'p9' submitted no update"):
        tamper_update(
            copier, GLOBAL, AttackSpec(kind="copier", copy_from="p9"), 0, [_update("p1", 0.5)]
        )
    with pytest.raises(ConfigError, match="copier p3: no other participant"):
        tamper_update(copier, GLOBAL, AttackSpec(kind="copier"), 0, [copier])


@pytest.mark.parametrize(
    "spec", [None, AttackSpec(kind="label_flip"), AttackSpec(kind="dishonest_voter")]
)
def test_non_update_attacks_return_the_update_unchanged(spec):
    assert tamper_update(HONEST, GLOBAL, spec, seed=0) is HONEST


def test_tampering_keeps_dtypes_and_leaves_the_inputs_alone():
    before = {k: v.clone() for k, v in HONEST.weights.items()}
    for kind in ("sign_flip", "boosted", "gaussian_noise", "free_rider", "nan_update",
                 "wrong_shape", "inflated_samples"):  # fmt: skip
        out = tamper_update(HONEST, GLOBAL, AttackSpec(kind=kind), seed=1)
        assert {k: v.dtype for k, v in out.weights.items()} == {k: torch.float32 for k in GLOBAL}
    assert all(torch.equal(HONEST.weights[k], before[k]) for k in before)


# ---------------------------------------------------------------- votes


@pytest.mark.parametrize(
    ("score", "voted"), [(0.013, -0.013), (-0.2, 0.2), (0.0, -VOTE_RESOLUTION), (3e-7, -1e-6)]
)
def test_dishonest_voter_votes_against_its_measurement(score, voted):
    assert tamper_score(score, AttackSpec(kind="dishonest_voter")) == pytest.approx(voted)
    assert round(tamper_score(score, AttackSpec(kind="dishonest_voter")), 6) != 0


@pytest.mark.parametrize("spec", [None, AttackSpec(kind="sign_flip"), AttackSpec(kind="copier")])
def test_other_participants_vote_what_they_measured(spec):
    assert tamper_score(0.013, spec) == 0.013


# ---------------------------------------------------------------- detection


def test_detection_finds_free_riders_and_copiers_and_spares_honest_updates():
    honest = [_update("p0", 0.5), _update("p1", [0.1, 0.2, -0.3, 0.4, 0.0, -0.1])]
    rider = tamper_update(_update("p2", 0.3), GLOBAL, AttackSpec(kind="free_rider"), 0)
    copier = tamper_update(
        _update("p3", 0.0), GLOBAL, AttackSpec(kind="copier", copy_from="p1"), 0, honest
    )
    updates = [*honest, rider, copier]
    assert [u.participant for u in updates if is_free_rider(u, GLOBAL)] == ["p2"]
    assert near_duplicates(updates, global_weights=GLOBAL) == [("p1", "p3")]
    assert near_duplicates(updates) == [("p1", "p3")]


def test_near_duplicates_catches_tiny_perturbations_but_not_distinct_updates():
    g = torch.Generator().manual_seed(0)
    base = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in GLOBAL.items()}
    nudged = {k: v + 1e-9 for k, v in base.items()}
    distinct = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    updates = [Update("a", base, 1), Update("b", nudged, 1), Update("c", distinct, 1)]
    assert near_duplicates(updates, rtol=1e-4, global_weights=GLOBAL) == [("a", "b")]
    assert not is_free_rider(Update("a", base, 1), GLOBAL)
    assert is_free_rider(Update("n", {k: v + 1e-9 for k, v in GLOBAL.items()}, 1), GLOBAL, 1e-6)


def test_two_free_riders_pair_up_as_duplicates():
    riders = [Update(p, {k: v.clone() for k, v in GLOBAL.items()}, 3) for p in ("x", "y")]
    assert near_duplicates(riders, global_weights=GLOBAL) == [("x", "y")]


# ---------------------------------------------------------------- end to end


def test_label_flipping_attacker_lowers_held_out_accuracy():
    from flock_pipeline.config import PrivacyConfig, TrainingConfig
    from flock_pipeline.data import load_dataset
    from flock_pipeline.evaluation import evaluate
    from flock_pipeline.models import build_network
    from flock_pipeline.training import train_local

    ds = load_dataset("digits")
    order = np.random.default_rng(0).permutation(len(ds))
    train, test = order[:1200], order[1200:]
    torch.manual_seed(0)
    net = build_network("mlp", ds.input_shape, ds.num_classes)
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}
    spec = AttackSpec(kind="label_flip")
    accuracy = {}
    for name, labels in (
        ("honest", ds.y[train]),
        ("flipped", poison_labels(ds.y[train], ds.num_classes, spec)),
    ):
        update = train_local(
            name,
            build_network("mlp", ds.input_shape, ds.num_classes),
            start,
            ds.x[train],
            labels,
            TrainingConfig(local_epochs=2),
            PrivacyConfig(enabled=False),
            seed=1,
        )
        accuracy[name] = evaluate(net, update.weights, ds.x[test], ds.y[test]).accuracy
    assert accuracy["honest"] > 0.7  # 0.88 here
    assert accuracy["flipped"] < accuracy["honest"] - 0.5


def test_free_rider_relative_tolerance_scales_with_the_global_model():
    nudged = Update("n", {k: v + 1e-9 for k, v in GLOBAL.items()}, 1)
    assert not is_free_rider(nudged, GLOBAL)  # exact by default
    assert is_free_rider(nudged, GLOBAL, rtol=1e-7)
    assert not is_free_rider(HONEST, GLOBAL, rtol=1e-7)


# ---------------------------------------------------------------- invalid updates


def test_corrupt_update_uploads_bytes_no_safetensors_reader_accepts():
    from flock_pipeline.attacks import submission_bytes
    from flock_pipeline.validity import Invalid, check_update

    spec = AttackSpec(kind="corrupt_update")
    update = tamper_update(HONEST, GLOBAL, spec, seed=0)
    blob = submission_bytes(update, spec)

    assert update is HONEST  # the weights stay honest: only the upload is tampered with
    assert submission_bytes(HONEST, None) == canonical_bytes(HONEST.weights)
    verdict = check_update(blob, GLOBAL, HONEST.num_samples)
    assert isinstance(verdict, Invalid) and verdict.reason == "not_safetensors"


def test_nan_update_hides_exactly_one_nan_in_the_honest_update_at_a_seeded_place():
    spec = AttackSpec(kind="nan_update")
    a = tamper_update(HONEST, GLOBAL, spec, seed=3)
    b = tamper_update(HONEST, GLOBAL, spec, seed=3)

    flat = torch.cat([a.weights[k].reshape(-1) for k in sorted(a.weights)])
    honest = torch.cat([HONEST.weights[k].reshape(-1) for k in sorted(a.weights)])
    assert int(flat.isnan().sum()) == 1
    assert torch.equal(flat[~flat.isnan()], honest[~flat.isnan()])
    assert canonical_bytes(a.weights) == canonical_bytes(b.weights)
    places = {
        int(torch.cat([tamper_update(HONEST, GLOBAL, spec, seed=s).weights[k].reshape(-1)
                       for k in sorted(GLOBAL)]).isnan().nonzero())
        for s in range(20)
    }  # fmt: skip
    assert len(places) > 1  # the seed moves it


def test_wrong_shape_grows_one_tensor_by_a_row():
    out = tamper_update(HONEST, GLOBAL, AttackSpec(kind="wrong_shape"), seed=0)

    shapes = {k: tuple(v.shape) for k, v in out.weights.items()}
    assert shapes == {"b": (3,), "w": (2, 2)}  # "b" sorts first
    assert torch.equal(out.weights["b"][:2], HONEST.weights["b"])


@pytest.mark.parametrize("factor", [1e6, 3.0])
def test_inflated_samples_claims_factor_times_the_real_count_with_the_honest_weights(factor):
    spec = AttackSpec(kind="inflated_samples", factor=factor)
    out = tamper_update(HONEST, GLOBAL, spec, seed=0)

    assert out.num_samples == round(HONEST.num_samples * factor)
    assert out.weights is HONEST.weights
    assert AttackSpec(kind="inflated_samples").factor == 1e6
