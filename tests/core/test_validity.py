"""Invalid updates are protocol outcomes: the check's verdicts, the round steps' handling of
them, and the simulation's rounds with an attacker that sends them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount

from flock_pipeline.aggregation import FedAvg, Krum
from flock_pipeline.config import load_config
from flock_pipeline.contribution import PENALTY, contributions, submission_scores
from flock_pipeline.round import aggregate
from flock_pipeline.serialization import Weights, canonical_bytes, content_hash
from flock_pipeline.signing import SIGNATURE_REASONS, SignedUpdate, sign_update
from flock_pipeline.simulation import run_simulation
from flock_pipeline.storage import LocalBlobStore
from flock_pipeline.update import Update
from flock_pipeline.validity import (
    INVALID_REASONS,
    Checked,
    Invalid,
    SignatureCheck,
    Valid,
    check_submissions,
    check_update,
    fetch_blob,
    update_size_limit,
)

GLOBAL: Weights = {
    "w": torch.tensor([[1.0, -2.0], [0.5, 0.0]]),
    "b": torch.tensor([0.25, -0.75]),
    "steps": torch.tensor(3, dtype=torch.int64),
}


def _weights(shift: float) -> Weights:
    return {k: (v + shift if v.is_floating_point() else v.clone()) for k, v in GLOBAL.items()}


def _reason(verdict: Valid | Invalid) -> str | None:
    return verdict.reason if isinstance(verdict, Invalid) else None


# ---------------------------------------------------------------- check_update


def test_a_well_formed_update_is_valid_and_keeps_its_exact_weights() -> None:
    weights = _weights(0.1)

    verdict = check_update(canonical_bytes(weights), GLOBAL, 10)

    assert isinstance(verdict, Valid)
    assert set(verdict.weights) == set(weights)
    assert all(torch.equal(verdict.weights[k], weights[k]) for k in weights)


def test_no_bytes_behind_the_hash_is_unavailable() -> None:
    assert _reason(check_update(None, GLOBAL, 10)) == "unavailable"


@pytest.mark.parametrize(
    "blob",
    [b"", b"not a model", canonical_bytes(_weights(0.1))[:40]],
    ids=["empty", "text", "truncated"],
)
def test_bytes_that_are_not_safetensors_are_not_safetensors(blob: bytes) -> None:
    assert _reason(check_update(blob, GLOBAL, 10)) == "not_safetensors"


def test_a_missing_or_an_extra_tensor_is_wrong_tensors() -> None:
    missing = {k: v for k, v in _weights(0.1).items() if k != "b"}
    extra = {**_weights(0.1), "extra": torch.zeros(2)}

    assert _reason(check_update(canonical_bytes(missing), GLOBAL, 10)) == "wrong_tensors"
    assert _reason(check_update(canonical_bytes(extra), GLOBAL, 10)) == "wrong_tensors"


def test_a_tensor_of_another_shape_is_wrong_shape() -> None:
    weights = {**_weights(0.1), "b": torch.zeros(3)}

    assert _reason(check_update(canonical_bytes(weights), GLOBAL, 10)) == "wrong_shape"


def test_a_tensor_of_another_dtype_is_wrong_dtype() -> None:
    weights = {**_weights(0.1), "w": _weights(0.1)["w"].to(torch.float64)}

    assert _reason(check_update(canonical_bytes(weights), GLOBAL, 10)) == "wrong_dtype"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_one_non_finite_coordinate_is_not_finite(value: float) -> None:
    weights = _weights(0.1)
    weights["w"][1, 0] = value

    assert _reason(check_update(canonical_bytes(weights), GLOBAL, 10)) == "not_finite"


def test_a_claim_above_the_registered_count_is_too_many_samples_and_only_when_known() -> None:
    blob = canonical_bytes(_weights(0.1))

    assert _reason(check_update(blob, GLOBAL, 11, registered_samples=10)) == "too_many_samples"
    assert isinstance(check_update(blob, GLOBAL, 10, registered_samples=10), Valid)
    assert isinstance(check_update(blob, GLOBAL, 10**30), Valid)


def test_every_reason_reads_as_an_invalid_flag() -> None:
    assert Invalid("not_finite", "x").flag == "invalid:not_finite"
    assert set(INVALID_REASONS) == {
        "unavailable", "too_large", "too_many_samples", "not_safetensors", "wrong_tensors",
        "wrong_shape", "wrong_dtype", "not_finite", "unsigned", "bad_signature", "wrong_signer",
        "wrong_context", "replayed", "expired",
    }  # fmt: skip
    assert set(SIGNATURE_REASONS) <= set(INVALID_REASONS)


# ---------------------------------------------------------------- signed updates

CHAIN_ID = 31337
ALLIANCE = "0x" + "a1" * 20
TASK, ROUND, SAMPLES, SUBMITTED_AT = 4, 2, 10, 1_000


@pytest.fixture(scope="module")
def proposer() -> LocalAccount:
    account: LocalAccount = Account.create()  # a throwaway test key from the OS's CSPRNG
    return account


def _signed(key: LocalAccount, blob: bytes, **change: int | str) -> SignedUpdate:
    fields: dict[str, object] = {
        "chain_id": CHAIN_ID, "contract": ALLIANCE, "task_id": TASK, "round_": ROUND,
        "content_hash": "0x" + hashlib.sha256(blob).hexdigest(), "num_samples": SAMPLES,
        "deadline": SUBMITTED_AT + 60, **change,
    }  # fmt: skip
    return sign_update(key, **fields)  # type: ignore[arg-type]


def _check(envelope: SignedUpdate | bytes | None, signer: str, blob: bytes) -> SignatureCheck:
    """What the chain recorded: this task and round, the blob's hash, ``signer`` as sender."""
    return SignatureCheck(envelope=envelope, signer=signer, chain_id=CHAIN_ID, contract=ALLIANCE,
                          task_id=TASK, round=ROUND,
                          content_hash="0x" + hashlib.sha256(blob).hexdigest(),
                          submitted_at=SUBMITTED_AT)  # fmt: skip


