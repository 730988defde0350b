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
        _vote(id, voter, score, _pair(1e18, 1e18), salt);
    }

    function _vote(uint256 id, address voter, int128 score, int128[] memory cs, bytes32 salt)
        internal
    {
        bytes32 commitment = alliance.voteCommitment(id, 0, voter, score, cs, salt);
        vm.prank(voter);
        alliance.commitVote(id, 0, commitment);
    }

    function _reveal(uint256 id, address voter, int128 score, int128[] memory cs, bytes32 salt)
        internal
    {
        vm.prank(voter);
        alliance.revealVote(id, 0, score, cs, salt);
    }

    function _pair(int128 a, int128 b) internal pure returns (int128[] memory cs) {
        cs = new int128[](2);
        cs[0] = a;
        cs[1] = b;
    }

    function test_HonestRoundIsAcceptedPaidAndConserved() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAndPost(id, proposers);
        for (uint256 i = 0; i < voters.length; i++) _vote(id, voters[i], 5e16, bytes32(i));
        _to(id, 0, FlockAlliance.Phase.Revealing);
        for (uint256 i = 0; i < voters.length; i++) {
            _reveal(id, voters[i], 5e16, _pair(1e18, 1e18), bytes32(i));
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
        _reveal(id, voters[0], 1, _pair(1e18, 1e18), bytes32(0));
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
        int128[] memory cs = _pair(1e18, 1e18);
        vm.prank(voters[0]);
        vm.expectPartialRevert(FlockAlliance.RevealMismatch.selector);
        alliance.revealVote(id, 0, otherScore, cs, otherSalt);
        vm.prank(voters[0]);
        vm.expectPartialRevert(FlockAlliance.RevealMismatch.selector);
        alliance.revealVote(id, 0, score, _pair(1e18, 0), salt);
        vm.prank(voters[1]);
        vm.expectPartialRevert(FlockAlliance.NoCommitment.selector);
        alliance.revealVote(id, 0, score, cs, salt);
        _reveal(id, voters[0], score, cs, salt);
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

    // ------------------------------------------------------------ contribution-based rewards

    uint256 internal constant PROPOSER_POT = POOL / 3 / 2; // round 0 of 3, proposerRewardBps 50 %

    /// @dev Plays round 0: both proposers submit (index = position), each voter commits and
    ///      reveals `scores[i]` with `cs[i]`, the keeper finalizes.
    function _play(
        uint256 id,
        address[] memory proposers,
        address[] memory voters,
        int128[] memory scores,
        int128[][] memory cs
    ) internal {
        _submitAndPost(id, proposers);
        for (uint256 i = 0; i < voters.length; i++) {
            _vote(id, voters[i], scores[i], cs[i], bytes32(i + 1));
        }
        _to(id, 0, FlockAlliance.Phase.Revealing);
        for (uint256 i = 0; i < voters.length; i++) {
            _reveal(id, voters[i], scores[i], cs[i], bytes32(i + 1));
        }
        _to(id, 0, FlockAlliance.Phase.Finalizable);
        vm.prank(keeper);
        alliance.finalizeRound(id, 0);
    }

    function _both(int128 score) internal pure returns (int128[] memory scores) {
        scores = new int128[](2);
        scores[0] = score;
        scores[1] = score;
    }

    function _cs(int128[] memory a, int128[] memory b) internal pure returns (int128[][] memory c) {
        c = new int128[][](2);
        c[0] = a;
        c[1] = b;
    }

    function _claim(uint256 id, address who) internal returns (uint256) {
        vm.prank(who);
        return alliance.claim(id);
    }

    function _stakes(uint256 first) internal view returns (uint256[] memory stakes) {
        stakes = new uint256[](people.length);
        for (uint256 i = 0; i < stakes.length; i++) stakes[i] = STAKE;
        stakes[0] = first;
    }

    function test_EqualStakesContributions3To1ArePaid3To1() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        int128[] memory c = _pair(75e16, 25e16);
        _play(id, proposers, voters, _both(5e16), _cs(c, c));
        (address p0, uint128 w0, int256 c0, uint128 f0) = alliance.updateAt(id, 0, 0);
        assertEq(f0, 0, "nobody flagged update 0");
        assertEq(alliance.roundInfo(id, 0).flagVoterWeight, 2 * STAKE, "both voters scored");
        assertTrue(p0 == proposers[0] && w0 == STAKE, "update 0 is the first submission");
        assertEq(uint256(c0), 2 * STAKE * 75e16, "C_0 = sum of voterWeight * c");
        assertEq(alliance.recordOf(id, 0, proposers[1]).updateIndex, 1, "second index is 1");
        assertEq(
            alliance.roundInfo(id, 0).contributionTotal,
            STAKE * 2 * STAKE * 1e18,
            "total = sum w_i * C_i"
        );
        uint256 second = _claim(id, proposers[1]);
        uint256 first = _claim(id, proposers[0]);
        assertEq(second, PROPOSER_POT / 4, "1 of 4 parts");
        assertEq(first, PROPOSER_POT - PROPOSER_POT / 4, "3 of 4 parts, exact remainder");
        FlockAlliance.Round memory r = alliance.roundInfo(id, 0);
        assertEq(r.proposerRewardLeft + r.contributionLeft, 0, "pot and contributions used up");
        assertEq(token.balanceOf(address(alliance)), _bucketTotal(), "conservation");
    }

    function test_EqualContributionsStakes2To1ArePaid2To1() public {
        (uint256 id, address[] memory proposers, address[] memory voters) =
            _openRoundWith(_stakes(2 * STAKE), people[0], Sortition.Role.Proposer);
        int128[] memory c = _pair(5e17, 5e17);
        _play(id, proposers, voters, _both(5e16), _cs(c, c));
        uint256 big = _claim(id, people[0]);
        address other = proposers[0] == people[0] ? proposers[1] : proposers[0];
        uint256 small = _claim(id, other);
        assertEq(big, PROPOSER_POT * 2 / 3, "two thirds, settled first");
        assertEq(small, PROPOSER_POT - PROPOSER_POT * 2 / 3, "one third, the remainder");
    }

    function test_ZeroOrMildlyNegativeContributionEarnsNothingAndIsNotSlashed() public {
        // proposer 1: mean contribution (0 + -0.8) / 2 = -0.4, and only -1.0 is a flag
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _play(id, proposers, voters, _both(5e16), _cs(_pair(1e18, 0), _pair(1e18, -8e17)));
        assertEq(_claim(id, proposers[1]), 0, "negative: nothing");
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE, "negative: no slash");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT, "the contributor takes the pot");
        // proposer 1: zero contribution
        (id, proposers, voters) = _openRound();
        _play(id, proposers, voters, _both(5e16), _cs(_pair(1e18, 0), _pair(5e17, 0)));
        assertEq(_claim(id, proposers[1]), 0, "zero: nothing");
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE, "zero: no slash");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT, "the contributor takes the pot");
        assertEq(token.balanceOf(address(alliance)), _bucketTotal(), "conservation");
    }

    function test_AFlaggedProposerIsSlashedAtPenaltyBps() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        int128[] memory c = _pair(1e18, -1e18);
        _play(id, proposers, voters, _both(5e16), _cs(c, c));
        assertEq(_claim(id, proposers[1]), 0, "flagged: nothing");
        uint256 penalty = STAKE * 5_000 / 10_000;
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE - penalty, "penaltyBps");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT, "the other takes the pot");
        assertEq(_claim(id, keeper), penalty / 10, "finalizer share of the penalty");
        assertEq(token.balanceOf(address(alliance)), _bucketTotal(), "conservation");
    }

    function test_AFlagByExactlyHalfTheContributingStakeIsNotAFlag() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _play(id, proposers, voters, _both(5e16), _cs(_pair(1e18, -1e18), _pair(1e18, 0)));
        (,,, uint128 f1) = alliance.updateAt(id, 0, 1);
        assertEq(f1, STAKE, "one of two equal voters flagged it");
        assertEq(alliance.roundInfo(id, 0).flagVoterWeight, 2 * STAKE, "of two");
        assertEq(_claim(id, proposers[1]), 0, "C < 0: nothing");
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE, "half is not a flag");
    }

    function test_AFlagByMoreThanHalfTheContributingStakeIsAFlag() public {
        // people[0], a voter with twice the stake of the other voter, flags update 1 alone
        (uint256 id, address[] memory proposers, address[] memory voters) =
            _openRoundWith(_stakes(2 * STAKE), people[0], Sortition.Role.Voter);
        int128[][] memory cs = _cs(_pair(1e18, 1e18), _pair(1e18, 1e18));
        cs[voters[0] == people[0] ? 0 : 1] = _pair(1e18, -1e18);
        _play(id, proposers, voters, _both(5e16), cs);
        (,, int256 c1, uint128 f1) = alliance.updateAt(id, 0, 1);
        assertEq(f1, 2 * STAKE, "flagged by two thirds of the stake");
        assertTrue(c1 < 0, "C_1 = -2S + S");
        assertEq(_claim(id, proposers[1]), 0, "flagged: nothing");
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE / 2, "penaltyBps");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT, "the other takes the pot");
    }

    function test_AFlaggedProposerInARejectedRoundIsSlashedAtPenaltyBps() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        int128[] memory c = _pair(1e18, -1e18);
        _play(id, proposers, voters, _both(-5e16), _cs(c, c));
        assertTrue(!alliance.roundInfo(id, 0).accepted, "rejected");
        assertEq(_claim(id, proposers[1]), 0, "flagged: nothing");
        uint256 penalty = STAKE * 5_000 / 10_000;
        uint256 slash = STAKE * 1_000 / 10_000;
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE - penalty, "penaltyBps");
        assertEq(_claim(id, proposers[0]), 0, "rejected: nothing");
        assertEq(alliance.participantOf(id, proposers[0]).active, STAKE - slash, "slashBps");
        assertEq(_claim(id, keeper), (penalty + slash) / 10, "finalizer share of both");
        assertEq(token.balanceOf(address(alliance)), _bucketTotal(), "conservation");
    }

    function test_InARejectedRoundAFlaggedProposerPaysTheLargerOfPenaltyAndSlash() public {
        penaltyBps = 500; // below slashBps (10 %)
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        int128[] memory c = _pair(1e18, -1e18);
        _play(id, proposers, voters, _both(-5e16), _cs(c, c));
        _claim(id, proposers[1]);
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE * 9 / 10, "slashBps");
        // and in an accepted round, penaltyBps alone
        (id, proposers, voters) = _openRound();
        _play(id, proposers, voters, _both(5e16), _cs(c, c));
        _claim(id, proposers[1]);
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE * 95 / 100, "penalty");
    }

    // ------------------------------------------------------------ voters on the losing side

    function test_AVoterOnTheLosingSideIsSlashedAtVoterSlashBps() public {
        voterSlashBps = 4_000;
        // people[0], a voter with twice the other voter's stake, accepts; the other rejects
        (uint256 id, address[] memory proposers, address[] memory voters) =
            _openRoundWith(_stakes(2 * STAKE), people[0], Sortition.Role.Voter);
        address loser = voters[0] == people[0] ? voters[1] : voters[0];
        int128[] memory scores = new int128[](2);
        scores[0] = voters[0] == people[0] ? int128(5e16) : -5e16;
        scores[1] = -scores[0];
        int128[] memory c = _pair(1e18, 1e18);
        _play(id, proposers, voters, scores, _cs(c, c));
        assertTrue(alliance.roundInfo(id, 0).accepted, "two thirds of the stake accepted");
        assertEq(_claim(id, loser), 0, "the losing side earns nothing");
        assertEq(alliance.participantOf(id, loser).active, STAKE * 6 / 10, "voterSlashBps");
        assertTrue(_claim(id, people[0]) > 0, "the winning side is paid");
        assertEq(token.balanceOf(address(alliance)), _bucketTotal(), "conservation");
    }

    /// @dev Round 0 with voterSlashBps = `rate`: both voters commit, only the first reveals;
    ///      returns the silent voter's active stake after it is settled.
    function _silentVoterStakeAfter(uint16 rate) internal returns (uint256) {
        voterSlashBps = rate;
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAndPost(id, proposers);
        _vote(id, voters[0], 5e16, bytes32(uint256(1)));
        _vote(id, voters[1], 5e16, bytes32(uint256(2)));
        _to(id, 0, FlockAlliance.Phase.Revealing);
        _reveal(id, voters[0], 5e16, _pair(1e18, 1e18), bytes32(uint256(1)));
        _to(id, 0, FlockAlliance.Phase.Finalizable);
        alliance.finalizeRound(id, 0);
        _claim(id, voters[1]);
        return alliance.participantOf(id, voters[1]).active;
    }

    function test_AVoterThatNeverRevealsPaysTheLargerOfVoterSlashAndSlash() public {
        assertEq(_silentVoterStakeAfter(4_000), STAKE * 6 / 10, "voterSlashBps");
        // below slashBps (10 %), a silent voter still pays slashBps
        assertEq(_silentVoterStakeAfter(500), STAKE * 9 / 10, "slashBps");
    }

    function test_VoterSlashBpsAboveOneHundredPercentIsRefused() public {
        voterSlashBps = 10_001;
        FlockAlliance.TaskParams memory p = _params(1);
        vm.prank(creator);
        vm.expectRevert(
            abi.encodeWithSelector(FlockAlliance.InvalidTaskParameter.selector, bytes32("voterSlashBps"))
        );
        alliance.createTask(p);
    }

    function test_RejectingVotersFlagsCount() public {
        // people[0], a rejecting voter with twice the stake, flags update 1; the acceptor does not
        (uint256 id, address[] memory proposers, address[] memory voters) =
            _openRoundWith(_stakes(2 * STAKE), people[0], Sortition.Role.Voter);
        uint256 rejector = voters[0] == people[0] ? 0 : 1;
        int128[] memory scores = _both(5e16);
        int128[][] memory cs = _cs(_pair(1e18, 1e18), _pair(1e18, 1e18));
        scores[rejector] = -5e16;
        cs[rejector] = _pair(1e18, -1e18);
        _play(id, proposers, voters, scores, cs);
        FlockAlliance.Round memory r = alliance.roundInfo(id, 0);
        assertTrue(!r.accepted, "rejected by stake");
        assertEq(r.flagVoterWeight, 3 * STAKE, "both voters scored the updates");
        (,, int256 c1, uint128 f1) = alliance.updateAt(id, 0, 1);
        assertEq(uint256(c1), STAKE * 1e18, "C counts the acceptor only");
        assertEq(f1, 2 * STAKE, "the rejector's flag counts");
        _claim(id, proposers[1]);
        _claim(id, proposers[0]);
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE / 2, "flagged: penalty");
        assertEq(alliance.participantOf(id, proposers[0]).active, STAKE * 9 / 10, "slashBps");
    }

    function test_RejectingVotesWithoutContributionsAreNotInTheFlagVote() public {
        // people[0], a rejecting voter with twice the stake, sends no contributions: the
        // acceptor's flag is then the whole flag vote
        (uint256 id, address[] memory proposers, address[] memory voters) =
            _openRoundWith(_stakes(2 * STAKE), people[0], Sortition.Role.Voter);
        uint256 rejector = voters[0] == people[0] ? 0 : 1;
        int128[] memory scores = _both(5e16);
        int128[][] memory cs = _cs(_pair(1e18, -1e18), _pair(1e18, -1e18));
        scores[rejector] = -5e16;
        cs[rejector] = new int128[](0);
        _play(id, proposers, voters, scores, cs);
        FlockAlliance.Round memory r = alliance.roundInfo(id, 0);
        assertTrue(!r.accepted, "rejected by stake");
        assertEq(r.flagVoterWeight, STAKE, "only the acceptor posted contributions");
        _claim(id, proposers[1]);
        _claim(id, proposers[0]);
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE / 2, "flagged: penalty");
        assertEq(alliance.participantOf(id, proposers[0]).active, STAKE * 9 / 10, "slashBps");
    }

    function test_AFlaggedProposersShareOfThePotGoesBackToThePool() public {
        // five equal voters: three accept (one flags update 1, two give it +1), two reject and
        // flag it. Flagged by 3 of 5, yet C_1 = +1 * STAKE: its share returns to the pool.
        for (uint256 i = 5; i <= 7; i++) {
            address person = address(uint160(0x1000 + i));
            people.push(person);
            _fund(person, 10_000 ether);
        }
        votersPerRound = 5;
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        int128[] memory scores = new int128[](5);
        int128[][] memory cs = new int128[][](5);
        for (uint256 i = 0; i < 5; i++) {
            scores[i] = i < 3 ? int128(5e16) : -5e16;
            cs[i] = _pair(1e18, i == 0 || i >= 3 ? int128(-1e18) : int128(1e18));
        }
        _play(id, proposers, voters, scores, cs);
        FlockAlliance.Round memory r = alliance.roundInfo(id, 0);
        (,, int256 c1, uint128 f1) = alliance.updateAt(id, 0, 1);
        assertTrue(r.accepted, "accepted 3 to 2");
        assertEq(uint256(c1), STAKE * 1e18, "C_1 > 0");
        assertEq(2 * uint256(f1), 6 * STAKE, "flagged by 3 of 5");
        uint256 pool = alliance.taskState(id).pool;
        uint256 penalty = STAKE / 2;
        assertEq(_claim(id, proposers[1]), 0, "flagged: nothing");
        assertEq(
            alliance.taskState(id).pool,
            pool + PROPOSER_POT / 4 + penalty - penalty / 10,
            "its quarter of the pot and its penalty (less the finalizer's cut) to the pool"
        );
        assertEq(_claim(id, proposers[0]), PROPOSER_POT - PROPOSER_POT / 4, "the rest");
        r = alliance.roundInfo(id, 0);
        assertEq(r.proposerRewardLeft + r.contributionLeft, 0, "nothing stranded");
        assertEq(token.balanceOf(address(alliance)), _bucketTotal(), "conservation");
    }

    function test_RejectingVotersContributionsDoNotCountForRewards() public {
        // people[0] votes to accept with twice the stake of the rejecting voter
        (uint256 id, address[] memory proposers, address[] memory voters) =
            _openRoundWith(_stakes(2 * STAKE), people[0], Sortition.Role.Voter);
        int128[] memory scores = _both(-5e16);
        int128[][] memory cs = _cs(_pair(1e18, -1e18), _pair(1e18, -1e18));
        uint256 acceptor = voters[0] == people[0] ? 0 : 1;
        scores[acceptor] = 5e16;
        cs[acceptor] = _pair(5e17, 5e17);
        _play(id, proposers, voters, scores, cs);
        assertTrue(alliance.roundInfo(id, 0).accepted, "accepted by stake");
        (,, int256 c1,) = alliance.updateAt(id, 0, 1);
        assertEq(uint256(c1), 2 * STAKE * 5e17, "only the acceptor counts");
        assertEq(_claim(id, proposers[1]), PROPOSER_POT / 2, "not flagged, half the pot");
        assertEq(alliance.participantOf(id, proposers[1]).active, STAKE, "not slashed");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT - PROPOSER_POT / 2, "the other half");
    }

    function test_ContributionCountAndRangeAreChecked() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAndPost(id, proposers);
        int128[] memory one = new int128[](1);
        int128[] memory none = new int128[](0);
        int128[] memory high = _pair(1e18, 1e18 + 1);
        int128[] memory low = _pair(-1e18 - 1, 0);
        _vote(id, voters[0], 5e16, one, bytes32(0));
        _vote(id, voters[1], -5e16, low, bytes32(0));
        _to(id, 0, FlockAlliance.Phase.Revealing);
        vm.prank(voters[0]);
        vm.expectRevert(
            abi.encodeWithSelector(FlockAlliance.ContributionsMismatch.selector, id, 0, 2, 1)
        );
        alliance.revealVote(id, 0, 5e16, one, bytes32(0));
        vm.prank(voters[1]);
        vm.expectRevert(
            abi.encodeWithSelector(FlockAlliance.ContributionOutOfRange.selector, 0, -1e18 - 1)
        );
        alliance.revealVote(id, 0, -5e16, low, bytes32(0));

        (id, proposers, voters) = _openRound();
        _submitAndPost(id, proposers);
        _vote(id, voters[0], 5e16, high, bytes32(0));
        _vote(id, voters[1], -5e16, none, bytes32(0));
        _to(id, 0, FlockAlliance.Phase.Revealing);
        vm.prank(voters[0]);
        vm.expectRevert(
            abi.encodeWithSelector(FlockAlliance.ContributionOutOfRange.selector, 1, 1e18 + 1)
        );
        alliance.revealVote(id, 0, 5e16, high, bytes32(0));
        _reveal(id, voters[1], -5e16, none, bytes32(0)); // a rejecting vote may carry none
    }

    function test_NoPositiveContributionLeavesTheProposersPotInThePool() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        uint256 pool = alliance.taskState(id).pool;
        _play(id, proposers, voters, _both(5e16), _cs(_pair(0, -2e17), _pair(-1e17, 0)));
        FlockAlliance.Round memory r = alliance.roundInfo(id, 0);
        assertTrue(r.accepted, "accepted");
        assertEq(r.contributionTotal + r.proposerRewardLeft, 0, "no pot allotted");
        uint256 voterPart = r.reward - PROPOSER_POT;
        assertEq(alliance.taskState(id).pool, pool - voterPart, "only the voters' part left");
        assertEq(_claim(id, proposers[0]) + _claim(id, proposers[1]), 0, "proposers get nothing");
        assertEq(alliance.participantOf(id, proposers[0]).active, STAKE, "nor are slashed");
        assertEq(_claim(id, voters[0]) + _claim(id, voters[1]), voterPart, "voters paid");
    }

    function testFuzz_ProposersArePaidThePotAtMost(int128 a, int128 b, int128 c, int128 d)
        public
    {
        int128[4] memory v = [a, b, c, d];
        for (uint256 i = 0; i < 4; i++) v[i] = int128(v[i] % (1e18 + 1)); // into [-1, 1]
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _play(id, proposers, voters, _both(5e16), _cs(_pair(v[0], v[1]), _pair(v[2], v[3])));
        bool allotted = alliance.roundInfo(id, 0).contributionTotal > 0;
        uint256 paid = _claim(id, proposers[0]) + _claim(id, proposers[1]);
        assertTrue(paid <= PROPOSER_POT, "never more than the pot");
        assertEq(paid, allotted ? PROPOSER_POT : 0, "exactly the pot when allotted");
        uint256 voterPart = alliance.roundInfo(id, 0).reward - PROPOSER_POT;
        assertEq(alliance.taskState(id).allotted, voterPart, "only the voters' part remains");
        assertEq(token.balanceOf(address(alliance)), _bucketTotal(), "conservation");
    }
}
