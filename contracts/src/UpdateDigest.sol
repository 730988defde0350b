// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";

/// @title The EIP-712 digest a proposer signs over its update
/// @notice The same digest as flock_pipeline.signing.update_digest: the domain is
///         ("FlockAlliance", "1", block.chainid, the alliance), the primary type
///         Update(uint256 taskId,uint256 round,bytes32 contentHash,uint256 numSamples,
///         uint256 nonce,uint256 deadline), with contentHash the sha256 of the update's bytes
///         (the hash committed by submitUpdate) and nonce the round.
/// @dev Internal functions only: a contract that uses them inlines them, so nothing is deployed
///      for the library itself and FlockAlliance's size is unchanged until it calls them.
library UpdateDigest {
    /// @notice keccak256 of the EIP-712 domain type.
    bytes32 internal constant DOMAIN_TYPEHASH = keccak256(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    );
    /// @notice keccak256 of the Update type.
    bytes32 internal constant UPDATE_TYPEHASH = keccak256(
        "Update(uint256 taskId,uint256 round,bytes32 contentHash,uint256 numSamples,"
        "uint256 nonce,uint256 deadline)"
    );
    /// @notice keccak256 of the domain's name, "FlockAlliance".
    bytes32 internal constant NAME_HASH = keccak256("FlockAlliance");
    /// @notice keccak256 of the domain's version, "1".
    bytes32 internal constant VERSION_HASH = keccak256("1");

    /// @notice The signed fields of an update.
    struct Update {
        uint256 taskId;
        uint256 round;
        bytes32 contentHash;
        uint256 numSamples;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice The domain separator of `alliance` on this chain.
    function domainSeparator(address alliance) internal view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, alliance)
        );
    }

    /// @notice EIP-712's hashStruct of `u`.
    function structHash(Update memory u) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(
                UPDATE_TYPEHASH, u.taskId, u.round, u.contentHash, u.numSamples, u.nonce, u.deadline
            )
        );
    }

    /// @notice The digest a proposer signs for `u` under `alliance` on this chain.
    function digest(address alliance, Update memory u) internal view returns (bytes32) {
        return MessageHashUtils.toTypedDataHash(domainSeparator(alliance), structHash(u));
    }

    /// @notice Who signed `u` under `alliance`, or address(0) for a malformed signature (not 65
    ///         bytes, s in the upper half, v not 27/28) or one that recovers no key.
    function signer(address alliance, Update memory u, bytes memory signature)
        internal
        view
        returns (address)
    {
        (address recovered, ECDSA.RecoverError failure,) =
            ECDSA.tryRecover(digest(alliance, u), signature);
        return failure == ECDSA.RecoverError.NoError ? recovered : address(0);
    }
}