def _signed_reason(envelope: SignedUpdate | bytes | None, key: LocalAccount) -> str | None:
    blob = canonical_bytes(_weights(0.1))
    check = _check(envelope, key.address, blob)
    return _reason(check_update(blob, GLOBAL, SAMPLES, signature=check))


def test_an_update_signed_by_its_proposer_for_what_the_chain_recorded_is_valid(
    proposer: LocalAccount,
) -> None:
    blob = canonical_bytes(_weights(0.1))
    signed = _signed(proposer, blob)

    verdict = check_update(blob, GLOBAL, SAMPLES, signature=_check(signed, proposer.address, blob))
    wire = _check(signed.to_json(), proposer.address, blob)
    from_wire = check_update(blob, GLOBAL, SAMPLES, signature=wire)

    assert isinstance(verdict, Valid) and isinstance(from_wire, Valid)
    assert signed.content_hash == content_hash(_weights(0.1))  # the hash committed on chain


def test_without_a_signature_check_no_signature_is_asked_for() -> None:
    assert isinstance(check_update(canonical_bytes(_weights(0.1)), GLOBAL, SAMPLES), Valid)


def test_an_update_without_an_envelope_is_unsigned(proposer: LocalAccount) -> None:
    assert _signed_reason(None, proposer) == "unsigned"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.to_json()[:-5],
        lambda s: b"[1, 2]",
        lambda s: b"{" + b" " * 5_000 + b"}",
        lambda s: s.to_json().replace(b'"nonce": 2', b'"nonce": -1'),
        lambda s: s.to_json().replace(b'"nonce": 2', b'"nonce": true'),
        lambda s: s.to_json().replace(b'"contract": "0x', b'"contract": "0xzz'),
        lambda s: SignedUpdate(**{**s.__dict__, "signature": s.signature[:64]}),
        lambda s: SignedUpdate(**{**s.__dict__, "signature": s.signature[:64] + b"\x1d"}),
        lambda s: SignedUpdate(**{**s.__dict__, "signature": bytes(65)}),
        lambda s: SignedUpdate(**{**s.__dict__, "signature": _high_s(s.signature)}),
        lambda s: SignedUpdate(**{**s.__dict__, "content_hash": "not hex"}),
    ],
    ids=[
        "truncated",
        "not_an_object",
        "huge",
        "negative",
        "bool",
        "bad_address",
        "64_bytes",
        "v_29",
        "zeros",
        "high_s",
        "unparsed_field",
    ],
)
def test_a_malformed_envelope_or_signature_is_bad_signature(
    proposer: LocalAccount, mangle: Any
) -> None:
    signed = _signed(proposer, canonical_bytes(_weights(0.1)))

    assert _signed_reason(mangle(signed), proposer) == "bad_signature"


