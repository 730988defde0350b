// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AllianceFixture} from "./AllianceFixture.sol";
import {FlockAlliance} from "../src/FlockAlliance.sol";
import {Sortition} from "../src/Sortition.sol";

contract FlockAllianceTest is AllianceFixture {
    bytes32 internal constant AGGREGATE = keccak256("aggregate");

    function _submitAndPost(uint256 id, address[] memory proposers) internal {
        for (uint256 i = 0; i < proposers.length; i++) {
            vm.prank(proposers[i]);
            alliance.submitUpdate(id, 0, keccak256(abi.encode(i)), 100);
        }
        _to(id, 0, FlockAlliance.Phase.Committing);
        vm.prank(proposers[0]);
        alliance.postAggregate(id, 0, AGGREGATE);
    }

    function _vote(uint256 id, address voter, int128 score, bytes32 salt) internal {
        bytes32 commitment = alliance.voteCommitment(id, 0, voter, score, salt);
        vm.prank(voter);
        alliance.commitVote(id, 0, commitment);
    }

    function test_HonestRoundIsAcceptedPaidAndConserved() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAndPost(id, proposers);
        for (uint256 i = 0; i < voters.length; i++) _vote(id, voters[i], 5e16, bytes32(i));
        _to(id, 0, FlockAlliance.Phase.Revealing);
        for (uint256 i = 0; i < voters.length; i++) {
            vm.prank(voters[i]);
            alliance.revealVote(id, 0, 5e16, bytes32(i));
        }
        _to(id, 0, FlockAlliance.Phase.Finalizable);
        vm.prank(keeper);
        alliance.finalizeRound(id, 0);
        uint256 paid;
        for (uint256 i = 0; i < people.length; i++) {
            vm.prank(people[i]);
            paid += alliance.claim(id);
        }
        assertEq(paid, POOL / 3, "the whole round reward is paid");
        assertTrue(alliance.taskState(id).globalModelHash == AGGREGATE, "model advances");
        assertEq(token.balanceOf(address(alliance)), _bucketTotal(), "conservation");
    }

    function test_NoDoubleClaim() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAndPost(id, proposers);
        _vote(id, voters[0], 1, bytes32(0));
        _to(id, 0, FlockAlliance.Phase.Revealing);
        vm.prank(voters[0]);
        alliance.revealVote(id, 0, 1, bytes32(0));
        _to(id, 0, FlockAlliance.Phase.Finalizable);
        alliance.finalizeRound(id, 0);
        vm.prank(proposers[0]);
        uint256 first = alliance.claim(id);
        uint256 balance = token.balanceOf(proposers[0]);
        vm.prank(proposers[0]);
        uint256 second = alliance.claim(id);
        assertTrue(first > 0, "first claim pays");
        assertEq(second, 0, "second claim pays nothing");
        assertEq(token.balanceOf(proposers[0]), balance, "balance unchanged");
        vm.expectPartialRevert(FlockAlliance.WrongPhase.selector);
        alliance.finalizeRound(id, 0);
    }

    function testFuzz_NoFinalizeBeforeTheRevealDeadline(uint256 elapsed) public {
        (uint256 id,,) = _openRound();
        FlockAlliance.Round memory r = alliance.roundInfo(id, 0);
        uint256 started = r.trainingEnds - 600;
        elapsed = elapsed % (r.revealEnds - started);
        vm.warp(started + elapsed);
        vm.expectPartialRevert(FlockAlliance.WrongPhase.selector);
        alliance.finalizeRound(id, 0);
    }

    function testFuzz_NoRevealWithoutAMatchingCommit(
        int128 score,
        bytes32 salt,
        int128 otherScore,
        bytes32 otherSalt
    ) public {
        vm.assume(score != otherScore || salt != otherSalt);
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAndPost(id, proposers);
        _vote(id, voters[0], score, salt);
        _to(id, 0, FlockAlliance.Phase.Revealing);
        vm.prank(voters[0]);
        vm.expectPartialRevert(FlockAlliance.RevealMismatch.selector);
        alliance.revealVote(id, 0, otherScore, otherSalt);
        vm.prank(voters[1]);
        vm.expectPartialRevert(FlockAlliance.NoCommitment.selector);
        alliance.revealVote(id, 0, score, salt);
        vm.prank(voters[0]);
        alliance.revealVote(id, 0, score, salt);
    }

    function testFuzz_NoRewardToAnAddressThatWasNotSelected(address outsider, uint256 seed)
        public
    {
        vm.assume(outsider.code.length == 0 && uint160(outsider) > 0x10000);
        vm.assume(outsider != creator && outsider != keeper);
        _fund(outsider, 10 ether);
        vm.prank(creator);
        uint256 id = alliance.createTask(_params(2));
        for (uint256 i = 0; i < people.length; i++) {
            vm.prank(people[i]);
            alliance.stake(id, STAKE);
        }
        vm.prank(outsider);
        alliance.stake(id, 10 ether);
        vm.prevrandao(bytes32(seed));
        alliance.startRound(id);
        vm.assume(alliance.roleOf(id, 0, outsider) == Sortition.Role.None);
        vm.prank(outsider);
        vm.expectPartialRevert(FlockAlliance.NotSelected.selector);
        alliance.submitUpdate(id, 0, keccak256("sneaky"), 1);
        (address[] memory proposers, address[] memory voters) = _roles(id, 0);
        for (uint256 i = 0; i < proposers.length; i++) {
            vm.prank(proposers[i]);
            alliance.submitUpdate(id, 0, keccak256(abi.encode(i)), 100);
        }
        _to(id, 0, FlockAlliance.Phase.Finalizable);
        vm.prank(keeper);
        alliance.finalizeRound(id, 0);
        vm.prank(outsider);
        assertEq(alliance.claim(id), 0, "an unselected address earns nothing");
        assertEq(alliance.participantOf(id, outsider).active, 10 ether, "and loses nothing");
        vm.expectPartialRevert(FlockAlliance.NotANoShow.selector);
        alliance.reportNoShow(id, 0, outsider);
    }

    function test_UnknownTaskAndInsufficientStakeAreNamed() public {
        vm.expectRevert(abi.encodeWithSelector(FlockAlliance.UnknownTask.selector, 42));
        alliance.stake(42, STAKE);
        vm.prank(creator);
        uint256 id = alliance.createTask(_params(1));
        vm.prank(people[0]);
        vm.expectRevert(
            abi.encodeWithSelector(FlockAlliance.InsufficientStake.selector, 10 ether, 1 ether)
        );
        alliance.stake(id, 1 ether);
    }
}
