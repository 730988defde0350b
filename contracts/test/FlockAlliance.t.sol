// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AllianceFixture} from "./AllianceFixture.sol";
import {AllianceTypes} from "../src/AllianceTypes.sol";
import {FlockAlliance} from "../src/FlockAlliance.sol";
import {Sortition} from "../src/Sortition.sol";

contract FlockAllianceTest is AllianceFixture {
    bytes32 internal constant AGGREGATE = keccak256("aggregate");
    bytes32 internal constant OTHER = keccak256("another aggregate");
    int128 internal constant ONE = 1e18;
    /// @dev Round 0 of 3: reward POOL / 3, half of it (proposerRewardBps) for the proposers.
    uint256 internal constant REWARD = POOL / 3;
    uint256 internal constant PROPOSER_POT = REWARD / 2;
    uint256 internal constant VOTER_POT = REWARD - PROPOSER_POT;

    /// @dev One voter's vote: the hash it computed, its score and its contributions.
    struct Vote {
        address voter;
        bytes32 aggregateHash;
        int128 score;
        int128[] cs;
    }

    // ------------------------------------------------------------ helpers

    function _submitAll(uint256 id, address[] memory proposers) internal {
        for (uint256 i = 0; i < proposers.length; i++) {
            vm.prank(proposers[i]);
            alliance.submitUpdate(id, 0, keccak256(abi.encode(proposers[i])), SIG, 100);
        }
    }

    function _salt(address voter) internal pure returns (bytes32) {
        return keccak256(abi.encode("salt", voter));
    }

    function _commit(uint256 id, Vote memory v) internal {
        bytes32 commitment = alliance.voteCommitment(
            id, 0, v.voter, v.aggregateHash, v.score, v.cs, _salt(v.voter)
        );
        vm.prank(v.voter);
        alliance.commitVote(id, 0, commitment);
    }

    function _reveal(uint256 id, Vote memory v) internal {
        vm.prank(v.voter);
        alliance.revealVote(id, 0, v.aggregateHash, v.score, v.cs, _salt(v.voter));
    }

    function _v(address voter, bytes32 hash, int128 score, int128[] memory cs)
        internal
        pure
        returns (Vote memory)
    {
        return Vote(voter, hash, score, cs);
    }

    function _votes(Vote memory a, Vote memory b) internal pure returns (Vote[] memory votes) {
        votes = new Vote[](2);
        (votes[0], votes[1]) = (a, b);
    }

    function _votes(Vote memory a, Vote memory b, Vote memory c)
        internal
        pure
        returns (Vote[] memory votes)
    {
        votes = new Vote[](3);
        (votes[0], votes[1], votes[2]) = (a, b, c);
    }

    /// @dev Plays round 0: every proposer submits (index = position), every vote is committed,
    ///      then revealed in the order given, and the keeper finalizes.
    function _play(uint256 id, address[] memory proposers, Vote[] memory votes) internal {
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        for (uint256 i = 0; i < votes.length; i++) _commit(id, votes[i]);
        _to(id, 0, AllianceTypes.Phase.Revealing);
        for (uint256 i = 0; i < votes.length; i++) _reveal(id, votes[i]);
        _to(id, 0, AllianceTypes.Phase.Finalizable);
        vm.prank(keeper);
        alliance.finalizeRound(id, 0);
    }

    /// @dev Both voters of the default split vote `score` with contributions (a0, a1) and
    ///      (b0, b1).
    function _playTwo(
        uint256 id,
        address[] memory proposers,
        address[] memory voters,
        int128 score,
        int128[] memory a,
        int128[] memory b
    ) internal {
        _play(
            id,
            proposers,
            _votes(_v(voters[0], AGGREGATE, score, a), _v(voters[1], AGGREGATE, score, b))
        );
    }

    function _pair(int128 a, int128 b) internal pure returns (int128[] memory cs) {
        cs = new int128[](2);
        (cs[0], cs[1]) = (a, b);
    }

    function _same(uint256 n, int128 c) internal pure returns (int128[] memory cs) {
        cs = new int128[](n);
        for (uint256 i = 0; i < n; i++) cs[i] = c;
    }

    function _claim(uint256 id, address who) internal returns (uint256) {
        vm.prank(who);
        return alliance.claim(id);
    }

    function _active(uint256 id, address who) internal view returns (uint256) {
        return alliance.participantOf(id, who).active;
    }

    function _outcome(uint256 id) internal view returns (AllianceTypes.Outcome) {
        return alliance.roundInfo(id, 0).outcome;
    }

    function _stakes(uint256 index, uint256 amount) internal view returns (uint256[] memory s) {
        s = _equalStakes();
        s[index] = amount;
    }

    /// @dev The weight of a selected role in the default split (four equal stakes, two
    ///      proposers, two voters): max(STAKE, 4 * STAKE / 2).
    uint256 internal constant W = 2 * STAKE;

    /// @dev The weight `who`'s vote counts with in round 0: its stake over its odds.
    function _vw(uint256 id, address who) internal view returns (uint256) {
        uint256 total = alliance.roundInfo(id, 0).totalStake;
        return Sortition.weight(alliance.recordOf(id, 0, who).weight, total, votersPerRound);
    }

    /// @dev What a pot allots to paid holders of weight `w` in round 0: pot * w / S.
    function _share(uint256 id, uint256 pot, uint256 w) internal view returns (uint256) {
        return pot * w / alliance.roundInfo(id, 0).totalStake;
    }

    function _conserved() internal view {
        assertEq(token.balanceOf(address(vault)), _bucketTotal(), "conservation");
    }

    // ------------------------------------------------------------ roles

    function testFuzz_RolesAreTwoIndependentDraws(bytes32 seed, address account, uint128 s)
        public
        pure
    {
        uint256 total = uint256(s) * 4 + 1;
        Sortition.Role role = Sortition.roleOf(seed, account, s, total, 2, 3);
        uint256 p = Sortition.draw(seed, account, 0) * total;
        uint256 v = Sortition.draw(seed, account, 1) * total;
        bool proposer = s > 0 && p < (2 * uint256(s)) << 64;
        bool voter = s > 0 && v < (3 * uint256(s)) << 64;
        assertTrue(Sortition.proposes(role) == proposer, "proposer draw");
        assertTrue(Sortition.votes(role) == voter, "voter draw");
        assertTrue((role == BOTH) == (proposer && voter), "both");
        assertEq(
            Sortition.draw(seed, account, 1),
            uint256(keccak256(abi.encode(seed, account, uint8(1)))) >> 192,
            "draw encoding"
        );
    }

    function test_EveryoneIsAProposerWhenProposersPerRoundCoversTheStake() public {
        proposersPerRound = 4;
        (, address[] memory proposers,) =
            _openRoundAs(_equalStakes(), _roleList(BOTH, PROPOSER, BOTH, PROPOSER));
        assertEq(proposers.length, 4, "all four propose");
    }

    // ------------------------------------------------------------ honest rounds

    /// @dev Every selected proposer submits; every voter reveals the same hash, accepting,
    ///      with +0.5 for every update. Roles from `pick` (two bits per participant).
    function testFuzz_AnAllHonestRoundPaysTheRewardAndSlashesNobody(uint8 pick) public {
        Sortition.Role[] memory roles = new Sortition.Role[](4);
        uint256 np;
        uint256 nv;
        for (uint256 i = 0; i < 4; i++) {
            roles[i] = Sortition.Role((pick >> (2 * i)) & 3);
            if (Sortition.proposes(roles[i])) np++;
            if (Sortition.votes(roles[i])) nv++;
        }
        vm.assume(np > 0 && nv > 0);
        (uint256 id, address[] memory proposers, address[] memory voters) =
            _openRoundAs(_equalStakes(), roles);
        Vote[] memory votes = new Vote[](nv);
        for (uint256 i = 0; i < nv; i++) {
            votes[i] = _v(voters[i], AGGREGATE, 5e16, _same(np, 5e17));
        }
        _play(id, proposers, votes);
        AllianceTypes.Round memory r = alliance.roundInfo(id, 0);
        assertTrue(r.outcome == AllianceTypes.Outcome.Accepted, "accepted");
        assertTrue(alliance.taskState(id).globalModelHash == AGGREGATE, "model advances");
        // an update is scored by every voter but its own proposer: its part is weight * 0.5
        // unless its proposer is the only voter
        uint256 paid;
        uint256[] memory proposerPay = new uint256[](np);
        for (uint256 i = 0; i < np; i++) {
            proposerPay[i] = _claim(id, proposers[i]);
            paid += proposerPay[i];
        }
        for (uint256 i = 0; i < people.length; i++) {
            paid += _claim(id, people[i]);
            assertEq(_active(id, people[i]), STAKE, "nobody is slashed");
        }
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        uint256 paidUpdates;
        for (uint256 i = 0; i < np; i++) {
            bool scoredByOthers = nv > 1 || !Sortition.votes(alliance.roleOf(id, 0, proposers[i]));
            assertEq(ups[i].weight, W, "selected: weight S / 2");
            assertEq(ups[i].part, scoredByOthers ? W * 5e17 : 0, "part = weight * 0.5");
            assertTrue(!ups[i].flagged, "nobody flagged");
            if (scoredByOthers) paidUpdates++;
        }
        // each pot is budgeted for the whole stake S = 2W: paid holders of weight W get half
        // of it each, more than two draw the excess from the pool
        assertEq(
            paid,
            _share(id, PROPOSER_POT, paidUpdates * W) + _share(id, VOTER_POT, nv * W),
            "the allotments are paid"
        );
        for (uint256 i = 0; paidUpdates > 0 && i < np; i++) {
            uint256 share = _share(id, PROPOSER_POT, paidUpdates * W) / paidUpdates;
            // a proposer-voter's claim also holds its voter share
            if (ups[i].part > 0 && !Sortition.votes(alliance.roleOf(id, 0, proposers[i]))) {
                assertTrue(
                    proposerPay[i] + 1 >= share && proposerPay[i] <= share + paidUpdates,
                    "equal parts, equal pay"
                );
            }
        }
        assertEq(alliance.taskState(id).allotted, 0, "everything allotted was settled");
        _conserved();
    }

    function test_NoDoubleClaim() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _playTwo(id, proposers, voters, 1, _pair(ONE, ONE), _pair(ONE, ONE));
        uint256 first = _claim(id, proposers[0]);
        uint256 balance = token.balanceOf(proposers[0]);
        uint256 second = _claim(id, proposers[0]);
        assertTrue(first > 0, "first claim pays");
        assertEq(second, 0, "second claim pays nothing");
        assertEq(token.balanceOf(proposers[0]), balance, "balance unchanged");
        vm.expectPartialRevert(AllianceTypes.WrongPhase.selector);
        alliance.finalizeRound(id, 0);
    }

    // ------------------------------------------------------------ rejected and void rounds

    function test_ARejectedRoundPaysTheRejectingVotersAndSlashesNobodyHonest() public {
        voterSlashBps = 4_000;
        votersPerRound = 3;
        // people[2] rejects with twice the stake of people[3], who accepts
        (uint256 id, address[] memory proposers,) = _openRoundAs(
            _stakes(2, 2 * STAKE), _roleList(PROPOSER, PROPOSER, VOTER, VOTER)
        );
        uint256 pool = alliance.taskState(id).pool;
        _play(
            id,
            proposers,
            _votes(
                _v(people[2], AGGREGATE, -5e16, _pair(ONE, ONE)),
                _v(people[3], AGGREGATE, 5e16, _pair(ONE, ONE))
            )
        );
        AllianceTypes.Round memory r = alliance.roundInfo(id, 0);
        assertTrue(r.outcome == AllianceTypes.Outcome.Rejected, "rejected by stake");
        assertTrue(alliance.taskState(id).globalModelHash == keccak256("model"), "model stays");
        assertEq(r.proposerRewardLeft + r.contributionTotal, 0, "no proposers' pot");
        uint256 allot = _share(id, VOTER_POT, 2 * STAKE);
        assertEq(alliance.taskState(id).pool, pool - allot, "only the voters' part allotted");
        for (uint256 i = 0; i < 2; i++) {
            assertEq(_claim(id, proposers[i]), 0, "an honest proposer is not paid");
            assertEq(_active(id, proposers[i]), STAKE, "nor slashed");
        }
        assertEq(_claim(id, people[3]), 0, "the losing voter earns nothing");
        assertEq(_active(id, people[3]), STAKE, "and is not slashed");
        assertEq(_claim(id, people[2]), allot, "the winning voter takes the voters' allotment");
        assertEq(_claim(id, keeper), 0, "nothing slashed, no finalizer share");
        _conserved();
    }

    /// @dev Plays round 1 of `id` with nobody voting and returns its reward.
    function _voidRoundOneReward(uint256 id) internal returns (uint256) {
        _startAndDraw(id, keccak256("round 1"));
        _to(id, 1, AllianceTypes.Phase.Finalizable);
        alliance.finalizeRound(id, 1);
        assertTrue(alliance.roundInfo(id, 1).outcome == AllianceTypes.Outcome.Void, "void 1");
        return alliance.roundInfo(id, 1).reward;
    }

    function test_ARoundWithNoRevealsIsVoidSlashesNobodyAndCarriesThePotOver() public {
        (uint256 id, address[] memory proposers,) = _openRound();
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Finalizable);
        vm.prank(keeper);
        alliance.finalizeRound(id, 0);
        AllianceTypes.Round memory r = alliance.roundInfo(id, 0);
        assertTrue(r.outcome == AllianceTypes.Outcome.Void, "no reveals: void");
        assertEq(r.reward, REWARD, "the reward it would have had");
        assertEq(alliance.taskState(id).pool, POOL, "nothing allotted");
        for (uint256 i = 0; i < people.length; i++) {
            assertEq(_claim(id, people[i]), 0, "nobody paid");
            assertEq(_active(id, people[i]), STAKE, "nobody slashed");
        }
        assertEq(_voidRoundOneReward(id), POOL / 2, "the pot carries over: pool / rounds left");
        _conserved();
    }

    function test_ATieIsVoidSlashesNobodyAndCarriesThePotOver() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _play(
            id,
            proposers,
            _votes(
                _v(voters[0], AGGREGATE, 5e16, _pair(ONE, -ONE)),
                _v(voters[1], AGGREGATE, -5e16, _pair(ONE, -ONE))
            )
        );
        AllianceTypes.Tally memory t = alliance.tallyOf(id, 0, AGGREGATE);
        assertEq(t.acceptWeight, t.rejectWeight, "a tie");
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Void, "void");
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        assertTrue(!ups[1].flagged && ups[1].flagWeight == 2 * W, "no flag in a void round");
        for (uint256 i = 0; i < people.length; i++) {
            assertEq(_claim(id, people[i]), 0, "nobody paid");
            assertEq(_active(id, people[i]), STAKE, "nobody slashed, flagged or not");
        }
        assertEq(alliance.taskState(id).pool, POOL, "nothing allotted");
        assertTrue(_voidRoundOneReward(id) > REWARD, "next round's reward is bigger");
    }

    function test_NoHashWithAStrictMajorityIsVoid() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _play(
            id,
            proposers,
            _votes(
                _v(voters[0], AGGREGATE, 5e16, _pair(ONE, ONE)),
                _v(voters[1], OTHER, 5e16, _pair(ONE, ONE))
            )
        );
        AllianceTypes.Round memory r = alliance.roundInfo(id, 0);
        assertTrue(r.outcome == AllianceTypes.Outcome.Void, "half is not a majority");
        assertTrue(r.aggregateHash == AGGREGATE, "the first to a weight keeps the lead");
        assertEq(r.revealedWeight, 2 * W, "all reveals counted");
        for (uint256 i = 0; i < people.length; i++) {
            assertEq(_claim(id, people[i]), 0, "nobody paid");
            assertEq(_active(id, people[i]), STAKE, "nobody slashed");
        }
    }

    // ------------------------------------------------------------ the aggregate hash

    /// @dev Five equal stakes: people[0], people[1] propose; people[2..4] vote.
    function _openFive() internal returns (uint256 id, address[] memory proposers) {
        _addPeople(1);
        votersPerRound = 3;
        Sortition.Role[] memory roles = new Sortition.Role[](5);
        (roles[0], roles[1], roles[2], roles[3], roles[4]) =
            (PROPOSER, PROPOSER, VOTER, VOTER, VOTER);
        (id, proposers,) = _openRoundAs(_equalStakes(), roles);
    }

    function testFuzz_TheMajorityHashWinsWhateverTheRevealOrder(uint256 order) public {
        (uint256 id, address[] memory proposers) = _openFive();
        Vote[] memory votes = _votes(
            _v(people[2], AGGREGATE, 5e16, _pair(ONE, ONE)),
            _v(people[3], AGGREGATE, 5e16, _pair(ONE, ONE)),
            _v(people[4], OTHER, 5e16, _pair(ONE, ONE))
        );
        // one of the six orders
        uint256 first = order % 3;
        (votes[0], votes[first]) = (votes[first], votes[0]);
        if ((order / 3) % 2 == 1) (votes[1], votes[2]) = (votes[2], votes[1]);
        _play(id, proposers, votes);
        AllianceTypes.Round memory r = alliance.roundInfo(id, 0);
        assertTrue(r.outcome == AllianceTypes.Outcome.Accepted, "accepted");
        assertTrue(r.aggregateHash == AGGREGATE, "the majority hash");
        assertTrue(alliance.taskState(id).globalModelHash == AGGREGATE, "is the model");
        uint256 w = _vw(id, people[2]);
        assertEq(w, (5 * STAKE + 2) / 3, "five equal stakes, three voters: ceil(S / 3)");
        assertEq(alliance.tallyOf(id, 0, AGGREGATE).weight, 2 * w, "two voters");
        assertEq(alliance.tallyOf(id, 0, OTHER).weight, w, "one voter");
        assertEq(_claim(id, people[4]), 0, "the odd hash earns nothing");
        assertEq(_active(id, people[4]), STAKE * 9 / 10, "and is slashed at voterSlashBps");
        uint256 a = _claim(id, people[2]);
        uint256 b = _claim(id, people[3]);
        assertEq(a + b, _share(id, VOTER_POT, 2 * w), "the majority shares its allotment");
        assertEq(_active(id, people[2]) + _active(id, people[3]), 2 * STAKE, "not slashed");
        _conserved();
    }

    function test_AMinorityHashVotersContributionsDoNotCount() public {
        (uint256 id, address[] memory proposers) = _openFive();
        _play(
            id,
            proposers,
            _votes(
                _v(people[4], OTHER, 5e16, _pair(ONE, -ONE)),
                _v(people[2], AGGREGATE, 5e16, _pair(5e17, 5e17)),
                _v(people[3], AGGREGATE, 5e16, _pair(5e17, 5e17))
            )
        );
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        assertEq(ups[1].flagWeight, 0, "its flag is not under the aggregate");
        uint256 w = _vw(id, people[2]);
        assertEq(uint256(ups[1].contribution), 2 * w * 5e17, "only the majority's scores");
        assertEq(uint256(ups[0].contribution), 2 * w * 5e17, "for both updates");
        assertEq(alliance.tallyOf(id, 0, OTHER).flagVoterWeight, w, "tallied apart");
        assertEq(_claim(id, proposers[1]), PROPOSER_POT / 2, "not flagged: half the pot");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT - PROPOSER_POT / 2, "the other half");
        assertEq(_active(id, proposers[1]), STAKE, "not slashed");
    }

    function test_RevealChecksTheCommitment() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        Vote memory v = _v(voters[0], AGGREGATE, 5e16, _pair(ONE, ONE));
        _commit(id, v);
        _to(id, 0, AllianceTypes.Phase.Revealing);
        bytes32 salt = _salt(v.voter);
        vm.prank(v.voter);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.RevealMismatch.selector, id, 0, v.voter)
        );
        alliance.revealVote(id, 0, OTHER, v.score, v.cs, salt);
        vm.prank(voters[1]);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.NoCommitment.selector, id, 0, voters[1])
        );
        alliance.revealVote(id, 0, AGGREGATE, v.score, v.cs, salt);
        _reveal(id, v);
        vm.prank(v.voter);
        vm.expectPartialRevert(AllianceTypes.NoCommitment.selector);
        alliance.revealVote(id, 0, AGGREGATE, v.score, v.cs, salt);
    }

    /// @dev The reveal differs from the commitment in exactly one of hash, score, salt and
    ///      contributions (`which`).
    function testFuzz_NoRevealWithoutAMatchingCommit(
        bytes32 hash,
        int128 score,
        bytes32 salt,
        uint256 which
    ) public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        int128[] memory cs = _pair(ONE, ONE);
        bytes32 commitment = alliance.voteCommitment(id, 0, voters[0], hash, score, cs, salt);
        vm.prank(voters[0]);
        alliance.commitVote(id, 0, commitment);
        _to(id, 0, AllianceTypes.Phase.Revealing);
        which %= 4;
        if (which == 0) hash ^= bytes32(uint256(1));
        if (which == 1) score ^= 1;
        if (which == 2) salt ^= bytes32(uint256(1));
        if (which == 3) cs[1] = 0;
        vm.prank(voters[0]);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.RevealMismatch.selector, id, 0, voters[0])
        );
        alliance.revealVote(id, 0, hash, score, cs, salt);
    }

    function test_AZeroAggregateHashOrCommitmentIsRefused() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        vm.prank(voters[1]);
        vm.expectRevert(AllianceTypes.ZeroValue.selector);
        alliance.commitVote(id, 0, bytes32(0));
        Vote memory v = _v(voters[0], bytes32(0), 5e16, _pair(ONE, ONE));
        _commit(id, v);
        _to(id, 0, AllianceTypes.Phase.Revealing);
        vm.prank(v.voter);
        vm.expectRevert(AllianceTypes.ZeroValue.selector);
        alliance.revealVote(id, 0, bytes32(0), v.score, v.cs, _salt(v.voter));
    }

    function testFuzz_AScoreOutOfRangeIsRefused(int128 score) public {
        vm.assume(score > ONE || score < -ONE);
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        Vote memory v = _v(voters[0], AGGREGATE, score, _pair(ONE, ONE));
        _commit(id, v);
        _to(id, 0, AllianceTypes.Phase.Revealing);
        vm.prank(v.voter);
        vm.expectRevert(abi.encodeWithSelector(AllianceTypes.ScoreOutOfRange.selector, score));
        alliance.revealVote(id, 0, AGGREGATE, score, v.cs, _salt(v.voter));
    }

    function test_TheScoreBoundsAreInRangeAndZeroAccepts() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _play(
            id,
            proposers,
            _votes(
                _v(voters[0], AGGREGATE, 0, _pair(ONE, ONE)),
                _v(voters[1], AGGREGATE, -ONE, new int128[](0))
            )
        );
        assertTrue(alliance.recordOf(id, 0, voters[0]).accept, "zero accepts");
        assertTrue(!alliance.recordOf(id, 0, voters[1]).accept, "-1 rejects");
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Void, "one to one: a tie");
    }

    function test_ACommitWithNoUpdatesIsRefused() public {
        (uint256 id,, address[] memory voters) = _openRound();
        _to(id, 0, AllianceTypes.Phase.Committing);
        vm.prank(voters[0]);
        vm.expectRevert(abi.encodeWithSelector(AllianceTypes.NoUpdates.selector, id, 0));
        alliance.commitVote(id, 0, keccak256("commitment"));
    }

    function test_TheRoundIsFullAt256UpdatesAndFinalizesThem() public {
        _addPeople(253);
        proposersPerRound = 300; // covers every stake: everyone proposes
        votersPerRound = 300; // and votes
        maxParticipants = 300;
        vm.prank(creator);
        uint256 id = alliance.createTask(_params(3));
        for (uint256 i = 0; i < people.length; i++) {
            _stake(id, people[i], STAKE);
        }
        _startAndDraw(id, keccak256("full"));
        assertTrue(alliance.roleOf(id, 0, people[256]) == BOTH, "everyone has both roles");
        address[] memory first = new address[](256);
        for (uint256 i = 0; i < 256; i++) first[i] = people[i];
        _submitAll(id, first);
        vm.prank(people[256]);
        vm.expectRevert(abi.encodeWithSelector(AllianceTypes.RoundFull.selector, id, 0, 256));
        alliance.submitUpdate(id, 0, keccak256("one too many"), SIG, 100);
        assertEq(alliance.roundInfo(id, 0).updates, 256, "MAX_UPDATES");
        _to(id, 0, AllianceTypes.Phase.Committing);
        Vote memory v = _v(people[256], AGGREGATE, 5e16, _same(256, 5e17));
        _commit(id, v);
        _to(id, 0, AllianceTypes.Phase.Revealing);
        _reveal(id, v);
        _to(id, 0, AllianceTypes.Phase.Finalizable);
        uint256 gas = gasleft();
        alliance.finalizeRound(id, 0);
        gas -= gasleft();
        assertTrue(gas < 6_000_000, "finalizing 256 updates stays well under a block");
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        assertEq(ups.length, 256, "one view per update");
        assertEq(ups[255].part, STAKE * 5e17, "every update's part");
        assertEq(alliance.roundInfo(id, 0).contributionTotal, 256 * STAKE * 5e17, "their sum");
    }

    // ------------------------------------------------------------ proposer-voters

    function testFuzz_AProposerVotersOwnScoreIsIgnored(int128 own) public {
        own = int128(own % (ONE + 1));
        (uint256 id, address[] memory proposers,) =
            _openRoundAs(_equalStakes(), _roleList(BOTH, PROPOSER, VOTER, VOTER));
        assertTrue(proposers[0] == people[0], "people[0] submits update 0");
        _play(
            id,
            proposers,
            _votes(
                _v(people[0], AGGREGATE, 5e16, _pair(own, 5e17)),
                _v(people[2], AGGREGATE, 5e16, _pair(5e17, 5e17)),
                _v(people[3], AGGREGATE, 5e16, _pair(5e17, 5e17))
            )
        );
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        assertEq(uint256(ups[0].contribution), 2 * W * 5e17, "its own score is skipped");
        assertEq(ups[0].flagWeight, 0, "it cannot flag itself");
        assertEq(uint256(ups[1].contribution), 3 * W * 5e17, "it scores the others");
        assertEq(ups[0].part, ups[1].part, "the same part as the other proposer");
        assertEq(_claim(id, people[1]), PROPOSER_POT / 2, "the other proposer: half");
        assertEq(
            _claim(id, people[0]),
            PROPOSER_POT - PROPOSER_POT / 2 + _share(id, VOTER_POT, 3 * W) / 3,
            "half the pot and a third of the voters' allotment"
        );
        assertEq(_active(id, people[0]), STAKE, "not slashed");
    }

    function test_AProposerVoterIsSettledForBothRolesAtOnce() public {
        voterSlashBps = 2_000;
        // people[0] proposes and votes to accept; people[2], people[3] reject and flag update 0
        (uint256 id, address[] memory proposers,) =
            _openRoundAs(_equalStakes(), _roleList(BOTH, PROPOSER, VOTER, VOTER));
        _play(
            id,
            proposers,
            _votes(
                _v(people[0], AGGREGATE, 5e16, _pair(ONE, ONE)),
                _v(people[2], AGGREGATE, -5e16, _pair(-ONE, ONE)),
                _v(people[3], AGGREGATE, -5e16, _pair(-ONE, ONE))
            )
        );
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Rejected, "rejected");
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        assertTrue(ups[0].flagged, "flagged by all other scorers");
        assertEq(_claim(id, people[0]), 0, "flagged and on the losing side");
        // penaltyBps (50 %) of its weight for the flag; the losing vote is only unpaid
        assertEq(_active(id, people[0]), STAKE - STAKE / 2, "the flag's slash only");
        assertTrue(alliance.recordOf(id, 0, people[0]).settled, "settled");
        _conserved();
    }

    // ------------------------------------------------------------ contribution-based rewards

    function test_EqualStakesContributions3To1ArePaid3To1() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        int128[] memory c = _pair(75e16, 25e16);
        _playTwo(id, proposers, voters, 5e16, c, c);
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        assertEq(ups[0].flagWeight, 0, "nobody flagged update 0");
        assertEq(alliance.tallyOf(id, 0, AGGREGATE).flagVoterWeight, 2 * W, "both scored");
        assertTrue(ups[0].proposer == proposers[0] && ups[0].weight == W, "first submission");
        assertEq(uint256(ups[0].contribution), 2 * W * 75e16, "C_0 = sum of w * c");
        assertEq(ups[0].part, W * 75e16, "part = weight * mean contribution");
        assertEq(alliance.recordOf(id, 0, proposers[1]).updateIndex, 1, "second index is 1");
        assertEq(alliance.roundInfo(id, 0).contributionTotal, W * 1e18, "sum of parts");
        uint256 second = _claim(id, proposers[1]);
        uint256 first = _claim(id, proposers[0]);
        assertEq(second, PROPOSER_POT / 4, "1 of 4 parts");
        assertEq(first, PROPOSER_POT - PROPOSER_POT / 4, "3 of 4 parts, exact remainder");
        AllianceTypes.Round memory r = alliance.roundInfo(id, 0);
        assertEq(r.proposerRewardLeft + r.contributionLeft, 0, "pot and contributions used up");
        _conserved();
    }

    function test_EqualContributionsStakes2To1BelowTheFloorArePaidEqually() public {
        // stakes 200 and 100 of S = 500 with two proposers: both weigh S / 2, their stake over
        // their odds (0.8 and 0.4); stake pays through the odds, not twice over
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRoundAs(
            _stakes(0, 2 * STAKE), _roleList(PROPOSER, PROPOSER, VOTER, VOTER)
        );
        int128[] memory c = _pair(5e17, 5e17);
        _playTwo(id, proposers, voters, 5e16, c, c);
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        assertEq(ups[0].weight, 5 * STAKE / 2, "the heavier: S / 2");
        assertEq(ups[1].weight, 5 * STAKE / 2, "the lighter: S / 2");
        uint256 big = _claim(id, people[0]);
        uint256 small = _claim(id, people[1]);
        assertEq(big, PROPOSER_POT / 2, "half, settled first");
        assertEq(small, PROPOSER_POT - PROPOSER_POT / 2, "half, the remainder");
    }

    function test_EqualContributionsStakesAboveTheFloorArePaidByStake() public {
        // three proposers of S = 700 (400, 100, 100, 100): the floor is ceil(S / 3) = 233,
        // the heaviest (certain to be drawn) counts its own stake
        proposersPerRound = 3;
        votersPerRound = 3;
        (uint256 id, address[] memory proposers,) = _openRoundAs(
            _stakes(0, 4 * STAKE), _roleList(BOTH, PROPOSER, VOTER, VOTER)
        );
        int128[] memory c = _pair(5e17, 5e17);
        _play(
            id,
            proposers,
            _votes(_v(people[2], AGGREGATE, 5e16, c), _v(people[3], AGGREGATE, 5e16, c))
        );
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        assertEq(ups[0].weight, 4 * STAKE, "certain: its stake");
        assertEq(ups[1].weight, (7 * STAKE + 2) / 3, "odds 3/7: ceil(S / 3)");
        assertEq(ups[0].part * ups[1].weight, ups[1].part * ups[0].weight, "parts by weight");
    }

    function test_ZeroOrMildlyNegativeContributionEarnsNothingAndIsNotSlashed() public {
        // proposer 1: mean contribution (0 + -0.8) / 2 = -0.4, and only -1.0 is a flag
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _playTwo(id, proposers, voters, 5e16, _pair(ONE, 0), _pair(ONE, -8e17));
        assertEq(_claim(id, proposers[1]), 0, "negative: nothing");
        assertEq(_active(id, proposers[1]), STAKE, "negative: no slash");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT / 2, "the contributor: its weight's");
        // proposer 1: zero contribution
        (id, proposers, voters) = _openRound();
        _playTwo(id, proposers, voters, 5e16, _pair(ONE, 0), _pair(5e17, 0));
        assertEq(_claim(id, proposers[1]), 0, "zero: nothing");
        assertEq(_active(id, proposers[1]), STAKE, "zero: no slash");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT / 2, "the contributor: its weight's");
        _conserved();
    }

    function test_AFlaggedProposerIsSlashedAtPenaltyBpsInAnAcceptedRound() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        int128[] memory c = _pair(ONE, -ONE);
        _playTwo(id, proposers, voters, 5e16, c, c);
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Accepted, "accepted");
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        assertTrue(ups[1].flagged && ups[1].part == 0, "flagged, no part");
        assertEq(_claim(id, proposers[1]), 0, "flagged: nothing");
        uint256 penalty = STAKE * 5_000 / 10_000;
        assertEq(_active(id, proposers[1]), STAKE - penalty, "penaltyBps");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT / 2, "the other: its weight's share");
        assertEq(_claim(id, keeper), penalty / 10, "finalizer share of the penalty");
        _conserved();
    }

    function test_AFlaggedProposerIsSlashedAtPenaltyBpsInARejectedRound() public {
        penaltyBps = 500; // below slashBps (10 %): the penalty alone applies
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        int128[] memory c = _pair(ONE, -ONE);
        _playTwo(id, proposers, voters, -5e16, c, c);
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Rejected, "rejected");
        assertTrue(alliance.roundUpdates(id, 0)[1].flagged, "flagged");
        assertEq(_claim(id, proposers[1]), 0, "flagged: nothing");
        assertEq(_active(id, proposers[1]), STAKE * 95 / 100, "penaltyBps");
        assertEq(_claim(id, proposers[0]), 0, "rejected: nothing");
        assertEq(_active(id, proposers[0]), STAKE, "an honest proposer is not slashed");
        assertEq(_claim(id, voters[0]) + _claim(id, voters[1]), VOTER_POT, "voters paid");
        assertEq(_claim(id, keeper), STAKE * 5 / 100 / 10, "finalizer share of the penalty");
        _conserved();
    }

    function test_AFlagByExactlyHalfTheScoringStakeIsNotAFlag() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _playTwo(id, proposers, voters, 5e16, _pair(ONE, -ONE), _pair(ONE, 0));
        AllianceTypes.UpdateView memory u = alliance.roundUpdates(id, 0)[1];
        assertEq(u.flagWeight, W, "one of two equal voters flagged it");
        assertTrue(!u.flagged, "half is not a flag");
        assertEq(_claim(id, proposers[1]), 0, "C < 0: nothing");
        assertEq(_active(id, proposers[1]), STAKE, "not slashed");
    }

    function test_AFlagByMoreThanHalfTheScoringStakeIsAFlag() public {
        // people[2], a voter with twice the stake of people[3], flags update 1 alone; with
        // three voters per round its weight is its stake (200), people[3]'s ceil(S / 3)
        votersPerRound = 3;
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRoundAs(
            _stakes(2, 2 * STAKE), _roleList(PROPOSER, PROPOSER, VOTER, VOTER)
        );
        _playTwo(id, proposers, voters, 5e16, _pair(ONE, -ONE), _pair(ONE, ONE));
        AllianceTypes.UpdateView memory u = alliance.roundUpdates(id, 0)[1];
        assertEq(_vw(id, people[2]), 2 * STAKE, "certain voter: its stake");
        assertEq(u.flagWeight, 2 * STAKE, "flagged by more than half of the weight");
        assertTrue(u.contribution < 0 && u.flagged, "C_1 = -200 + 167, flagged");
        assertEq(_claim(id, proposers[1]), 0, "flagged: nothing");
        assertEq(_active(id, proposers[1]), STAKE / 2, "penaltyBps");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT / 2, "the other: its weight's share");
    }

    function test_RejectingVotersFlagsCount() public {
        // people[2], a rejecting voter with twice the stake, flags update 1; people[3] accepts
        votersPerRound = 3;
        (uint256 id, address[] memory proposers,) = _openRoundAs(
            _stakes(2, 2 * STAKE), _roleList(PROPOSER, PROPOSER, VOTER, VOTER)
        );
        _play(
            id,
            proposers,
            _votes(
                _v(people[2], AGGREGATE, -5e16, _pair(ONE, -ONE)),
                _v(people[3], AGGREGATE, 5e16, _pair(ONE, ONE))
            )
        );
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Rejected, "rejected by weight");
        uint256 acceptor = _vw(id, people[3]);
        assertEq(
            alliance.tallyOf(id, 0, AGGREGATE).flagVoterWeight, 2 * STAKE + acceptor, "both scored"
        );
        AllianceTypes.UpdateView memory u = alliance.roundUpdates(id, 0)[1];
        assertEq(uint256(u.contribution), acceptor * 1e18, "C counts the acceptor only");
        assertEq(u.flagWeight, 2 * STAKE, "the rejector's flag counts");
        _claim(id, proposers[1]);
        _claim(id, proposers[0]);
        assertEq(_active(id, proposers[1]), STAKE / 2, "flagged: penalty");
        assertEq(_active(id, proposers[0]), STAKE, "not flagged: not slashed");
    }

    function test_RejectingVotesWithoutContributionsAreNotInTheFlagVote() public {
        // people[2], a rejecting voter with twice the stake, sends no contributions: the
        // acceptor's flag is then the whole flag vote
        votersPerRound = 3;
        (uint256 id, address[] memory proposers,) = _openRoundAs(
            _stakes(2, 2 * STAKE), _roleList(PROPOSER, PROPOSER, VOTER, VOTER)
        );
        _play(
            id,
            proposers,
            _votes(
                _v(people[2], AGGREGATE, -5e16, new int128[](0)),
                _v(people[3], AGGREGATE, 5e16, _pair(ONE, -ONE))
            )
        );
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Rejected, "rejected by weight");
        assertEq(
            alliance.tallyOf(id, 0, AGGREGATE).flagVoterWeight,
            _vw(id, people[3]),
            "the acceptor only"
        );
        assertTrue(!alliance.recordOf(id, 0, people[2]).scored, "the rejector did not score");
        _claim(id, proposers[1]);
        _claim(id, proposers[0]);
        assertEq(_active(id, proposers[1]), STAKE / 2, "flagged: penalty");
        assertEq(_active(id, proposers[0]), STAKE, "not flagged: not slashed");
    }

    function test_AFlaggedProposerHasNoPartSoTheOthersShareTheWholePot() public {
        // five equal voters: three accept (one flags update 1, two give it +1), two reject and
        // flag it. Flagged by 3 of 5 although C_1 = +1 * STAKE: part 0, the other takes the pot.
        _addPeople(3);
        votersPerRound = 5;
        Sortition.Role[] memory roles = new Sortition.Role[](7);
        for (uint256 i = 0; i < 7; i++) roles[i] = i < 2 ? PROPOSER : VOTER;
        (uint256 id, address[] memory proposers, address[] memory voters) =
            _openRoundAs(_equalStakes(), roles);
        Vote[] memory votes = new Vote[](5);
        for (uint256 i = 0; i < 5; i++) {
            int128 c1 = i == 0 || i >= 3 ? -ONE : ONE;
            votes[i] = _v(voters[i], AGGREGATE, i < 3 ? int128(5e16) : -5e16, _pair(ONE, c1));
        }
        _play(id, proposers, votes);
        AllianceTypes.UpdateView memory u = alliance.roundUpdates(id, 0)[1];
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Accepted, "accepted 3 to 2");
        assertEq(uint256(u.contribution), _vw(id, voters[1]) * 1e18, "C_1 > 0");
        assertTrue(u.flagged && u.part == 0, "flagged by 3 of 5: no part");
        assertEq(_claim(id, proposers[1]), 0, "flagged: nothing");
        assertEq(_active(id, proposers[1]), STAKE / 2, "penaltyBps");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT / 2, "the other: its weight's share");
        AllianceTypes.Round memory r = alliance.roundInfo(id, 0);
        assertEq(r.proposerRewardLeft + r.contributionLeft, 0, "nothing stranded");
        _conserved();
    }

    function test_RejectingVotersContributionsDoNotCountForRewards() public {
        // people[2] accepts with twice the stake of people[3], who rejects
        votersPerRound = 3;
        (uint256 id, address[] memory proposers,) = _openRoundAs(
            _stakes(2, 2 * STAKE), _roleList(PROPOSER, PROPOSER, VOTER, VOTER)
        );
        _play(
            id,
            proposers,
            _votes(
                _v(people[2], AGGREGATE, 5e16, _pair(5e17, 5e17)),
                _v(people[3], AGGREGATE, -5e16, _pair(ONE, -ONE))
            )
        );
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Accepted, "accepted by weight");
        AllianceTypes.UpdateView memory u = alliance.roundUpdates(id, 0)[1];
        assertEq(uint256(u.contribution), 2 * STAKE * 5e17, "only the acceptor counts");
        assertEq(_claim(id, proposers[1]), PROPOSER_POT / 2, "not flagged, half the pot");
        assertEq(_active(id, proposers[1]), STAKE, "not slashed");
        assertEq(_claim(id, proposers[0]), PROPOSER_POT - PROPOSER_POT / 2, "the other half");
    }

    function test_ContributionCountAndRangeAreChecked() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        int128[] memory one = new int128[](1);
        Vote memory short_ = _v(voters[0], AGGREGATE, 5e16, one);
        Vote memory low = _v(voters[1], AGGREGATE, -5e16, _pair(-ONE - 1, 0));
        _commit(id, short_);
        _commit(id, low);
        _to(id, 0, AllianceTypes.Phase.Revealing);
        vm.prank(voters[0]);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.ContributionsMismatch.selector, id, 0, 2, 1)
        );
        alliance.revealVote(id, 0, AGGREGATE, 5e16, one, _salt(voters[0]));
        vm.prank(voters[1]);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.ContributionOutOfRange.selector, 0, -ONE - 1)
        );
        alliance.revealVote(id, 0, AGGREGATE, -5e16, low.cs, _salt(voters[1]));

        (id, proposers, voters) = _openRound();
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        Vote memory high = _v(voters[0], AGGREGATE, 5e16, _pair(ONE, ONE + 1));
        Vote memory none = _v(voters[1], AGGREGATE, -5e16, new int128[](0));
        Vote memory accepting = _v(voters[1], AGGREGATE, 5e16, new int128[](0));
        _commit(id, high);
        _commit(id, none);
        _to(id, 0, AllianceTypes.Phase.Revealing);
        vm.prank(voters[0]);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.ContributionOutOfRange.selector, 1, ONE + 1)
        );
        alliance.revealVote(id, 0, AGGREGATE, 5e16, high.cs, _salt(voters[0]));
        vm.prank(voters[1]);
        vm.expectPartialRevert(AllianceTypes.RevealMismatch.selector);
        alliance.revealVote(id, 0, AGGREGATE, accepting.score, accepting.cs, _salt(voters[1]));
        _reveal(id, none); // a rejecting vote may carry none
    }

    function test_AnAcceptingVoteWithoutContributionsIsRefused() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        Vote memory v = _v(voters[0], AGGREGATE, 5e16, new int128[](0));
        _commit(id, v);
        _to(id, 0, AllianceTypes.Phase.Revealing);
        vm.prank(v.voter);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.ContributionsMismatch.selector, id, 0, 2, 0)
        );
        alliance.revealVote(id, 0, AGGREGATE, v.score, v.cs, _salt(v.voter));
    }

    function test_NoPositiveContributionLeavesTheProposersPotInThePool() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        uint256 pool = alliance.taskState(id).pool;
        _playTwo(id, proposers, voters, 5e16, _pair(0, -2e17), _pair(-1e17, 0));
        AllianceTypes.Round memory r = alliance.roundInfo(id, 0);
        assertTrue(r.outcome == AllianceTypes.Outcome.Accepted, "accepted");
        assertEq(r.contributionTotal + r.proposerRewardLeft, 0, "no pot allotted");
        assertEq(alliance.taskState(id).pool, pool - VOTER_POT, "only the voters' part left");
        assertEq(_claim(id, proposers[0]) + _claim(id, proposers[1]), 0, "proposers get nothing");
        assertEq(_active(id, proposers[0]), STAKE, "nor are slashed");
        assertEq(_claim(id, voters[0]) + _claim(id, voters[1]), VOTER_POT, "voters paid");
    }

    function testFuzz_ProposersArePaidThePotAtMost(int128 a, int128 b, int128 c, int128 d)
        public
    {
        int128[4] memory v = [a, b, c, d];
        for (uint256 i = 0; i < 4; i++) v[i] = int128(v[i] % (ONE + 1)); // into [-1, 1]
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _playTwo(id, proposers, voters, 5e16, _pair(v[0], v[1]), _pair(v[2], v[3]));
        AllianceTypes.UpdateView[] memory ups = alliance.roundUpdates(id, 0);
        uint256 paidWeight;
        for (uint256 i = 0; i < ups.length; i++) {
            if (ups[i].part > 0) paidWeight += ups[i].weight;
        }
        uint256 paid = _claim(id, proposers[0]) + _claim(id, proposers[1]);
        assertTrue(paid <= PROPOSER_POT, "never more than the pot");
        assertEq(paid, _share(id, PROPOSER_POT, paidWeight), "the paid updates' share");
        assertEq(alliance.taskState(id).allotted, VOTER_POT, "only the voters' part remains");
        _conserved();
    }

    // ------------------------------------------------------------ voters

    function test_AVoterThatRejectsAnAcceptedRoundIsUnpaidButNotSlashed() public {
        voterSlashBps = 4_000;
        votersPerRound = 3;
        // people[2], a voter with twice people[3]'s stake, accepts; people[3] rejects
        (uint256 id, address[] memory proposers,) = _openRoundAs(
            _stakes(2, 2 * STAKE), _roleList(PROPOSER, PROPOSER, VOTER, VOTER)
        );
        _play(
            id,
            proposers,
            _votes(
                _v(people[2], AGGREGATE, 5e16, _pair(ONE, ONE)),
                _v(people[3], AGGREGATE, -5e16, _pair(ONE, ONE))
            )
        );
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Accepted, "the heavier accepted");
        assertEq(_claim(id, people[3]), 0, "the losing side earns nothing");
        assertEq(_active(id, people[3]), STAKE, "an honest dissent is not slashed");
        assertEq(_claim(id, people[2]), _share(id, VOTER_POT, 2 * STAKE), "the winner is paid");
        _conserved();
    }

    function test_AVoterThatAcceptsARejectedRoundIsUnpaidButNotSlashed() public {
        voterSlashBps = 4_000;
        votersPerRound = 3;
        // people[2], a voter with twice people[3]'s stake, rejects; people[3] accepts
        (uint256 id, address[] memory proposers,) = _openRoundAs(
            _stakes(2, 2 * STAKE), _roleList(PROPOSER, PROPOSER, VOTER, VOTER)
        );
        _play(
            id,
            proposers,
            _votes(
                _v(people[2], AGGREGATE, -5e16, _pair(ONE, ONE)),
                _v(people[3], AGGREGATE, 5e16, _pair(ONE, ONE))
            )
        );
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Rejected, "the heavier rejected");
        assertEq(_claim(id, people[3]), 0, "the losing side earns nothing");
        assertEq(_active(id, people[3]), STAKE, "an honest endorsement is not slashed");
        assertEq(_claim(id, people[2]), _share(id, VOTER_POT, 2 * STAKE), "the winner is paid");
        _conserved();
    }

    /// @dev Three equal voters reveal the aggregate, each accepting or rejecting by a bit of
    ///      `pick`: whichever side wins, the other side is only unpaid.
    function testFuzz_AnHonestSplitCommitteeSlashesNobodyWhicheverSideWins(uint8 pick) public {
        voterSlashBps = 4_000;
        votersPerRound = 3;
        (uint256 id, address[] memory proposers, address[] memory voters) =
            _openRoundAs(_equalStakes(), _roleList(PROPOSER, VOTER, VOTER, VOTER));
        Vote[] memory votes = new Vote[](3);
        uint256 accepting;
        for (uint256 i = 0; i < 3; i++) {
            bool accept = (pick >> i) & 1 == 1;
            if (accept) accepting++;
            votes[i] = _v(voters[i], AGGREGATE, accept ? int128(5e16) : -5e16, _same(1, 5e17));
        }
        _play(id, proposers, votes);
        bool accepted = accepting >= 2;
        assertTrue(
            _outcome(id)
                == (accepted ? AllianceTypes.Outcome.Accepted : AllianceTypes.Outcome.Rejected),
            "the majority of the stake decides"
        );
        uint256 winners = accepted ? accepting : 3 - accepting;
        uint256 allot = _share(id, VOTER_POT, winners * _vw(id, voters[0]));
        uint256 paid;
        for (uint256 i = 0; i < 3; i++) {
            uint256 got = _claim(id, voters[i]);
            bool won = (votes[i].score >= 0) == accepted;
            if (!won) assertEq(got, 0, "the losing side is unpaid");
            else assertTrue(got > 0, "the winning side is paid");
            paid += got;
            assertEq(_active(id, voters[i]), STAKE, "nobody honest is slashed");
        }
        assertEq(paid, allot, "the winning side takes its allotment");
        assertEq(_active(id, proposers[0]), STAKE, "nor the proposer");
        assertEq(_claim(id, keeper), 0, "nothing slashed, no finalizer share");
        _conserved();
    }

    /// @dev In an Accepted and in a Rejected round, a voter of another hash is slashed at
    ///      voterSlashBps whether it accepted or rejected.
    function testFuzz_AnotherHashIsSlashedInEitherOutcomeAndEitherJudgement(
        bool rejected,
        bool otherAccepts
    ) public {
        voterSlashBps = 4_000;
        votersPerRound = 3;
        (uint256 id, address[] memory proposers, address[] memory voters) =
            _openRoundAs(_equalStakes(), _roleList(PROPOSER, VOTER, VOTER, VOTER));
        int128 score = rejected ? -5e16 : int128(5e16);
        _play(
            id,
            proposers,
            _votes(
                _v(voters[0], AGGREGATE, score, _same(1, 5e17)),
                _v(voters[1], AGGREGATE, score, _same(1, 5e17)),
                _v(voters[2], OTHER, otherAccepts ? int128(5e16) : -5e16, _same(1, 5e17))
            )
        );
        assertTrue(
            _outcome(id)
                == (rejected ? AllianceTypes.Outcome.Rejected : AllianceTypes.Outcome.Accepted),
            "the aggregate's voters decide"
        );
        assertEq(_claim(id, voters[2]), 0, "another hash earns nothing");
        assertEq(_active(id, voters[2]), STAKE * 6 / 10, "and is slashed at voterSlashBps");
        assertEq(_active(id, voters[0]) + _active(id, voters[1]), 2 * STAKE, "not the others");
        _conserved();
    }

    /// @dev Round 0 with voterSlashBps = `rate`: both voters commit, only the first reveals;
    ///      returns the silent voter's active stake after it is settled.
    function _silentVoterStakeAfter(uint16 rate, int128 silentScore) internal returns (uint256) {
        voterSlashBps = rate;
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        Vote memory loud = _v(voters[0], AGGREGATE, 5e16, _pair(ONE, ONE));
        _commit(id, loud);
        _commit(id, _v(voters[1], AGGREGATE, silentScore, _pair(ONE, ONE)));
        _to(id, 0, AllianceTypes.Phase.Revealing);
        _reveal(id, loud);
        _to(id, 0, AllianceTypes.Phase.Finalizable);
        alliance.finalizeRound(id, 0);
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Accepted, "the revealed vote decides");
        _claim(id, voters[1]);
        return _active(id, voters[1]);
    }

    function test_AVoterThatNeverRevealsPaysTheLargerOfVoterSlashAndSlash() public {
        assertEq(_silentVoterStakeAfter(4_000, 5e16), STAKE * 6 / 10, "voterSlashBps");
        // below slashBps (10 %), a silent voter still pays slashBps, even on the winning side
        assertEq(_silentVoterStakeAfter(500, 5e16), STAKE * 9 / 10, "slashBps");
    }

    function test_AVoterThatNeverRevealsIsSlashedInAVoidRoundToo() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        _commit(id, _v(voters[0], AGGREGATE, 5e16, _pair(ONE, ONE)));
        _to(id, 0, AllianceTypes.Phase.Finalizable);
        alliance.finalizeRound(id, 0);
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Void, "no reveals");
        _claim(id, voters[0]);
        assertEq(_active(id, voters[0]), STAKE * 9 / 10, "its own fault");
        assertEq(_active(id, proposers[0]), STAKE, "the proposers are not");
    }

    function test_VoterSlashBpsAboveOneHundredPercentIsRefused() public {
        voterSlashBps = 10_001;
        AllianceTypes.TaskParams memory p = _params(1);
        vm.prank(creator);
        vm.expectRevert(
            abi.encodeWithSelector(
                AllianceTypes.InvalidTaskParameter.selector, bytes32("voterSlashBps")
            )
        );
        alliance.createTask(p);
    }

    // ------------------------------------------------------------ no-shows

    function test_ReportNoShowSlashesAProposerThatDidNotSubmitAndAVoterThatDidNotVote() public {
        (uint256 id,,) = _openRound();
        address[] memory one = new address[](1);
        one[0] = people[0];
        _play(id, one, new Vote[](0));
        vm.prank(keeper);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.NotANoShow.selector, id, 0, people[0])
        );
        alliance.reportNoShow(id, 0, people[0]); // it submitted
        address reporter = address(0xAB);
        vm.startPrank(reporter);
        alliance.reportNoShow(id, 0, people[1]); // proposer, no update
        alliance.reportNoShow(id, 0, people[2]); // voter, no vote
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.NotANoShow.selector, id, 0, people[2])
        );
        alliance.reportNoShow(id, 0, people[2]); // once
        vm.stopPrank();
        assertTrue(alliance.recordOf(id, 0, people[1]).noShow, "recorded");
        assertEq(_active(id, people[1]), STAKE * 9 / 10, "slashBps");
        assertEq(_active(id, people[2]), STAKE * 9 / 10, "slashBps");
        assertEq(_claim(id, reporter), 2 * STAKE / 10 / 10, "the reporter's share");
        _conserved();
    }

    function test_AVoterInARoundWithoutUpdatesIsNotANoShow() public {
        (uint256 id,,) = _openRound();
        _to(id, 0, AllianceTypes.Phase.Finalizable);
        alliance.finalizeRound(id, 0);
        vm.expectPartialRevert(AllianceTypes.NotANoShow.selector);
        alliance.reportNoShow(id, 0, people[2]);
        alliance.reportNoShow(id, 0, people[0]); // a proposer without an update still is
        assertEq(_active(id, people[0]), STAKE * 9 / 10, "slashBps");
    }

    function test_ReportNoShowForAProposerVoter() public {
        // people[0] submits but does not vote; people[1] votes but does not submit; people[2]
        // does neither; people[3] proposes
        (uint256 id,,) = _openRoundAs(_equalStakes(), _roleList(BOTH, BOTH, BOTH, PROPOSER));
        address[] memory submitters = new address[](2);
        (submitters[0], submitters[1]) = (people[0], people[3]);
        _play(id, submitters, _votes(_v(people[1], AGGREGATE, 5e16, _pair(5e17, 5e17))));
        assertTrue(_outcome(id) == AllianceTypes.Outcome.Accepted, "accepted");
        vm.startPrank(keeper);
        alliance.reportNoShow(id, 0, people[0]); // no vote
        alliance.reportNoShow(id, 0, people[1]); // no update
        alliance.reportNoShow(id, 0, people[2]); // neither: one report, one slash
        vm.expectPartialRevert(AllianceTypes.NotANoShow.selector);
        alliance.reportNoShow(id, 0, people[2]);
        vm.expectPartialRevert(AllianceTypes.NotANoShow.selector);
        alliance.reportNoShow(id, 0, people[3]);
        vm.stopPrank();
        for (uint256 i = 0; i < 3; i++) {
            assertEq(_active(id, people[i]), STAKE * 9 / 10, "slashBps, once");
        }
        assertTrue(alliance.recordOf(id, 0, people[2]).settled, "nothing else to settle");
        assertTrue(!alliance.recordOf(id, 0, people[0]).settled, "its update still is");
        assertEq(_claim(id, people[0]), PROPOSER_POT / 2, "its update is still paid");
        assertEq(_claim(id, people[1]), VOTER_POT / 2, "its vote is still paid, for W of 2W");
        assertEq(_claim(id, people[3]), PROPOSER_POT - PROPOSER_POT / 2, "the other update");
        assertEq(_active(id, people[0]), STAKE * 9 / 10, "and not slashed again");
        _conserved();
    }

    function _votes(Vote memory a) internal pure returns (Vote[] memory votes) {
        votes = new Vote[](1);
        votes[0] = a;
    }

    // ------------------------------------------------------------ phases and selection

    function testFuzz_NoFinalizeBeforeTheRevealDeadline(uint256 elapsed) public {
        (uint256 id,,) = _openRound();
        AllianceTypes.Round memory r = alliance.roundInfo(id, 0);
        uint256 started = r.trainingEnds - 600;
        elapsed = elapsed % (r.revealEnds - started);
        vm.warp(started + elapsed);
        vm.expectPartialRevert(AllianceTypes.WrongPhase.selector);
        alliance.finalizeRound(id, 0);
    }

    function test_AProposerCannotVoteNorAVoterSubmit() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        vm.prank(voters[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                AllianceTypes.NotSelected.selector, id, 0, voters[0], PROPOSER
            )
        );
        alliance.submitUpdate(id, 0, keccak256("update"), SIG, 1);
        _submitAll(id, proposers);
        vm.prank(proposers[0]);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.DuplicateSubmission.selector, id, 0, proposers[0])
        );
        alliance.submitUpdate(id, 0, keccak256("again"), SIG, 1);
        _to(id, 0, AllianceTypes.Phase.Committing);
        vm.prank(proposers[0]);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.NotSelected.selector, id, 0, proposers[0], VOTER)
        );
        alliance.commitVote(id, 0, keccak256("vote"));
        vm.startPrank(voters[0]);
        alliance.commitVote(id, 0, keccak256("vote"));
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.DuplicateVote.selector, id, 0, voters[0])
        );
        alliance.commitVote(id, 0, keccak256("vote"));
        vm.stopPrank();
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
            _stake(id, people[i], STAKE);
        }
        _stake(id, outsider, 10 ether);
        _startAndDraw(id, keccak256(abi.encode(seed)));
        vm.assume(alliance.roleOf(id, 0, outsider) == NONE);
        vm.prank(outsider);
        vm.expectPartialRevert(AllianceTypes.NotSelected.selector);
        alliance.submitUpdate(id, 0, keccak256("sneaky"), SIG, 1);
        (address[] memory proposers, address[] memory voters) = _roles(id, 0);
        _submitAll(id, proposers);
        _to(id, 0, AllianceTypes.Phase.Committing);
        if (proposers.length > 0) {
            vm.prank(outsider);
            vm.expectPartialRevert(AllianceTypes.NotSelected.selector);
            alliance.commitVote(id, 0, keccak256("sneaky"));
            for (uint256 i = 0; i < voters.length; i++) {
                _commit(id, _v(voters[i], AGGREGATE, 5e16, _same(proposers.length, ONE)));
            }
            _to(id, 0, AllianceTypes.Phase.Revealing);
            for (uint256 i = 0; i < voters.length; i++) {
                _reveal(id, _v(voters[i], AGGREGATE, 5e16, _same(proposers.length, ONE)));
            }
        }
        _to(id, 0, AllianceTypes.Phase.Finalizable);
        vm.prank(keeper);
        alliance.finalizeRound(id, 0);
        assertEq(_claim(id, outsider), 0, "an unselected address earns nothing");
        assertEq(_active(id, outsider), 10 ether, "and loses nothing");
        vm.expectPartialRevert(AllianceTypes.NotANoShow.selector);
        alliance.reportNoShow(id, 0, outsider);
    }

    function test_UnknownTaskAndInsufficientStakeAreNamed() public {
        vm.expectRevert(abi.encodeWithSelector(AllianceTypes.UnknownTask.selector, 42));
        alliance.stake(42, STAKE, SAMPLES, DATA);
        vm.prank(creator);
        uint256 id = alliance.createTask(_params(1));
        vm.prank(people[0]);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.InsufficientStake.selector, 10 ether, 1 ether)
        );
        alliance.stake(id, 1 ether, SAMPLES, DATA);
    }
}
