"""Typed client of FlockToken and FlockAlliance: deploy, tasks, stake, rounds, votes, claims.

A deployment is the token, the StakeVault holding every token, a seed source (FutureBlockSeed
unless one is given), the AllianceLogic library and FlockAlliance linked to it. Participants
approve the alliance, which moves their tokens into the vault.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeVar, cast

from eth_utils.address import to_checksum_address
from web3.contract import Contract
from web3.exceptions import Web3RPCError
from web3.logs import DISCARD

from flock_pipeline.chain.artifacts import CONTRACT_NAMES, load_artifact
from flock_pipeline.chain.backends import Chain
from flock_pipeline.chain.errors import ChainSetupError
from flock_pipeline.chain.structs import (
    Outcome,
    ParticipantStake,
    Phase,
    Record,
    Role,
    RoundInfo,
    SeedState,
    Tally,
    TaskConfig,
    TaskState,
    TxResult,
    UpdateView,
    VoteState,
)
from flock_pipeline.chain.transactions import (
    ContractCalls,
    EncodedCall,
    RevertDecoder,
    Signer,
    Transactor,
    in_transit_policy,
)
from flock_pipeline.errors import ConfigError
from flock_pipeline.protocol.settlement import default_deadline
from flock_pipeline.protocol.vote import (
    new_salt,
    validate_contributions,
    validate_score,
    vote_commitment,
)

__all__ = [
    "DEFAULT_CAP",
    "DEFAULT_SEED_DELAY",
    "AllianceClient",
    "Deployment",
    "Vote",
    "deploy",
    "load_or_deploy",
]

DEFAULT_CAP = 1_000_000_000 * 10**18
DEFAULT_SEED_DELAY = 2
"""Blocks from startRound to the block whose hash seeds the round (FutureBlockSeed)."""
_ENUMS: dict[str, type[IntEnum]] = {"outcome": Outcome, "vote": VoteState}
_Struct = TypeVar("_Struct")


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live on one chain, and the sources they were compiled from."""

    chain_id: int
    token: str
    alliance: str
    deployer: str
    vault: str = ""
    seed_source: str = ""
    logic: str = ""
    source_hash: str = ""

    def save(self, path: Path) -> None:
        """Write as JSON (e.g. .flock/chain/deployment.json)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Deployment:
        """Read what save wrote (a record from before a field existed leaves it empty)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})

    @property
    def current(self) -> bool:
        """Whether these contracts are the ones the packaged artifacts describe."""
        return bool(self.vault) and self.source_hash == load_artifact("FlockAlliance").source_hash


@dataclass(frozen=True)
class Vote:
    """A committed vote; keep it (hash, score, salt, contributions) until the reveal phase.

    aggregate_hash is the aggregate the voter recomputed and scored; the round's outcome is
    decided among the votes naming the same hash. contributions[i] is the voter's score of
    update i (submission index), 18-decimal fixed point in [-1, 1]; an accepting vote needs one
    per update, a rejecting one may carry none.
    """

    task_id: int
    round: int
    voter: str
    aggregate_hash: bytes
    score: int
    salt: bytes
    commitment: bytes
    contributions: tuple[int, ...] = ()


def _decoder() -> RevertDecoder:
    return RevertDecoder(load_artifact(n).abi for n in CONTRACT_NAMES)


def _create(
    transactor: Transactor,
    chain: Chain,
    deployer: Signer,
    name: str,
    *args: Any,
    libraries: dict[str, str] | None = None,
) -> str:
    artifact = load_artifact(name)
    code = artifact.linked(libraries or {})
    factory = chain.w3.eth.contract(abi=artifact.abi, bytecode=code)
    result = transactor.send(factory.constructor(*args), deployer)
    return str(transactor.receipt(result.tx_hash)["contractAddress"])


