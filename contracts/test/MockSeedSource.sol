// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ISeedSource} from "../src/ISeedSource.sol";

/// @notice A seed source the test decides: requests wait until the test fulfils them with a
///         seed of its choice (or lets them lapse), so a test can give a round the roles it
///         needs without depending on block hashes.
contract MockSeedSource is ISeedSource {
    mapping(bytes32 key => SeedState) private _states;
    mapping(bytes32 key => bytes32) private _seeds;

    function requestSeed(uint256 taskId, uint256 round) external {
        bytes32 key = keccak256(abi.encode(msg.sender, taskId, round));
        SeedState state = _states[key];
        if (state == SeedState.Pending || state == SeedState.Ready) {
            revert SeedAlreadyRequested(msg.sender, taskId, round);
        }
        _states[key] = SeedState.Pending;
        delete _seeds[key];
        emit SeedRequested(msg.sender, taskId, round, 0);
    }

    function seedOf(address requester, uint256 taskId, uint256 round)
        external
        view
        returns (SeedState state, bytes32 seed)
    {
        bytes32 key = keccak256(abi.encode(requester, taskId, round));
        state = _states[key];
        if (state == SeedState.Ready) seed = _seeds[key];
    }

    /// @dev Answer a pending request with `seed`.
    function fulfil(address requester, uint256 taskId, uint256 round, bytes32 seed) external {
        bytes32 key = keccak256(abi.encode(requester, taskId, round));
        require(_states[key] == SeedState.Pending, "not pending");
        _states[key] = SeedState.Ready;
        _seeds[key] = seed;
    }

    /// @dev Let a pending request lapse.
    function lapse(address requester, uint256 taskId, uint256 round) external {
        bytes32 key = keccak256(abi.encode(requester, taskId, round));
        require(_states[key] == SeedState.Pending, "not pending");
        _states[key] = SeedState.Lapsed;
    }
}
