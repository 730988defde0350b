"""Signed updates: a proposer's EIP-712 signature over what it commits, checked by every reader.

The proposer signs typed data (EIP-712, the form wallets show and ``contracts/src/
UpdateDigest.sol`` recomputes on chain)::

    EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
        name "FlockAlliance", version "1", the chain's id, the alliance's address
    Update(uint256 taskId,uint256 round,bytes32 contentHash,uint256 numSamples,uint256 nonce,
           uint256 deadline)

``contentHash`` is the sha256 of the update's safetensors bytes, the same 32 bytes the proposer
commits with ``submitUpdate`` and the blob store addresses the bytes by.

**The nonce is the round.** The chain already lets a proposer commit at most one update per
(task, round), so that pair is a per-signer counter the chain enforces for free; binding the
nonce to the round makes each signature good for exactly one submission slot. A verifier needs
no memory of nonces it has seen: a set of seen nonces would make the verdict depend on what each
verifier happened to see, and two honest voters could disagree about the same update. A blob
signed for round r and presented in round r+1 is ``replayed``.

:func:`verify_update` is a pure function of the envelope and of what the chain recorded, so
every honest verifier reaches the same verdict. Its reasons, in the order they are checked:

- ``unsigned``: no envelope at all;
- ``bad_signature``: an envelope that does not parse, or a signature that is malformed (not 65
  bytes, ``v`` not 27/28, ``s`` in the upper half: the forms OpenZeppelin's ECDSA refuses too)
  or recovers no key;
- ``wrong_signer``: a sound signature by another key than the proposer's;
- ``wrong_context``: signed by the proposer, but for another chain, contract, task, content
  hash, sample count or a later round than the chain recorded;
- ``replayed``: signed by the proposer for this content, but for an earlier round's slot;
- ``expired``: the deadline had passed when the chain recorded the submission.

Keys are the caller's: :func:`sign_update` takes an eth-account ``LocalAccount`` and this module
never creates or derives one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils.address import is_hex_address, to_checksum_address
from eth_utils.crypto import keccak

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "ENVELOPE_MAX_BYTES",
    "SIGNATURE_REASONS",
    "UPDATE_TYPE",
    "SignatureReason",
    "SignatureRefusal",
    "SignedUpdate",
    "sign_update",
    "update_digest",
    "update_nonce",
    "verify_update",
]

DOMAIN_NAME = "FlockAlliance"
DOMAIN_VERSION = "1"
UPDATE_TYPE = (
    "Update(uint256 taskId,uint256 round,bytes32 contentHash,uint256 numSamples,uint256 nonce,"
    "uint256 deadline)"
)
"""The primary type as EIP-712 encodes it (its keccak is the struct's typehash)."""

SignatureReason = Literal[
    "unsigned", "bad_signature", "wrong_signer", "wrong_context", "replayed", "expired"
]
SIGNATURE_REASONS: tuple[str, ...] = get_args(SignatureReason)

_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Update": [
        {"name": "taskId", "type": "uint256"},
        {"name": "round", "type": "uint256"},
        {"name": "contentHash", "type": "bytes32"},
        {"name": "numSamples", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ],
}
_UINT256 = 2**256
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ENVELOPE_MAX_BYTES = 4_096
"""Bytes: an envelope is ~500; anything much larger is refused before parsing."""
_INT_FIELDS = ("chain_id", "task_id", "round", "num_samples", "nonce", "deadline")