def deploy(
    chain: Chain,
    deployer: Signer,
    cap: int = DEFAULT_CAP,
    seed_delay: int = DEFAULT_SEED_DELAY,
    seed_source: str | None = None,
) -> Deployment:
    """Deploy FlockToken (deployer is admin and minter), the StakeVault, a FutureBlockSeed of
    `seed_delay` blocks (unless `seed_source` names another ISeedSource, e.g. a bound
    VRFSeedSource), AllianceLogic and FlockAlliance, and bind the vault to the alliance."""
    transactor = Transactor(chain.w3, _decoder())
    token = _create(transactor, chain, deployer, "FlockToken", cap, deployer.address)
    vault = _create(transactor, chain, deployer, "StakeVault", token)
    seeds = seed_source or _create(transactor, chain, deployer, "FutureBlockSeed", seed_delay)
    logic = _create(transactor, chain, deployer, "AllianceLogic")
    alliance = _create(
        transactor, chain, deployer, "FlockAlliance", token, vault,
        to_checksum_address(seeds), libraries={"AllianceLogic": logic},
    )  # fmt: skip
    bound = chain.w3.eth.contract(
        address=to_checksum_address(vault), abi=load_artifact("StakeVault").abi
    )
    transactor.send(bound.functions.bind(alliance), deployer)
    return Deployment(
        chain_id=chain.chain_id,
        token=token,
        alliance=alliance,
        deployer=deployer.address,
        vault=vault,
        seed_source=str(to_checksum_address(seeds)),
        logic=logic,
        source_hash=load_artifact("FlockAlliance").source_hash,
    )


def load_or_deploy(chain: Chain, deployer: Signer, path: Path) -> Deployment:
    """Reuse the deployment recorded at `path` if its code is on this chain and is the current
    contracts' (same sources), else deploy anew."""
    if path.exists():
        known = Deployment.load(path)
        if (
            known.current
            and known.chain_id == chain.chain_id
            and chain.w3.eth.get_code(to_checksum_address(known.alliance))
        ):
            return known
    fresh = deploy(chain, deployer)
    fresh.save(path)
    return fresh


