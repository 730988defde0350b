"""What anyone can read about a task: its public card and the chain's record of its rounds.

A :class:`TaskCard` is the task's public description, written by its creator next to the task
(``tasks/<name>/card.json``) and handed to every participant: the chain and contract it lives
on, its id and creation block, its data schema, its configuration (training, aggregation, vote)
and its roster (participant id -> address). It holds no key, no data and no secret.

A :class:`TaskView` reads the chain for it: the round's committed updates, its reveals and the
protocol model's view of what they imply. The coordinator and every participant use the same
reads, so each recomputes the same aggregate from the same public inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flock_pipeline.chain import AllianceClient, Chain, Phase, connect
from flock_pipeline.config import FlockConfig
from flock_pipeline.data.schema import DataSchema
from flock_pipeline.errors import ConfigError
from flock_pipeline.protocol.tally import RevealedVote
from flock_pipeline.protocol.view import RoundView
from flock_pipeline.serialization import Weights
from flock_pipeline.signing import ENVELOPE_MAX_BYTES
from flock_pipeline.storage import BlobStore
from flock_pipeline.validity import (
    Checked,
    Oversized,
    SignatureCheck,
    check_submissions,
    fetch_blob,
    update_size_limit,
)

__all__ = [
    "VALIDATION",
    "TaskCard",
    "TaskView",
    "connect_configured",
    "hex_bytes",
    "validation_hash",
]

VALIDATION = "validation"
"""The snapshot name of the task's shared validation set, next to the participants' folders."""


def validation_hash(uri: str) -> str | None:
    """The shared validation set's DVC hash a task's metadata URI names, if any."""
    _, _, query = uri.rpartition("?")
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key == "validation" and value.startswith("md5:"):
            return value[len("md5:") :]
    return None


def connect_configured(cfg: FlockConfig, url: str | None = None) -> Chain:
    """A connection to ``url`` (default ``chain.url``), a dev chain only when ``chain.dev``
    allows it: anvil is one unless ``chain.dev`` is false (then, as on a public chain, phases
    pass in real time and nobody is funded or minted to)."""
    url = url or str(cfg.chain.url)
    chain = connect(url)
    anvil = "anvil" in str(chain.w3.client_version).lower()
    if cfg.chain.dev and not anvil:
        raise ConfigError(
            f"chain.dev is true, but the node at {url} is not anvil "
            f"({chain.w3.client_version}): set chain.dev to false or leave it unset"
        )
    if anvil and cfg.chain.dev is not False:
        chain.kind = "anvil"
    return chain


def hex_bytes(b: bytes) -> str:
    return "0x" + bytes(b).hex()


class TaskCard(BaseModel):
    """A task's public description: everything a participant needs to join it, nothing more."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    chain_id: int
    chain_url: str | None
    """The RPC the creator used; a participant may use any node of the same chain."""
    alliance: str
    token: str
    deployment: dict[str, Any]
    """Every contract of the deployment (``chain.Deployment`` fields)."""
    task_id: int
    from_block: int
    initial_model: str
    data_schema: DataSchema = Field(alias="schema")
    config: dict[str, Any]
    """The task's configuration as the creator set it (``FlockConfig`` fields, no data_dir)."""
    roster: dict[str, str]
    """Participant id -> address, in participant order: who may stake on the task."""
    validation: str | None = None
    """The DVC hash of the task's shared validation set, if it has one."""
    validation_blob: str | None = None
    """The blob (``serialization.canonical_bytes`` of its ``x`` and ``y``) that carries the
    shared validation set to participant workers; they check it against ``validation`` and
    against the hash the task's metadata names on chain."""

    def task_config(self, data_dir: Path) -> FlockConfig:
        """The task's configuration, with this machine's ``data_dir``."""
        return FlockConfig.model_validate(dict(self.config, data_dir=str(data_dir)))

    def participant_of(self, address: str) -> str:
        """The id of ``address`` in the roster; a ConfigError naming the task if it is not."""
        for pid, member in self.roster.items():
            if member.lower() == address.lower():
                return pid
        raise ConfigError(
            f"address {address} is not on the roster of task {self.name!r} "
            f"({', '.join(self.roster.values())}): ask the task's creator to add it, or use the "
            "key of a listed account"
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2, by_alias=True))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> TaskCard:
        """The card at ``path`` (a task folder or its card.json)."""
        file = Path(path)
        if file.is_dir():
            file = file / "card.json"
        try:
            return cls.model_validate_json(file.read_bytes())
        except FileNotFoundError:
            raise ConfigError(
                f"no task card at {file}: pass --task the card.json that `flock task create` "
                "wrote (tasks/<name>/card.json in the creator's data folder)"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{file} is not a task card ({exc}); get a fresh copy") from None


@dataclass
class TaskView:
    """Public reads of one task's rounds, through any client (no key is used to read)."""

    client: AllianceClient
    name: str
    task_id: int
    from_block: int
    roster: dict[str, str]
    """Participant id -> address."""
    finalized_trust: dict[int, dict[str, float]] = field(default_factory=dict)
    """Trust scores of finalized rounds, by round index: final on chain, so read once."""

    def __post_init__(self) -> None:
        self._ids = {a.lower(): pid for pid, a in self.roster.items()}

    def id_of(self, address: str) -> str:
        return self._ids[address.lower()]

    def submissions(self, r: int) -> list[dict[str, Any]]:
        """The round's ``UpdateSubmitted`` events in submission (index) order."""
        events = self.client.round_events(self.task_id, r, "UpdateSubmitted", self.from_block)
        return sorted(events, key=lambda e: int(e["index"]))

    def reveals(self, r: int) -> list[RevealedVote]:
        """The round's revealed votes, in reveal order."""
        proposers = [self.id_of(str(e["proposer"])) for e in self.submissions(r)]
        reveals = []
        for e in self.client.round_events(self.task_id, r, "VoteRevealed", self.from_block):
            voter = self.id_of(str(e["voter"]))
            reveals.append(
                RevealedVote(
                    voter=voter,
                    weight=int(e["weight"]),
                    aggregate_hash=bytes(e["aggregateHash"]),
                    score=int(e["score"]),
                    contributions=tuple(int(c) for c in e["contributions"]),
                    own_index=proposers.index(voter) if voter in proposers else None,
                )
            )
        return reveals

    def round_view(self, r: int, reveals: list[RevealedVote] | None = None) -> RoundView:
        """What the chain decided in round ``r`` and what it implies per participant, computed
        by the protocol model from three reads: the round, its updates and its reveals."""
        info = self.client.round_info(self.task_id, r)
        proposers = [self.id_of(str(e["proposer"])) for e in self.submissions(r)]
        found = self.reveals(r) if reveals is None else reveals
        return RoundView.of(info.outcome, info.aggregate_hash, proposers, found)

    def committed(self, store: BlobStore, r: int, reference: Weights) -> Checked:
        """The round's updates as committed on chain, in submission order (the contract's
        update index), fetched by hash from ``store`` and checked against the global model
        ``reference`` (``flock_pipeline.validity``): an update that is missing, unreadable or
        malformed, or whose signature envelope (``flock_pipeline.signing``) is missing, another
        key's or for another slot, is flagged invalid, never raised. One event query, one batch
        of stake reads and one batch of block reads (the blocks that recorded a submission)."""
        entries, addresses = [], []
        signatures: dict[str, SignatureCheck] = {}
        limit = update_size_limit(reference)
        events = self.submissions(r)
        stamps = self.client.block_timestamps(int(ev["blockNumber"]) for ev in events)
        for ev in events:
            proposer = str(ev["proposer"])
            pid = self.id_of(proposer)
            digest = hex_bytes(ev["updateHash"])
            blob = fetch_blob(store, digest, max_bytes=limit)
            entries.append((pid, blob, int(ev["numSamples"])))
            addresses.append(proposer)
            signatures[pid] = SignatureCheck(
                envelope=self._envelope(store, bytes(ev["signatureHash"])),
                signer=proposer,
                chain_id=self.client.deployment.chain_id,
                contract=str(self.client.alliance.address),
                task_id=self.task_id,
                round=r,
                content_hash=digest,
                submitted_at=stamps[int(ev["blockNumber"])],
            )
        stakes = self.client.participants_of(self.task_id, addresses)
        registered = {self.id_of(a): s.num_samples for a, s in zip(addresses, stakes, strict=True)}
        return check_submissions(entries, reference, registered, signatures)

    @staticmethod
    def _envelope(store: BlobStore, signature_hash: bytes) -> bytes | None:
        """The signature envelope committed as ``signature_hash``: None when the proposer
        committed none (zero) or the store has none that hashes to it; an oversized one comes
        back as that many bytes unread, which the envelope parser refuses by size."""
        if signature_hash == bytes(32):
            return None
        found = fetch_blob(store, hex_bytes(signature_hash), max_bytes=ENVELOPE_MAX_BYTES)
        if isinstance(found, Oversized):
            return bytes(ENVELOPE_MAX_BYTES + 1)
        return found

    def trust_history(self, r: int, enabled: bool) -> list[dict[str, float]]:
        """The screen's trust input for round ``r``: the trust scores of the finalized rounds
        before it that any voter scored, oldest first. Public and final, so the aggregator and
        every voter read the same history, and each process reads a finalized round once."""
        history: list[dict[str, float]] = []
        if not enabled:
            return history
        for k in range(r):
            scored = self.finalized_trust.get(k)
            if scored is None:
                if self.client.phase_of(self.task_id, k) is not Phase.FINALIZED:
                    continue
                scored = self.finalized_trust.setdefault(k, self.round_view(k).trust)
            if scored:
                history.append(scored)
        return history