@dataclass(frozen=True)
class SignedUpdate:
    """The fields a proposer signed and its 65-byte signature (r, s, v with v in 27/28)."""

    chain_id: int
    contract: str
    task_id: int
    round: int
    content_hash: str
    """``0x`` + 64 hex characters: the sha256 of the update's bytes."""
    num_samples: int
    nonce: int
    deadline: int
    """Unix seconds; compared with the timestamp of the block that recorded the submission."""
    signature: bytes

    def to_json(self) -> bytes:
        """The wire form stored next to the blob: JSON, the signature as ``0x`` hex."""
        fields = asdict(self)
        fields["signature"] = "0x" + self.signature.hex()
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SignedUpdate:
        """Parse the wire form strictly; ValueError names the first thing wrong."""
        if len(data) > ENVELOPE_MAX_BYTES:
            raise ValueError(f"envelope of {len(data)} bytes, at most {ENVELOPE_MAX_BYTES}")
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        expected = {*_INT_FIELDS, "contract", "content_hash", "signature"}
        if not isinstance(raw, dict) or set(raw) != expected:
            got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"expected the fields {sorted(expected)}, got {got}")
        for name in _INT_FIELDS:
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _UINT256:
                raise ValueError(f"{name} is not a uint256: {value!r:.80}")
        if not isinstance(raw["contract"], str) or not is_hex_address(raw["contract"]):
            raise ValueError(f"contract is not an address: {raw['contract']!r:.80}")
        return cls(
            chain_id=raw["chain_id"],
            contract=to_checksum_address(raw["contract"]),
            task_id=raw["task_id"],
            round=raw["round"],
            content_hash="0x" + _hex_bytes(raw["content_hash"], "content_hash", 32).hex(),
            num_samples=raw["num_samples"],
            nonce=raw["nonce"],
            deadline=raw["deadline"],
            signature=_hex_bytes(raw["signature"], "signature", None),
        )


@dataclass(frozen=True)
class SignatureRefusal:
    """Why a signed update is refused: a reason every verifier agrees on, and a detail for the
    log."""

    reason: SignatureReason
    detail: str


def update_nonce(task_id: int, round_: int) -> int:
    """The nonce a signature for (task, round) carries: the round (see the module docstring)."""
    del task_id  # the task is signed in its own field; the round alone makes the slot unique
    return round_


def update_digest(
    *,
    chain_id: int,
    contract: str,
    task_id: int,
    round_: int,
    content_hash: str | bytes,
    num_samples: int,
    nonce: int,
    deadline: int,
) -> bytes:
    """The 32-byte EIP-712 digest a proposer signs (what ``UpdateDigest.digest`` returns)."""
    message = _typed(chain_id, contract, task_id, round_, content_hash, num_samples, nonce,
                     deadline)  # fmt: skip
    return keccak(b"\x19" + message.version + message.header + message.body)


def sign_update(
    key: LocalAccount,
    *,
    chain_id: int,
    contract: str,
    task_id: int,
    round_: int,
    content_hash: str | bytes,
    num_samples: int,
    deadline: int,
) -> SignedUpdate:
    """The proposer's signature over its update for (task, round), good until ``deadline``."""
    nonce = update_nonce(task_id, round_)
    message = _typed(chain_id, contract, task_id, round_, content_hash, num_samples, nonce,
                     deadline)  # fmt: skip
    signed = key.sign_message(message)
    return SignedUpdate(
        chain_id=chain_id,
        contract=to_checksum_address(contract),
        task_id=task_id,
        round=round_,
        content_hash="0x" + _hash32(content_hash).hex(),
        num_samples=num_samples,
        nonce=nonce,
        deadline=deadline,
        signature=bytes(signed.signature),
    )


