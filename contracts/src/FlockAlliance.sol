// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Checkpoints} from "@openzeppelin/contracts/utils/structs/Checkpoints.sol";

import {Sortition} from "./Sortition.sol";

/// @title FL Alliance: staking, rounds, commit-reveal voting, rewards and slashing
/// @notice Holds every FL Alliance task. A task runs `rounds` rounds; in each, staked participants
///         are split by stake-weighted sortition into proposers (submit an update hash) and voters
///         (commit, then reveal, a signed score of the posted aggregate). Anyone finalizes a round
///         after its reveal deadline; each participant then pulls its own reward (claim).
/// @dev Settlement is O(1) per round: finalizeRound only reads per-round accumulators, and every
///      participant is settled lazily, on its next action, claim, withdraw or an explicit
///      settle(). Rounds of a task are strictly sequential, so a participant has at most one
///      unsettled round at any time (Participant.pendingRound).
///
///      Token invariant, per task: stakes (active + unbonding) + pool + allotted + claimable equals
///      everything deposited (reward pool + stakes) minus everything paid out (withdrawals, claims,
///      reclaimed pool). The contract's balance is the sum of those four buckets over all tasks.
///
///      Seed: fixed when the round starts, keccak256(prevrandao, previous blockhash, this, task,
///      round). Whoever calls startRound can pick the block it lands in, and so choose among as
///      many seeds as blocks they are willing to wait; an L1 proposer can in addition withhold its
///      block (one bit of bias per slot, at the cost of the block reward); on Base the sequencer
///      sets prevrandao and can therefore choose the seed outright. Good enough for test nets and
///      low-value tasks; high-value tasks should swap in a VRF or a participant commit-reveal seed.
contract FlockAlliance is ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;
    using Checkpoints for Checkpoints.Trace208;

    /// @notice Denominator of every rate given in basis points.
    uint256 public constant BPS = 10_000;

    /// @notice Fixed-point scale of vote scores: a score of 1e18 means +1.0 of the metric.
    int256 public constant SCORE_SCALE = 1e18;

    /// @notice Where a round stands; derived from the clock and the finalized flag.
    enum Phase {
        NotStarted,
        Training,
        Committing,
        Revealing,
        Finalizable,
        Finalized
    }

    /// @notice What a participant did in a round.
    enum Action {
        None,
        Submitted,
        Committed,
        Revealed,
        NoShow
    }

    /// @notice Which side of the vote won a round.
    enum Majority {
        None,
        Accept,
        Reject
    }

    /// @notice Everything fixed when a task is created.
    struct TaskParams {
        string metadataURI;
        bytes32 modelHash;
        uint32 rounds;
        uint32 minParticipants;
        uint32 maxParticipants;
        uint16 proposersPerRound;
        uint16 votersPerRound;
        uint16 slashBps;
        uint16 penaltyBps; // a proposer flagged by the flag vote (free rider, copy)
        uint16 voterSlashBps; // a voter on the losing side, or one that committed and never revealed
        uint16 finalizerShareBps;
        uint16 proposerRewardBps;
        uint64 trainingDuration;
        uint64 commitDuration;
        uint64 revealDuration;
        uint64 unbondingDelay;
        uint128 minStake;
        uint128 rewardPool;
    }

    /// @notice Mutable state of a task (the four token buckets and progress).
    struct TaskState {
        address creator;
        uint32 roundsStarted;
        uint32 participants;
        bytes32 globalModelHash;
        uint128 pool;
        uint128 staked;
        uint128 allotted;
        uint128 claimable;
    }

    /// @notice One round's seed, deadlines, accumulators and settlement record.
    struct Round {
        bytes32 seed;
        bytes32 aggregateHash;
        uint64 trainingEnds;
        uint64 commitEnds;
        uint64 revealEnds;
        uint32 updates;
        uint128 totalStake;
        uint128 proposerWeight;
        uint128 commitWeight;
        uint128 rejectWeight;
        // acceptWeight and flagVoterWeight share a slot: an accepting reveal writes both
        uint128 acceptWeight;
        uint128 flagVoterWeight;
        int256 weightedScore;
        uint256 contributionTotal;
        uint256 contributionLeft;
        uint128 reward;
        uint128 proposerRewardLeft;
        uint128 voterRewardLeft;
        uint128 voterWeightLeft;
        address finalizer;
        bool finalized;
        bool accepted;
        Majority majority;
    }

    /// @notice A participant's action in one round.
    struct Record {
        Action action;
        bool accept;
        bool settled;
        uint32 updateIndex;
        uint128 weight;
        bytes32 commitment;
    }

    /// @notice One submitted update of a round, by submission index: its proposer, the
    ///         proposer's weight, the stake of the voters (accepting or rejecting) that flagged
    ///         it (contribution exactly -SCORE_SCALE), and the contribution accumulated from
    ///         accepting voters, sum of voterWeight * contribution (SCORE_SCALE fixed point).
    struct Update {
        address proposer;
        uint128 weight;
        uint128 flagWeight;
        int256 contribution;
    }

    /// @notice A participant's stake in one task.
    struct Participant {
        uint128 active;
        uint128 unbonding;
        uint64 releaseAt;
        uint32 pendingRound;
    }

    /// @notice The FLOCK token staked, rewarded and slashed here.
    IERC20 public immutable token;

    /// @notice Number of tasks created; task ids run from 1 to taskCount.
    uint256 public taskCount;

    mapping(uint256 taskId => TaskParams) private _params;
    mapping(uint256 taskId => TaskState) private _tasks;
    mapping(uint256 taskId => Checkpoints.Trace208) private _totalStake;
    mapping(uint256 taskId => mapping(uint256 round => Round)) private _rounds;
    mapping(uint256 taskId => mapping(uint256 round => mapping(address => Record))) private _records;
    mapping(uint256 taskId => mapping(uint256 round => mapping(uint256 index => Update))) private
        _updates;
    mapping(uint256 taskId => mapping(address => Participant)) private _participants;
    mapping(uint256 taskId => mapping(address => Checkpoints.Trace208)) private _stakeHistory;
    mapping(uint256 taskId => mapping(address => uint256)) private _claimable;

    /// @notice A task was created and its reward pool transferred in.
    event TaskCreated(
        uint256 indexed taskId,
        address indexed creator,
        bytes32 modelHash,
        uint32 rounds,
        uint128 rewardPool,
        string metadataURI
    );
    /// @notice `account` added `amount` to its active stake.
    event Staked(uint256 indexed taskId, address indexed account, uint256 amount, uint256 active);
    /// @notice `account` moved `amount` to unbonding, withdrawable from `releaseAt`.
    event UnstakeRequested(
        uint256 indexed taskId, address indexed account, uint256 amount, uint64 releaseAt
    );
    /// @notice `account` withdrew its unbonded stake.
    event Withdrawn(uint256 indexed taskId, address indexed account, uint256 amount);
    /// @notice A round started; roles follow from `seed` and the stakes.
    event RoundStarted(
        uint256 indexed taskId,
        uint256 indexed round,
        bytes32 seed,
        uint256 totalStake,
        uint64 trainingEnds,
        uint64 commitEnds,
        uint64 revealEnds
    );
    /// @notice A proposer committed to its update.
    event UpdateSubmitted(
        uint256 indexed taskId,
        uint256 indexed round,
        address indexed proposer,
        bytes32 updateHash,
        uint256 numSamples,
        uint256 weight,
        uint256 index
    );
    /// @notice The hash of the round's aggregate was posted.
    event AggregatePosted(
        uint256 indexed taskId, uint256 indexed round, address indexed poster, bytes32 aggregateHash
    );
    /// @notice A voter committed to a hidden score.
    event VoteCommitted(
        uint256 indexed taskId, uint256 indexed round, address indexed voter, bytes32 commitment
    );
    /// @notice A voter revealed its score and its contribution of each update (by index).
    event VoteRevealed(
        uint256 indexed taskId,
        uint256 indexed round,
        address indexed voter,
        int128 score,
        uint256 weight,
        int128[] contributions
    );
    /// @notice A round was tallied; `allotted` tokens left the pool for its rewards.
    event RoundFinalized(
        uint256 indexed taskId,
        uint256 indexed round,
        bool accepted,
        bytes32 globalModelHash,
        uint256 reward,
        uint256 allotted,
        uint256 acceptWeight,
        uint256 rejectWeight,
        address finalizer
    );
    /// @notice A participant's round was settled: `reward` became claimable, `slashed` was taken.
    event Settled(
        uint256 indexed taskId,
        uint256 indexed round,
        address indexed account,
        uint256 reward,
        uint256 slashed
    );
    /// @notice `amount` of `account`'s stake was slashed; `cut` of it went to `beneficiary`.
    event Slashed(
        uint256 indexed taskId,
        address indexed account,
        uint256 amount,
        address beneficiary,
        uint256 cut
    );
    /// @notice A selected participant that did nothing in `round` was reported.
    event NoShowReported(
        uint256 indexed taskId, uint256 indexed round, address indexed account, address reporter
    );
    /// @notice `account` was paid everything it had accrued.
    event Claimed(uint256 indexed taskId, address indexed account, uint256 amount);
    /// @notice The creator took back what was left of the pool after the last round.
    event PoolReclaimed(uint256 indexed taskId, address indexed creator, uint256 amount);

    /// @notice No task has this id.
    error UnknownTask(uint256 taskId);
    /// @notice A creation parameter is out of range; `name` says which.
    error InvalidTaskParameter(bytes32 name);
    /// @notice The round is not in the phase this call needs.
    error WrongPhase(uint256 taskId, uint256 round, Phase expected, Phase actual);
    /// @notice The stake is below what the call needs.
    error InsufficientStake(uint256 required, uint256 actual);
    /// @notice The task already has its maximum number of participants.
    error TaskFull(uint256 taskId, uint256 maxParticipants);
    /// @notice Too few participants to start a round.
    error NotEnoughParticipants(uint256 taskId, uint256 participants, uint256 required);
    /// @notice Every round of the task has already started.
    error TaskClosed(uint256 taskId);
    /// @notice Sortition did not give `account` the role the call needs.
    error NotSelected(uint256 taskId, uint256 round, address account, Sortition.Role required);
    /// @notice `account` already submitted an update in this round.
    error DuplicateSubmission(uint256 taskId, uint256 round, address account);
    /// @notice `account` already committed a vote in this round.
    error DuplicateVote(uint256 taskId, uint256 round, address account);
    /// @notice The aggregate hash of the round was already posted.
    error AggregateAlreadyPosted(uint256 taskId, uint256 round);
    /// @notice No aggregate hash was posted in this round, so there is nothing to vote on.
    error AggregateNotPosted(uint256 taskId, uint256 round);
    /// @notice No update was submitted in this round, so there is nothing to aggregate.
    error NoUpdates(uint256 taskId, uint256 round);
    /// @notice Only a proposer of the round or the task creator may post the aggregate.
    error NotAggregator(uint256 taskId, uint256 round, address account);
    /// @notice `account` has no unrevealed vote commitment in this round.
    error NoCommitment(uint256 taskId, uint256 round, address account);
    /// @notice The revealed (score, salt) does not hash to the commitment.
    error RevealMismatch(uint256 taskId, uint256 round, address account);
    /// @notice The score is outside the accepted range.
    error ScoreOutOfRange(int256 score);
    /// @notice A vote carries `actual` contributions where the round needs `expected` (one per
    ///         update; a rejecting vote may also carry none).
    error ContributionsMismatch(uint256 taskId, uint256 round, uint256 expected, uint256 actual);
    /// @notice Contribution `index` is outside [-SCORE_SCALE, SCORE_SCALE].
    error ContributionOutOfRange(uint256 index, int256 value);
    /// @notice `account` acted in this round or was not selected: nothing to report.
    error NotANoShow(uint256 taskId, uint256 round, address account);
    /// @notice `account` acted in a round that is not finalized yet; its stake cannot leave.
    error PendingSettlement(uint256 taskId, uint256 round, address account);
    /// @notice The unbonding stake is still locked until `releaseAt`.
    error StillUnbonding(uint64 releaseAt);
    /// @notice Zero amounts and zero hashes are refused.
    error ZeroValue();
    /// @notice Only the task's creator may do this.
    error NotCreator(uint256 taskId, address account);

    /// @param token_ The FLOCK token.
    constructor(IERC20 token_) {
        token = token_;
    }

    // ------------------------------------------------------------------ tasks and stake

    /// @notice Create a task and transfer its reward pool in from the caller (needs allowance).
    /// @param p The task's parameters; see TaskParams.
    /// @return taskId The new task's id.
    function createTask(TaskParams calldata p) external nonReentrant returns (uint256 taskId) {
        _validate(p);
        taskId = ++taskCount;
        _params[taskId] = p;
        TaskState storage t = _tasks[taskId];
        t.creator = msg.sender;
        t.globalModelHash = p.modelHash;
        t.pool = p.rewardPool;
        emit TaskCreated(taskId, msg.sender, p.modelHash, p.rounds, p.rewardPool, p.metadataURI);
        token.safeTransferFrom(msg.sender, address(this), p.rewardPool);
    }

    /// @notice Add `amount` to the caller's stake in a task (needs allowance). Counts for roles
    ///         from the next round that starts.
    /// @param taskId The task.
    /// @param amount Tokens to stake; the resulting stake must reach the task's minimum.
    function stake(uint256 taskId, uint256 amount) external nonReentrant {
        TaskState storage t = _task(taskId);
        TaskParams storage p = _params[taskId];
        if (amount == 0) revert ZeroValue();
        if (t.roundsStarted >= p.rounds) revert TaskClosed(taskId);
        Participant storage me = _participants[taskId][msg.sender];
        uint256 active = uint256(me.active) + amount;
        if (active < p.minStake) revert InsufficientStake(p.minStake, active);
        if (me.active == 0) {
            if (t.participants >= p.maxParticipants) revert TaskFull(taskId, p.maxParticipants);
            t.participants += 1;
        }
        _setActive(taskId, t, msg.sender, me, active);
        t.staked += amount.toUint128();
        emit Staked(taskId, msg.sender, amount, active);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Move `amount` of active stake to unbonding. It stops counting for roles from the
    ///         next round, stays slashable, and can be withdrawn after the unbonding delay.
    /// @param taskId The task.
    /// @param amount Tokens to unbond; what stays active must be zero or at least the minimum.
    function requestUnstake(uint256 taskId, uint256 amount) external nonReentrant {
        TaskState storage t = _task(taskId);
        TaskParams storage p = _params[taskId];
        if (amount == 0) revert ZeroValue();
        Participant storage me = _participants[taskId][msg.sender];
        if (amount > me.active) revert InsufficientStake(amount, me.active);
        uint256 remaining = me.active - amount;
        if (remaining != 0 && remaining < p.minStake) {
            revert InsufficientStake(p.minStake, remaining);
        }
        if (remaining == 0) t.participants -= 1;
        _setActive(taskId, t, msg.sender, me, remaining);
        me.unbonding += amount.toUint128();
        me.releaseAt = uint64(block.timestamp) + p.unbondingDelay;
        emit UnstakeRequested(taskId, msg.sender, amount, me.releaseAt);
    }

    /// @notice Withdraw all unbonded stake once the delay has passed; settles the caller's last
    ///         round first, so a pending slash cannot be escaped.
    /// @param taskId The task.
    /// @return amount Tokens transferred to the caller.
    function withdraw(uint256 taskId) external nonReentrant returns (uint256 amount) {
        TaskState storage t = _task(taskId);
        Participant storage me = _participants[taskId][msg.sender];
        if (!_settle(taskId, msg.sender) && me.pendingRound != 0) {
            revert PendingSettlement(taskId, me.pendingRound - 1, msg.sender);
        }
        amount = me.unbonding;
        if (amount == 0) revert ZeroValue();
        if (block.timestamp < me.releaseAt) revert StillUnbonding(me.releaseAt);
        me.unbonding = 0;
        t.staked -= amount.toUint128();
        emit Withdrawn(taskId, msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ------------------------------------------------------------------ rounds

    /// @notice Start the next round: fix its seed and deadlines. Anyone may call, once the
    ///         previous round is finalized and enough participants are staked.
    /// @param taskId The task.
    /// @return round The index of the round started (0-based).
    function startRound(uint256 taskId) external returns (uint256 round) {
        TaskState storage t = _task(taskId);
        TaskParams storage p = _params[taskId];
        round = t.roundsStarted;
        if (round >= p.rounds) revert TaskClosed(taskId);
        if (round > 0 && !_rounds[taskId][round - 1].finalized) {
            revert WrongPhase(taskId, round - 1, Phase.Finalized, _phase(taskId, round - 1));
        }
        if (t.participants < p.minParticipants) {
            revert NotEnoughParticipants(taskId, t.participants, p.minParticipants);
        }
        t.roundsStarted = uint32(round + 1);
        Round storage r = _rounds[taskId][round];
        r.seed = keccak256(
            abi.encode(block.prevrandao, blockhash(block.number - 1), address(this), taskId, round)
        );
        r.totalStake = uint256(_totalStake[taskId].latest()).toUint128();
        r.trainingEnds = uint64(block.timestamp) + p.trainingDuration;
        r.commitEnds = r.trainingEnds + p.commitDuration;
        r.revealEnds = r.commitEnds + p.revealDuration;
        emit RoundStarted(
            taskId, round, r.seed, r.totalStake, r.trainingEnds, r.commitEnds, r.revealEnds
        );
    }

    /// @notice Commit to a local update (training phase, selected proposers only, once).
    /// @param taskId The task.
    /// @param round The current round.
    /// @param updateHash Hash of the signed update blob, as stored off chain.
    /// @param numSamples Number of training samples behind the update (for the aggregation).
    function submitUpdate(uint256 taskId, uint256 round, bytes32 updateHash, uint256 numSamples)
        external
    {
        _task(taskId);
        _requirePhase(taskId, round, Phase.Training);
        if (updateHash == bytes32(0) || numSamples == 0) revert ZeroValue();
        _requireRole(taskId, round, Sortition.Role.Proposer);
        Record storage rec = _records[taskId][round][msg.sender];
        if (rec.action != Action.None) revert DuplicateSubmission(taskId, round, msg.sender);
        uint128 weight = _enter(taskId, round);
        Round storage r = _rounds[taskId][round];
        uint32 index = r.updates;
        rec.action = Action.Submitted;
        rec.updateIndex = index;
        rec.weight = weight;
        rec.commitment = updateHash;
        Update storage u = _updates[taskId][round][index];
        u.proposer = msg.sender;
        u.weight = weight;
        r.proposerWeight += weight;
        r.updates = index + 1;
        emit UpdateSubmitted(taskId, round, msg.sender, updateHash, numSamples, weight, index);
    }

    /// @notice Post the hash of the round's aggregate (commit phase, once). Only a proposer that
    ///         submitted in this round or the task creator may post; voters recompute and check it.
    /// @param taskId The task.
    /// @param round The current round.
    /// @param aggregateHash Hash of the deterministic aggregate of the committed updates.
    function postAggregate(uint256 taskId, uint256 round, bytes32 aggregateHash) external {
        TaskState storage t = _task(taskId);
        _requirePhase(taskId, round, Phase.Committing);
        if (aggregateHash == bytes32(0)) revert ZeroValue();
        Round storage r = _rounds[taskId][round];
        if (r.aggregateHash != bytes32(0)) revert AggregateAlreadyPosted(taskId, round);
        if (r.updates == 0) revert NoUpdates(taskId, round);
        if (
            msg.sender != t.creator
                && _records[taskId][round][msg.sender].action != Action.Submitted
        ) revert NotAggregator(taskId, round, msg.sender);
        r.aggregateHash = aggregateHash;
        emit AggregatePosted(taskId, round, msg.sender, aggregateHash);
    }

    /// @notice Commit to a hidden score (commit phase, selected voters only, once).
    /// @param taskId The task.
    /// @param round The current round.
    /// @param commitment voteCommitment(taskId, round, voter, score, contributions, salt).
    function commitVote(uint256 taskId, uint256 round, bytes32 commitment) external {
        _task(taskId);
        _requirePhase(taskId, round, Phase.Committing);
        if (commitment == bytes32(0)) revert ZeroValue();
        Round storage r = _rounds[taskId][round];
        if (r.aggregateHash == bytes32(0)) revert AggregateNotPosted(taskId, round);
        _requireRole(taskId, round, Sortition.Role.Voter);
        Record storage rec = _records[taskId][round][msg.sender];
        if (rec.action != Action.None) revert DuplicateVote(taskId, round, msg.sender);
        uint128 weight = _enter(taskId, round);
        rec.action = Action.Committed;
        rec.weight = weight;
        rec.commitment = commitment;
        r.commitWeight += weight;
        emit VoteCommitted(taskId, round, msg.sender, commitment);
    }

    /// @notice Reveal a committed score and contributions (reveal phase). Positive scores vote
    ///         to accept. An accepting vote carries one contribution per update (by submission
    ///         index), each in [-SCORE_SCALE, SCORE_SCALE]; they add voterWeight * contribution
    ///         to the update's accumulator. A rejecting vote carries none or one per update.
    ///         Any vote that carries them joins the flag vote: its weight counts in the round's
    ///         flagVoterWeight, and in flagWeight of each update it scores exactly -SCORE_SCALE.
    ///         O(1) gas per contribution.
    /// @param taskId The task.
    /// @param round The current round.
    /// @param score Change of the validation metric, fixed point with SCORE_SCALE.
    /// @param contributions Contribution of update i, fixed point with SCORE_SCALE.
    /// @param salt The secret salt used in the commitment.
    function revealVote(
        uint256 taskId,
        uint256 round,
        int128 score,
        int128[] calldata contributions,
        bytes32 salt
    ) external {
        _task(taskId);
        _requirePhase(taskId, round, Phase.Revealing);
        Record storage rec = _records[taskId][round][msg.sender];
        if (rec.action != Action.Committed) revert NoCommitment(taskId, round, msg.sender);
        if (voteCommitment(taskId, round, msg.sender, score, contributions, salt) != rec.commitment)
        {
            revert RevealMismatch(taskId, round, msg.sender);
        }
        Round storage r = _rounds[taskId][round];
        uint256 n = contributions.length;
        if (n != r.updates && (score > 0 || n != 0)) {
            revert ContributionsMismatch(taskId, round, r.updates, n);
        }
        uint128 weight = rec.weight;
        rec.action = Action.Revealed;
        rec.accept = score > 0;
        if (score > 0) {
            r.acceptWeight += weight;
            r.contributionTotal =
                _tally(taskId, round, r.contributionTotal, weight, contributions, true);
        } else {
            r.rejectWeight += weight;
            _tally(taskId, round, 0, weight, contributions, false);
        }
        if (n != 0) r.flagVoterWeight += weight;
        r.weightedScore += int256(score) * int256(uint256(weight));
        emit VoteRevealed(taskId, round, msg.sender, score, weight, contributions);
    }

    /// @notice Tally a round after its reveal deadline (anyone, once): stake-weighted majority
    ///         of revealed votes; allot the round's reward (remaining pool / remaining rounds):
    ///         the proposers' part only if accepted and contributionTotal > 0, the voters' part
    ///         to a strict majority; the rest stays in the pool.
    ///         O(1): participants are settled lazily. The caller earns the finalizer's share of
    ///         the round's slashes as they are settled.
    /// @param taskId The task.
    /// @param round The round to finalize.
    function finalizeRound(uint256 taskId, uint256 round) external {
        TaskState storage t = _task(taskId);
        TaskParams storage p = _params[taskId];
        _requirePhase(taskId, round, Phase.Finalizable);
        Round storage r = _rounds[taskId][round];
        r.finalized = true;
        r.finalizer = msg.sender;
        bool accepted = r.acceptWeight > r.rejectWeight;
        r.accepted = accepted;
        if (r.acceptWeight != r.rejectWeight) {
            r.majority = accepted ? Majority.Accept : Majority.Reject;
        }
        uint128 reward = uint128(t.pool / (p.rounds - round));
        uint128 proposerPart = uint128(uint256(reward) * p.proposerRewardBps / BPS);
        uint128 allotted;
        r.reward = reward;
        if (accepted && r.contributionTotal > 0) {
            r.proposerRewardLeft = proposerPart;
            r.contributionLeft = r.contributionTotal;
            allotted += proposerPart;
        }
        if (r.majority != Majority.None) {
            r.voterRewardLeft = reward - proposerPart;
            r.voterWeightLeft = accepted ? r.acceptWeight : r.rejectWeight;
            allotted += reward - proposerPart;
        }
        t.pool -= allotted;
        t.allotted += allotted;
        if (accepted) t.globalModelHash = r.aggregateHash;
        emit RoundFinalized(
            taskId,
            round,
            accepted,
            t.globalModelHash,
            reward,
            allotted,
            r.acceptWeight,
            r.rejectWeight,
            msg.sender
        );
    }

    /// @notice Slash a participant that sortition selected in a finalized round but that did
    ///         nothing (no update; no vote although an aggregate was posted). The reporter earns
    ///         the finalizer's share of the slash.
    /// @param taskId The task.
    /// @param round A finalized round.
    /// @param account The participant to report.
    function reportNoShow(uint256 taskId, uint256 round, address account) external {
        _task(taskId);
        _requirePhase(taskId, round, Phase.Finalized);
        Record storage rec = _records[taskId][round][account];
        Sortition.Role role = roleOf(taskId, round, account);
        bool couldVote = _rounds[taskId][round].aggregateHash != bytes32(0);
        if (
            rec.action != Action.None || role == Sortition.Role.None
                || (role == Sortition.Role.Voter && !couldVote)
        ) revert NotANoShow(taskId, round, account);
        rec.action = Action.NoShow;
        rec.settled = true;
        emit NoShowReported(taskId, round, account, msg.sender);
        uint256 weight = _stakeHistory[taskId][account].upperLookupRecent(uint48(round));
        _slash(taskId, account, weight, _params[taskId].slashBps, msg.sender);
    }

    // ------------------------------------------------------------------ settlement

    /// @notice Settle `account`'s last round if it is finalized: credit its reward or take its
    ///         slash. Anyone may call (finalizers, to collect their share). Idempotent.
    /// @param taskId The task.
    /// @param account The participant.
    function settle(uint256 taskId, address account) external nonReentrant {
        _task(taskId);
        _settle(taskId, account);
    }

    /// @notice Pay the caller everything it has accrued in a task (settling its last round
    ///         first). Calling again pays nothing twice.
    /// @param taskId The task.
    /// @return amount Tokens transferred.
    function claim(uint256 taskId) external nonReentrant returns (uint256 amount) {
        TaskState storage t = _task(taskId);
        _settle(taskId, msg.sender);
        amount = _claimable[taskId][msg.sender];
        if (amount == 0) return 0;
        _claimable[taskId][msg.sender] = 0;
        t.claimable -= amount.toUint128();
        emit Claimed(taskId, msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice After the last round is finalized, the creator takes back what is left in the
    ///         pool (unallotted rewards, slashes settled late). May be called again later.
    /// @param taskId The task.
    /// @return amount Tokens transferred to the creator.
    function reclaimPool(uint256 taskId) external nonReentrant returns (uint256 amount) {
        TaskState storage t = _task(taskId);
        uint256 last = _params[taskId].rounds - 1;
        if (msg.sender != t.creator) revert NotCreator(taskId, msg.sender);
        _requirePhase(taskId, last, Phase.Finalized);
        amount = t.pool;
        t.pool = 0;
        emit PoolReclaimed(taskId, msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice The commitment a voter submits: binds task, round, voter, score, contributions
    ///         and salt: keccak256(abi.encode(taskId, round, voter, score, contributions, salt)).
    /// @param taskId The task.
    /// @param round The round.
    /// @param voter The voter's address (so nobody can replay another's commitment).
    /// @param score The hidden score.
    /// @param contributions The hidden contribution of each update, by submission index.
    /// @param salt A fresh random secret.
    /// @return The keccak256 commitment.
    function voteCommitment(
        uint256 taskId,
        uint256 round,
        address voter,
        int128 score,
        int128[] calldata contributions,
        bytes32 salt
    ) public pure returns (bytes32) {
        return keccak256(abi.encode(taskId, round, voter, score, contributions, salt));
    }

    /// @notice Update `index` (0-based, submission order) of a round.
    /// @param taskId The task.
    /// @param round The round.
    /// @param index The submission index.
    /// @return proposer Who submitted it (zero if no such update).
    /// @return weight The proposer's weight in the round.
    /// @return contribution Sum over accepting voters of voterWeight * contribution.
    /// @return flagWeight Stake of the voters (either side) that flagged it (-SCORE_SCALE); it
    ///         is flagged if 2 * flagWeight > the round's flagVoterWeight.
    function updateAt(uint256 taskId, uint256 round, uint256 index)
        external
        view
        returns (address proposer, uint128 weight, int256 contribution, uint128 flagWeight)
    {
        Update storage u = _updates[taskId][round][index];
        return (u.proposer, u.weight, u.contribution, u.flagWeight);
    }

    /// @notice The role sortition gives `account` in `round`, from the round's seed and total
    ///         stake and the account's stake at the round's start.
    /// @param taskId The task.
    /// @param round A started round.
    /// @param account The participant.
    /// @return The role (None before the round starts or below the minimum stake).
    function roleOf(uint256 taskId, uint256 round, address account)
        public
        view
        returns (Sortition.Role)
    {
        Round storage r = _rounds[taskId][round];
        TaskParams storage p = _params[taskId];
        if (r.seed == bytes32(0)) return Sortition.Role.None;
        uint256 weight = stakeAt(taskId, account, round);
        if (weight < p.minStake) return Sortition.Role.None;
        return Sortition.roleOf(
            r.seed, account, weight, r.totalStake, p.proposersPerRound, p.votersPerRound
        );
    }

    /// @notice `account`'s active stake as counted for `round`'s roles.
    /// @param taskId The task.
    /// @param account The participant.
    /// @param round The round.
    /// @return The stake.
    function stakeAt(uint256 taskId, address account, uint256 round) public view returns (uint256) {
        return _stakeHistory[taskId][account].upperLookupRecent(round.toUint48());
    }

    /// @notice The phase `round` is in now.
    /// @param taskId The task.
    /// @param round The round.
    /// @return The phase.
    function phaseOf(uint256 taskId, uint256 round) external view returns (Phase) {
        _task(taskId);
        return _phase(taskId, round);
    }

    /// @notice A task's creation parameters.
    /// @param taskId The task.
    /// @return The parameters.
    function taskParams(uint256 taskId) external view returns (TaskParams memory) {
        _task(taskId);
        return _params[taskId];
    }

    /// @notice A task's progress and token buckets.
    /// @param taskId The task.
    /// @return The state.
    function taskState(uint256 taskId) external view returns (TaskState memory) {
        return _task(taskId);
    }

    /// @notice A round's seed, deadlines, accumulators and settlement record.
    /// @param taskId The task.
    /// @param round The round.
    /// @return The round.
    function roundInfo(uint256 taskId, uint256 round) external view returns (Round memory) {
        _task(taskId);
        return _rounds[taskId][round];
    }

    /// @notice What `account` did in `round`.
    /// @param taskId The task.
    /// @param round The round.
    /// @param account The participant.
    /// @return The record.
    function recordOf(uint256 taskId, uint256 round, address account)
        external
        view
        returns (Record memory)
    {
        return _records[taskId][round][account];
    }

    /// @notice `account`'s stake in a task.
    /// @param taskId The task.
    /// @param account The participant.
    /// @return The stake, with the 1-based pending round (0: none).
    function participantOf(uint256 taskId, address account)
        external
        view
        returns (Participant memory)
    {
        return _participants[taskId][account];
    }

    /// @notice Tokens `account` can claim now, not counting its not-yet-settled round.
    /// @param taskId The task.
    /// @param account The account.
    /// @return The amount.
    function claimableOf(uint256 taskId, address account) external view returns (uint256) {
        return _claimable[taskId][account];
    }

    // ------------------------------------------------------------------ internals

    function _validate(TaskParams calldata p) private pure {
        if (p.rounds == 0) revert InvalidTaskParameter("rounds");
        if (p.minParticipants == 0) revert InvalidTaskParameter("minParticipants");
        if (p.maxParticipants < p.minParticipants) revert InvalidTaskParameter("maxParticipants");
        if (p.proposersPerRound == 0) revert InvalidTaskParameter("proposersPerRound");
        if (p.votersPerRound == 0) revert InvalidTaskParameter("votersPerRound");
        if (p.slashBps > BPS) revert InvalidTaskParameter("slashBps");
        if (p.penaltyBps > BPS) revert InvalidTaskParameter("penaltyBps");
        if (p.voterSlashBps > BPS) revert InvalidTaskParameter("voterSlashBps");
        if (p.finalizerShareBps > BPS) revert InvalidTaskParameter("finalizerShareBps");
        if (p.proposerRewardBps > BPS) revert InvalidTaskParameter("proposerRewardBps");
        if (p.trainingDuration == 0) revert InvalidTaskParameter("trainingDuration");
        if (p.commitDuration == 0) revert InvalidTaskParameter("commitDuration");
        if (p.revealDuration == 0) revert InvalidTaskParameter("revealDuration");
        // Unbonding must outlast a round, so a no-show can be reported before its stake leaves.
        if (p.unbondingDelay < p.trainingDuration + p.commitDuration + p.revealDuration) {
            revert InvalidTaskParameter("unbondingDelay");
        }
        if (p.minStake == 0) revert InvalidTaskParameter("minStake");
    }

    function _task(uint256 taskId) private view returns (TaskState storage t) {
        t = _tasks[taskId];
        if (t.creator == address(0)) revert UnknownTask(taskId);
    }

    function _phase(uint256 taskId, uint256 round) private view returns (Phase) {
        if (round >= _tasks[taskId].roundsStarted) return Phase.NotStarted;
        Round storage r = _rounds[taskId][round];
        if (r.finalized) return Phase.Finalized;
        if (block.timestamp < r.trainingEnds) return Phase.Training;
        if (block.timestamp < r.commitEnds) return Phase.Committing;
        if (block.timestamp < r.revealEnds) return Phase.Revealing;
        return Phase.Finalizable;
    }

    function _requirePhase(uint256 taskId, uint256 round, Phase expected) private view {
        Phase actual = _phase(taskId, round);
        if (actual != expected) revert WrongPhase(taskId, round, expected, actual);
    }

    function _requireRole(uint256 taskId, uint256 round, Sortition.Role role) private view {
        if (roleOf(taskId, round, msg.sender) != role) {
            revert NotSelected(taskId, round, msg.sender, role);
        }
    }

    /// @dev Settles the caller's previous round and returns its weight for this one: its stake
    ///      at the round's start, capped by what is still there to slash.
    function _enter(uint256 taskId, uint256 round) private returns (uint128 weight) {
        _settle(taskId, msg.sender);
        Participant storage me = _participants[taskId][msg.sender];
        uint256 atStart = stakeAt(taskId, msg.sender, round);
        uint256 available = uint256(me.active) + me.unbonding;
        weight = uint128(atStart < available ? atStart : available);
        if (weight == 0) revert InsufficientStake(1, 0);
        me.pendingRound = uint32(round + 1);
    }

    /// @dev Settles `account`'s pending round if finalized; returns whether nothing is pending.
    function _settle(uint256 taskId, address account) private returns (bool) {
        Participant storage me = _participants[taskId][account];
        if (me.pendingRound == 0) return true;
        uint256 round = me.pendingRound - 1;
        Round storage r = _rounds[taskId][round];
        if (!r.finalized) return false;
        me.pendingRound = 0;
        Record storage rec = _records[taskId][round][account];
        rec.settled = true;
        uint256 reward;
        uint256 slashBps;
        if (rec.action == Action.Submitted) {
            (reward, slashBps) = _proposerOutcome(taskId, round, r, rec);
        } else if (rec.action == Action.Committed) {
            // Never cheaper than revealing on the losing side: a voter that sees the reveals
            // go against it cannot escape voterSlashBps by keeping its vote to itself.
            TaskParams storage p = _params[taskId];
            slashBps = p.voterSlashBps > p.slashBps ? p.voterSlashBps : p.slashBps;
        } else if (rec.action == Action.Revealed && r.majority != Majority.None) {
            if (rec.accept == (r.majority == Majority.Accept)) reward = _voterShare(r, rec.weight);
            else slashBps = _params[taskId].voterSlashBps;
        }
        if (reward > 0) {
            TaskState storage t = _tasks[taskId];
            t.allotted -= uint128(reward);
            t.claimable += uint128(reward);
            _claimable[taskId][account] += reward;
        }
        uint256 slashed =
            slashBps > 0 ? _slash(taskId, account, rec.weight, slashBps, r.finalizer) : 0;
        emit Settled(taskId, round, account, reward, slashed);
        return true;
    }

    /// @dev Checks every c_i and adds voterWeight to update i's flagWeight where
    ///      c_i == -SCORE_SCALE. For an accepting vote it also adds voterWeight * c_i to update
    ///      i's accumulator and keeps total = sum_i proposerWeight_i * max(0, C_i) exact by
    ///      adding each update's change.
    function _tally(
        uint256 taskId,
        uint256 round,
        uint256 total,
        uint128 voterWeight,
        int128[] calldata contributions,
        bool accepting
    ) private returns (uint256) {
        mapping(uint256 => Update) storage updates = _updates[taskId][round];
        int256 w = int256(uint256(voterWeight));
        for (uint256 i = 0; i < contributions.length; i++) {
            int128 c = contributions[i];
            _checkContribution(i, c);
            if (c == -SCORE_SCALE) updates[i].flagWeight += voterWeight;
            if (c == 0 || !accepting) continue;
            Update storage u = updates[i];
            int256 before = u.contribution;
            int256 next = before + w * c;
            u.contribution = next;
            uint256 pw = u.weight;
            if (next > 0) total += pw * uint256(next);
            if (before > 0) total -= pw * uint256(before);
        }
        return total;
    }

    function _checkContribution(uint256 index, int128 c) private pure {
        if (c < -SCORE_SCALE || c > SCORE_SCALE) revert ContributionOutOfRange(index, c);
    }

    /// @dev A proposer's outcome. Flagged (2 * flagWeight > flagVoterWeight: more than half
    ///      of the stake of the voters that posted contributions, either side, scored it exactly
    ///      -SCORE_SCALE): no reward, slashed at penaltyBps (at max(penaltyBps, slashBps) in a
    ///      rejected round). Else, rejected round: slashed at slashBps; accepted round: if its
    ///      contribution C > 0, its share w*C / contributionLeft of the proposers' pot left (the
    ///      last one gets the exact remainder), else nothing. A flagged proposer's share of the
    ///      pot (possible when C > 0 thanks to rejecting voters' flags) goes back to the pool,
    ///      so the pot is never stranded.
    function _proposerOutcome(uint256 taskId, uint256 round, Round storage r, Record storage rec)
        private
        returns (uint256 reward, uint256 slashBps)
    {
        TaskParams storage p = _params[taskId];
        Update storage u = _updates[taskId][round][rec.updateIndex];
        int256 c = u.contribution;
        uint256 left = r.contributionLeft; // non-zero only in an accepted round with a pot
        if (c > 0 && left > 0) {
            uint256 part = uint256(rec.weight) * uint256(c);
            reward = Math.mulDiv(r.proposerRewardLeft, part, left);
            r.proposerRewardLeft -= uint128(reward);
            r.contributionLeft = left - part;
        }
        if (2 * uint256(u.flagWeight) > r.flagVoterWeight) {
            if (reward > 0) {
                TaskState storage t = _tasks[taskId];
                t.allotted -= uint128(reward);
                t.pool += uint128(reward);
            }
            slashBps = p.penaltyBps;
            if (!r.accepted && p.slashBps > slashBps) slashBps = p.slashBps;
            return (0, slashBps);
        }
        if (!r.accepted) return (0, p.slashBps);
    }

    /// @dev Pro-rata share of the voters' pot left; the last one settled gets the exact
    ///      remainder.
    function _voterShare(Round storage r, uint128 weight) private returns (uint256 amount) {
        amount = uint256(r.voterRewardLeft) * weight / r.voterWeightLeft;
        r.voterRewardLeft -= uint128(amount);
        r.voterWeightLeft -= weight;
    }

    /// @dev Takes `bps` of `weight` (capped by what is there), unbonding stake first; the
    ///      beneficiary gets finalizerShareBps of it, the pool the rest.
    function _slash(
        uint256 taskId,
        address account,
        uint256 weight,
        uint256 bps,
        address beneficiary
    ) private returns (uint256 amount) {
        TaskState storage t = _tasks[taskId];
        TaskParams storage p = _params[taskId];
        Participant storage me = _participants[taskId][account];
        amount = weight * bps / BPS;
        uint256 available = uint256(me.active) + me.unbonding;
        if (amount > available) amount = available;
        if (amount == 0) return 0;
        uint256 fromUnbonding = amount < me.unbonding ? amount : me.unbonding;
        me.unbonding -= uint128(fromUnbonding);
        if (amount > fromUnbonding) {
            uint256 active = me.active - (amount - fromUnbonding);
            if (active == 0) t.participants -= 1;
            _setActive(taskId, t, account, me, active);
        }
        uint256 cut = amount * p.finalizerShareBps / BPS;
        t.staked -= uint128(amount);
        t.pool += uint128(amount - cut);
        t.claimable += uint128(cut);
        _claimable[taskId][beneficiary] += cut;
        emit Slashed(taskId, account, amount, beneficiary, cut);
    }

    /// @dev Sets active stake and checkpoints it (and the task total) from the next round on.
    function _setActive(
        uint256 taskId,
        TaskState storage t,
        address account,
        Participant storage me,
        uint256 active
    ) private {
        uint48 key = t.roundsStarted;
        Checkpoints.Trace208 storage total = _totalStake[taskId];
        uint256 newTotal = uint256(total.latest()) + active - me.active;
        total.push(key, newTotal.toUint208());
        _stakeHistory[taskId][account].push(key, active.toUint208());
        me.active = active.toUint128();
    }
}
