"""Chain errors: setup problems and contract reverts decoded into named exceptions."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar

from flock_pipeline.chain.structs import Phase, Role, SeedState
from flock_pipeline.errors import FlockError

__all__ = [
    "ChainError",
    "ChainSetupError",
    "ContractRevert",
    "ContributionOutOfRange",
    "ContributionsMismatch",
    "DuplicateSubmission",
    "DuplicateVote",
    "InsufficientStake",
    "InvalidTaskParameter",
    "NoCommitment",
    "NoUpdates",
    "NotANoShow",
    "NotCreator",
    "NotEnoughParticipants",
    "NotSelected",
    "PendingSettlement",
    "RevealMismatch",
    "RoundFull",
    "RoundInProgress",
    "ScoreOutOfRange",
    "SeedAlreadyRequested",
    "SeedNotLapsed",
    "SeedNotReady",
    "StillUnbonding",
    "TaskClosed",
    "TaskEnded",
    "TaskFull",
    "TooManySamples",
    "TransactionFailed",
    "UnknownTask",
    "WrongPhase",
    "ZeroValue",
    "revert_class",
]


class ChainError(FlockError):
    """Something on or about the chain went wrong."""


class ChainSetupError(ChainError):
    """The chain cannot be reached or prepared: node missing, anvil not running, no key."""


class TransactionFailed(ChainError):
    """A transaction was mined but failed, or could not be sent, without a decodable reason."""


class ContractRevert(ChainError):
    """A contract call reverted with a custom error; `error` is its Solidity name."""

    error: ClassVar[str] = ""
    hint: ClassVar[str] = ""
    enums: ClassVar[dict[str, type[IntEnum]]] = {}

    def __init__(self, name: str, args: dict[str, Any]) -> None:
        self.name = name
        self._raw_args = args
        self.args_by_name = {key: self._readable(key, value) for key, value in args.items()}
        shown = ", ".join(
            f"{key}={value.name if isinstance(value, IntEnum) else value}"
            for key, value in self.args_by_name.items()
        )
        message = f"contract reverted with {name}({shown})"
        if self.hint:
            message += f": {self.hint}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, e.g. across Prefect task workers
        return (self.__class__, (self.name, self._raw_args))

    def _readable(self, key: str, value: Any) -> Any:
        if key in self.enums:
            return self.enums[key](value)
        if isinstance(value, bytes) and len(value) == 32 and value.rstrip(b"\0").isascii():
            return value.rstrip(b"\0").decode()  # short names passed as bytes32
        return value


class UnknownTask(ContractRevert):
    error = "UnknownTask"
    hint = "no task has this id; check the task id and the contract address"


class InvalidTaskParameter(ContractRevert):
    error = "InvalidTaskParameter"
    hint = "fix the named task parameter"


class WrongPhase(ContractRevert):
    error = "WrongPhase"
    enums: ClassVar[dict[str, type[IntEnum]]] = {"expected": Phase, "actual": Phase}
    hint = "the round is not in the phase this call needs; wait for the deadline or the next round"


class InsufficientStake(ContractRevert):
    error = "InsufficientStake"
    hint = "stake at least the required amount"


class TaskFull(ContractRevert):
    error = "TaskFull"
    hint = "the task already has its maximum number of participants"


class NotEnoughParticipants(ContractRevert):
    error = "NotEnoughParticipants"
    hint = "wait until enough participants have staked"


class TaskClosed(ContractRevert):
    error = "TaskClosed"
    hint = "every round of this task has already started"


class TaskEnded(ContractRevert):
    error = "TaskEnded"
    hint = (
        "the task's deadline has passed or its creator cancelled it: no new stake or round; "
        "claim rewards and unstake"
    )


class RoundInProgress(ContractRevert):
    error = "RoundInProgress"
    hint = "a round of this task is under way; finalize it first"


class SeedNotReady(ContractRevert):
    error = "SeedNotReady"
    enums: ClassVar[dict[str, type[IntEnum]]] = {"state": SeedState}
    hint = "the round's seed is not ready yet; wait for it (AllianceClient.wait_for_seed)"


class SeedNotLapsed(ContractRevert):
    error = "SeedNotLapsed"
    enums: ClassVar[dict[str, type[IntEnum]]] = {"state": SeedState}
    hint = "the round's seed request is still live; only a lapsed one can be renewed"


class SeedAlreadyRequested(ContractRevert):
    error = "SeedAlreadyRequested"
    hint = "a seed request for this round is outstanding and has not lapsed"


class NotSelected(ContractRevert):
    error = "NotSelected"
    enums: ClassVar[dict[str, type[IntEnum]]] = {"required": Role}
    hint = "sortition did not give this account that role in this round"


class DuplicateSubmission(ContractRevert):
    error = "DuplicateSubmission"
    hint = "this account already submitted an update in this round"


class TooManySamples(ContractRevert):
    error = "TooManySamples"
    hint = (
        "an update may claim at most the samples its proposer registered when it staked; "
        "claim the real count (or re-register between rounds)"
    )


class DuplicateVote(ContractRevert):
    error = "DuplicateVote"
    hint = "this account already committed a vote in this round"


class RoundFull(ContractRevert):
    error = "RoundFull"
    hint = "the round already holds the most updates it takes"


class NoUpdates(ContractRevert):
    error = "NoUpdates"
    hint = "no update was submitted in this round, so there is nothing to vote on"


class NoCommitment(ContractRevert):
    error = "NoCommitment"
    hint = "commit a vote in the commit phase before revealing it"


class RevealMismatch(ContractRevert):
    error = "RevealMismatch"
    hint = (
        "the hash, score, contributions and salt do not match the commitment; "
        "reveal what was committed"
    )


class ScoreOutOfRange(ContractRevert):
    error = "ScoreOutOfRange"
    hint = "the score must lie in [-1, 1] as 18-decimal fixed point (see to_fixed)"


class ContributionsMismatch(ContractRevert):
    error = "ContributionsMismatch"
    hint = (
        "an accepting vote needs one contribution per submitted update (by submission index); "
        "a rejecting vote may carry none; commit the count the round expects"
    )


class ContributionOutOfRange(ContractRevert):
    error = "ContributionOutOfRange"
    hint = "each contribution must lie in [-1, 1] as 18-decimal fixed point (see to_fixed)"


class NotANoShow(ContractRevert):
    error = "NotANoShow"
    hint = "the account acted in that round or was not selected"


class PendingSettlement(ContractRevert):
    error = "PendingSettlement"
    hint = "the account's last round is not finalized yet; finalize it first"


class StillUnbonding(ContractRevert):
    error = "StillUnbonding"
    hint = "the unbonding delay has not passed yet"


class ZeroValue(ContractRevert):
    error = "ZeroValue"
    hint = "zero amounts and zero hashes are refused"


class NotCreator(ContractRevert):
    error = "NotCreator"
    hint = "only the task's creator may do this"


_BY_NAME: dict[str, type[ContractRevert]] = {
    cls.error: cls for cls in ContractRevert.__subclasses__() if cls.error
}


def revert_class(name: str) -> type[ContractRevert]:
    """The exception class for a Solidity custom error name (ContractRevert if unnamed here)."""
    return _BY_NAME.get(name, ContractRevert)
