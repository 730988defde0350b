// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Cheats} from "./Vm.sol";
import {AllianceFixture} from "./AllianceFixture.sol";
import {MockSeedSource} from "./MockSeedSource.sol";
import {FlockToken} from "../src/FlockToken.sol";
import {AllianceTypes} from "../src/AllianceTypes.sol";
import {FlockAlliance} from "../src/FlockAlliance.sol";
import {Sortition} from "../src/Sortition.sol";

/// @notice What both handlers share: one task, its actors and the ghost token ledger.
abstract contract HandlerBase is Cheats {
    FlockToken internal token;
    FlockAlliance internal alliance;
    MockSeedSource internal seeds;
    uint256 public taskId;
    address[] internal actors;
    address internal keeper;
    bytes32 internal constant SIG = keccak256("signature envelope");

    uint256 public deposited;
    uint256 public paidOut;
    uint256 public doubleClaims;
    uint256 public rewardsToUnselected;
    uint256 public paidClaims;
    /// @dev Times the creator could not reclaim the pool of an ended task with no round drawn
    ///      and unfinalized.
    uint256 public lockedPools;
    /// @dev Per actor: tokens staked minus tokens withdrawn.
    mapping(address => uint256) public ledger;

    constructor(
        FlockToken token_,
        FlockAlliance alliance_,
        uint256 taskId_,
        address[] memory a,
        address k
    ) {
        token = token_;
        alliance = alliance_;
        seeds = MockSeedSource(address(alliance_.seeds()));
        taskId = taskId_;
        actors = a;
        keeper = k;
        deposited = alliance.taskParams(taskId_).rewardPool;
    }

    function actorCount() external view returns (uint256) {
        return actors.length;
    }

    function actorAt(uint256 i) external view returns (address) {
        return actors[i];
    }

    function _actor(uint256 seed) internal view returns (address) {
        return actors[seed % actors.length];
    }

    function _round() internal view returns (uint256) {
        uint256 started = alliance.taskState(taskId).roundsStarted;
        return started == 0 ? 0 : started - 1;
    }

    function _isProposer(uint256 round, address who) internal view returns (bool) {
        return Sortition.proposes(alliance.roleOf(taskId, round, who));
    }

    function _isVoter(uint256 round, address who) internal view returns (bool) {
        return Sortition.votes(alliance.roleOf(taskId, round, who));
    }

    function _stake(address who, uint256 amount) internal returns (bool) {
        vm.prank(who);
        try alliance.stake(taskId, amount, 1_000, keccak256(abi.encode(who))) {
            deposited += amount;
            ledger[who] += amount;
            return true;
        } catch {
            return false;
        }
    }

    function _withdraw(address who) internal returns (uint256 amount) {
        vm.prank(who);
        try alliance.withdraw(taskId) returns (uint256 out) {
            amount = out;
            paidOut += out;
            ledger[who] -= out;
        } catch {}
    }

    /// @dev Claims twice: the second must pay nothing.
    function _claimTwice(address who) internal returns (uint256 first) {
        uint256 pending = alliance.participantOf(taskId, who).pendingRound;
        bool selected =
            pending == 0 || alliance.roleOf(taskId, pending - 1, who) != Sortition.Role.None;
        vm.prank(who);
        first = alliance.claim(taskId);
        paidOut += first;
        if (first > 0) paidClaims++;
        if (first > 0 && !selected) rewardsToUnselected++;
        vm.prank(who);
        uint256 second = alliance.claim(taskId);
        if (second != 0) doubleClaims++;
        paidOut += second;
    }

    function stake(uint256 seed, uint256 amount) external {
        _stake(_actor(seed), 10 ether + amount % 190 ether);
    }

    function withdraw(uint256 seed) external {
        _withdraw(_actor(seed));
    }

    function claim(uint256 seed) external {
        _claimTwice(seed % 5 == 0 ? keeper : _actor(seed));
    }

    function warp(uint256 dt) external {
        vm.warp(block.timestamp + 1 + dt % 700);
    }

    /// @dev Now and then the task ends (its deadline passes or its creator cancels it between
    ///      rounds): a drawn round runs out and is finalized, then the creator must be able to
    ///      take the pool back, and a second reclaim finds it empty.
    function endTask(uint256 seed) external {
        if (seed % 8 != 0) return;
        AllianceTypes.TaskParams memory p = alliance.taskParams(taskId);
        uint256 started = alliance.taskState(taskId).roundsStarted;
        if (started > 0) {
            AllianceTypes.Round memory r = alliance.roundInfo(taskId, started - 1);
            if (!r.finalized && r.seed != bytes32(0)) {
                if (block.timestamp < r.revealEnds) vm.warp(r.revealEnds);
                alliance.finalizeRound(taskId, started - 1);
            }
        }
        address creator = alliance.taskState(taskId).creator;
        if (seed % 16 == 0 && block.timestamp < p.deadline) {
            vm.prank(creator);
            alliance.cancelTask(taskId);
        } else if (block.timestamp < p.deadline) {
            vm.warp(p.deadline);
        }
        vm.prank(creator);
        try alliance.reclaimPool(taskId) returns (uint256 amount) {
            paidOut += amount;
            if (alliance.taskState(taskId).pool != 0) lockedPools++;
        } catch {
            lockedPools++;
        }
    }
}

