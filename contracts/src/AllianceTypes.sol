// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Sortition} from "./Sortition.sol";

/// @title What FlockAlliance and its logic library share: enums, structs, events and errors
/// @notice FlockAlliance inherits this interface, so its ABI carries every event and error,
///         including those raised or emitted by AllianceLogic (which runs in the alliance's
///         context through DELEGATECALL: its logs come from the alliance's address).
interface AllianceTypes {
    /// @notice Where a round stands; derived from the seed, the clock and the finalized flag.
    /// @dev WaitingForSeed: started (the seed is requested) but not drawn yet, so no roles.
    enum Phase {
        NotStarted,
        WaitingForSeed,
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

    /// @notice Everything fixed when a task is created (deadline: brought forward by a cancel).
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
        uint16 voterSlashBps; // a revealed hash other than the round's; a vote never revealed
        uint16 finalizerShareBps;
        uint16 proposerRewardBps;
        uint64 trainingDuration;
        uint64 commitDuration;
        uint64 revealDuration;
        uint64 unbondingDelay;
        uint64 deadline; // no stake, no round start, no draw from this timestamp on
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
    /// @dev totalStake is fixed when the round starts (the seed is requested); seed and the
    ///      phase deadlines when it is drawn. aggregateHash is the leading revealed hash; after
    ///      finalize, the round's aggregate (meaningful unless Void). reward = pool / rounds
    ///      left, fixed at finalize; contributionTotal = sum of the updates' parts.
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
    /// @dev weight: stake at the round's start, capped by what is there to slash (the base of
    ///      every slash). The role weights derive from it (Sortition.weight). scored: the
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

    /// @notice One submitted update of a round, by submission index; weight is the proposer's
    ///         selection-corrected weight (Sortition.weight with proposersPerRound).
    struct Update {
        address proposer;
        uint128 weight;
    }

    /// @notice The revealed voter weight behind one aggregate hash of a round: all of it, the
    ///         accepting and the rejecting part, and the part whose votes carried contributions.
    struct Tally {
        uint128 weight;
        uint128 acceptWeight;
        uint128 rejectWeight;
        uint128 flagVoterWeight;
    }

    /// @notice What the voters of one aggregate hash said of one update: sum over accepting
    ///         voters of voterWeight * contribution (SCORE_SCALE fixed point), and the weight of
    ///         the voters (either side) that flagged it (contribution exactly -SCORE_SCALE).
    struct Score {
        int256 contribution;
        uint128 flagWeight;
    }

    /// @notice One update as roundUpdates reports it, read for the round's aggregateHash.
    /// @dev flagged: 2 * flagWeight > the scoring weight other than the proposer's own. part:
    ///      the proposer's weight times the weighted mean contribution over the accepting
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

    /// @notice A participant's stake in one task and its registered dataset.
    /// @dev numSamples bounds every update's claimed sample count; dataHash is keccak256 of
    ///      the dataset's DVC hash string. pendingRound is 1-based (0: nothing to settle).
    struct Participant {
        uint128 active;
        uint128 unbonding;
        uint64 releaseAt;
        uint32 pendingRound;
        uint64 numSamples;
        bytes32 dataHash;
    }

    /// @notice A task was created and its reward pool transferred in.
    event TaskCreated(
        uint256 indexed taskId,
        address indexed creator,
        bytes32 modelHash,
        uint32 rounds,
        uint128 rewardPool,
        string metadataURI
    );
    /// @notice `account` added `amount` to its active stake; its registered dataset follows.
    event Staked(
        uint256 indexed taskId,
        address indexed account,
        uint256 amount,
        uint256 active,
        uint64 numSamples,
        bytes32 dataHash
    );
    /// @notice `account` moved `amount` to unbonding, withdrawable from `releaseAt`.
    event UnstakeRequested(
        uint256 indexed taskId, address indexed account, uint256 amount, uint64 releaseAt
    );
    /// @notice `account` withdrew its unbonded stake.
    event Withdrawn(uint256 indexed taskId, address indexed account, uint256 amount);
    /// @notice A round started: its stakes are fixed and its seed is requested; no roles yet.
    event RoundRequested(uint256 indexed taskId, uint256 indexed round, uint256 totalStake);
    /// @notice A round's seed was drawn; roles follow from `seed` and the stakes.
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
        bytes32 signatureHash,
        uint256 numSamples,
        uint256 weight,
        uint256 index
    );
    /// @notice A voter committed to a hidden (aggregate hash, score, contributions).
    event VoteCommitted(
        uint256 indexed taskId, uint256 indexed round, address indexed voter, bytes32 commitment
    );
    /// @notice A voter revealed the aggregate hash it computed, its score of that aggregate and
    ///         its contribution of each update (by index), counted with `weight`.
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
    /// @param acceptWeight Accepting weight behind aggregateHash.
    /// @param rejectWeight Rejecting weight behind aggregateHash.
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
    /// @notice The creator took back what was left of the pool.
    event PoolReclaimed(uint256 indexed taskId, address indexed creator, uint256 amount);
    /// @notice The creator ended the task now: its deadline moved to this block's timestamp.
    event TaskCancelled(uint256 indexed taskId, address indexed creator);

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
    /// @notice The task's deadline has passed (or the creator cancelled it): no stake, no new
    ///         round, no draw.
    error TaskEnded(uint256 taskId, uint64 deadline);
    /// @notice A round of the task is drawn and not finalized yet.
    error RoundInProgress(uint256 taskId, uint256 round);
    /// @notice The seed source has no seed for this round yet (state: an ISeedSource.SeedState).
    error SeedNotReady(uint256 taskId, uint256 round, uint8 state);
    /// @notice The round's seed request has not lapsed, so it cannot be renewed.
    error SeedNotLapsed(uint256 taskId, uint256 round, uint8 state);
    /// @notice Sortition did not give `account` the role the call needs (Proposer or Voter;
    ///         Both satisfies either).
    error NotSelected(uint256 taskId, uint256 round, address account, Sortition.Role required);
    /// @notice `account` already submitted an update in this round.
    error DuplicateSubmission(uint256 taskId, uint256 round, address account);
    /// @notice An update claims more samples than its proposer registered when it staked.
    error TooManySamples(uint256 claimed, uint256 registered);
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
    /// @notice `account` acted in a round that is not settled yet; its stake cannot leave and
    ///         its registration cannot change.
    error PendingSettlement(uint256 taskId, uint256 round, address account);
    /// @notice The unbonding stake is still locked until `releaseAt`.
    error StillUnbonding(uint64 releaseAt);
    /// @notice Zero amounts and zero hashes are refused.
    error ZeroValue();
    /// @notice Only the task's creator may do this.
    error NotCreator(uint256 taskId, address account);
}
