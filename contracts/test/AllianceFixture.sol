// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./Vm.sol";
import {MockSeedSource} from "./MockSeedSource.sol";
import {AllianceTypes} from "../src/AllianceTypes.sol";
import {FlockToken} from "../src/FlockToken.sol";
import {FlockAlliance} from "../src/FlockAlliance.sol";
import {ISeedSource} from "../src/ISeedSource.sol";
import {Sortition} from "../src/Sortition.sol";
import {StakeVault} from "../src/StakeVault.sol";

/// @notice Deployed token, vault, a test-controlled seed source and the alliance, a creator, a
///         keeper and four funded participants.
abstract contract AllianceFixture is Test {
    uint256 internal constant STAKE = 100 ether;
    uint256 internal constant POOL = 1_000 ether;
    /// @dev Every participant's registered dataset: its size and its hash.
    uint64 internal constant SAMPLES = 1_000;
    bytes32 internal constant DATA = keccak256("dataset.dir");
    /// @dev A signature envelope's hash: the contract records it, readers check it.
    bytes32 internal constant SIG = keccak256("signature envelope");
    /// @dev How long a task runs before its deadline.
    uint64 internal constant LIFETIME = 30 days;

    Sortition.Role internal constant NONE = Sortition.Role.None;
    Sortition.Role internal constant PROPOSER = Sortition.Role.Proposer;
    Sortition.Role internal constant VOTER = Sortition.Role.Voter;
    Sortition.Role internal constant BOTH = Sortition.Role.Both;

    FlockToken internal token;
    StakeVault internal vault;
    MockSeedSource internal seeds;
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
        vault = new StakeVault(token);
        seeds = new MockSeedSource();
        alliance = new FlockAlliance(token, vault, seeds);
        vault.bind(address(alliance));
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

    function _params(uint32 rounds) internal view returns (AllianceTypes.TaskParams memory p) {
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
        p.deadline = uint64(block.timestamp) + LIFETIME;
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
    ///      Searches seeds keccak256(i) for one and has the seed source answer with it.
    ///      Returns the proposers (Proposer or Both) and voters (Voter or Both) in people order.
    function _openRoundAs(uint256[] memory stakes, Sortition.Role[] memory roles)
        internal
        returns (uint256 taskId, address[] memory proposers, address[] memory voters)
    {
        uint256 total;
        for (uint256 i = 0; i < stakes.length; i++) total += stakes[i];
        bytes32 seed = _searchSeed(stakes, total, roles);
        vm.prank(creator);
        taskId = alliance.createTask(_params(3));
        for (uint256 i = 0; i < stakes.length; i++) {
            if (stakes[i] == 0) continue;
            _stake(taskId, people[i], stakes[i]);
        }
        _startAndDraw(taskId, seed);
        for (uint256 i = 0; i < roles.length; i++) {
            assertTrue(alliance.roleOf(taskId, 0, people[i]) == roles[i], "searched roles");
        }
        (proposers, voters) = _roles(taskId, 0);
    }

    /// @dev `who` stakes `amount` with the standard registration.
    function _stake(uint256 taskId, address who, uint256 amount) internal {
        vm.prank(who);
        alliance.stake(taskId, amount, SAMPLES, DATA);
    }

    /// @dev Starts the task's next round and draws it with `seed`; returns the round.
    function _startAndDraw(uint256 taskId, bytes32 seed) internal returns (uint256 round) {
        round = alliance.startRound(taskId);
        seeds.fulfil(address(alliance), taskId, round, seed);
        alliance.drawRound(taskId, round);
    }

    function _searchSeed(uint256[] memory stakes, uint256 total, Sortition.Role[] memory roles)
        internal
        view
        returns (bytes32)
    {
        for (uint256 i = 1; i < 200_000; i++) {
            bytes32 seed = keccak256(abi.encode(i));
            bool ok = true;
            for (uint256 j = 0; ok && j < roles.length; j++) {
                Sortition.Role role = Sortition.roleOf(
                    seed, people[j], stakes[j], total, proposersPerRound, votersPerRound
                );
                ok = role == roles[j];
            }
            if (ok) return seed;
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

    function _to(uint256 taskId, uint256 round, AllianceTypes.Phase phase) internal {
        AllianceTypes.Round memory r = alliance.roundInfo(taskId, round);
        if (phase == AllianceTypes.Phase.Committing) vm.warp(r.trainingEnds);
        if (phase == AllianceTypes.Phase.Revealing) vm.warp(r.commitEnds);
        if (phase == AllianceTypes.Phase.Finalizable) vm.warp(r.revealEnds);
    }

    function _bucketTotal() internal view returns (uint256 total) {
        for (uint256 id = 1; id <= alliance.taskCount(); id++) {
            AllianceTypes.TaskState memory t = alliance.taskState(id);
            total += uint256(t.staked) + t.pool + t.allotted + t.claimable;
        }
    }
}
