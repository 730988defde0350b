// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./Vm.sol";
import {UpdateDigestHarness} from "./UpdateDigestHarness.sol";
import {UpdateDigest} from "../src/UpdateDigest.sol";

/// @notice UpdateDigest is EIP-712 over the Update type, signatures made by a key recover its
///         address, and malformed signatures recover nobody.
contract UpdateDigestTest is Test {
    uint256 internal constant SECP256K1_N =
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    address internal constant ALLIANCE = address(0xA11CE);

    UpdateDigestHarness internal harness = new UpdateDigestHarness();

    /// @dev EIP-712 written out from the spec, independent of the library's constants.
    function _expected(address alliance, UpdateDigest.Update memory u)
        internal
        view
        returns (bytes32)
    {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256(
                    bytes(
                        "EIP712Domain(string name,string version,uint256 chainId,"
                        "address verifyingContract)"
                    )
                ),
                keccak256(bytes("FlockAlliance")),
                keccak256(bytes("1")),
                block.chainid,
                alliance
            )
        );
        bytes memory fields = abi.encode(
            u.taskId, u.round, u.contentHash, u.numSamples, u.nonce, u.deadline
        );
        bytes32 typehash = keccak256(
            bytes(
                "Update(uint256 taskId,uint256 round,bytes32 contentHash,uint256 numSamples,"
                "uint256 nonce,uint256 deadline)"
            )
        );
        bytes32 structHash = keccak256(bytes.concat(abi.encode(typehash), fields));
        return keccak256(abi.encodePacked(bytes2(0x1901), domain, structHash));
    }

    function _digest(address alliance, UpdateDigest.Update memory u)
        internal
        view
        returns (bytes32)
    {
        return harness.digest(
            alliance, u.taskId, u.round, u.contentHash, u.numSamples, u.nonce, u.deadline
        );
    }

    function _signer(address alliance, UpdateDigest.Update memory u, bytes memory sig)
        internal
        view
        returns (address)
    {
        return harness.signer(
            alliance, u.taskId, u.round, u.contentHash, u.numSamples, u.nonce, u.deadline, sig
        );
    }

    function _key(uint256 seed) internal pure returns (uint256) {
        return 1 + seed % (SECP256K1_N - 1);
    }

    function testFuzz_TheDigestIsEip712OverTheUpdate(
        address alliance,
        UpdateDigest.Update memory u
    ) public view {
        assertTrue(_digest(alliance, u) == _expected(alliance, u), "digest differs from EIP-712");
    }

    function test_TheDigestMatchesTheOnePythonComputes() public view {
        // flock_pipeline.signing.update_digest(chain_id=31337, contract=0x…0A11CE, task_id=7,
        // round_=3, content_hash=0x000102…1f, num_samples=1234, nonce=3, deadline=1.9e9)
        UpdateDigest.Update memory u = UpdateDigest.Update(
            7, 3, 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f, 1234, 3,
            1_900_000_000
        );
        assertEq(block.chainid, 31337, "forge's default chain id");
        assertTrue(
            _digest(ALLIANCE, u)
                == 0x0a29167049fb01aac3db792b3985cc08c293f1c618e755c084dd7e6a232014b0,
            "digest differs from Python's"
        );
    }

    function testFuzz_ASignatureByAKeyRecoversItsAddress(
        uint256 seed,
        UpdateDigest.Update memory u
    ) public view {
        uint256 key = _key(seed);
        bytes32 digest = _digest(ALLIANCE, u);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        assertTrue(ecrecover(digest, v, r, s) == vm.addr(key), "ecrecover");
        assertTrue(_signer(ALLIANCE, u, abi.encodePacked(r, s, v)) == vm.addr(key), "signer");
    }

    function testFuzz_AnyChangedFieldOrContractRecoversAnotherAddress(
        uint256 seed,
        UpdateDigest.Update memory u,
        uint8 which
    ) public view {
        uint256 key = _key(seed);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, _digest(ALLIANCE, u));
        bytes memory sig = abi.encodePacked(r, s, v);
        address alliance = ALLIANCE;
        which %= 7;
        if (which == 0) alliance = address(0xB0B);
        else if (which == 1) u.taskId ^= 1;
        else if (which == 2) u.round ^= 1;
        else if (which == 3) u.contentHash ^= bytes32(uint256(1));
        else if (which == 4) u.numSamples ^= 1;
        else if (which == 5) u.nonce ^= 1;
        else u.deadline ^= 1;
        assertTrue(_signer(alliance, u, sig) != vm.addr(key), "a changed field kept the signer");
    }

    function test_AMalformedSignatureRecoversNobody() public view {
        UpdateDigest.Update memory u = UpdateDigest.Update(1, 2, keccak256("blob"), 10, 2, 99);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(0xA11CE, _digest(ALLIANCE, u));
        bytes32 highS = bytes32(SECP256K1_N - uint256(s));
        uint8 flipped = v == 27 ? 28 : 27;
        assertTrue(_signer(ALLIANCE, u, abi.encodePacked(r, s)) == address(0), "64 bytes");
        assertTrue(_signer(ALLIANCE, u, abi.encodePacked(r, highS, flipped)) == address(0), "high s");
        assertTrue(_signer(ALLIANCE, u, abi.encodePacked(r, s, uint8(29))) == address(0), "v 29");
        assertTrue(_signer(ALLIANCE, u, new bytes(65)) == address(0), "zeros");
    }
}
