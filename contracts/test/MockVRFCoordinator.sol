// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IVRFCoordinatorV2Plus} from "../src/IVRFCoordinatorV2Plus.sol";

interface IVRFConsumer {
    function rawFulfillRandomWords(uint256 requestId, uint256[] calldata randomWords) external;
}

/// @notice A local stand-in for a VRF v2.5 coordinator: records requests and lets the test
///         answer them (no proof: the tests check the consumer, not the cryptography).
contract MockVRFCoordinator is IVRFCoordinatorV2Plus {
    struct Pending {
        address consumer;
        RandomWordsRequest req;
    }

    uint256 public lastRequestId;
    mapping(uint256 requestId => Pending) private _pending;

    function requestRandomWords(RandomWordsRequest calldata req)
        external
        returns (uint256 requestId)
    {
        requestId = ++lastRequestId;
        _pending[requestId] = Pending(msg.sender, req);
    }

    function requestOf(uint256 requestId) external view returns (RandomWordsRequest memory) {
        return _pending[requestId].req;
    }

    /// @dev Answer request `requestId` with `word`, as the coordinator would after verifying.
    function fulfil(uint256 requestId, uint256 word) external {
        uint256[] memory words = new uint256[](1);
        words[0] = word;
        IVRFConsumer(_pending[requestId].consumer).rawFulfillRandomWords(requestId, words);
    }
}
