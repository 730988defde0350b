// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Cheats} from "./Vm.sol";
import {AllianceFixture} from "./AllianceFixture.sol";
import {FlockToken} from "../src/FlockToken.sol";
import {FlockAlliance} from "../src/FlockAlliance.sol";
import {Sortition} from "../src/Sortition.sol";

/// @notice Drives one task through random stakes, unstakes, rounds, votes, claims and time.
///         Ghost variables record every token that entered and left the alliance.
contract AllianceHandler is Cheats {
    FlockToken internal token;
    FlockAlliance internal alliance;
    uint256 public taskId;
    address[] internal actors;
    address internal keeper;

    uint256 public deposited;
    uint256 public paidOut;
    uint256 public doubleClaims;
    uint256 public rewardsToUnselected;
    uint256 public finalizedRounds;
    uint256 public paidClaims;
    mapping(address => mapping(uint256 => int128)) internal scores;
    mapping(address => mapping(uint256 => bytes32)) internal salts;
    mapping(address => mapping(uint256 => int128[])) internal contributions;

    constructor(FlockToken token_, FlockAlliance alliance_, uint256 taskId_, address[] memory a, address k)
    {
        token = token_;
        alliance = alliance_;
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

    /// @dev The first actor from `seed` on with `role` in the current round (or any actor).
    function _withRole(uint256 seed, Sortition.Role role) internal view returns (address) {
        uint256 round = _round();
        for (uint256 i = 0; i < actors.length; i++) {
            address who = actors[(seed + i) % actors.length];
            if (alliance.roleOf(taskId, round, who) == role) return who;
        }
        return _actor(seed);
    }

    /// @dev Moves the clock forward to `phase` of the current round if it is earlier.
    function _reach(FlockAlliance.Phase phase) internal {
        FlockAlliance.Round memory r = alliance.roundInfo(taskId, _round());
        uint256 at = phase == FlockAlliance.Phase.Committing
            ? r.trainingEnds
            : phase == FlockAlliance.Phase.Revealing ? r.commitEnds : r.revealEnds;
        if (block.timestamp < at) vm.warp(at);
    }

    function _round() internal view returns (uint256) {
        uint256 started = alliance.taskState(taskId).roundsStarted;
        return started == 0 ? 0 : started - 1;
    }

    function stake(uint256 seed, uint256 amount) external {
        amount = 10 ether + amount % 190 ether;
        vm.prank(_actor(seed));
        try alliance.stake(taskId, amount) {
            deposited += amount;
        } catch {}
    }

    function requestUnstake(uint256 seed, uint256 amount) external {
        address who = _actor(seed);
        uint256 active = alliance.participantOf(taskId, who).active;
        if (active == 0) return;
        vm.prank(who);
        try alliance.requestUnstake(taskId, amount % 2 == 0 ? active : 1 + amount % active) {}
            catch {}
    }

    function withdraw(uint256 seed) external {
        vm.prank(_actor(seed));
        try alliance.withdraw(taskId) returns (uint256 amount) {
            paidOut += amount;
        } catch {}
    }

    function startRound() external {
        vm.roll(block.number + 1);
        try alliance.startRound(taskId) {} catch {}
    }

    function submit(uint256 seed) external {
        address who = seed % 4 == 0 ? _actor(seed) : _withRole(seed, Sortition.Role.Proposer);
        uint256 round = _round(); // read before prank: any external call consumes it
        vm.prank(who);
        try alliance.submitUpdate(taskId, round, keccak256(abi.encode(seed)), 10) {} catch {}
    }

    function postAggregate(uint256 seed) external {
        if (seed % 2 == 0) _reach(FlockAlliance.Phase.Committing);
        address who = _withRole(seed, Sortition.Role.Proposer);
        uint256 round = _round();
        vm.prank(who);
        try alliance.postAggregate(taskId, round, keccak256("aggregate")) {} catch {}
    }

    /// @dev One contribution per update, mostly in range (full credit, none, a mild or a
    ///      flagging minus); one vote in sixteen carries one too many (its reveal reverts) and
    ///      one none (stays out of the flag vote if rejecting, reverts if accepting).
    function _contributions(uint256 seed, uint256 round) internal view returns (int128[] memory cs) {
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

    function commit(uint256 seed, int128 score) external {
        address who = seed % 4 == 0 ? _actor(seed) : _withRole(seed, Sortition.Role.Voter);
        uint256 round = _round();
        int128[] memory cs = _contributions(seed, round);
        bytes32 commitment = alliance.voteCommitment(taskId, round, who, score, cs, bytes32(seed));
        vm.prank(who);
        try alliance.commitVote(taskId, round, commitment) {
            scores[who][round] = score;
            salts[who][round] = bytes32(seed);
            contributions[who][round] = cs;
        } catch {}
    }

    function reveal(uint256 seed) external {
        if (seed % 2 == 0) _reach(FlockAlliance.Phase.Revealing);
        address who = _withRole(seed, Sortition.Role.Voter);
        uint256 round = _round();
        // One reveal in eight uses a wrong salt: it reverts and the voter is slashed later.
        bytes32 salt = seed % 8 == 0 ? bytes32(seed) : salts[who][round];
        vm.prank(who);
        try alliance.revealVote(taskId, round, scores[who][round], contributions[who][round], salt)
        {} catch {}
    }

    function finalize(uint256 seed) external {
        if (seed % 2 == 0) _reach(FlockAlliance.Phase.Finalizable);
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

    function claim(uint256 seed) external {
        address who = seed % 5 == 0 ? keeper : _actor(seed);
        uint256 pending = alliance.participantOf(taskId, who).pendingRound;
        bool selected = pending == 0
            || alliance.roleOf(taskId, pending - 1, who) != Sortition.Role.None;
        vm.prank(who);
        uint256 first = alliance.claim(taskId);
        paidOut += first;
        if (first > 0) paidClaims++;
        if (first > 0 && !selected) rewardsToUnselected++;
        vm.prank(who);
        uint256 second = alliance.claim(taskId);
        if (second != 0) doubleClaims++;
        paidOut += second;
    }

    function warp(uint256 dt) external {
        vm.warp(block.timestamp + 1 + dt % 700);
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

    /// stakes + pool + allotted + claimable = deposited - paid out = the alliance's balance.
    function invariant_TokensAreConserved() public view {
        FlockAlliance.TaskState memory t = alliance.taskState(handler.taskId());
        uint256 buckets = uint256(t.staked) + t.pool + t.allotted + t.claimable;
        assertEq(buckets, handler.deposited() - handler.paidOut(), "buckets vs deposits");
        assertEq(token.balanceOf(address(alliance)), buckets, "balance vs buckets");
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
