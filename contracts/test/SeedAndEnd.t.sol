// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AllianceFixture} from "./AllianceFixture.sol";
import {MockVRFCoordinator} from "./MockVRFCoordinator.sol";
import {AllianceTypes} from "../src/AllianceTypes.sol";
import {FlockAlliance} from "../src/FlockAlliance.sol";
import {FutureBlockSeed} from "../src/FutureBlockSeed.sol";
import {ISeedSource} from "../src/ISeedSource.sol";
import {IVRFCoordinatorV2Plus} from "../src/IVRFCoordinatorV2Plus.sol";
import {Sortition} from "../src/Sortition.sol";
import {StakeVault} from "../src/StakeVault.sol";
import {VRFSeedSource} from "../src/VRFSeedSource.sol";

/// @notice Registered datasets, role weights, seeds nobody can grind (future block hash, VRF),
///         the task's deadline and cancel, and the vault.
contract SeedAndEndTest is AllianceFixture {
    bytes32 internal constant AGGREGATE = keccak256("aggregate");

    function _task() internal returns (uint256 id) {
        vm.prank(creator);
        id = alliance.createTask(_params(3));
        for (uint256 i = 0; i < people.length; i++) _stake(id, people[i], STAKE);
    }

    // ------------------------------------------------------------ registration

    function test_AFirstStakeMustRegisterItsDataset() public {
        vm.prank(creator);
        uint256 id = alliance.createTask(_params(3));
        vm.startPrank(people[0]);
        vm.expectRevert(AllianceTypes.ZeroValue.selector);
        alliance.stake(id, STAKE, 0, bytes32(0));
        vm.expectRevert(AllianceTypes.ZeroValue.selector);
        alliance.stake(id, STAKE, SAMPLES, bytes32(0));
        vm.expectRevert(AllianceTypes.ZeroValue.selector);
        alliance.stake(id, STAKE, 0, DATA);
        alliance.stake(id, STAKE, SAMPLES, DATA);
        alliance.stake(id, STAKE, 0, bytes32(0)); // a top-up keeps it
        vm.stopPrank();
        AllianceTypes.Participant memory p = alliance.participantOf(id, people[0]);
        assertEq(p.active, 2 * STAKE, "both stakes");
        assertEq(p.numSamples, SAMPLES, "registered size");
        assertTrue(p.dataHash == DATA, "registered hash");
    }

    function test_AnUpdateClaimsAtMostTheRegisteredSamples() public {
        (uint256 id, address[] memory proposers,) = _openRound();
        vm.startPrank(proposers[0]);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.TooManySamples.selector, SAMPLES + 1, SAMPLES)
        );
        alliance.submitUpdate(id, 0, keccak256("update"), SIG, SAMPLES + 1);
        vm.expectRevert(AllianceTypes.ZeroValue.selector);
        alliance.submitUpdate(id, 0, keccak256("update"), SIG, 0);
        alliance.submitUpdate(id, 0, keccak256("update"), SIG, SAMPLES);
        vm.stopPrank();
    }

    function test_ARegistrationChangesOnlyWithoutAnUnsettledRound() public {
        (uint256 id, address[] memory proposers,) = _openRound();
        address who = proposers[0];
        vm.prank(who);
        alliance.submitUpdate(id, 0, keccak256("update"), SIG, 10);
        vm.startPrank(who);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.PendingSettlement.selector, id, 0, who)
        );
        alliance.stake(id, 1 ether, 2 * SAMPLES, DATA);
        alliance.stake(id, 1 ether, SAMPLES, DATA); // the same registration is kept
        vm.stopPrank();
        _to(id, 0, AllianceTypes.Phase.Finalizable);
        alliance.finalizeRound(id, 0);
        alliance.settle(id, who);
        vm.prank(who);
        alliance.stake(id, 1 ether, 2 * SAMPLES, keccak256("more data"));
        AllianceTypes.Participant memory p = alliance.participantOf(id, who);
        assertEq(p.numSamples, 2 * SAMPLES, "re-registered once settled");
        assertTrue(p.dataHash == keccak256("more data"), "with its new hash");
    }

    // ------------------------------------------------------------ weights

    /// @dev max(stake, ceil(S / k)): at least the stake, and its expected value given the odds
    ///      min(1, k * stake / S) is the stake to within one wei.
    function testFuzz_AWeightIsTheStakeOverItsOdds(uint128 stake, uint128 total, uint16 k)
        public
        pure
    {
        vm.assume(k > 0 && stake > 0 && total >= stake);
        uint256 w = Sortition.weight(stake, total, k);
        uint256 least = (uint256(total) + k - 1) / k;
        assertEq(w, stake > least ? stake : least, "max(stake, ceil(S / k))");
        if (uint256(k) * stake >= total) {
            assertEq(w, stake, "certain: its stake");
        } else {
            // odds k * stake / S: E = k * stake * w / S, in [stake, stake + 1)
            uint256 scaled = uint256(k) * stake * w;
            assertTrue(scaled >= uint256(stake) * total, "never below the stake");
            assertTrue(scaled < (uint256(stake) + 1) * total, "within one wei above");
        }
    }

    // ------------------------------------------------------------ deadline and cancel

    function test_ADeadlineInThePastIsRefused() public {
        AllianceTypes.TaskParams memory p = _params(3);
        p.deadline = uint64(block.timestamp);
        vm.prank(creator);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.InvalidTaskParameter.selector, bytes32("deadline"))
        );
        alliance.createTask(p);
    }

    function test_AfterTheDeadlineNoRoundStartsAndThePoolGoesBack() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        // round 0 runs and is paid; then the deadline passes
        vm.prank(proposers[0]);
        alliance.submitUpdate(id, 0, keccak256("update"), SIG, 10);
        _to(id, 0, AllianceTypes.Phase.Committing);
        int128[] memory cs = new int128[](1);
        cs[0] = 1e18;
        bytes32 c = alliance.voteCommitment(id, 0, voters[0], AGGREGATE, 1, cs, bytes32("s"));
        vm.prank(voters[0]);
        alliance.commitVote(id, 0, c);
        uint64 deadline = alliance.taskParams(id).deadline;
        vm.warp(deadline); // past every phase: the drawn round can still be finalized
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.RoundInProgress.selector, id, uint256(0))
        );
        vm.prank(creator);
        alliance.reclaimPool(id);
        alliance.finalizeRound(id, 0);
        vm.expectRevert(abi.encodeWithSelector(AllianceTypes.TaskEnded.selector, id, deadline));
        alliance.startRound(id);
        vm.prank(people[0]);
        vm.expectRevert(abi.encodeWithSelector(AllianceTypes.TaskEnded.selector, id, deadline));
        alliance.stake(id, STAKE, 0, bytes32(0));
        uint256 pool = alliance.taskState(id).pool;
        vm.prank(creator);
        assertEq(alliance.reclaimPool(id), pool, "the pool goes back");
        assertEq(alliance.taskState(id).pool, 0, "nothing locked");
        // the slash of the silent voter is still settled, and stakes leave by unbonding
        vm.prank(voters[0]);
        alliance.requestUnstake(id, STAKE);
        vm.warp(block.timestamp + 1_200);
        vm.prank(voters[0]);
        assertTrue(alliance.withdraw(id) < STAKE, "withdrawn, less the slash");
        assertEq(token.balanceOf(address(vault)), _bucketTotal(), "conservation");
    }

    function test_TheCreatorCancelsBetweenRoundsAndRewardsStayClaimable() public {
        (uint256 id, address[] memory proposers, address[] memory voters) = _openRound();
        vm.prank(creator);
        vm.expectRevert(
            abi.encodeWithSelector(AllianceTypes.RoundInProgress.selector, id, uint256(0))
        );
        alliance.cancelTask(id);
        // an honest round: both proposers, both voters
        for (uint256 i = 0; i < 2; i++) {
            vm.prank(proposers[i]);
            alliance.submitUpdate(id, 0, keccak256(abi.encode(i)), SIG, 10);
        }
        int128[] memory cs = new int128[](2);
        (cs[0], cs[1]) = (1e18, 1e18);
        _to(id, 0, AllianceTypes.Phase.Committing);
        for (uint256 i = 0; i < 2; i++) {
            bytes32 c =
                alliance.voteCommitment(id, 0, voters[i], AGGREGATE, 1, cs, bytes32(i + 1));
            vm.prank(voters[i]);
            alliance.commitVote(id, 0, c);
        }
        _to(id, 0, AllianceTypes.Phase.Revealing);
        for (uint256 i = 0; i < 2; i++) {
            vm.prank(voters[i]);
            alliance.revealVote(id, 0, AGGREGATE, 1, cs, bytes32(i + 1));
        }
        _to(id, 0, AllianceTypes.Phase.Finalizable);
        alliance.finalizeRound(id, 0);
        vm.prank(people[0]);
        vm.expectRevert(abi.encodeWithSelector(AllianceTypes.NotCreator.selector, id, people[0]));
        alliance.cancelTask(id);
        vm.prank(creator);
        alliance.cancelTask(id);
        assertEq(alliance.taskParams(id).deadline, block.timestamp, "the deadline is now");
        vm.expectPartialRevert(AllianceTypes.TaskEnded.selector);
        alliance.startRound(id);
        vm.prank(creator);
        vm.expectPartialRevert(AllianceTypes.TaskEnded.selector);
        alliance.cancelTask(id);
        uint256 pool = alliance.taskState(id).pool;
        vm.prank(creator);
        assertEq(alliance.reclaimPool(id), pool, "the unallotted pool goes back");
        uint256 paid;
        for (uint256 i = 0; i < people.length; i++) {
            vm.prank(people[i]);
            paid += alliance.claim(id);
        }
        assertEq(paid, POOL / 3, "round 0's reward, earned before the cancel, is paid");
        assertEq(token.balanceOf(address(vault)), _bucketTotal(), "conservation");
    }

    function test_ARoundWaitingForItsSeedPastTheDeadlineDoesNotLockThePool() public {
        uint256 id = _task();
        uint256 round = alliance.startRound(id);
        vm.warp(alliance.taskParams(id).deadline);
        seeds.fulfil(address(alliance), id, round, keccak256("late"));
        vm.expectPartialRevert(AllianceTypes.TaskEnded.selector);
        alliance.drawRound(id, round);
        vm.prank(creator);
        assertEq(alliance.reclaimPool(id), POOL, "nobody worked: the whole pool goes back");
    }

    // ------------------------------------------------------------ seeds

    function test_RolesDoNotExistUntilTheSeedIsDrawn() public {
        uint256 id = _task();
        uint256 round = alliance.startRound(id);
        assertTrue(alliance.phaseOf(id, round) == AllianceTypes.Phase.WaitingForSeed, "waiting");
        for (uint256 i = 0; i < people.length; i++) {
            assertTrue(alliance.roleOf(id, round, people[i]) == NONE, "no role before the draw");
        }
        vm.expectRevert(
            abi.encodeWithSelector(
                AllianceTypes.SeedNotReady.selector,
                id,
                round,
                uint8(ISeedSource.SeedState.Pending)
            )
        );
        alliance.drawRound(id, round);
        vm.expectRevert(
            abi.encodeWithSelector(
                AllianceTypes.SeedNotLapsed.selector,
                id,
                round,
                uint8(ISeedSource.SeedState.Pending)
            )
        );
        alliance.renewSeed(id, round);
        seeds.lapse(address(alliance), id, round);
        alliance.renewSeed(id, round); // a lapsed request is asked again: no stuck round
        seeds.fulfil(address(alliance), id, round, keccak256("seed"));
        uint256 drawnAt = block.timestamp + 77;
        vm.warp(drawnAt);
        alliance.drawRound(id, round);
        AllianceTypes.Round memory r = alliance.roundInfo(id, round);
        assertTrue(r.seed == keccak256("seed"), "the source's seed");
        assertEq(r.trainingEnds, drawnAt + 600, "deadlines count from the draw");
        vm.expectPartialRevert(AllianceTypes.WrongPhase.selector);
        alliance.drawRound(id, round);
    }

    function testFuzz_AFutureBlockSeedIsTheTargetBlocksHash(bytes32 hash, uint8 delay) public {
        vm.assume(hash != bytes32(0));
        uint256 d = 1 + uint256(delay) % 10;
        FutureBlockSeed source = new FutureBlockSeed(d);
        uint256 target = block.number + d;
        source.requestSeed(7, 3);
        assertEq(source.targetOf(address(this), 7, 3), target, "target block fixed at request");
        vm.expectRevert(
            abi.encodeWithSelector(ISeedSource.SeedAlreadyRequested.selector, address(this), 7, 3)
        );
        source.requestSeed(7, 3);
        vm.roll(target); // the target block is the current one: its hash is not known
        (ISeedSource.SeedState state,) = source.seedOf(address(this), 7, 3);
        assertTrue(state == ISeedSource.SeedState.Pending, "pending until mined");
        vm.roll(target + 1);
        vm.setBlockhash(target, hash);
        bytes32 seed;
        (state, seed) = source.seedOf(address(this), 7, 3);
        assertTrue(state == ISeedSource.SeedState.Ready, "ready once mined");
        assertTrue(
            seed == keccak256(abi.encode(hash, address(this), uint256(7), uint256(3))),
            "keccak(blockhash(target), requester, task, round)"
        );
        (state,) = source.seedOf(address(0xD00D), 7, 3);
        assertTrue(state == ISeedSource.SeedState.None, "another requester's is its own");
        vm.roll(target + 257);
        (state, seed) = source.seedOf(address(this), 7, 3);
        assertTrue(state == ISeedSource.SeedState.Lapsed && seed == 0, "past blockhash's reach");
        source.requestSeed(7, 3);
        assertEq(source.targetOf(address(this), 7, 3), target + 257 + d, "renewed");
    }

    function test_AFutureBlockSeedNeedsADelay() public {
        vm.expectRevert(FutureBlockSeed.ZeroDelay.selector);
        new FutureBlockSeed(0);
    }

    function test_TheAllianceDrawsFromAFutureBlock() public {
        FutureBlockSeed source = new FutureBlockSeed(2);
        StakeVault v = new StakeVault(token);
        FlockAlliance a = new FlockAlliance(token, v, source);
        v.bind(address(a));
        vm.prank(creator);
        token.approve(address(a), type(uint256).max);
        vm.prank(creator);
        uint256 id = a.createTask(_params(3));
        for (uint256 i = 0; i < people.length; i++) {
            vm.startPrank(people[i]);
            token.approve(address(a), type(uint256).max);
            a.stake(id, STAKE, SAMPLES, DATA);
            vm.stopPrank();
        }
        uint256 target = block.number + 2;
        a.startRound(id);
        vm.expectPartialRevert(AllianceTypes.SeedNotReady.selector);
        a.drawRound(id, 0);
        vm.roll(target + 1);
        vm.setBlockhash(target, keccak256("block"));
        a.drawRound(id, 0);
        assertTrue(
            a.roundInfo(id, 0).seed
                == keccak256(abi.encode(keccak256("block"), address(a), id, uint256(0))),
            "the target block's seed"
        );
        assertEq(token.balanceOf(address(v)), STAKE * 4 + POOL, "the vault holds the tokens");
        assertEq(token.balanceOf(address(a)), 0, "the alliance holds none");
    }

    function test_AVRFSeedSourceTakesOnlyTheCoordinatorsWords() public {
        MockVRFCoordinator coordinator = new MockVRFCoordinator();
        VRFSeedSource source =
            new VRFSeedSource(coordinator, keccak256("lane"), 42, 3, 200_000, true, 50);
        source.bind(address(this));
        vm.expectRevert(VRFSeedSource.AlreadyBound.selector);
        source.bind(address(0xBAD));
        vm.prank(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(VRFSeedSource.NotRequester.selector, address(0xBAD)));
        source.requestSeed(1, 0);
        source.requestSeed(1, 0);
        uint256 id = source.requestIdOf(address(this), 1, 0);
        IVRFCoordinatorV2Plus.RandomWordsRequest memory req = coordinator.requestOf(id);
        assertTrue(req.keyHash == keccak256("lane"), "key hash");
        assertEq(req.subId, 42, "subscription");
        assertEq(req.requestConfirmations, 3, "confirmations");
        assertEq(req.callbackGasLimit, 200_000, "callback gas");
        assertEq(req.numWords, 1, "one word");
        assertTrue(
            keccak256(req.extraArgs)
                == keccak256(abi.encodeWithSelector(bytes4(keccak256("VRF ExtraArgsV1")), true)),
            "extra args v1, native payment"
        );
        uint256[] memory words = new uint256[](1);
        words[0] = 123;
        vm.expectRevert(
            abi.encodeWithSelector(
                VRFSeedSource.OnlyCoordinatorCanFulfill.selector, address(this), coordinator
            )
        );
        source.rawFulfillRandomWords(id, words);
        (ISeedSource.SeedState state,) = source.seedOf(address(this), 1, 0);
        assertTrue(state == ISeedSource.SeedState.Pending, "pending");
        // unanswered past lapseBlocks: lapsed, renewed; the stale answer is ignored
        vm.roll(block.number + 51);
        (state,) = source.seedOf(address(this), 1, 0);
        assertTrue(state == ISeedSource.SeedState.Lapsed, "lapsed");
        source.requestSeed(1, 0);
        uint256 renewed = source.requestIdOf(address(this), 1, 0);
        coordinator.fulfil(id, 999);
        (state,) = source.seedOf(address(this), 1, 0);
        assertTrue(state == ISeedSource.SeedState.Pending, "a superseded answer is ignored");
        coordinator.fulfil(renewed, 123);
        bytes32 seed;
        (state, seed) = source.seedOf(address(this), 1, 0);
        assertTrue(state == ISeedSource.SeedState.Ready, "ready");
        bytes32 key = keccak256(abi.encode(address(this), uint256(1), uint256(0)));
        assertTrue(seed == keccak256(abi.encode(uint256(123), key)), "keccak(word, key)");
    }

    function test_TheAllianceDrawsFromAVRFCoordinator() public {
        MockVRFCoordinator coordinator = new MockVRFCoordinator();
        VRFSeedSource source =
            new VRFSeedSource(coordinator, keccak256("lane"), 42, 3, 200_000, false, 50);
        StakeVault v = new StakeVault(token);
        FlockAlliance a = new FlockAlliance(token, v, source);
        v.bind(address(a));
        source.bind(address(a));
        vm.prank(creator);
        token.approve(address(a), type(uint256).max);
        vm.prank(creator);
        uint256 id = a.createTask(_params(3));
        for (uint256 i = 0; i < people.length; i++) {
            vm.startPrank(people[i]);
            token.approve(address(a), type(uint256).max);
            a.stake(id, STAKE, SAMPLES, DATA);
            vm.stopPrank();
        }
        a.startRound(id);
        vm.expectPartialRevert(AllianceTypes.SeedNotReady.selector);
        a.drawRound(id, 0);
        coordinator.fulfil(source.requestIdOf(address(a), id, 0), 7);
        a.drawRound(id, 0);
        assertTrue(a.phaseOf(id, 0) == AllianceTypes.Phase.Training, "drawn");
    }

    // ------------------------------------------------------------ the vault

    function test_TheVaultPaysOnlyTheAllianceAndBindsOnce() public {
        vm.expectRevert(abi.encodeWithSelector(StakeVault.NotAlliance.selector, address(this)));
        vault.pay(address(this), 1);
        vm.expectRevert(StakeVault.AlreadyBound.selector);
        vault.bind(address(this));
    }
}