def _high_s(signature: bytes) -> bytes:
    """The same signature's other (non-canonical) form: s -> n - s, v flipped."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(signature[32:64], "big")
    return signature[:32] + (n - s).to_bytes(32, "big") + bytes([55 - signature[64]])


def test_a_blob_signed_by_another_key_is_wrong_signer(proposer: LocalAccount) -> None:
    thief: LocalAccount = Account.create()
    signed = _signed(thief, canonical_bytes(_weights(0.1)))

    assert _signed_reason(signed, proposer) == "wrong_signer"


def test_an_envelope_with_an_edited_field_is_wrong_signer(proposer: LocalAccount) -> None:
    signed = _signed(proposer, canonical_bytes(_weights(0.1)))
    edited = SignedUpdate(**{**signed.__dict__, "num_samples": SAMPLES - 1})

    assert _signed_reason(edited, proposer) == "wrong_signer"


@pytest.mark.parametrize(
    "change",
    [
        {"chain_id": CHAIN_ID + 1},
        {"contract": "0x" + "b2" * 20},
        {"task_id": TASK + 1},
        {"content_hash": "0x" + "cd" * 32},
        {"num_samples": SAMPLES + 1},
        {"round_": ROUND + 1},
    ],
    ids=["chain", "contract", "task", "hash", "samples", "later_round"],
)
def test_a_signature_over_other_fields_than_the_chain_recorded_is_wrong_context(
    proposer: LocalAccount, change: dict[str, int | str]
) -> None:
    signed = _signed(proposer, canonical_bytes(_weights(0.1)), **change)

    assert _signed_reason(signed, proposer) == "wrong_context"


def test_a_blob_signed_for_an_earlier_round_is_replayed(proposer: LocalAccount) -> None:
    signed = _signed(proposer, canonical_bytes(_weights(0.1)), round_=ROUND - 1)

    assert _signed_reason(signed, proposer) == "replayed"


def test_a_signature_past_its_deadline_at_the_submission_is_expired(
    proposer: LocalAccount,
) -> None:
    late = _signed(proposer, canonical_bytes(_weights(0.1)), deadline=SUBMITTED_AT - 1)
    on_time = _signed(proposer, canonical_bytes(_weights(0.1)), deadline=SUBMITTED_AT)

    assert _signed_reason(late, proposer) == "expired"
    assert _signed_reason(on_time, proposer) is None


def test_no_bytes_are_unavailable_before_any_signature_is_looked_at(
    proposer: LocalAccount,
) -> None:
    blob = canonical_bytes(_weights(0.1))

    verdict = check_update(None, GLOBAL, SAMPLES, signature=_check(None, proposer.address, blob))

    assert _reason(verdict) == "unavailable"


def test_check_submissions_flags_the_unsigned_and_keeps_the_signed(
    proposer: LocalAccount,
) -> None:
    other: LocalAccount = Account.create()
    good, stolen = canonical_bytes(_weights(0.1)), canonical_bytes(_weights(-0.1))
    signatures = {
        "p0": _check(_signed(proposer, good), proposer.address, good),
        "p1": _check(None, other.address, good),
        "p2": _check(_signed(proposer, stolen), other.address, stolen),
    }

    checked = check_submissions(
        [("p0", good, SAMPLES), ("p1", good, SAMPLES), ("p2", stolen, SAMPLES)],
        GLOBAL,
        signatures=signatures,
    )

    assert [u.participant for u in checked.updates] == ["p0"]
    assert checked.invalid == {"p1": "invalid:unsigned", "p2": "invalid:wrong_signer"}
    with pytest.raises(ValueError, match="no SignatureCheck for proposer p3"):
        check_submissions([("p3", good, SAMPLES)], GLOBAL, signatures=signatures)


# ---------------------------------------------------------------- fetching


def test_fetch_gives_the_stored_bytes_and_none_for_a_missing_or_a_corrupt_blob(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path)
    kept = store.put(b"kept")
    lost = store.put(b"lost")
    store.path(lost).unlink()
    corrupt = store.put(b"honest bytes")
    store.path(corrupt).write_bytes(b"other bytes")

    assert fetch_blob(store, kept) == b"kept"
    assert fetch_blob(store, lost) is None
    assert fetch_blob(store, corrupt) is None


def test_a_blob_larger_than_any_update_of_the_model_is_too_large_and_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: an honest update and one padded past what the model's tensors can take
    store = LocalBlobStore(tmp_path)
    honest = canonical_bytes(_weights(0.1))
    limit = update_size_limit(GLOBAL)
    assert len(honest) <= limit
    padded = store.put(honest + b"\0" * (limit - len(honest) + 1))
    fits = store.put(honest)
    read: list[str] = []
    get = store.get
    monkeypatch.setattr(store, "get", lambda d: read.append(d) or get(d))
    # Execute
    big, small = fetch_blob(store, padded, max_bytes=limit), fetch_blob(store, fits, limit)
    # Assert: the large one is refused by its size alone, the other read as before
    assert read == [fits] and small == honest
    verdict = check_update(big, GLOBAL, 10)
    assert _reason(verdict) == "too_large" and str(limit) in verdict.detail  # type: ignore[union-attr]
    assert _reason(check_update(small, GLOBAL, 10)) is None
    assert store.size(fits) == len(honest) and store.size("0x" + "0" * 64) is None


# ---------------------------------------------------------------- the round steps


def _submissions() -> list[tuple[str, bytes | None, int]]:
    nan = _weights(0.3)
    nan["b"][0] = float("nan")
    return [
        ("p0", canonical_bytes(_weights(0.1)), 10),
        ("p1", canonical_bytes(nan), 10),
        ("p2", canonical_bytes(_weights(-0.1)), 20),
        ("p3", None, 10),
    ]


def test_check_submissions_keeps_the_valid_in_order_and_flags_the_rest() -> None:
    checked = check_submissions(_submissions(), GLOBAL)

    assert [u.participant for u in checked.updates] == ["p0", "p2"]
    assert [u.num_samples for u in checked.updates] == [10, 20]
    assert checked.invalid == {"p1": "invalid:not_finite", "p3": "invalid:unavailable"}
    assert checked.order == ["p0", "p1", "p2", "p3"]


def test_invalid_updates_are_flagged_left_out_of_the_aggregate_and_scored_as_a_penalty() -> None:
    checked = check_submissions(_submissions(), GLOBAL)

    full = aggregate(FedAvg(), checked.updates, GLOBAL, None, 0, None, None, checked.invalid)
    alone = FedAvg().aggregate(checked.updates, GLOBAL)
    scores = contributions(FedAvg(), checked.updates, GLOBAL, None, 0, None,
                           lambda w: float(w["b"].abs().sum()), full, None,
                           checked.invalid)  # fmt: skip
    per_update = submission_scores(checked, scores)

    assert dict(full.flagged) == checked.invalid
    assert all(torch.equal(full.weights[k], alone.weights[k]) for k in GLOBAL)
    assert len(per_update) == 4
    assert per_update[1] == per_update[3] == PENALTY
    assert all(s > PENALTY for s in (per_update[0], per_update[2]))


def test_an_invalid_update_counts_against_a_robust_rules_expected_attackers() -> None:
    # Krum braced for one attacker, of which the validity check already removed one: it
    # averages nothing away from the three valid updates it has left.
    more = [*_submissions(), ("p4", canonical_bytes(_weights(0.05)), 10)]
    checked = check_submissions(more, GLOBAL)

    full = aggregate(Krum(num_malicious=1), checked.updates, GLOBAL, None, 0, None, None,
                     checked.invalid)  # fmt: skip

    assert set(full.flagged) == {"p1", "p3"}
    assert full.selected  # the rule ran (f lowered to 0) instead of refusing too few updates


def test_a_round_of_only_invalid_updates_keeps_the_global_model() -> None:
    checked = check_submissions([("p0", b"junk", 10), ("p1", None, 10)], GLOBAL)

    full = aggregate(FedAvg(), checked.updates, GLOBAL, None, 0, None, None, checked.invalid)

    assert checked.updates == []
    assert all(torch.equal(full.weights[k], GLOBAL[k]) for k in GLOBAL)
    assert submission_scores(checked, []) == [PENALTY, PENALTY]


def test_submission_scores_refuses_scores_that_do_not_match_the_valid_updates() -> None:
    checked = Checked(updates=[Update("p0", _weights(0.1), 1)], invalid={}, order=["p0"])

    with pytest.raises(ValueError, match="more scores"):
        submission_scores(checked, [0.1, 0.2])


# ---------------------------------------------------------------- the simulation

SMALL = {
    "participants": 4,
    "rounds": 2,
    "data.dataset": "digits",
    "partition.scheme": "iid",
    "model.name": "mlp",
    "privacy.enabled": False,
    "training.local_epochs": 2,
    "chain.proposers_per_round": 4,
    "chain.voters_per_round": 4,
    "aggregation.screen.min_trust": None,
}


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("corrupt_update", "invalid:not_safetensors"),
        ("nan_update", "invalid:not_finite"),
        ("wrong_shape", "invalid:wrong_shape"),
        ("unsigned", "invalid:unsigned"),
        ("foreign_signature", "invalid:wrong_signer"),
    ],
)
def test_the_simulation_flags_and_penalizes_an_invalid_update_and_goes_on(
    kind: str, reason: str
) -> None:
    cfg = load_config(overrides={**SMALL, "attacks": {"p1": {"kind": kind}}})

    summary = run_simulation(cfg).summary

    first, second = summary["rounds"]
    assert first["screened"] == {"p1": reason}
    assert first["outcome"] != "void"
    attacker = first["participants"][1]
    assert attacker["flagged"] and attacker["screened"] == reason
    assert int(attacker["slashed"]) == 100 * 10**18  # penalty_bps 100 %: its whole stake
    # Slashed to nothing, it has no stake to submit with in round 2; the others go on.
    assert second["participants"][1]["update_hash"] is None
    assert second["outcome"] != "void" and second["screened"] == {}
    for r in summary["rounds"]:
        others = [p for p in r["participants"] if p["id"] != "p1"]
        assert all(p["update_hash"] and not p["flagged"] and p["slashed"] == "0" for p in others)
    assert summary["final"]["honest_slashes"] == 0
    assert summary["final"]["accuracy"] > 0.5


def test_a_participant_over_its_training_time_abstains_and_the_run_completes() -> None:
    # A limit no training can meet: every proposer abstains, every round is void.
    cfg = load_config(overrides={**SMALL, "training.timeout_minutes": 1e-9})

    summary = run_simulation(cfg).summary

    assert [r["outcome"] for r in summary["rounds"]] == ["void", "void"]
    assert all(p["update_hash"] is None for r in summary["rounds"] for p in r["participants"])
    assert all(p["slashed"] == "0" for r in summary["rounds"] for p in r["participants"])


def test_a_participant_past_its_privacy_budget_abstains_and_the_run_completes() -> None:
    cfg = load_config(overrides={**SMALL, "privacy.enabled": True, "privacy.epsilon_budget": 1e-6})

    summary = run_simulation(cfg).summary

    assert [r["outcome"] for r in summary["rounds"]] == ["void", "void"]
    assert all(p["update_hash"] is None for r in summary["rounds"] for p in r["participants"])
    assert summary["final"]["honest_slashes"] == 0


def test_the_simulation_refuses_an_inflated_claim_and_nobody_is_slashed() -> None:
    cfg = load_config(overrides={**SMALL, "attacks": {"p1": {"kind": "inflated_samples"}}})

    summary = run_simulation(cfg).summary

    for r in summary["rounds"]:
        people = {p["id"]: p for p in r["participants"]}
        assert people["p1"]["update_hash"] is None  # above its registered size: refused
        assert all(people[pid]["update_hash"] for pid in ("p0", "p2", "p3"))
        assert r["outcome"] != "void" and r["screened"] == {}
        assert all(p["slashed"] == "0" for p in r["participants"])
