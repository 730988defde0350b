"""Chain adapter: FLOCK token and FL Alliance contracts, a typed web3 client, local nodes.

Backends: in-process py-evm (tests), a managed anvil on loopback (the default chain, state kept
under the data folder) and any JSON-RPC URL with the key taken from an environment variable.
"""

from __future__ import annotations

from flock_pipeline.chain.backends import (
    DEFAULT_KEY_ENV,
    Chain,
    connect,
    dev_signers,
    in_process,
    signer_from_env,
)
from flock_pipeline.chain.client import AllianceClient, Deployment, Vote, deploy, load_or_deploy
from flock_pipeline.chain.errors import ChainError, ChainSetupError, ContractRevert
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
from flock_pipeline.chain.transactions import Signer
from flock_pipeline.protocol.roles import role_of
from flock_pipeline.protocol.vote import (
    SCORE_SCALE,
    from_fixed,
    new_salt,
    to_fixed,
    validate_contributions,
    validate_score,
    vote_commitment,
)

__all__ = [
    "DEFAULT_KEY_ENV",
    "SCORE_SCALE",
    "AllianceClient",
    "Chain",
    "ChainError",
    "ChainSetupError",
    "ContractRevert",
    "Deployment",
    "Outcome",
    "ParticipantStake",
    "Phase",
    "Record",
    "Role",
    "RoundInfo",
    "SeedState",
    "Signer",
    "Tally",
    "TaskConfig",
    "TaskState",
    "TxResult",
    "UpdateView",
    "Vote",
    "VoteState",
    "connect",
    "deploy",
    "dev_signers",
    "from_fixed",
    "in_process",
    "load_or_deploy",
    "new_salt",
    "role_of",
    "signer_from_env",
    "to_fixed",
    "validate_contributions",
    "validate_score",
    "vote_commitment",
]
