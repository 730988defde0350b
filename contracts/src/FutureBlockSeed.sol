// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ISeedSource} from "./ISeedSource.sol";

/// @title Seed from the hash of a block that did not exist when the round started
/// @notice A request fixes the target block `block.number + delay`. The seed is ready once that
///         block is mined (block.number > target) and is
///         keccak256(abi.encode(blockhash(target), requester, taskId, round)). blockhash only
///         reaches 256 blocks back: a request left unread that long lapses and can be renewed
///         (a fresh target), so a round never stays stuck.
/// @dev Bias. Whoever builds block `target` can try different contents (transaction order,
///      extra data) and publish the block whose hash it likes, and its proposer can withhold it
///      at the cost of the block reward: on L1 that is the one party that can steer the seed,
///      for one block. On an L2 with a single sequencer (Base), the sequencer builds every block
///      and can choose the seed outright. Production tasks with real value use VRFSeedSource.
contract FutureBlockSeed is ISeedSource {
    /// @notice Blocks between a request and its target block (at least 1).
    uint256 public immutable delay;

    mapping(bytes32 key => uint256 target) private _targets;

    /// @notice `delay` is zero.
    error ZeroDelay();

    /// @param delay_ Blocks from a request to its target block.
    constructor(uint256 delay_) {
        if (delay_ == 0) revert ZeroDelay();
        delay = delay_;
    }

    /// @inheritdoc ISeedSource
    function requestSeed(uint256 taskId, uint256 round) external {
        bytes32 key = _key(msg.sender, taskId, round);
        uint256 target = _targets[key];
        if (target != 0 && _state(target) != SeedState.Lapsed) {
            revert SeedAlreadyRequested(msg.sender, taskId, round);
        }
        target = block.number + delay;
        _targets[key] = target;
        emit SeedRequested(msg.sender, taskId, round, target);
    }

    /// @inheritdoc ISeedSource
    function seedOf(address requester, uint256 taskId, uint256 round)
        external
        view
        returns (SeedState state, bytes32 seed)
    {
        uint256 target = _targets[_key(requester, taskId, round)];
        if (target == 0) return (SeedState.None, bytes32(0));
        state = _state(target);
        if (state == SeedState.Ready) {
            seed = keccak256(abi.encode(blockhash(target), requester, taskId, round));
        }
    }

    /// @notice The target block of `requester`'s request (0: none).
    function targetOf(address requester, uint256 taskId, uint256 round)
        external
        view
        returns (uint256)
    {
        return _targets[_key(requester, taskId, round)];
    }

    function _state(uint256 target) private view returns (SeedState) {
        if (block.number <= target) return SeedState.Pending;
        if (block.number - target > 256) return SeedState.Lapsed;
        return SeedState.Ready;
    }

    function _key(address requester, uint256 taskId, uint256 round)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(requester, taskId, round));
    }
}
