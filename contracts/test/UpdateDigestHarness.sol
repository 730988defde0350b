// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {UpdateDigest} from "../src/UpdateDigest.sol";

/// @notice Exposes UpdateDigest for the cross-language test (tests/chain/test_update_digest.py)
///         and the forge test: a test contract, never deployed by the package.
contract UpdateDigestHarness {
    /// @notice UpdateDigest.digest of the fields under `alliance` on this chain.
    function digest(
        address alliance,
        uint256 taskId,
        uint256 round,
        bytes32 contentHash,
        uint256 numSamples,
        uint256 nonce,
        uint256 deadline
    ) external view returns (bytes32) {
        return UpdateDigest.digest(
            alliance, UpdateDigest.Update(taskId, round, contentHash, numSamples, nonce, deadline)
        );
    }

    /// @notice UpdateDigest.signer of the fields and `signature` under `alliance`.
    function signer(
        address alliance,
        uint256 taskId,
        uint256 round,
        bytes32 contentHash,
        uint256 numSamples,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external view returns (address) {
        UpdateDigest.Update memory u =
            UpdateDigest.Update(taskId, round, contentHash, numSamples, nonce, deadline);
        return UpdateDigest.signer(alliance, u, signature);
    }

    /// @notice UpdateDigest.domainSeparator of `alliance` on this chain.
    function domainSeparator(address alliance) external view returns (bytes32) {
        return UpdateDigest.domainSeparator(alliance);
    }
}
