// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Checkpoints} from "@openzeppelin/contracts/utils/structs/Checkpoints.sol";

import {AllianceLogic} from "./AllianceLogic.sol";
import {AllianceTypes} from "./AllianceTypes.sol";
import {ISeedSource} from "./ISeedSource.sol";
import {Sortition} from "./Sortition.sol";
import {StakeVault} from "./StakeVault.sol";

/// @title FL Alliance: staking, rounds, commit-reveal voting, rewards and slashing
/// @notice Holds the books of every FL Alliance task; the tokens sit in a StakeVault. A task
///         runs up to `rounds` rounds before its deadline. A round starts (startRound fixes its
///         stakes and requests a seed from the seed source), is drawn once the seed is ready
///         (drawRound: roles exist from here, the phase deadlines count from here), and then
///         two stake-weighted draws pick its proposers (submit an update hash) and its voters;
///         an account may be both. Every voter recomputes the aggregate of the submitted
///         updates itself, scores it, and commits, then reveals, the aggregate hash it computed
///         with its score and one contribution per update. The hash with a strict majority of
///         the revealed weight is the round's aggregate; its voters decide: Accepted (more
///         accepting than rejecting weight), Rejected, or Void (no reveals, no majority hash,
///         or a tie). Anyone finalizes a round after its reveal deadline; each participant then
///         pulls its own reward (claim).
/// @dev Weights. A selected role counts with Sortition.weight(stake, S, k) = max(stake,
///      ceil(S / k)) (k = proposersPerRound or votersPerRound, S = the round's total stake):
///      its stake divided by its odds of selection, so that its expected weight is its stake.
///      Votes, update weights and pay all use it; slashes take a share of the stake itself.
///
///      Outcomes. Accepted: the proposers share the proposers' allotment by their part (weight
///      times the weighted mean contribution given by the accepting voters of the aggregate,
///      nobody scoring itself); the winning voters share theirs by weight. Each allotment is
///      its pot times the paid holders' weight over S (see AllianceLogic.finalizeRound), so
///      expected pay is linear in stake. Rejected: the winning (rejecting) voters are paid;
///      honest proposers are neither paid nor slashed. Either way, the aggregate's voters on
///      the losing side of the judgement are unpaid, never slashed (their own data may
///      disagree), voters that revealed another hash are slashed at voterSlashBps, and a
///      proposer flagged by more than half of the scoring weight (a contribution of exactly
///      -SCORE_SCALE) at penaltyBps. Void: nobody is paid or slashed
///      for the vote and the round's reward stays in the pool for the next rounds. In every
///      outcome a voter that committed and never revealed is slashed at max(voterSlashBps,
///      slashBps), and a reported no-show at slashBps.
///
///      Settlement: finalizeRound loops once over the round's updates (at most MAX_UPDATES) to
///      fix the parts; every participant is settled lazily, in O(1), on its next action, claim,
///      withdraw or an explicit settle(). Rounds of a task are strictly sequential, so a
///      participant has at most one unsettled round at any time (Participant.pendingRound).
///
///      End. From the task's deadline on (or once the creator cancels it between rounds, which
///      moves the deadline to now) no stake is taken and no round starts or is drawn; a round
///      already drawn still runs to its end. Then the creator reclaims the pool; rewards
///      already allotted stay claimable and stakes leave by the usual unbonding.
///
///      Token invariant, per task: stakes (active + unbonding) + pool + allotted + claimable
///      equals everything deposited (reward pool + stakes) minus everything paid out
///      (withdrawals, claims, reclaimed pool). The vault's balance is the sum of those four
///      buckets over all tasks.
///
///      Seed: see ISeedSource. startRound only requests it, so whoever starts a round cannot
///      know the roles it gets; the remaining bias is the seed source's (FutureBlockSeed: the
///      builder of one future block; VRFSeedSource: none but the coordinator's key).
contract FlockAlliance is AllianceTypes, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;
    using Checkpoints for Checkpoints.Trace208;

    /// @notice Denominator of every rate given in basis points.
    uint256 public constant BPS = AllianceLogic.BPS;

    /// @notice Fixed-point scale of vote scores: a score of 1e18 means +1.0 of the metric.
    int256 public constant SCORE_SCALE = AllianceLogic.SCORE_SCALE;

    /// @notice Most updates a round takes (bounds finalizeRound's loop and a reveal's length).
    uint256 public constant MAX_UPDATES = AllianceLogic.MAX_UPDATES;

    /// @notice The FLOCK token staked, rewarded and slashed here.
    IERC20 public immutable token;

    /// @notice Where the tokens are kept.
    StakeVault public immutable vault;

    /// @notice Where round seeds come from.
    ISeedSource public immutable seeds;

    /// @notice Number of tasks created; task ids run from 1 to taskCount.
    uint256 public taskCount;

    mapping(uint256 taskId => AllianceLogic.Task) private _tasks;

    /// @param token_ The FLOCK token.
    /// @param vault_ The vault that keeps the tokens (bound to this alliance after deployment).
    /// @param seeds_ The source of round seeds.
    constructor(IERC20 token_, StakeVault vault_, ISeedSource seeds_) {
        token = token_;
        vault = vault_;
        seeds = seeds_;
    }

    // ------------------------------------------------------------------ tasks and stake

    /// @notice Create a task and transfer its reward pool in from the caller (needs allowance).
    /// @param p The task's parameters; see TaskParams.
    /// @return taskId The new task's id.
    function createTask(TaskParams calldata p) external nonReentrant returns (uint256 taskId) {
        _validate(p);
        taskId = ++taskCount;
        AllianceLogic.Task storage t = _tasks[taskId];
        t.params = p;
        t.state.creator = msg.sender;
        t.state.globalModelHash = p.modelHash;
        t.state.pool = p.rewardPool;
        emit TaskCreated(taskId, msg.sender, p.modelHash, p.rounds, p.rewardPool, p.metadataURI);
        token.safeTransferFrom(msg.sender, address(vault), p.rewardPool);
    }

    /// @notice Add `amount` to the caller's stake in a task (needs allowance). Counts for roles
    ///         from the next round that starts. The first stake registers the caller's dataset
    ///         (its size bounds every update's sample count, its hash names the data); a later
    ///         stake keeps it (zeros, or the same values) or replaces it while the caller has
    ///         no unsettled round.
    /// @param taskId The task.
    /// @param amount Tokens to stake; the resulting stake must reach the task's minimum.
    /// @param numSamples The dataset's number of training samples.
    /// @param dataHash keccak256 of the dataset's DVC hash string.
    function stake(uint256 taskId, uint256 amount, uint64 numSamples, bytes32 dataHash)
        external
        nonReentrant
    {
        AllianceLogic.Task storage t = _task(taskId);
        TaskParams storage p = t.params;
        if (amount == 0) revert ZeroValue();
        if (t.state.roundsStarted >= p.rounds) revert TaskClosed(taskId);
        if (block.timestamp >= p.deadline) revert TaskEnded(taskId, p.deadline);
        Participant storage me = t.participants[msg.sender];
        bool change = (numSamples != 0 || dataHash != bytes32(0))
            && (numSamples != me.numSamples || dataHash != me.dataHash);
        if (change) {
            if (numSamples == 0 || dataHash == bytes32(0)) revert ZeroValue();
            if (me.pendingRound != 0) {
                revert PendingSettlement(taskId, me.pendingRound - 1, msg.sender);
            }
        } else if (me.numSamples == 0) {
            revert ZeroValue(); // nothing registered yet
        }
        uint256 active = uint256(me.active) + amount;
        if (active < p.minStake) revert InsufficientStake(p.minStake, active);
        if (me.active == 0) {
            if (t.state.participants >= p.maxParticipants) {
                revert TaskFull(taskId, p.maxParticipants);
            }
            t.state.participants += 1;
        }
        if (change) (me.numSamples, me.dataHash) = (numSamples, dataHash);
        AllianceLogic.setActive(t, msg.sender, active);
        t.state.staked += amount.toUint128();
        emit Staked(taskId, msg.sender, amount, active, me.numSamples, me.dataHash);
        token.safeTransferFrom(msg.sender, address(vault), amount);
    }

    /// @notice Move `amount` of active stake to unbonding. It stops counting for roles from the
    ///         next round, stays slashable, and can be withdrawn after the unbonding delay.
    /// @param taskId The task.
    /// @param amount Tokens to unbond; what stays active must be zero or at least the minimum.
    function requestUnstake(uint256 taskId, uint256 amount) external nonReentrant {
        AllianceLogic.Task storage t = _task(taskId);
        TaskParams storage p = t.params;
        if (amount == 0) revert ZeroValue();
        Participant storage me = t.participants[msg.sender];
        if (amount > me.active) revert InsufficientStake(amount, me.active);
        uint256 remaining = me.active - amount;
        if (remaining != 0 && remaining < p.minStake) {
            revert InsufficientStake(p.minStake, remaining);
        }
        if (remaining == 0) t.state.participants -= 1;
        AllianceLogic.setActive(t, msg.sender, remaining);
        me.unbonding += amount.toUint128();
        me.releaseAt = uint64(block.timestamp) + p.unbondingDelay;
        emit UnstakeRequested(taskId, msg.sender, amount, me.releaseAt);
    }

    /// @notice Withdraw all unbonded stake once the delay has passed; settles the caller's last
    ///         round first, so a pending slash cannot be escaped.
    /// @param taskId The task.
    /// @return amount Tokens transferred to the caller.
    function withdraw(uint256 taskId) external nonReentrant returns (uint256 amount) {
        AllianceLogic.Task storage t = _task(taskId);
        Participant storage me = t.participants[msg.sender];
        if (!AllianceLogic.settle(t, taskId, msg.sender) && me.pendingRound != 0) {
            revert PendingSettlement(taskId, me.pendingRound - 1, msg.sender);
        }
        amount = me.unbonding;
        if (amount == 0) revert ZeroValue();
        if (block.timestamp < me.releaseAt) revert StillUnbonding(me.releaseAt);
        me.unbonding = 0;
        t.state.staked -= amount.toUint128();
        emit Withdrawn(taskId, msg.sender, amount);
        vault.pay(msg.sender, amount);
    }

    /// @notice End the task now (creator only, before its deadline, while no round is drawn
    ///         and unfinalized): its deadline moves to this block, so no stake is taken and no
    ///         round starts from here, and the creator can reclaim the pool.
    /// @param taskId The task.
    function cancelTask(uint256 taskId) external {
        AllianceLogic.Task storage t = _task(taskId);
        TaskParams storage p = t.params;
        if (msg.sender != t.state.creator) revert NotCreator(taskId, msg.sender);
        if (block.timestamp >= p.deadline) revert TaskEnded(taskId, p.deadline);
        _requireIdle(t, taskId);
        p.deadline = uint64(block.timestamp);
        emit TaskCancelled(taskId, msg.sender);
    }

    // ------------------------------------------------------------------ rounds

    /// @notice Start the next round: fix its stakes and request its seed. Anyone may call, once
    ///         the previous round is finalized, before the deadline, with enough participants
    ///         staked. Roles exist once the round is drawn (drawRound).
    /// @param taskId The task.
    /// @return round The index of the round started (0-based).
    function startRound(uint256 taskId) external returns (uint256 round) {
        AllianceLogic.Task storage t = _task(taskId);
        TaskParams storage p = t.params;
        round = t.state.roundsStarted;
        if (round >= p.rounds) revert TaskClosed(taskId);
        if (block.timestamp >= p.deadline) revert TaskEnded(taskId, p.deadline);
        if (round > 0 && !t.rounds[round - 1].finalized) {
            revert WrongPhase(
                taskId, round - 1, Phase.Finalized, AllianceLogic.phase(t, round - 1)
            );
        }
        if (t.state.participants < p.minParticipants) {
            revert NotEnoughParticipants(taskId, t.state.participants, p.minParticipants);
        }
        t.state.roundsStarted = uint32(round + 1);
        Round storage r = t.rounds[round];
        r.totalStake = uint256(t.totalStake.latest()).toUint128();
        emit RoundRequested(taskId, round, r.totalStake);
        seeds.requestSeed(taskId, round);
    }

    /// @notice Draw a started round once its seed is ready (anyone): fix the seed, so the
    ///         roles, and the phase deadlines, counted from now.
    /// @param taskId The task.
    /// @param round The round waiting for its seed.
    function drawRound(uint256 taskId, uint256 round) external {
        AllianceLogic.Task storage t = _task(taskId);
        AllianceLogic.requirePhase(t, taskId, round, Phase.WaitingForSeed);
        TaskParams storage p = t.params;
        if (block.timestamp >= p.deadline) revert TaskEnded(taskId, p.deadline);
        (ISeedSource.SeedState state, bytes32 seed) = seeds.seedOf(address(this), taskId, round);
        // a zero seed would leave the round looking undrawn: never take one
        if (state != ISeedSource.SeedState.Ready || seed == bytes32(0)) {
            revert SeedNotReady(taskId, round, uint8(state));
        }
        Round storage r = t.rounds[round];
        r.seed = seed;
        r.trainingEnds = uint64(block.timestamp) + p.trainingDuration;
        r.commitEnds = r.trainingEnds + p.commitDuration;
        r.revealEnds = r.commitEnds + p.revealDuration;
        emit RoundStarted(
            taskId, round, seed, r.totalStake, r.trainingEnds, r.commitEnds, r.revealEnds
        );
    }

    /// @notice Ask the seed source again for a round whose request lapsed (anyone).
    /// @param taskId The task.
    /// @param round The round waiting for its seed.
    function renewSeed(uint256 taskId, uint256 round) external {
        AllianceLogic.Task storage t = _task(taskId);
        AllianceLogic.requirePhase(t, taskId, round, Phase.WaitingForSeed);
        (ISeedSource.SeedState state,) = seeds.seedOf(address(this), taskId, round);
        if (state != ISeedSource.SeedState.Lapsed) {
            revert SeedNotLapsed(taskId, round, uint8(state));
        }
        seeds.requestSeed(taskId, round);
    }

    /// @notice Commit to a local update (training phase, selected proposers only, once).
    /// @param taskId The task.
    /// @param round The current round.
    /// @param updateHash sha256 of the update's bytes, as stored off chain.
    /// @param signatureHash sha256 of the proposer's EIP-712 signature envelope over the update
    ///        (UpdateDigest), stored off chain next to it. Not checked here: every reader checks
    ///        it, and an update that is unsigned (zero) or wrongly signed is flagged invalid.
    /// @param numSamples Training samples behind the update (for the aggregation); at most
    ///        the caller's registered dataset size.
    function submitUpdate(
        uint256 taskId,
        uint256 round,
        bytes32 updateHash,
        bytes32 signatureHash,
        uint256 numSamples
    ) external {
        AllianceLogic.submitUpdate(
            _tasks[taskId], taskId, round, updateHash, signatureHash, numSamples
        );
    }

    /// @notice Commit to a hidden vote (commit phase, selected voters only, once, and only if
    ///         the round has updates).
    /// @param taskId The task.
    /// @param round The current round.
    /// @param commitment voteCommitment(taskId, round, voter, aggregateHash, score,
    ///        contributions, salt).
    function commitVote(uint256 taskId, uint256 round, bytes32 commitment) external {
        AllianceLogic.commitVote(_tasks[taskId], taskId, round, commitment);
    }

    /// @notice Reveal a committed vote (reveal phase): the aggregate hash the voter computed,
    ///         its score of that aggregate (accept iff score >= 0) and one contribution per
    ///         update (by submission index; a rejecting vote may carry none), each in
    ///         [-SCORE_SCALE, SCORE_SCALE]. The vote counts with the voter's weight in the
    ///         tally of its hash; an accepting vote adds weight * contribution to each update's
    ///         score under that hash, and any vote that carries contributions joins the flag
    ///         vote (flagWeight where a contribution is exactly -SCORE_SCALE). A
    ///         proposer-voter's own update is skipped.
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
        AllianceLogic.revealVote(
            _tasks[taskId], taskId, round, aggregateHash, score, contributions, salt
        );
    }

    /// @notice Tally a round after its reveal deadline (anyone, once). Void if nothing was
    ///         revealed, no hash has a strict majority of the revealed weight, or its accepting
    ///         and rejecting weight tie; else Accepted or Rejected by that hash's voters. Fixes
    ///         the round's reward (pool / rounds left) and allots it (see the contract's
    ///         notes); the rest stays in the pool. Loops over the round's updates (at most
    ///         MAX_UPDATES) to fix the parts; participants are settled lazily. The caller earns
    ///         the finalizer's share of the round's slashes as they are settled.
    /// @param taskId The task.
    /// @param round The round to finalize.
    function finalizeRound(uint256 taskId, uint256 round) external {
        AllianceLogic.finalizeRound(_tasks[taskId], taskId, round);
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
        AllianceLogic.reportNoShow(_tasks[taskId], taskId, round, account);
    }

    // ------------------------------------------------------------------ settlement

    /// @notice Settle `account`'s last round if it is finalized: credit its reward or take its
    ///         slash. Anyone may call (finalizers, to collect their share). Idempotent.
    /// @param taskId The task.
    /// @param account The participant.
    function settle(uint256 taskId, address account) external nonReentrant {
        AllianceLogic.settle(_task(taskId), taskId, account);
    }

    /// @notice Pay the caller everything it has accrued in a task (settling its last round
    ///         first). Calling again pays nothing twice.
    /// @param taskId The task.
    /// @return amount Tokens transferred.
    function claim(uint256 taskId) external nonReentrant returns (uint256 amount) {
        AllianceLogic.Task storage t = _task(taskId);
        AllianceLogic.settle(t, taskId, msg.sender);
        amount = t.claimable[msg.sender];
        if (amount == 0) return 0;
        t.claimable[msg.sender] = 0;
        t.state.claimable -= amount.toUint128();
        emit Claimed(taskId, msg.sender, amount);
        vault.pay(msg.sender, amount);
    }

    /// @notice The creator takes back what is left in the pool (unallotted rewards, slashes
    ///         settled late): after the last round is finalized, or once the task has ended
    ///         (deadline or cancel) and no round is drawn and unfinalized. May be called again.
    /// @param taskId The task.
    /// @return amount Tokens transferred to the creator.
    function reclaimPool(uint256 taskId) external nonReentrant returns (uint256 amount) {
        AllianceLogic.Task storage t = _task(taskId);
        if (msg.sender != t.state.creator) revert NotCreator(taskId, msg.sender);
        if (block.timestamp < t.params.deadline) {
            AllianceLogic.requirePhase(t, taskId, t.params.rounds - 1, Phase.Finalized);
        } else {
            _requireIdle(t, taskId);
        }
        amount = t.state.pool;
        t.state.pool = 0;
        emit PoolReclaimed(taskId, msg.sender, amount);
        vault.pay(msg.sender, amount);
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
    ) external pure returns (bytes32) {
        return AllianceLogic.commitment(
            taskId, round, voter, aggregateHash, score, contributions, salt
        );
    }

    /// @notice Every update of a round with its score under the round's current aggregateHash
    ///         (the leading hash; after finalize, the aggregate), and whether it is flagged and
    ///         its part (both derived only once the round is finalized and not Void).
    /// @param taskId The task.
    /// @param round The round.
    /// @return One entry per update, by submission index.
    function roundUpdates(uint256 taskId, uint256 round)
        external
        view
        returns (UpdateView[] memory)
    {
        return AllianceLogic.roundUpdates(_task(taskId), round);
    }

    /// @notice The revealed weight behind `aggregateHash` in a round.
    /// @param taskId The task.
    /// @param round The round.
    /// @param aggregateHash A revealed aggregate hash.
    /// @return The tally (zero if nobody revealed that hash).
    function tallyOf(uint256 taskId, uint256 round, bytes32 aggregateHash)
        external
        view
        returns (Tally memory)
    {
        return _tasks[taskId].tallies[round][aggregateHash];
    }

    /// @notice The role sortition gives `account` in `round`, from the round's seed and total
    ///         stake and the account's stake at the round's start.
    /// @param taskId The task.
    /// @param round A drawn round.
    /// @param account The participant.
    /// @return The role (None before the round is drawn or below the minimum stake).
    function roleOf(uint256 taskId, uint256 round, address account)
        external
        view
        returns (Sortition.Role)
    {
        return AllianceLogic.roleOf(_tasks[taskId], round, account);
    }

    /// @notice `account`'s active stake as counted for `round`'s roles.
    /// @param taskId The task.
    /// @param account The participant.
    /// @param round The round.
    /// @return The stake.
    function stakeAt(uint256 taskId, address account, uint256 round)
        external
        view
        returns (uint256)
    {
        return AllianceLogic.stakeAt(_tasks[taskId], account, round);
    }

    /// @notice The phase `round` is in now.
    /// @param taskId The task.
    /// @param round The round.
    /// @return The phase.
    function phaseOf(uint256 taskId, uint256 round) external view returns (Phase) {
        return AllianceLogic.phase(_task(taskId), round);
    }

    /// @notice A task's creation parameters (the deadline as a cancel may have moved it).
    /// @param taskId The task.
    /// @return The parameters.
    function taskParams(uint256 taskId) external view returns (TaskParams memory) {
        return _task(taskId).params;
    }

    /// @notice A task's progress and token buckets.
    /// @param taskId The task.
    /// @return The state.
    function taskState(uint256 taskId) external view returns (TaskState memory) {
        return _task(taskId).state;
    }

    /// @notice A round's seed, deadlines, accumulators and settlement record.
    /// @param taskId The task.
    /// @param round The round.
    /// @return The round.
    function roundInfo(uint256 taskId, uint256 round) external view returns (Round memory) {
        return _task(taskId).rounds[round];
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
        return _tasks[taskId].records[round][account];
    }

    /// @notice `account`'s stake in a task and its registered dataset.
    /// @param taskId The task.
    /// @param account The participant.
    /// @return The stake, with the 1-based pending round (0: none) and the registration.
    function participantOf(uint256 taskId, address account)
        external
        view
        returns (Participant memory)
    {
        return _tasks[taskId].participants[account];
    }

    /// @notice Tokens `account` can claim now, not counting its not-yet-settled round.
    /// @param taskId The task.
    /// @param account The account.
    /// @return The amount.
    function claimableOf(uint256 taskId, address account) external view returns (uint256) {
        return _tasks[taskId].claimable[account];
    }

    // ------------------------------------------------------------------ internals

    function _validate(TaskParams calldata p) private view {
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
        if (p.deadline <= block.timestamp) revert InvalidTaskParameter("deadline");
        if (p.minStake == 0) revert InvalidTaskParameter("minStake");
    }

    function _task(uint256 taskId) private view returns (AllianceLogic.Task storage t) {
        t = _tasks[taskId];
        if (t.state.creator == address(0)) revert UnknownTask(taskId);
    }

    /// @dev Reverts RoundInProgress if the task's last started round is drawn and not
    ///      finalized (one waiting for its seed has no roles yet, so nobody worked in it).
    function _requireIdle(AllianceLogic.Task storage t, uint256 taskId) private view {
        uint256 started = t.state.roundsStarted;
        if (started == 0) return;
        Round storage r = t.rounds[started - 1];
        if (!r.finalized && r.seed != bytes32(0)) revert RoundInProgress(taskId, started - 1);
    }
}
