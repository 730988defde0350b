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

    Sortition.Role internal constant NONE = Sortition.Role.None;
    Sortition.Role internal constant PROPOSER = Sortition.Role.Proposer;
    Sortition.Role internal constant VOTER = Sortition.Role.Voter;
    Sortition.Role internal constant BOTH = Sortition.Role.Both;

    FlockToken internal token;
    FlockAlliance internal alliance;
    address internal creator = address(0xC0FFEE);
    address internal keeper = address(0xBEEF);
    address[] internal people;
    /// @dev Task parameters a test may change before opening a round.
    uint16 internal penaltyBps = 5_000;
    uint16 internal voterSlashBps = 1_000;
    uint16 internal proposersPerRound = 2;
    uint16 internal votersPerRound = 2;
    uint32 internal maxParticipants = 64;

    function setUp() public virtual {
        token = new FlockToken(type(uint128).max, address(this));
        alliance = new FlockAlliance(token);
        _fund(creator, 1_000_000 ether);
        _addPeople(4);
        vm.warp(1_000_000);
    }

    function _fund(address who, uint256 amount) internal {
        token.mint(who, amount);
        vm.prank(who);
        token.approve(address(alliance), type(uint256).max);
    }

    /// @dev Funds `n` more participants, people[k] = 0x1001 + k.
    function _addPeople(uint256 n) internal {
        for (uint256 i = 0; i < n; i++) {
            address person = address(uint160(0x1001 + people.length));
            people.push(person);
            _fund(person, 10_000 ether);
        }
    }

    function _params(uint32 rounds) internal view returns (FlockAlliance.TaskParams memory p) {
        p.metadataURI = "ipfs://task";
        p.modelHash = keccak256("model");
        p.rounds = rounds;
        p.minParticipants = 2;
        p.maxParticipants = maxParticipants;
        p.proposersPerRound = proposersPerRound;
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

    function _equalStakes() internal view returns (uint256[] memory stakes) {
        stakes = new uint256[](people.length);
        for (uint256 i = 0; i < stakes.length; i++) stakes[i] = STAKE;
    }

    function _roleList(Sortition.Role a, Sortition.Role b, Sortition.Role c, Sortition.Role d)
        internal
        pure
        returns (Sortition.Role[] memory roles)
    {
        roles = new Sortition.Role[](4);
        (roles[0], roles[1], roles[2], roles[3]) = (a, b, c, d);
    }

    /// @dev Equal stakes; people[0] and people[1] propose, people[2] and people[3] vote.
    function _openRound()
        internal
        returns (uint256 taskId, address[] memory proposers, address[] memory voters)
    {
        return _openRoundAs(_equalStakes(), _roleList(PROPOSER, PROPOSER, VOTER, VOTER));
    }

    /// @dev Creates a 3-round task where people[i] stakes stakes[i] and starts round 0 with a
    ///      seed under which people[i] has roles[i] (people beyond roles.length: any role).
    ///      Searches prevrandao values for that seed; the contract computes the same one.
    ///      Returns the proposers (Proposer or Both) and voters (Voter or Both) in people order.
    function _openRoundAs(uint256[] memory stakes, Sortition.Role[] memory roles)
        internal
        returns (uint256 taskId, address[] memory proposers, address[] memory voters)
    {
        vm.roll(block.number + 1);
        taskId = alliance.taskCount() + 1;
        uint256 total;
        for (uint256 i = 0; i < stakes.length; i++) total += stakes[i];
        uint256 randao = _searchSeed(taskId, stakes, total, roles);
        vm.prevrandao(bytes32(randao));
        vm.prank(creator);
        alliance.createTask(_params(3));
        for (uint256 i = 0; i < stakes.length; i++) {
            if (stakes[i] == 0) continue;
            vm.prank(people[i]);
            alliance.stake(taskId, stakes[i]);
        }
        alliance.startRound(taskId);
        for (uint256 i = 0; i < roles.length; i++) {
            assertTrue(alliance.roleOf(taskId, 0, people[i]) == roles[i], "searched roles");
        }
        (proposers, voters) = _roles(taskId, 0);
    }

    function _searchSeed(
        uint256 taskId,
        uint256[] memory stakes,
        uint256 total,
        Sortition.Role[] memory roles
    ) internal view returns (uint256) {
        bytes32 previous = blockhash(block.number - 1);
        for (uint256 randao = 1; randao < 200_000; randao++) {
            bytes32 seed =
                keccak256(abi.encode(randao, previous, address(alliance), taskId, uint256(0)));
            bool ok = true;
            for (uint256 i = 0; ok && i < roles.length; i++) {
                Sortition.Role role = Sortition.roleOf(
                    seed, people[i], stakes[i], total, proposersPerRound, votersPerRound
                );
                ok = role == roles[i];
            }
            if (ok) return randao;
        }
        revert("no seed gives these roles");
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
            if (role == PROPOSER || role == BOTH) proposers[np++] = people[i];
            if (role == VOTER || role == BOTH) voters[nv++] = people[i];
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