/// @notice Drives one task through random stakes, unstakes, rounds, votes, claims and time,
///         honest or not. Ghost variables record every token that entered and left the alliance.
contract AllianceHandler is HandlerBase {
    uint256 public finalizedRounds;
    mapping(address => mapping(uint256 => bytes32)) internal hashes;
    mapping(address => mapping(uint256 => int128)) internal scores;
    mapping(address => mapping(uint256 => bytes32)) internal salts;
    mapping(address => mapping(uint256 => int128[])) internal contributions;

    constructor(
        FlockToken token_,
        FlockAlliance alliance_,
        uint256 taskId_,
        address[] memory a,
        address k
    ) HandlerBase(token_, alliance_, taskId_, a, k) {}

    /// @dev The first actor from `seed` on that proposes (or votes) in the current round, or any.
    function _selected(uint256 seed, bool proposer) internal view returns (address) {
        uint256 round = _round();
        for (uint256 i = 0; i < actors.length; i++) {
            address who = actors[(seed + i) % actors.length];
            if (proposer ? _isProposer(round, who) : _isVoter(round, who)) return who;
        }
        return _actor(seed);
    }

    /// @dev Moves the clock forward to `phase` of the current round if it is earlier.
    function _reach(AllianceTypes.Phase phase) internal {
        AllianceTypes.Round memory r = alliance.roundInfo(taskId, _round());
        uint256 end = phase == AllianceTypes.Phase.Committing
            ? r.trainingEnds
            : phase == AllianceTypes.Phase.Revealing ? r.commitEnds : r.revealEnds;
        if (block.timestamp < end) vm.warp(end);
    }

    function requestUnstake(uint256 seed, uint256 amount) external {
        address who = _actor(seed);
        uint256 active = alliance.participantOf(taskId, who).active;
        if (active == 0) return;
        vm.prank(who);
        try alliance.requestUnstake(taskId, amount % 2 == 0 ? active : 1 + amount % active) {}
            catch {}
    }

    /// @dev Starts a round and, mostly, draws it at once (else a later draw does).
    function startRound(uint256 seed) external {
        try alliance.startRound(taskId) returns (uint256 round) {
            seeds.fulfil(address(alliance), taskId, round, keccak256(abi.encode(seed)));
            if (seed % 4 != 0) alliance.drawRound(taskId, round);
        } catch {}
    }

    function drawRound() external {
        try alliance.drawRound(taskId, _round()) {} catch {}
    }

    function submit(uint256 seed) external {
        address who = seed % 4 == 0 ? _actor(seed) : _selected(seed, true);
        uint256 round = _round(); // read before prank: any external call consumes it
        vm.prank(who);
        try alliance.submitUpdate(taskId, round, keccak256(abi.encode(seed)), SIG, 10) {} catch {}
    }

    /// @dev One contribution per update, mostly in range (full credit, none, a mild or a
    ///      flagging minus); one vote in sixteen carries one too many (its reveal reverts) and
    ///      one none (stays out of the flag vote if rejecting, reverts if accepting).
    function _contributions(uint256 seed, uint256 round)
        internal
        view
        returns (int128[] memory cs)
    {
        uint256 n = alliance.roundInfo(taskId, round).updates;
        if (seed % 16 == 1) n += 1;
        if (seed % 16 == 2) n = 0;
        cs = new int128[](n);
        int128[6] memory menu = [int128(1e18), 0, -3e17, -1e18, 5e17, 1e18 + 1];
        for (uint256 i = 0; i < n; i++) {
            uint256 pick = uint256(keccak256(abi.encode(seed, i)));
            cs[i] = menu[pick % (pick % 32 == 0 ? 6 : 5)];
        }
    }

    /// @dev Mostly the common aggregate hash, sometimes another (or zero: the reveal reverts);
    ///      scores mostly in range.
    function commit(uint256 seed, int128 score) external {
        address who = seed % 4 == 0 ? _actor(seed) : _selected(seed, false);
        uint256 round = _round();
        int128[] memory cs = _contributions(seed, round);
        bytes32 hash = seed % 7 == 0
            ? keccak256(abi.encode(seed % 3))
            : seed % 29 == 0 ? bytes32(0) : keccak256("aggregate");
        if (seed % 11 != 0) score = int128(score % (1e18 + 1));
        bytes32 commitment =
            alliance.voteCommitment(taskId, round, who, hash, score, cs, bytes32(seed));
        vm.prank(who);
        try alliance.commitVote(taskId, round, commitment) {
            hashes[who][round] = hash;
            scores[who][round] = score;
            salts[who][round] = bytes32(seed);
            contributions[who][round] = cs;
        } catch {}
    }

    function reveal(uint256 seed) external {
        if (seed % 2 == 0) _reach(AllianceTypes.Phase.Revealing);
        address who = _selected(seed, false);
        uint256 round = _round();
        // One reveal in eight uses a wrong salt: it reverts and the voter is slashed later.
        bytes32 salt = seed % 8 == 0 ? bytes32(seed) : salts[who][round];
        vm.prank(who);
        try alliance.revealVote(
            taskId, round, hashes[who][round], scores[who][round], contributions[who][round], salt
        ) {} catch {}
    }

    function finalize(uint256 seed) external {
        if (seed % 2 == 0) _reach(AllianceTypes.Phase.Finalizable);
        uint256 round = _round();
        vm.prank(keeper);
        try alliance.finalizeRound(taskId, round) {
            finalizedRounds++;
        } catch {}
    }

    function reportNoShow(uint256 seed) external {
        if (alliance.taskState(taskId).roundsStarted == 0) return;
        uint256 round = _round();
        vm.prank(keeper);
        try alliance.reportNoShow(taskId, round, _actor(seed)) {} catch {}
    }

    function settle(uint256 seed) external {
        try alliance.settle(taskId, _actor(seed)) {} catch {}
    }
}

