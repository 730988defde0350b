// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Stake-weighted sortition
/// @notice Anyone can tell an account's role in a round from (seed, account, stake, total stake)
///         alone: no list of participants, no loop.
/// @dev Each account draws u = top 64 bits of keccak256(seed, account), a uniform number in
///      [0, 2^64). With s = stake and S = total stake of the round it is a proposer when
///      u / 2^64 < proposers * s / S and otherwise a voter when u / 2^64 < (proposers + voters) * s / S.
///      The expected number of proposers (voters) is therefore `proposers` (`voters`) whatever the
///      stake distribution, and an account's odds grow linearly with its stake (capped at 1).
///      Bounds: stake and total stake fit 128 bits and the counts fit 16 bits, so no product
///      overflows 256 bits.
library Sortition {
    /// @notice A participant's role in one round.
    enum Role {
        None,
        Proposer,
        Voter
    }

    /// @notice The account's uniform draw in [0, 2^64) for this seed.
    function draw(bytes32 seed, address account) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed, account))) >> 192;
    }

    /// @notice The role of `account` with `stake` out of `totalStake` under `seed`.
    function roleOf(
        bytes32 seed,
        address account,
        uint256 stake,
        uint256 totalStake,
        uint256 proposers,
        uint256 voters
    ) internal pure returns (Role) {
        if (stake == 0 || totalStake == 0) return Role.None;
        uint256 scaled = draw(seed, account) * totalStake;
        if (scaled < (proposers * stake) << 64) return Role.Proposer;
        if (scaled < ((proposers + voters) * stake) << 64) return Role.Voter;
        return Role.None;
    }
}
