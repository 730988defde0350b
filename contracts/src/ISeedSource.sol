// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Where a round's seed comes from
/// @notice The alliance asks for the seed of (taskId, round) when the round starts and pulls
///         it once it is ready. A requester only ever reads its own requests, so one source can
///         serve several alliances. Until a seed is ready nobody, the requester included, can
///         know it: that is what keeps a caller of startRound from checking its role and
///         reverting.
interface ISeedSource {
    /// @notice Where a request stands. Lapsed: it can no longer be fulfilled (a future block
    ///         too old for blockhash, a VRF request never answered); request it again.
    enum SeedState {
        None,
        Pending,
        Ready,
        Lapsed
    }

    /// @notice A seed was requested for (requester, taskId, round).
    event SeedRequested(
        address indexed requester, uint256 indexed taskId, uint256 indexed round, uint256 ref
    );

    /// @notice A request is already outstanding and has not lapsed.
    error SeedAlreadyRequested(address requester, uint256 taskId, uint256 round);

    /// @notice Ask for the seed of the caller's (taskId, round); again only once lapsed.
    function requestSeed(uint256 taskId, uint256 round) external;

    /// @notice The state of `requester`'s request and, once Ready, its seed (zero otherwise).
    function seedOf(address requester, uint256 taskId, uint256 round)
        external
        view
        returns (SeedState state, bytes32 seed);
}
