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
/// @notice Holds every FL Alliance task. A task runs `rounds` rounds. In each, two independent
///         stake-weighted draws pick the proposers (submit an update hash) and the voters; an
///         account may be both. Every voter recomputes the aggregate of the submitted updates
///         itself, scores it, and commits, then reveals, the aggregate hash it computed with its
///         score and one contribution per update. The hash with a strict majority of the
///         revealed stake is the round's aggregate; its voters decide: Accepted (more accepting
///         than rejecting stake), Rejected, or Void (no reveals, no majority hash, or a tie).
///         Anyone finalizes a round after its reveal deadline; each participant then pulls its
///         own reward (claim).
/// @dev Outcomes. Accepted: proposers share the proposers' part of the round reward by their
///      part (weight times the stake-weighted mean contribution given by the accepting voters of
///      the aggregate, nobody scoring itself); the winning voters share the rest by stake.
///      Rejected: the winning (rejecting) voters are paid; honest proposers are neither paid nor
///      slashed. Either way, voters that revealed another hash, and in a Rejected round the
///      voters that accepted it, are slashed at voterSlashBps (a voter that rejected an Accepted
///      round is only unpaid: its own data may disagree), and a proposer flagged by more than
///      half of the scoring stake (a
///      contribution of exactly -SCORE_SCALE) at penaltyBps. Void: nobody is paid or slashed for
///      the vote and the round's reward stays in the pool for the next rounds. In every outcome
///      a voter that committed and never revealed is slashed at max(voterSlashBps, slashBps), and
///      a reported no-show at slashBps.
///
///      Settlement: finalizeRound loops once over the round's updates (at most MAX_UPDATES) to
///      fix the parts; every participant is settled lazily, in O(1), on its next action, claim,
///      withdraw or an explicit settle(). Rounds of a task are strictly sequential, so a
///      participant has at most one unsettled round at any time (Participant.pendingRound).
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

    /// @notice Most updates a round takes (bounds finalizeRound's loop and a reveal's length).
    uint256 public constant MAX_UPDATES = 256;

    /// @notice Where a round stands; derived from the clock and the finalized flag.
    enum Phase {
        NotStarted,
        Training,
        Committing,
        Revealing,
        Finalizable,
        Finalized
    }

    /// @notice How a round ended.
    enum Outcome {
        Pending,
        Accepted,
        Rejected,
        Void
    }

    /// @notice Where a participant's vote in a round stands.
    enum VoteState {
        None,
        Committed,
        Revealed
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
        uint16 slashBps; // a reported no-show; the floor of a non-revealing voter's rate
        uint16 penaltyBps; // a proposer flagged by the flag vote (free rider, copy)
        uint16 voterSlashBps; // another hash, or accepting a rejected round; one not revealing
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
    /// @dev aggregateHash is the leading revealed hash; after finalize, the round's aggregate
    ///      (meaningful unless the outcome is Void). reward = pool / rounds left, fixed at
    ///      finalize; contributionTotal = sum of the updates' parts, fixed at finalize.
    struct Round {
        bytes32 seed;
        bytes32 aggregateHash;
        uint64 trainingEnds;
        uint64 commitEnds;
        uint64 revealEnds;
        uint32 updates;
        uint128 totalStake;
        uint128 revealedWeight;
        uint128 reward;
        uint128 proposerRewardLeft;
        uint128 voterRewardLeft;
        uint128 voterWeightLeft;
        uint256 contributionTotal;
        uint256 contributionLeft;
        address finalizer;
        bool finalized;
        Outcome outcome;
    }

    /// @notice A participant's round, both roles: the proposer side (submitted, updateIndex)
    ///         and the voter side (vote, accept, scored, commitment, aggregateHash).
    /// @dev weight: stake at the round's start, capped by what is there to slash. scored: the
    ///      revealed vote carried one contribution per update.
    struct Record {
        bool submitted;
        uint32 updateIndex;
        VoteState vote;
        bool accept;
        bool scored;
        bool noShow;
        bool settled;
        uint128 weight;
        bytes32 commitment;
        bytes32 aggregateHash;
    }

    /// @notice One submitted update of a round, by submission index.
    struct Update {
        address proposer;
        uint128 weight;
    }

    /// @notice The revealed stake behind one aggregate hash of a round: all of it, the accepting
    ///         and the rejecting part, and the part whose votes carried contributions.
    struct Tally {
        uint128 weight;
        uint128 acceptWeight;
        uint128 rejectWeight;
        uint128 flagVoterWeight;
    }

    /// @notice What the voters of one aggregate hash said of one update: sum over accepting
    ///         voters of voterWeight * contribution (SCORE_SCALE fixed point), and the stake of
    ///         the voters (either side) that flagged it (contribution exactly -SCORE_SCALE).
    struct Score {
        int256 contribution;
        uint128 flagWeight;
    }

    /// @notice One update as roundUpdates reports it, read for the round's aggregateHash.
    /// @dev flagged: 2 * flagWeight > the scoring stake other than the proposer's own. part: the
    ///      proposer's weight times the stake-weighted mean contribution over the accepting
    ///      voters other than itself (SCORE_SCALE fixed point); zero unless finalized Accepted
    ///      and not flagged. Before finalize and in a Void round flagged is false and part 0.
    struct UpdateView {
        address proposer;
        uint128 weight;
        int256 contribution;
        uint128 flagWeight;
        bool flagged;
        uint256 part;
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
    mapping(uint256 taskId => mapping(uint256 round => mapping(bytes32 hash => Tally))) private
        _tallies;
    mapping(
        uint256 taskId
            => mapping(uint256 round => mapping(bytes32 hash => mapping(uint256 index => Score)))
    ) private _scores;
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
    /// @notice A voter committed to a hidden (aggregate hash, score, contributions).
    event VoteCommitted(
        uint256 indexed taskId, uint256 indexed round, address indexed voter, bytes32 commitment
    );
    /// @notice A voter revealed the aggregate hash it computed, its score of that aggregate and
    ///         its contribution of each update (by index).
    event VoteRevealed(
        uint256 indexed taskId,
        uint256 indexed round,
        address indexed voter,
        bytes32 aggregateHash,
        int128 score,
        uint256 weight,
        int128[] contributions
    );
    /// @notice A round was tallied; `allotted` tokens left the pool for its rewards.
    /// @param outcome An Outcome (Accepted, Rejected or Void).
    /// @param aggregateHash The round's aggregate (the leading hash; meaningless if Void).
    /// @param globalModelHash The task's global model after the round.
    /// @param acceptWeight Accepting stake behind aggregateHash.
    /// @param rejectWeight Rejecting stake behind aggregateHash.
    event RoundFinalized(
        uint256 indexed taskId,
        uint256 indexed round,
        uint8 outcome,
        bytes32 aggregateHash,
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
    /// @notice A selected participant that did not act in `round` was reported.
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
    /// @notice Sortition did not give `account` the role the call needs (Proposer or Voter;
    ///         Both satisfies either).
    error NotSelected(uint256 taskId, uint256 round, address account, Sortition.Role required);
    /// @notice `account` already submitted an update in this round.
    error DuplicateSubmission(uint256 taskId, uint256 round, address account);
    /// @notice `account` already committed a vote in this round.
    error DuplicateVote(uint256 taskId, uint256 round, address account);
    /// @notice The round already holds MAX_UPDATES updates.
    error RoundFull(uint256 taskId, uint256 round, uint256 maxUpdates);
    /// @notice No update was submitted in this round, so there is nothing to vote on.
    error NoUpdates(uint256 taskId, uint256 round);
    /// @notice `account` has no unrevealed vote commitment in this round.
    error NoCommitment(uint256 taskId, uint256 round, address account);
    /// @notice The revealed vote does not hash to the commitment.
    error RevealMismatch(uint256 taskId, uint256 round, address account);
    /// @notice The score is outside [-SCORE_SCALE, SCORE_SCALE].
    error ScoreOutOfRange(int256 score);
    /// @notice A vote carries `actual` contributions where the round needs `expected` (one per
    ///         update; a rejecting vote may also carry none).
    error ContributionsMismatch(uint256 taskId, uint256 round, uint256 expected, uint256 actual);
    /// @notice Contribution `index` is outside [-SCORE_SCALE, SCORE_SCALE].
    error ContributionOutOfRange(uint256 index, int256 value);
    /// @notice `account` did what its role asked in this round, was not selected, or was already
    ///         reported: nothing to report.
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
        _requirePhase(taskId, round, Phase.Training);
        _requireRole(taskId, round, Sortition.Role.Proposer);
        Record storage rec = _records[taskId][round][msg.sender];
        if (rec.submitted) revert DuplicateSubmission(taskId, round, msg.sender);
        if (updateHash == bytes32(0) || numSamples == 0) revert ZeroValue();
        Round storage r = _rounds[taskId][round];
        uint32 index = r.updates;
        if (index >= MAX_UPDATES) revert RoundFull(taskId, round, MAX_UPDATES);
        uint128 weight = _enter(taskId, round, rec);
        rec.submitted = true;
        rec.updateIndex = index;
        _updates[taskId][round][index] = Update(msg.sender, weight);
        r.updates = index + 1;
        emit UpdateSubmitted(taskId, round, msg.sender, updateHash, numSamples, weight, index);
    }

    /// @notice Commit to a hidden vote (commit phase, selected voters only, once, and only if
    ///         the round has updates).
    /// @param taskId The task.
    /// @param round The current round.
    /// @param commitment voteCommitment(taskId, round, voter, aggregateHash, score,
    ///        contributions, salt).
    function commitVote(uint256 taskId, uint256 round, bytes32 commitment) external {
        _requirePhase(taskId, round, Phase.Committing);
        _requireRole(taskId, round, Sortition.Role.Voter);
        if (commitment == bytes32(0)) revert ZeroValue();
        if (_rounds[taskId][round].updates == 0) revert NoUpdates(taskId, round);
        Record storage rec = _records[taskId][round][msg.sender];
        if (rec.vote != VoteState.None) revert DuplicateVote(taskId, round, msg.sender);
        _enter(taskId, round, rec);
        rec.vote = VoteState.Committed;
        rec.commitment = commitment;
        emit VoteCommitted(taskId, round, msg.sender, commitment);
    }

    /// @notice Reveal a committed vote (reveal phase): the aggregate hash the voter computed,
    ///         its score of that aggregate (accept iff score >= 0) and one contribution per
    ///         update (by submission index; a rejecting vote may carry none), each in
    ///         [-SCORE_SCALE, SCORE_SCALE]. The vote counts in the tally of its hash; an
    ///         accepting vote adds voterWeight * contribution to each update's score under that
    ///         hash, and any vote that carries contributions joins the flag vote (flagWeight where
    ///         a contribution is exactly -SCORE_SCALE). A proposer-voter's own update is skipped.
    /// @param taskId The task.
    /// @param round The current round.
    /// @param aggregateHash Hash of the aggregate the voter recomputed from the updates.
    /// @param score The voter's judgement of the aggregate, fixed point with SCORE_SCALE.
    /// @param contributions Contribution of update i, fixed point with SCORE_SCALE.
    /// @param salt The secret salt used in the commitment.
    function revealVote(
        uint256 taskId,
        uint256 round,
        bytes32 aggregateHash,
        int128 score,
        int128[] calldata contributions,
        bytes32 salt
    ) external {
        _requirePhase(taskId, round, Phase.Revealing);
        Record storage rec = _records[taskId][round][msg.sender];
        if (rec.vote != VoteState.Committed) revert NoCommitment(taskId, round, msg.sender);
        if (
            voteCommitment(taskId, round, msg.sender, aggregateHash, score, contributions, salt)
                != rec.commitment
        ) revert RevealMismatch(taskId, round, msg.sender);
        if (aggregateHash == bytes32(0)) revert ZeroValue();
        if (score < -SCORE_SCALE || score > SCORE_SCALE) revert ScoreOutOfRange(score);
        Round storage r = _rounds[taskId][round];
        bool accept = score >= 0;
        uint256 n = contributions.length;
        if (n != r.updates && (accept || n != 0)) {
            revert ContributionsMismatch(taskId, round, r.updates, n);
        }
        uint128 weight = rec.weight;
        rec.vote = VoteState.Revealed;
        rec.accept = accept;
        rec.aggregateHash = aggregateHash;
        Tally storage tally = _tallies[taskId][round][aggregateHash];
        tally.weight += weight;
        r.revealedWeight += weight;
        if (accept) tally.acceptWeight += weight;
        else tally.rejectWeight += weight;
        if (n != 0) {
            tally.flagVoterWeight += weight;
            rec.scored = true;
            _score(_scores[taskId][round][aggregateHash], rec, weight, contributions, accept);
        }
        // strictly greater: the first hash to reach a weight keeps the lead on a tie
        if (tally.weight > _tallies[taskId][round][r.aggregateHash].weight) {
            r.aggregateHash = aggregateHash;
        }
        emit VoteRevealed(taskId, round, msg.sender, aggregateHash, score, weight, contributions);
    }

    /// @notice Tally a round after its reveal deadline (anyone, once). Void if nothing was
    ///         revealed, no hash has a strict majority of the revealed stake, or its accepting
    ///         and rejecting stake tie; else Accepted or Rejected by that hash's voters. Fixes
    ///         the round's reward (pool / rounds left) and allots it: the proposers' part if
    ///         Accepted and some part is positive, the voters' part unless Void; the rest stays
    ///         in the pool. Loops over the round's updates (at most MAX_UPDATES) to fix the
    ///         parts; participants are settled lazily. The caller earns the finalizer's share of
    ///         the round's slashes as they are settled.
    /// @param taskId The task.
    /// @param round The round to finalize.
    function finalizeRound(uint256 taskId, uint256 round) external {
        TaskState storage t = _requirePhase(taskId, round, Phase.Finalizable);
        TaskParams storage p = _params[taskId];
        Round storage r = _rounds[taskId][round];
        r.finalized = true;
        r.finalizer = msg.sender;
        bytes32 h = r.aggregateHash;
        Tally memory tally = _tallies[taskId][round][h];
        uint128 reward = uint128(t.pool / (p.rounds - round));
        r.reward = reward;
        uint128 allotted;
        // Void unless the leading hash holds a strict majority of the revealed stake (so not
        // with no reveals) and its accepting and rejecting stake differ
        Outcome outcome = Outcome.Void;
        if (
            2 * uint256(tally.weight) > r.revealedWeight
                && tally.acceptWeight != tally.rejectWeight
        ) {
            outcome = tally.acceptWeight > tally.rejectWeight ? Outcome.Accepted : Outcome.Rejected;
        }
        r.outcome = outcome; // read by _derive below
        if (outcome != Outcome.Void) {
            bool accepted = outcome == Outcome.Accepted;
            uint128 proposerPart = uint128(uint256(reward) * p.proposerRewardBps / BPS);
            if (accepted) {
                uint256 total;
                for (uint256 i = 0; i < r.updates; i++) {
                    (, uint256 part) = _derive(taskId, round, r, i);
                    total += part;
                }
                r.contributionTotal = total;
                if (total > 0) {
                    r.proposerRewardLeft = proposerPart;
                    r.contributionLeft = total;
                    allotted = proposerPart;
                }
                t.globalModelHash = h;
            }
            r.voterRewardLeft = reward - proposerPart;
            r.voterWeightLeft = accepted ? tally.acceptWeight : tally.rejectWeight;
            allotted += reward - proposerPart;
            t.pool -= allotted;
            t.allotted += allotted;
        }
        emit RoundFinalized(
            taskId,
            round,
            uint8(outcome),
            h,
            t.globalModelHash,
            reward,
            allotted,
            tally.acceptWeight,
            tally.rejectWeight,
            msg.sender
        );
    }

    /// @notice Slash a participant that sortition selected in a finalized round but that did
    ///         not do what its role asks: a proposer that submitted no update, or a voter that
    ///         committed no vote although the round had updates (Void rounds included). Once per
    ///         account and round, at slashBps of its stake at the round's start. The reporter
    ///         earns the finalizer's share of the slash.
    /// @param taskId The task.
    /// @param round A finalized round.
    /// @param account The participant to report.
    function reportNoShow(uint256 taskId, uint256 round, address account) external {
        _requirePhase(taskId, round, Phase.Finalized);
        Record storage rec = _records[taskId][round][account];
        Sortition.Role role = roleOf(taskId, round, account);
        bool missedUpdate = Sortition.proposes(role) && !rec.submitted;
        bool missedVote = Sortition.votes(role) && _rounds[taskId][round].updates > 0
            && rec.vote == VoteState.None;
        if (rec.noShow || !(missedUpdate || missedVote)) revert NotANoShow(taskId, round, account);
        rec.noShow = true;
        // an account that did nothing at all has no other settlement in this round
        if (!rec.submitted && rec.vote == VoteState.None) rec.settled = true;
        emit NoShowReported(taskId, round, account, msg.sender);
        uint256 weight = stakeAt(taskId, account, round);
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

    /// @notice The commitment a voter submits: binds task, round, voter, aggregate hash, score,
    ///         contributions and salt: keccak256(abi.encode(taskId, round, voter, aggregateHash,
    ///         score, contributions, salt)).
    /// @param taskId The task.
    /// @param round The round.
    /// @param voter The voter's address (so nobody can replay another's commitment).
    /// @param aggregateHash The hidden hash of the aggregate the voter computed.
    /// @param score The hidden score.
    /// @param contributions The hidden contribution of each update, by submission index.
    /// @param salt A fresh random secret.
    /// @return The keccak256 commitment.
    function voteCommitment(
        uint256 taskId,
        uint256 round,
        address voter,
        bytes32 aggregateHash,
        int128 score,
        int128[] calldata contributions,
        bytes32 salt
    ) public pure returns (bytes32) {
        return keccak256(
            abi.encode(taskId, round, voter, aggregateHash, score, contributions, salt)
        );
    }

    /// @notice Every update of a round with its score under the round's current aggregateHash
    ///         (the leading hash; after finalize, the aggregate), and whether it is flagged and
    ///         its part (both derived only once the round is finalized and not Void).
    /// @param taskId The task.
    /// @param round The round.
    /// @return views One entry per update, by submission index.
    function roundUpdates(uint256 taskId, uint256 round)
        external
        view
        returns (UpdateView[] memory views)
    {
        _task(taskId);
        Round storage r = _rounds[taskId][round];
        mapping(uint256 => Score) storage scores = _scores[taskId][round][r.aggregateHash];
        views = new UpdateView[](r.updates);
        for (uint256 i = 0; i < views.length; i++) {
            Update storage u = _updates[taskId][round][i];
            Score storage s = scores[i];
            (bool flagged, uint256 part) = _derive(taskId, round, r, i);
            views[i] =
                UpdateView(u.proposer, u.weight, s.contribution, s.flagWeight, flagged, part);
        }
    }

    /// @notice The revealed stake behind `aggregateHash` in a round.
    /// @param taskId The task.
    /// @param round The round.
    /// @param aggregateHash A revealed aggregate hash.
    /// @return The tally (zero if nobody revealed that hash).
    function tallyOf(uint256 taskId, uint256 round, bytes32 aggregateHash)
        external
        view
        returns (Tally memory)
    {
        return _tallies[taskId][round][aggregateHash];
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
        return _stakeHistory[taskId][account].upperLookup(round.toUint48());
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

    /// @dev Also checks that the task exists.
    function _requirePhase(uint256 taskId, uint256 round, Phase expected)
        private
        view
        returns (TaskState storage t)
    {
        t = _task(taskId);
        Phase actual = _phase(taskId, round);
        if (actual != expected) revert WrongPhase(taskId, round, expected, actual);
    }

    /// @dev Proposer calls take Proposer or Both, voter calls Voter or Both.
    function _requireRole(uint256 taskId, uint256 round, Sortition.Role role) private view {
        Sortition.Role actual = roleOf(taskId, round, msg.sender);
        if (actual != role && actual != Sortition.Role.Both) {
            revert NotSelected(taskId, round, msg.sender, role);
        }
    }

    /// @dev Settles the caller's previous round and returns its weight for this one: its stake
    ///      at the round's start, capped by what is still there to slash. Fixed by the caller's
    ///      first action in the round, so both roles of a participant share one weight.
    function _enter(uint256 taskId, uint256 round, Record storage rec)
        private
        returns (uint128 weight)
    {
        weight = rec.weight;
        if (weight != 0) return weight;
        _settle(taskId, msg.sender);
        Participant storage me = _participants[taskId][msg.sender];
        uint256 atStart = stakeAt(taskId, msg.sender, round);
        uint256 available = uint256(me.active) + me.unbonding;
        weight = uint128(atStart < available ? atStart : available);
        if (weight == 0) revert InsufficientStake(1, 0);
        rec.weight = weight;
        me.pendingRound = uint32(round + 1);
    }

    /// @dev Checks every contribution; for each update but the voter's own, adds the voter's
    ///      weight to its flagWeight where the contribution is -SCORE_SCALE and, for an accepting
    ///      vote, weight * contribution to its contribution.
    function _score(
        mapping(uint256 => Score) storage scores,
        Record storage rec,
        uint128 weight,
        int128[] calldata contributions,
        bool accept
    ) private {
        uint256 own = rec.submitted ? rec.updateIndex : type(uint256).max;
        int256 w = int256(uint256(weight));
        for (uint256 i = 0; i < contributions.length; i++) {
            int256 c = contributions[i];
            if (c < -SCORE_SCALE || c > SCORE_SCALE) revert ContributionOutOfRange(i, c);
            if (i == own) continue;
            if (c == -SCORE_SCALE) scores[i].flagWeight += weight;
            if (accept && c != 0) scores[i].contribution += w * c;
        }
    }

    /// @dev Whether update `index` of a finalized, non-void round is flagged, and its part.
    ///      The proposer's own vote, if it revealed the aggregate, leaves both denominators.
    function _derive(uint256 taskId, uint256 round, Round storage r, uint256 index)
        private
        view
        returns (bool flagged, uint256 part)
    {
        Outcome outcome = r.outcome;
        if (outcome == Outcome.Pending || outcome == Outcome.Void) return (false, 0);
        bytes32 h = r.aggregateHash;
        Tally storage tally = _tallies[taskId][round][h];
        Score storage s = _scores[taskId][round][h][index];
        Update storage u = _updates[taskId][round][index];
        Record storage pr = _records[taskId][round][u.proposer];
        bool self = pr.vote == VoteState.Revealed && pr.aggregateHash == h;
        uint256 flagDen = tally.flagVoterWeight;
        uint256 payDen = tally.acceptWeight;
        if (self && pr.scored) flagDen -= pr.weight;
        if (self && pr.accept) payDen -= pr.weight;
        flagged = 2 * uint256(s.flagWeight) > flagDen;
        int256 c = s.contribution;
        if (outcome == Outcome.Accepted && !flagged && c > 0 && payDen > 0) {
            part = Math.mulDiv(u.weight, uint256(c), payDen);
        }
    }

    /// @dev Settles `account`'s pending round if finalized; returns whether nothing is pending.
    ///      Both roles are settled in turn: rewards add up, each slash takes what is left.
    function _settle(uint256 taskId, address account) private returns (bool) {
        Participant storage me = _participants[taskId][account];
        if (me.pendingRound == 0) return true;
        uint256 round = me.pendingRound - 1;
        Round storage r = _rounds[taskId][round];
        if (!r.finalized) return false;
        me.pendingRound = 0;
        Record storage rec = _records[taskId][round][account];
        rec.settled = true;
        TaskParams storage p = _params[taskId];
        bool decided = r.outcome != Outcome.Void;
        uint256 reward;
        uint256 slashed;
        if (rec.submitted && decided) {
            (bool flagged, uint256 part) = _derive(taskId, round, r, rec.updateIndex);
            if (flagged) {
                slashed = _slash(taskId, account, rec.weight, p.penaltyBps, r.finalizer);
            } else if (part > 0) {
                uint256 left = r.contributionLeft;
                reward = Math.mulDiv(r.proposerRewardLeft, part, left);
                r.proposerRewardLeft -= uint128(reward);
                r.contributionLeft = left - part;
            }
        }
        if (rec.vote == VoteState.Committed) {
            // Never cheaper than revealing on the losing side: a voter that sees the reveals
            // go against it cannot escape voterSlashBps by keeping its vote to itself.
            uint256 bps = p.voterSlashBps > p.slashBps ? p.voterSlashBps : p.slashBps;
            slashed += _slash(taskId, account, rec.weight, bps, r.finalizer);
        } else if (rec.vote == VoteState.Revealed && decided) {
            bool won = rec.aggregateHash == r.aggregateHash
                && rec.accept == (r.outcome == Outcome.Accepted);
            if (won) {
                uint256 amount = uint256(r.voterRewardLeft) * rec.weight / r.voterWeightLeft;
                r.voterRewardLeft -= uint128(amount);
                r.voterWeightLeft -= rec.weight;
                reward += amount;
            } else if (rec.aggregateHash != r.aggregateHash || r.outcome == Outcome.Rejected) {
                // Another hash than the round's, or an accept of what most of the stake judged
                // harmful. A reject of an accepted round is only unpaid: an honest voter's own
                // data can disagree with the majority's.
                slashed += _slash(taskId, account, rec.weight, p.voterSlashBps, r.finalizer);
            }
        }
        if (reward > 0) {
            TaskState storage t = _tasks[taskId];
            t.allotted -= uint128(reward);
            t.claimable += uint128(reward);
            _claimable[taskId][account] += reward;
        }
        emit Settled(taskId, round, account, reward, slashed);
        return true;
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
