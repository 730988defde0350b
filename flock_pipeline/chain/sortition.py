"""Stake-weighted sortition; the rule lives in flock_pipeline.protocol.roles."""

from __future__ import annotations

from flock_pipeline.protocol.roles import Role, draw, is_proposer, is_voter, role_of

__all__ = ["Role", "draw", "is_proposer", "is_voter", "role_of"]