/// @notice Only honest actions: whole rounds in which every selected proposer submits and
///         every voter commits and reveals the same hash with contributions above the flag,
///         each accepting or rejecting on its own (honest judgements can disagree); between
///         rounds stakes, unstakes, withdrawals, claims and no-show reports.
///         Ghost per-actor stake ledger: what each actor put in minus what it took out.
contract HonestHandler is HandlerBase {
    uint256 public rounds;
    uint256 public acceptedRounds;
    uint256 public rejectedRounds;

    constructor(
        FlockToken token_,
        FlockAlliance alliance_,
        uint256 taskId_,
        address[] memory a,
        address k
    ) HandlerBase(token_, alliance_, taskId_, a, k) {}

    function requestUnstake(uint256 seed, uint256 amount) external {
        address who = _actor(seed);
        uint256 active = alliance.participantOf(taskId, who).active;
        if (active == 0) return;
        vm.prank(who);
        try alliance.requestUnstake(taskId, amount % 2 == 0 ? active : 1 + amount % active) {}
            catch {}
    }

    /// @dev A no-show report against anyone: in an honest sequence every one must revert.
    function reportNoShow(uint256 seed) external {
        uint256 started = alliance.taskState(taskId).roundsStarted;
        if (started == 0) return;
        vm.prank(keeper);
        try alliance.reportNoShow(taskId, seed % started, _actor(seed)) {} catch {}
    }

    /// @dev Voter `i`'s score in the round played with `seed`: one in three rejects.
    function _score(uint256 seed, uint256 i) internal pure returns (int128) {
        uint256 h = uint256(keccak256(abi.encode(seed, "score", i)));
        int128 size = int128(int256(h % 1e18));
        return h % 3 == 0 ? -size - 1 : size;
    }

    /// @dev One whole round, every selected participant doing its part.
    function playRound(uint256 seed) external {
        uint256 round;
        try alliance.startRound(taskId) returns (uint256 r) {
            round = r;
        } catch {
            return;
        }
        seeds.fulfil(address(alliance), taskId, round, keccak256(abi.encode(seed)));
        alliance.drawRound(taskId, round);
        uint256 n;
        for (uint256 i = 0; i < actors.length; i++) {
            if (!_isProposer(round, actors[i])) continue;
            vm.prank(actors[i]);
            alliance.submitUpdate(taskId, round, keccak256(abi.encode(seed, i)), SIG, 10 + i);
            n++;
        }
        AllianceTypes.Round memory info = alliance.roundInfo(taskId, round);
        int128[] memory cs = new int128[](n);
        for (uint256 i = 0; i < n; i++) {
            cs[i] = int128(int256(uint256(keccak256(abi.encode(seed, "c", i))) % 15e17)) - 5e17;
        }
        bytes32 hash = keccak256(abi.encode("aggregate", round));
        vm.warp(info.trainingEnds);
        if (n > 0) {
            for (uint256 i = 0; i < actors.length; i++) {
                if (!_isVoter(round, actors[i])) continue;
                bytes32 c = alliance.voteCommitment(
                    taskId, round, actors[i], hash, _score(seed, i), cs, bytes32(i)
                );
                vm.prank(actors[i]);
                alliance.commitVote(taskId, round, c);
            }
        }
        vm.warp(info.commitEnds);
        if (n > 0) {
            for (uint256 i = 0; i < actors.length; i++) {
                if (!_isVoter(round, actors[i])) continue;
                vm.prank(actors[i]);
                alliance.revealVote(taskId, round, hash, _score(seed, i), cs, bytes32(i));
            }
        }
        vm.warp(info.revealEnds);
        vm.prank(keeper);
        alliance.finalizeRound(taskId, round);
        rounds++;
        AllianceTypes.Outcome outcome = alliance.roundInfo(taskId, round).outcome;
        if (outcome == AllianceTypes.Outcome.Accepted) acceptedRounds++;
        if (outcome == AllianceTypes.Outcome.Rejected) rejectedRounds++;
        for (uint256 i = 0; i < actors.length; i++) alliance.settle(taskId, actors[i]);
    }
}

