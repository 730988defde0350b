// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title The part of a VRF v2.5 coordinator a consumer calls, written from its published ABI
/// @notice A consumer asks `requestRandomWords` for `numWords` words under a key hash, paid by
///         a subscription, and the coordinator later calls the consumer's
///         `rawFulfillRandomWords(requestId, randomWords)` with words and a proof it verified.
/// @dev extraArgs is the 4-byte tag keccak256("VRF ExtraArgsV1") followed by the ABI encoding
///      of `(bool nativePayment)`: pay in the native token or in LINK.
interface IVRFCoordinatorV2Plus {
    /// @notice What a consumer asks for.
    struct RandomWordsRequest {
        bytes32 keyHash;
        uint256 subId;
        uint16 requestConfirmations;
        uint32 callbackGasLimit;
        uint32 numWords;
        bytes extraArgs;
    }

    /// @notice Request random words; the coordinator answers in a later block.
    function requestRandomWords(RandomWordsRequest calldata req)
        external
        returns (uint256 requestId);
}
