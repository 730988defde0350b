// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./Vm.sol";
import {FlockToken} from "../src/FlockToken.sol";
import {FlockAlliance} from "../src/FlockAlliance.sol";
import {Sortition} from "../src/Sortition.sol";

/// @notice Deployed token and alliance, a creator, a keeper and four funded participants.
abstract contract AllianceFixture is Test {
    uint256 internal constant STAKE = 100 ether;
    uint256 internal constant POOL = 1_000 ether;

    FlockToken internal token;
    FlockAlliance internal alliance;
    address internal creator = address(0xC0FFEE);
    address internal keeper = address(0xBEEF);
    address[] internal people;
    /// @dev Task parameters a test may change before opening a round.
    uint16 internal penaltyBps = 5_000;
    uint16 internal voterSlashBps = 1_000;
    uint16 internal votersPerRound = 2;

    function setUp() public virtual {
        token = new FlockToken(type(uint128).max, address(this));
        alliance = new FlockAlliance(token);
        _fund(creator, 1_000_000 ether);
        for (uint256 i = 1; i <= 4; i++) {
            address person = address(uint160(0x1000 + i));
            people.push(person);
            _fund(person, 10_000 ether);
        }
        vm.warp(1_000_000);
    }

    function _fund(address who, uint256 amount) internal {
        token.mint(who, amount);
        vm.prank(who);
        token.approve(address(alliance), type(uint256).max);
    }

    function _params(uint32 rounds) internal view returns (FlockAlliance.TaskParams memory p) {
        p.metadataURI = "ipfs://task";
        p.modelHash = keccak256("model");
        p.rounds = rounds;
        p.minParticipants = 2;
        p.maxParticipants = 64;
        p.proposersPerRound = 2;
        p.votersPerRound = votersPerRound;
        p.slashBps = 1_000;
        p.penaltyBps = penaltyBps;
        p.voterSlashBps = voterSlashBps;
        p.finalizerShareBps = 1_000;
        p.proposerRewardBps = 5_000;
        p.trainingDuration = 600;
        p.commitDuration = 300;
        p.revealDuration = 300;
        p.unbondingDelay = 1_200;
        p.minStake = 10 ether;
        p.rewardPool = uint128(POOL);
    }

    /// @dev Creates tasks until round 0 has exactly two proposers and votersPerRound voters.
    function _openRound()
        internal
        returns (uint256 taskId, address[] memory proposers, address[] memory voters)
    {
        uint256[] memory stakes = new uint256[](people.length);
        for (uint256 i = 0; i < stakes.length; i++) stakes[i] = STAKE;
        return _openRoundWith(stakes, address(0), Sortition.Role.None);
    }

    /// @dev Like _openRound with people[i] staking stakes[i], and until `who` has `role`
    ///      (any split if `who` is zero).
    function _openRoundWith(uint256[] memory stakes, address who, Sortition.Role role)
        internal
        returns (uint256 taskId, address[] memory proposers, address[] memory voters)
    {
        for (uint256 attempt = 0; attempt < 96; attempt++) {
            vm.prank(creator);
            taskId = alliance.createTask(_params(3));
            for (uint256 i = 0; i < people.length; i++) {
                vm.prank(people[i]);
                alliance.stake(taskId, stakes[i]);
            }
            vm.roll(block.number + 1);
            alliance.startRound(taskId);
            (proposers, voters) = _roles(taskId, 0);
            bool split = proposers.length == 2 && voters.length == votersPerRound;
            if (split && (who == address(0) || alliance.roleOf(taskId, 0, who) == role)) {
                return (taskId, proposers, voters);
            }
        }
        revert("no 2/2 split");
    }

    function _roles(uint256 taskId, uint256 round)
        internal
        view
        returns (address[] memory proposers, address[] memory voters)
    {
        uint256 np;
        uint256 nv;
        proposers = new address[](people.length);
        voters = new address[](people.length);
        for (uint256 i = 0; i < people.length; i++) {
            Sortition.Role role = alliance.roleOf(taskId, round, people[i]);
            if (role == Sortition.Role.Proposer) proposers[np++] = people[i];
            else if (role == Sortition.Role.Voter) voters[nv++] = people[i];
        }
        assembly {
            mstore(proposers, np)
            mstore(voters, nv)
        }
    }

    function _to(uint256 taskId, uint256 round, FlockAlliance.Phase phase) internal {
        FlockAlliance.Round memory r = alliance.roundInfo(taskId, round);
        if (phase == FlockAlliance.Phase.Committing) vm.warp(r.trainingEnds);
        if (phase == FlockAlliance.Phase.Revealing) vm.warp(r.commitEnds);
        if (phase == FlockAlliance.Phase.Finalizable) vm.warp(r.revealEnds);
    }

    function _bucketTotal() internal view returns (uint256 total) {
        for (uint256 id = 1; id <= alliance.taskCount(); id++) {
            FlockAlliance.TaskState memory t = alliance.taskState(id);
            total += uint256(t.staked) + t.pool + t.allotted + t.claimable;
        }
    }
}