/// @notice Invariants over random sequences of handler calls.
contract FlockAllianceInvariants is AllianceFixture {
    AllianceHandler internal handler;

    function setUp() public override {
        super.setUp();
        vm.prank(creator);
        uint256 id = alliance.createTask(_params(5));
        handler = new AllianceHandler(token, alliance, id, people, keeper);
        for (uint256 i = 0; i < people.length; i++) {
            vm.prank(people[i]);
            token.approve(address(alliance), type(uint256).max);
        }
        for (uint256 i = 0; i < people.length; i++) {
            handler.stake(i, 90 ether); // everyone starts staked; the fuzzer changes it
        }
        _target(address(handler));
    }

    /// stakes + pool + allotted + claimable = deposited - paid out = the vault's balance; the
    ///   alliance itself holds nothing.
    function invariant_TokensAreConserved() public view {
        AllianceTypes.TaskState memory t = alliance.taskState(handler.taskId());
        uint256 buckets = uint256(t.staked) + t.pool + t.allotted + t.claimable;
        assertEq(buckets, handler.deposited() - handler.paidOut(), "buckets vs deposits");
        assertEq(token.balanceOf(address(vault)), buckets, "balance vs buckets");
        assertEq(token.balanceOf(address(alliance)), 0, "the alliance holds no token");
    }

    /// Once a task has ended and no round is drawn and unfinalized, its creator takes the
    /// pool back: nothing stays locked past the deadline.
    function invariant_NoPoolLockedPastItsDeadline() public view {
        assertEq(handler.lockedPools(), 0, "a pool stayed locked past the deadline");
    }

    function invariant_NoDoubleClaim() public view {
        assertEq(handler.doubleClaims(), 0, "a second claim paid");
    }

    function invariant_NoRewardToUnselected() public view {
        assertEq(handler.rewardsToUnselected(), 0, "an unselected address was paid");
    }

    /// What the task says is claimable is what its accounts can claim.
    function invariant_ClaimableIsBacked() public view {
        uint256 id = handler.taskId();
        uint256 sum = alliance.claimableOf(id, keeper);
        for (uint256 i = 0; i < handler.actorCount(); i++) {
            sum += alliance.claimableOf(id, handler.actorAt(i));
        }
        assertEq(sum, alliance.taskState(id).claimable, "claimable accounts vs bucket");
    }
}