def verify_update(
    signed: SignedUpdate | bytes | None,
    expected_signer: str,
    *,
    chain_id: int,
    contract: str,
    task_id: int,
    round_: int,
    content_hash: str | bytes,
    num_samples: int,
    now: int,
) -> SignatureRefusal | None:
    """None when ``signed`` (the envelope or its wire bytes) is ``expected_signer``'s signature
    over exactly what the chain recorded; otherwise the refusal.

    ``now`` must be public and the same for every verifier: the timestamp of the block that
    recorded the submission, never a local clock."""
    if signed is None:
        return SignatureRefusal("unsigned", "no signature came with the update")
    if isinstance(signed, bytes):
        try:
            signed = SignedUpdate.from_json(signed)
        except ValueError as exc:
            return SignatureRefusal("bad_signature", f"the envelope does not parse: {exc}")
    signer = _recover(signed)
    if isinstance(signer, SignatureRefusal):
        return signer
    if signer.lower() != expected_signer.lower():
        return SignatureRefusal("wrong_signer", f"signed by {signer}, not by {expected_signer}")
    recorded = {
        "chain_id": chain_id,
        "contract": contract.lower(),
        "task_id": task_id,
        "content_hash": "0x" + _hash32(content_hash).hex(),
        "num_samples": num_samples,
    }
    claimed = {
        "chain_id": signed.chain_id,
        "contract": signed.contract.lower(),
        "task_id": signed.task_id,
        "content_hash": signed.content_hash,
        "num_samples": signed.num_samples,
    }
    differ = [name for name in recorded if recorded[name] != claimed[name]]
    if differ:
        detail = ", ".join(f"{n} {claimed[n]} (recorded {recorded[n]})" for n in differ)
        return SignatureRefusal("wrong_context", f"signed for {detail}")
    expected_nonce = update_nonce(task_id, round_)
    if signed.round != round_ or signed.nonce != expected_nonce:
        where = f"round {signed.round} with nonce {signed.nonce}"
        if signed.round < round_ and signed.nonce == update_nonce(task_id, signed.round):
            return SignatureRefusal("replayed", f"signed for {where}, presented in round {round_}")
        return SignatureRefusal(
            "wrong_context", f"signed for {where}, expected round {round_} nonce {expected_nonce}"
        )
    if signed.deadline < now:
        return SignatureRefusal(
            "expired", f"deadline {signed.deadline} passed before the submission at {now}"
        )
    return None


def _typed(
    chain_id: int,
    contract: str,
    task_id: int,
    round_: int,
    content_hash: str | bytes,
    num_samples: int,
    nonce: int,
    deadline: int,
) -> SignableMessage:
    message: dict[str, Any] = {
        "types": _TYPES,
        "primaryType": "Update",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(contract),
        },
        "message": {
            "taskId": task_id,
            "round": round_,
            "contentHash": _hash32(content_hash),
            "numSamples": num_samples,
            "nonce": nonce,
            "deadline": deadline,
        },
    }
    return encode_typed_data(full_message=message)


def _recover(signed: SignedUpdate) -> str | SignatureRefusal:
    sig = signed.signature
    if len(sig) != 65:
        return SignatureRefusal("bad_signature", f"signature of {len(sig)} bytes, expected 65")
    r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    if v not in (27, 28) or not 0 < r < _SECP256K1_N or not 0 < s <= _SECP256K1_N // 2:
        return SignatureRefusal("bad_signature", "signature is not in canonical (r, s, v) form")
    try:  # an envelope built in process may hold fields no parser checked
        message = _typed(signed.chain_id, signed.contract, signed.task_id, signed.round,
                         signed.content_hash, signed.num_samples, signed.nonce,
                         signed.deadline)  # fmt: skip
        return str(Account.recover_message(message, signature=sig))
    except Exception as exc:  # eth-keys and eth-abi raise several types for bad input
        return SignatureRefusal("bad_signature", f"no key recovers from the signature: {exc}")


def _hash32(value: str | bytes) -> bytes:
    """A content hash given as 32 bytes or as (``0x``-prefixed) hex."""
    raw = _hex_bytes(value, "content_hash", 32) if isinstance(value, str) else value
    if len(raw) != 32:
        raise ValueError(f"a content hash has 32 bytes, not {len(raw)}")
    return raw


def _hex_bytes(value: object, name: str, size: int | None) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"{name} is not 0x-prefixed hex: {value!r:.80}")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise ValueError(f"{name} is not 0x-prefixed hex: {value!r:.80}") from None
    if size is not None and len(raw) != size:
        raise ValueError(f"{name} has {len(raw)} bytes, expected {size}")
    return raw
