// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Stake-weighted sortition
/// @notice Anyone can tell an account's role in a round from (seed, account, stake, total stake)
///         alone: no list of participants, no loop.
/// @dev Each account makes two independent draws, u_d = top 64 bits of
///      keccak256(abi.encode(seed, account, uint8 d)), uniform in [0, 2^64): d = 0 for the
///      proposer draw, d = 1 for the voter draw. With s = stake and S = total stake of the round
///      it is a proposer when u_0 / 2^64 < proposers * s / S and a voter when
///      u_1 / 2^64 < voters * s / S; it may be both. The expected number of proposers (voters) is
///      therefore `proposers` (`voters`) whatever the stake distribution, and an account's odds
///      grow linearly with its stake (capped at 1).
///      Bounds: stake and total stake fit 128 bits and the counts fit 16 bits, so no product
///      overflows 256 bits.
///
///      Stake counts once: a selected role is weighted by `weight`, max(stake, ceil(S / k)),
///      the inverse of its odds min(1, k * stake / S) times its stake (Horvitz-Thompson). The
///      expected weight of an account in a role is then its stake (up to one wei of rounding),
///      so votes, update weights and pay grow linearly with stake, not with its square.
library Sortition {
    /// @notice A participant's role in one round.
    enum Role {
        None,
        Proposer,
        Voter,
        Both
    }

    /// @notice Domain of the proposer draw.
    uint8 internal constant PROPOSER_DOMAIN = 0;
    /// @notice Domain of the voter draw.
    uint8 internal constant VOTER_DOMAIN = 1;

    /// @notice The account's uniform draw in [0, 2^64) for this seed and domain.
    function draw(bytes32 seed, address account, uint8 domain) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed, account, domain))) >> 192;
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
        bool proposer =
            draw(seed, account, PROPOSER_DOMAIN) * totalStake < (proposers * stake) << 64;
        bool voter = draw(seed, account, VOTER_DOMAIN) * totalStake < (voters * stake) << 64;
        if (proposer) return voter ? Role.Both : Role.Proposer;
        return voter ? Role.Voter : Role.None;
    }

    /// @notice The weight of a role held with `stake` out of `totalStake`, `count` expected
    ///         holders per round: max(stake, ceil(totalStake / count)).
    function weight(uint256 stake, uint256 totalStake, uint256 count)
        internal
        pure
        returns (uint256)
    {
        uint256 least = (totalStake + count - 1) / count;
        return stake > least ? stake : least;
    }

    /// @notice Whether `role` may submit an update.
    function proposes(Role role) internal pure returns (bool) {
        return role == Role.Proposer || role == Role.Both;
    }

    /// @notice Whether `role` may vote.
    function votes(Role role) internal pure returns (bool) {
        return role == Role.Voter || role == Role.Both;
    }
}