class AllianceClient:
    """One account's view of the FLOCK token and the FL Alliance contract.

    Writes are signed by `signer`; reads need no key. `as_signer` gives a client for another
    participant sharing the same connection.
    """

    log_chunk_blocks: int = 10_000
    """Most blocks one ``eth_getLogs`` covers: within what public RPCs accept (Base's public
    endpoints take 10 000); a refused chunk is read again in halves."""

    def __init__(self, chain: Chain, deployment: Deployment, signer: Signer) -> None:
        if chain.chain_id != deployment.chain_id:
            raise ChainSetupError(
                f"deployment is for chain {deployment.chain_id}, connected to {chain.chain_id}"
            )
        if not deployment.seed_source:
            raise ChainSetupError(
                "the deployment record predates the stake vault and the seed source: "
                "deploy the contracts anew (load_or_deploy does)"
            )
        self.chain = chain
        self.deployment = deployment
        self.signer = signer
        self.token: Contract = chain.w3.eth.contract(
            address=to_checksum_address(deployment.token), abi=load_artifact("FlockToken").abi
        )
        self.alliance: Contract = chain.w3.eth.contract(
            address=to_checksum_address(deployment.alliance),
            abi=load_artifact("FlockAlliance").abi,
        )
        # Every ISeedSource answers seedOf alike; FutureBlockSeed's ABI has it.
        self.seeds: Contract = chain.w3.eth.contract(
            address=to_checksum_address(deployment.seed_source),
            abi=load_artifact("FutureBlockSeed").abi,
        )
        self.tx = Transactor(chain.w3, _decoder())
        self._struct_fields: dict[str, list[dict[str, Any]]] = {}
        # What this client sends and reads goes through calls encoded from the ABI once;
        # ``token``, ``alliance`` and ``seeds`` stay web3 contracts for events and callers.
        self._calls = {
            "token": ContractCalls(chain.w3, self.token.address, self.token.abi),
            "alliance": ContractCalls(chain.w3, self.alliance.address, self.alliance.abi),
            "seeds": ContractCalls(chain.w3, self.seeds.address, self.seeds.abi),
        }

    def as_signer(self, signer: Signer) -> AllianceClient:
        """The same contracts, acting as `signer`: the contract objects and the transactor are
        shared (they hold no key; a signer keeps its own nonce), so a federation of clients
        costs one set of ABI lookups, not one per participant."""
        other = copy.copy(self)
        other.signer = signer
        return other

    @property
    def address(self) -> str:
        """The acting account."""
        return self.signer.address

    def _send(self, call: Any) -> TxResult:
        return self.tx.send(call, self.signer)

    def _call(self, call: Any) -> Any:
        try:
            return call.call()
        except self.tx._reverts as exc:
            raise self.tx.decoder.translate(exc) from None

    # -------------------------------------------------------------- token

    def mint(self, to: str, amount: int) -> TxResult:
        """Mint FLOCK (the signer needs MINTER_ROLE)."""
        return self._send(self._calls["token"].mint(to_checksum_address(to), amount))

    def transfer(self, to: str, amount: int) -> TxResult:
        """Transfer FLOCK."""
        return self._send(self._calls["token"].transfer(to_checksum_address(to), amount))

    def total_supply(self) -> int:
        """All FLOCK in existence, in wei."""
        return int(self._call(self._calls["token"].totalSupply()))

    def balance_of(self, address: str | None = None) -> int:
        """FLOCK balance (of the signer by default)."""
        return int(
            self._call(self._calls["token"].balanceOf(to_checksum_address(address or self.address)))
        )

    def _approve(self, amount: int) -> None:
        spender = to_checksum_address(self.deployment.alliance)
        allowance = self._call(self._calls["token"].allowance(self.address, spender))
        if allowance < amount:
            self._send(self._calls["token"].approve(spender, amount))

    # -------------------------------------------------------------- tasks and stake

    def create_task(self, config: TaskConfig) -> tuple[int, TxResult]:
        """Create a task, funding its reward pool from the signer; returns (task id, tx). A
        deadline of 0 becomes protocol.default_deadline from the latest block's timestamp."""
        if config.deadline == 0:
            config = replace(
                config,
                deadline=default_deadline(
                    self.chain.timestamp(), config.rounds, config.training_duration,
                    config.commit_duration, config.reveal_duration,
                ),
            )  # fmt: skip
        self._approve(config.reward_pool)
        result = self._send(self._calls["alliance"].createTask(config.as_abi()))
        (event,) = self.events(result, "TaskCreated")
        return int(event["taskId"]), result

    def stake(
        self, task_id: int, amount: int, num_samples: int = 0, data_hash: bytes = bytes(32)
    ) -> TxResult:
        """Approve and stake `amount` in a task, registering the dataset behind it: its
        number of training samples (the most any of the signer's updates may claim) and its
        hash (protocol.params.dataset_hash of the DVC hash). The first stake must register;
        later ones may pass zeros (keep) or the same values."""
        self._approve(amount)
        return self._send(self._calls["alliance"].stake(task_id, amount, num_samples, data_hash))

    def cancel_task(self, task_id: int) -> TxResult:
        """End the task now (its creator, between rounds): no stake or round from here, the
        pool can be reclaimed."""
        return self._send(self._calls["alliance"].cancelTask(task_id))

    def request_unstake(self, task_id: int, amount: int) -> TxResult:
        """Start unbonding `amount` of active stake."""
        return self._send(self._calls["alliance"].requestUnstake(task_id, amount))

    def withdraw(self, task_id: int) -> TxResult:
        """Withdraw unbonded stake after the delay."""
        return self._send(self._calls["alliance"].withdraw(task_id))

    # -------------------------------------------------------------- rounds

    def start_round(self, task_id: int, draw: bool = True) -> tuple[int, TxResult]:
        """Start the next round and, unless `draw` is False, wait for its seed and draw it;
        returns (round index, the draw's tx, or the start's without `draw`)."""
        result = self._send(self._calls["alliance"].startRound(task_id))
        (event,) = self.events(result, "RoundRequested")
        round_ = int(event["round"])
        if not draw:
            return round_, result
        return round_, self.draw_round(task_id, round_)

    def seed_state(self, task_id: int, round_: int) -> tuple[SeedState, bytes]:
        """What the seed source says of a round's seed: its state and, once ready, the seed."""
        state, seed = self._call(
            self._calls["seeds"].seedOf(self.alliance.address, task_id, round_)
        )
        return SeedState(state), bytes(seed)

    def wait_for_seed(
        self, task_id: int, round_: int, poll: float = 2.0, limit: float = 3_600.0
    ) -> bytes:
        """Block until the round's seed is ready and return it: mine blocks on a dev chain,
        poll on others; renew a lapsed request (a seed past blockhash's reach).

        On a chain that does not mine on its own nothing else makes a future block exist, so
        the dev-chain branch mines exactly the blocks the source still waits for.
        """
        deadline = time.monotonic() + limit
        while True:
            state, seed = self.seed_state(task_id, round_)
            if state is SeedState.READY:
                return seed
            if state is SeedState.LAPSED:
                self._send(self._calls["alliance"].renewSeed(task_id, round_))
            elif state is SeedState.NONE:
                raise ChainSetupError(
                    f"round {round_ + 1} of task {task_id} has no seed request; start it first"
                )
            elif self.chain.kind != "rpc":
                self.chain.mine(self._blocks_to_seed(task_id, round_))
            elif time.monotonic() > deadline:
                raise ChainSetupError(f"no seed for round {round_ + 1} within {limit:.0f} s")
            else:
                time.sleep(poll)

    def _blocks_to_seed(self, task_id: int, round_: int) -> int:
        """Blocks to mine until a FutureBlockSeed request is ready (1 for another source)."""
        try:
            target = int(
                self._calls["seeds"].targetOf(self.alliance.address, task_id, round_).call()
            )
        except self.tx._reverts:
            return 1
        return max(target - int(self.chain.w3.eth.block_number), 1)

    def draw_round(self, task_id: int, round_: int) -> TxResult:
        """Wait for the round's seed (wait_for_seed) and draw it: roles and deadlines exist
        from this transaction."""
        self.wait_for_seed(task_id, round_)
        return self._send(self._calls["alliance"].drawRound(task_id, round_))

    def open_round(self, task_id: int, round_: int) -> RoundInfo:
        """Round `round_` drawn, whatever was done before (crash-safe): started if it was not,
        drawn if it waits for its seed. Returns its info."""
        if self.task_state(task_id).rounds_started <= round_:
            started, _ = self.start_round(task_id, draw=False)
            if started != round_:
                raise ChainSetupError(f"chain started round {started}, expected {round_}")
        if self.phase_of(task_id, round_) is Phase.WAITING_FOR_SEED:
            self.draw_round(task_id, round_)
        return self.round_info(task_id, round_)

    def submit_update(
        self,
        task_id: int,
        round_: int,
        update_hash: bytes,
        num_samples: int,
        *,
        signature_hash: bytes = bytes(32),
    ) -> TxResult:
        """Commit this proposer's update hash and the hash of its signature envelope over it
        (training phase). The chain records the envelope's hash without checking it; every
        reader does, and flags an update whose envelope is missing (zero: unsigned) or wrong."""
        return self._send(
            self._calls["alliance"].submitUpdate(
                task_id, round_, update_hash, signature_hash, num_samples
            )
        )

    def commit_vote(
        self,
        task_id: int,
        round_: int,
        aggregate_hash: bytes,
        score: int,
        salt: bytes | None = None,
        contributions: Sequence[int] = (),
    ) -> tuple[Vote, TxResult]:
        """Commit to an aggregate hash, a fixed-point score in [-1, 1] (see to_fixed; accept
        iff >= 0) and, for an accepting vote, one contribution in [-1, 1] per update of the
        round (by submission index); keep the Vote for the reveal.

        A zero or malformed hash, a wrong count or an out-of-range value raises ConfigError
        before sending: a commitment that cannot be revealed is slashed.
        """
        if len(aggregate_hash) != 32 or not any(aggregate_hash):
            raise ConfigError(
                f"aggregate hash {aggregate_hash.hex() or '(empty)'} must be 32 bytes, not zero"
            )
        validate_score(score)
        updates = self.round_info(task_id, round_).updates
        values = validate_contributions(contributions, updates, accepting=score >= 0)
        salt = salt if salt is not None else new_salt()
        commitment = vote_commitment(
            task_id, round_, self.address, aggregate_hash, score, salt, values
        )
        result = self._send(self._calls["alliance"].commitVote(task_id, round_, commitment))
        vote = Vote(task_id, round_, self.address, aggregate_hash, score, salt, commitment, values)
        return vote, result

    def reveal_vote(self, vote: Vote) -> TxResult:
        """Reveal a committed vote: its hash, score, contributions and salt (reveal phase)."""
        return self._send(
            self._calls["alliance"].revealVote(
                vote.task_id,
                vote.round,
                vote.aggregate_hash,
                vote.score,
                list(vote.contributions),
                vote.salt,
            )
        )

    def finalize_round(self, task_id: int, round_: int) -> TxResult | None:
        """Finalize a round after its reveal deadline; None if it already was (crash-safe)."""
        if self.phase_of(task_id, round_) is Phase.FINALIZED:
            return None
        return self._send(self._calls["alliance"].finalizeRound(task_id, round_))

    def report_no_show(self, task_id: int, round_: int, account: str) -> TxResult:
        """Slash a participant selected in a finalized round that did nothing."""
        return self._send(
            self._calls["alliance"].reportNoShow(task_id, round_, to_checksum_address(account))
        )

    def settle(self, task_id: int, account: str) -> TxResult:
        """Settle `account`'s last finalized round (reward credited or slash taken)."""
        return self._send(self._calls["alliance"].settle(task_id, to_checksum_address(account)))

    def claim(self, task_id: int) -> tuple[int, TxResult]:
        """Pull everything accrued in a task; returns (amount paid, tx). Safe to repeat."""
        result = self._send(self._calls["alliance"].claim(task_id))
        paid = sum(int(e["amount"]) for e in self.events(result, "Claimed"))
        return paid, result

    def reclaim_pool(self, task_id: int) -> tuple[int, TxResult]:
        """Creator takes back the pool left after the last round; returns (amount, tx)."""
        result = self._send(self._calls["alliance"].reclaimPool(task_id))
        (event,) = self.events(result, "PoolReclaimed")
        return int(event["amount"]), result

    # -------------------------------------------------------------- reads

    def task_config(self, task_id: int) -> TaskConfig:
        """The task's creation parameters."""
        return TaskConfig.from_abi(tuple(self._call(self._calls["alliance"].taskParams(task_id))))

    def task_state(self, task_id: int) -> TaskState:
        """The task's progress and token buckets."""
        creator, started, participants, model, pool, staked, allotted, claimable = self._call(
            self._calls["alliance"].taskState(task_id)
        )
        return TaskState(
            creator, started, participants, bytes(model), pool, staked, allotted, claimable
        )

    def round_info(self, task_id: int, round_: int) -> RoundInfo:
        """A round's seed, deadlines, accumulators, settlement and outcome."""
        values = self._call(self._calls["alliance"].roundInfo(task_id, round_))
        return self._struct(RoundInfo, "roundInfo", values)

    def record_of(self, task_id: int, round_: int, account: str | None = None) -> Record:
        """What `account` (the signer by default) did in a round, as proposer and as voter."""
        values = self._call(
            self._calls["alliance"].recordOf(
                task_id, round_, to_checksum_address(account or self.address)
            )
        )
        return self._struct(Record, "recordOf", values)

    def tally_of(self, task_id: int, round_: int, aggregate_hash: bytes) -> Tally:
        """The revealed votes of a round that named `aggregate_hash`."""
        values = self._call(self._calls["alliance"].tallyOf(task_id, round_, aggregate_hash))
        return self._struct(Tally, "tallyOf", values)

    def round_updates(self, task_id: int, round_: int) -> list[UpdateView]:
        """Every update of a round in submission order, scored for its leading hash (one
        call for the whole round)."""
        rows = self._call(self._calls["alliance"].roundUpdates(task_id, round_))
        return [
            self._struct(UpdateView, "roundUpdates", row, index=index)
            for index, row in enumerate(rows)
        ]

    def _struct(self, cls: type[_Struct], function: str, values: Any, **extra: Any) -> _Struct:
        """`cls` from a struct the contract returned, matched by field name to the ABI's
        components (snake_case), so a reordered struct still decodes right."""
        names = [_snake(c["name"]) for c in self._components(function)]
        raw = dict(zip(names, values, strict=True), **extra)
        known = {f.name for f in fields(cast(Any, cls))}
        if set(raw) != known:
            raise ChainSetupError(
                f"{function} returns {sorted(raw)}, the client expects {sorted(known)}: "
                "the contract artifact and the client are out of step"
            )
        for name, value in raw.items():
            if name in _ENUMS:
                raw[name] = _ENUMS[name](value)
            elif isinstance(value, bytes):
                raw[name] = bytes(value)
        return cls(**raw)

    def _components(self, function: str) -> list[dict[str, Any]]:
        """The components of the struct (or struct array) `function` returns (looked up in the
        ABI once per function; clients made with `as_signer` share the lookups)."""
        found = self._struct_fields.get(function)
        if found is None:
            abi = cast(list[dict[str, Any]], self.alliance.abi)
            (entry,) = (e for e in abi if e["type"] == "function" and e["name"] == function)
            found = cast(list[dict[str, Any]], entry["outputs"][0]["components"])
            self._struct_fields[function] = found
        return found

    def participant_of(self, task_id: int, account: str | None = None) -> ParticipantStake:
        """`account`'s stake in a task and its registered dataset."""
        values = self._call(
            self._calls["alliance"].participantOf(
                task_id, to_checksum_address(account or self.address)
            )
        )
        return self._struct(ParticipantStake, "participantOf", values)

    def participants_of(self, task_id: int, accounts: Sequence[str]) -> list[ParticipantStake]:
        """`participant_of` of several accounts, read in one JSON-RPC batch (one round trip
        to the node; an in-process chain has no round trip and reads them one by one)."""
        fn = self._calls["alliance"].participantOf
        found = self._call_many([fn(task_id, to_checksum_address(a)) for a in accounts])
        return [self._struct(ParticipantStake, "participantOf", v) for v in found]

    def roles_of(self, task_id: int, round_: int, accounts: Sequence[str]) -> list[Role]:
        """`role_of` of several accounts in a started round, read in one JSON-RPC batch."""
        fn = self._calls["alliance"].roleOf
        calls = [fn(task_id, round_, to_checksum_address(a)) for a in accounts]
        return [Role(int(v)) for v in self._call_many(calls)]

    def _call_many(self, calls: Sequence[EncodedCall]) -> list[Any]:
        """Several contract reads in one JSON-RPC batch; a revert raises its named error.

        web3 retries a single read that fails in transit (its provider's
        ``exception_retry_configuration``) but never a batch: a batch of reads is retried here
        on the same errors, with the same backoff, as its reads alone would be."""
        if self.chain.kind == "py-evm" or not calls:
            return [self._call(c) for c in calls]
        raw = self._batch([c.request for c in calls])
        return [c.function.decode(bytes(cast(Any, r))) for c, r in zip(calls, raw, strict=True)]

    def _batch(self, requests: Sequence[Callable[[], Any]]) -> list[Any]:
        """One JSON-RPC batch of the requests ``requests`` make (web3 calls made inside its
        ``batch_requests`` context), retried as a whole on the provider's transient errors."""
        attempts, transient, backoff = in_transit_policy(self.chain.w3)
        for attempt in range(attempts):
            try:
                with self.chain.w3.batch_requests() as batch:
                    for request in requests:
                        batch.add(request())
                    return list(batch.execute())
            except self.tx._reverts as exc:
                raise self.tx.decoder.translate(exc) from None
            except transient:
                if attempt == attempts - 1:
                    raise
                time.sleep(backoff * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def role_of(self, task_id: int, round_: int, account: str | None = None) -> Role:
        """The role sortition gives `account` in a started round."""
        return Role(
            self._call(
                self._calls["alliance"].roleOf(
                    task_id, round_, to_checksum_address(account or self.address)
                )
            )
        )

    def stake_at(self, task_id: int, round_: int, account: str | None = None) -> int:
        """`account`'s stake as counted for a round's roles."""
        return int(
            self._call(
                self._calls["alliance"].stakeAt(
                    task_id, to_checksum_address(account or self.address), round_
                )
            )
        )

    def phase_of(self, task_id: int, round_: int) -> Phase:
        """The phase a round is in now."""
        return Phase(self._call(self._calls["alliance"].phaseOf(task_id, round_)))

    def claimable_of(self, task_id: int, account: str | None = None) -> int:
        """Settled, unclaimed tokens of `account`."""
        return int(
            self._call(
                self._calls["alliance"].claimableOf(
                    task_id, to_checksum_address(account or self.address)
                )
            )
        )

    def events(self, result: TxResult, name: str) -> list[dict[str, Any]]:
        """Decoded `name` events of a transaction, as dicts of their arguments."""
        event = getattr(self.alliance.events, name, None) or getattr(self.token.events, name)
        receipt = {"logs": result.logs}  # the logs the send already has: no second request
        return [
            dict(e["args"])
            for e in event().process_receipt(cast(Any, receipt), errors=DISCARD)
            if e["address"] in (self.alliance.address, self.token.address)
        ]

    def round_events(
        self, task_id: int, round_: int, name: str, from_block: int = 0
    ) -> list[dict[str, Any]]:
        """All `name` events of one round (e.g. UpdateSubmitted to recompute the aggregate).
        Each is the event's arguments plus ``blockNumber``, the block that recorded it."""
        return self._logs(name, {"taskId": task_id, "round": round_}, from_block)

    def block_timestamp(self, number: int) -> int:
        """The timestamp of block ``number``: public, the same for every reader."""
        return int(self.chain.w3.eth.get_block(number)["timestamp"])

    def block_timestamps(self, numbers: Iterable[int]) -> dict[int, int]:
        """The timestamps of blocks ``numbers``, in one batch."""
        wanted = sorted(set(numbers))
        if self.chain.kind == "py-evm" or not wanted:
            return {n: self.block_timestamp(n) for n in wanted}
        blocks = self._batch([functools.partial(self.chain.w3.eth.get_block, n) for n in wanted])
        return {n: int(b["timestamp"]) for n, b in zip(wanted, blocks, strict=True)}

    def task_events(self, task_id: int, name: str, from_block: int = 0) -> list[dict[str, Any]]:
        """All `name` events of a task, every round, in one query (e.g. every Settled event
        for the task's report)."""
        return self._logs(name, {"taskId": task_id}, from_block)

    def _logs(self, name: str, filters: dict[str, Any], from_block: int) -> list[dict[str, Any]]:
        """Every ``name`` event from ``from_block`` to the latest block, read in chunks of at
        most ``log_chunk_blocks`` blocks. A chunk the RPC refuses (public RPCs cap the range or
        the result count of ``eth_getLogs``) is read again in halves; a single block refused
        is a ChainSetupError naming the RPC's answer and the fix."""
        event = getattr(self.alliance.events, name)()
        latest = int(self.chain.w3.eth.block_number)
        found: list[dict[str, Any]] = []
        start, span = from_block, max(1, self.log_chunk_blocks)
        while start <= latest:
            end = min(latest, start + span - 1)
            try:
                logs = event.get_logs(from_block=start, to_block=end, argument_filters=filters)
            except Web3RPCError as exc:  # the RPC answered with an error, not our bug
                if end == start:
                    raise ChainSetupError(
                        f"the RPC refuses to return {name} events even for block {start} alone "
                        f"({_rpc_message(exc)}): use an RPC that serves eth_getLogs (an archive "
                        "or a paid endpoint) with chain.url"
                    ) from None
                span = max(1, (end - start + 1) // 2)  # and keep the smaller span after
                continue
            found.extend(dict(log["args"], blockNumber=int(log["blockNumber"])) for log in logs)
            start = end + 1
        return found


def _rpc_message(exc: Exception) -> str:
    """The RPC's own words for an error (web3 wraps its JSON-RPC error object)."""
    detail = exc.args[0] if exc.args else exc
    if isinstance(detail, dict):
        return f"{detail.get('message', detail)} (code {detail.get('code', '?')})"
    return str(detail)[:200]


def _snake(name: str) -> str:
    """camelCase to snake_case (``flagVoterWeight`` -> ``flag_voter_weight``)."""
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in name)