/// @notice Invariants over honest-only sequences: nobody honest is ever slashed.
contract FlockAllianceHonestInvariants is AllianceFixture {
    HonestHandler internal handler;

    function setUp() public override {
        super.setUp();
        proposersPerRound = 3;
        votersPerRound = 3;
        vm.prank(creator);
        uint256 id = alliance.createTask(_params(8));
        handler = new HonestHandler(token, alliance, id, people, keeper);
        for (uint256 i = 0; i < people.length; i++) {
            handler.stake(i, 90 ether);
        }
        _target(address(handler));
    }

    /// Every actor's stake (active + unbonding) is what it put in minus what it withdrew.
    function invariant_NoHonestParticipantIsSlashed() public view {
        uint256 id = handler.taskId();
        for (uint256 i = 0; i < handler.actorCount(); i++) {
            address who = handler.actorAt(i);
            AllianceTypes.Participant memory p = alliance.participantOf(id, who);
            assertEq(uint256(p.active) + p.unbonding, handler.ledger(who), "stake vs ledger");
        }
    }

    function invariant_HonestTokensAreConserved() public view {
        AllianceTypes.TaskState memory t = alliance.taskState(handler.taskId());
        uint256 buckets = uint256(t.staked) + t.pool + t.allotted + t.claimable;
        assertEq(buckets, handler.deposited() - handler.paidOut(), "buckets vs deposits");
        assertEq(token.balanceOf(address(vault)), buckets, "balance vs buckets");
    }

    function invariant_HonestNoDoubleClaim() public view {
        assertEq(handler.doubleClaims(), 0, "a second claim paid");
    }

    function invariant_HonestNoPoolLockedPastItsDeadline() public view {
        assertEq(handler.lockedPools(), 0, "a pool stayed locked past the deadline");
    }
}
