// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Checkpoints} from "@openzeppelin/contracts/utils/structs/Checkpoints.sol";

import {AllianceTypes} from "./AllianceTypes.sol";
import {Sortition} from "./Sortition.sol";

/// @title The vote, tally and settlement logic of FlockAlliance, as an external library
/// @notice FlockAlliance keeps all storage (one Task per task id) and calls these functions by
///         DELEGATECALL, passing its Task: they run on the alliance's storage, with its
///         msg.sender, and their events are the alliance's. A library of its own so that each
///         contract keeps room under EIP-170's code size limit.
/// @dev Internal functions here are compiled into both contracts where both use them (phase,
///      stake lookups, setActive).
library AllianceLogic {
    using SafeCast for uint256;
    using Checkpoints for Checkpoints.Trace208;

    /// @notice Denominator of every rate given in basis points.
    uint256 internal constant BPS = 10_000;
    /// @notice Fixed-point scale of vote scores: a score of 1e18 means +1.0 of the metric.
    int256 internal constant SCORE_SCALE = 1e18;
    /// @notice Most updates a round takes (bounds finalizeRound's loop and a reveal's length).
    uint256 internal constant MAX_UPDATES = 256;

    /// @notice Everything the alliance stores for one task.
    struct Task {
        AllianceTypes.TaskParams params;
        AllianceTypes.TaskState state;
        Checkpoints.Trace208 totalStake;
        mapping(uint256 round => AllianceTypes.Round) rounds;
        mapping(uint256 round => mapping(address => AllianceTypes.Record)) records;
        mapping(uint256 round => mapping(uint256 index => AllianceTypes.Update)) updates;
        mapping(uint256 round => mapping(bytes32 hash => AllianceTypes.Tally)) tallies;
        mapping(uint256 round => mapping(bytes32 hash => mapping(uint256 index => AllianceTypes.Score)))
            scores;
        mapping(address => AllianceTypes.Participant) participants;
        mapping(address => Checkpoints.Trace208) stakeHistory;
        mapping(address => uint256) claimable;
    }

    // ------------------------------------------------------------------ external

    /// @notice FlockAlliance.submitUpdate, for the caller.
    function submitUpdate(
        Task storage t,
        uint256 taskId,
        uint256 round,
        bytes32 updateHash,
        bytes32 signatureHash,
        uint256 numSamples
    ) external {
        requirePhase(t, taskId, round, AllianceTypes.Phase.Training);
        _requireRole(t, taskId, round, Sortition.Role.Proposer);
        AllianceTypes.Record storage rec = t.records[round][msg.sender];
        if (rec.submitted) revert AllianceTypes.DuplicateSubmission(taskId, round, msg.sender);
        if (updateHash == bytes32(0) || numSamples == 0) revert AllianceTypes.ZeroValue();
        uint256 registered = t.participants[msg.sender].numSamples;
        if (numSamples > registered) revert AllianceTypes.TooManySamples(numSamples, registered);
        AllianceTypes.Round storage r = t.rounds[round];
        uint32 index = r.updates;
        if (index >= MAX_UPDATES) revert AllianceTypes.RoundFull(taskId, round, MAX_UPDATES);
        uint256 weight = Sortition.weight(
            _enter(t, taskId, round, rec), r.totalStake, t.params.proposersPerRound
        );
        rec.submitted = true;
        rec.updateIndex = index;
        t.updates[round][index] = AllianceTypes.Update(msg.sender, uint128(weight));
        r.updates = index + 1;
        emit AllianceTypes.UpdateSubmitted(
            taskId, round, msg.sender, updateHash, signatureHash, numSamples, weight, index
        );
    }

    /// @notice FlockAlliance.commitVote, for the caller.
    function commitVote(Task storage t, uint256 taskId, uint256 round, bytes32 commitment_)
        external
    {
        requirePhase(t, taskId, round, AllianceTypes.Phase.Committing);
        _requireRole(t, taskId, round, Sortition.Role.Voter);
        if (commitment_ == bytes32(0)) revert AllianceTypes.ZeroValue();
        if (t.rounds[round].updates == 0) revert AllianceTypes.NoUpdates(taskId, round);
        AllianceTypes.Record storage rec = t.records[round][msg.sender];
        if (rec.vote != AllianceTypes.VoteState.None) {
            revert AllianceTypes.DuplicateVote(taskId, round, msg.sender);
        }
        _enter(t, taskId, round, rec);
        rec.vote = AllianceTypes.VoteState.Committed;
        rec.commitment = commitment_;
        emit AllianceTypes.VoteCommitted(taskId, round, msg.sender, commitment_);
    }

    /// @notice FlockAlliance.revealVote, for the caller.
    function revealVote(
        Task storage t,
        uint256 taskId,
        uint256 round,
        bytes32 aggregateHash,
        int128 score,
        int128[] calldata contributions,
        bytes32 salt
    ) external {
        requirePhase(t, taskId, round, AllianceTypes.Phase.Revealing);
        AllianceTypes.Record storage rec = t.records[round][msg.sender];
        if (rec.vote != AllianceTypes.VoteState.Committed) {
            revert AllianceTypes.NoCommitment(taskId, round, msg.sender);
        }
        if (
            commitment(taskId, round, msg.sender, aggregateHash, score, contributions, salt)
                != rec.commitment
        ) revert AllianceTypes.RevealMismatch(taskId, round, msg.sender);
        if (aggregateHash == bytes32(0)) revert AllianceTypes.ZeroValue();
        if (score < -SCORE_SCALE || score > SCORE_SCALE) {
            revert AllianceTypes.ScoreOutOfRange(score);
        }
        AllianceTypes.Round storage r = t.rounds[round];
        bool accept = score >= 0;
        uint256 n = contributions.length;
        if (n != r.updates && (accept || n != 0)) {
            revert AllianceTypes.ContributionsMismatch(taskId, round, r.updates, n);
        }
        uint128 weight = voterWeight(t, r, rec);
        rec.vote = AllianceTypes.VoteState.Revealed;
        rec.accept = accept;
        rec.aggregateHash = aggregateHash;
        AllianceTypes.Tally storage tally = t.tallies[round][aggregateHash];
        tally.weight += weight;
        r.revealedWeight += weight;
        if (accept) tally.acceptWeight += weight;
        else tally.rejectWeight += weight;
        if (n != 0) {
            tally.flagVoterWeight += weight;
            rec.scored = true;
            _score(t.scores[round][aggregateHash], rec, weight, contributions, accept);
        }
        // strictly greater: the first hash to reach a weight keeps the lead on a tie
        if (tally.weight > t.tallies[round][r.aggregateHash].weight) {
            r.aggregateHash = aggregateHash;
        }
        emit AllianceTypes.VoteRevealed(
            taskId, round, msg.sender, aggregateHash, score, weight, contributions
        );
    }

    /// @notice FlockAlliance.finalizeRound, the caller finalizing.
    /// @dev Each role's pot is budgeted for the round's total stake S, the expected total
    ///      weight of its holders: the paid holders get pot * (their weight) / S between them
    ///      (the proposers pro rata to their parts, the winning voters to their weights). Fewer
    ///      holders than expected leave the rest in the pool, more draw the excess from it;
    ///      if the pool falls short, both allotments shrink in proportion.
    function finalizeRound(Task storage t, uint256 taskId, uint256 round) external {
        requirePhase(t, taskId, round, AllianceTypes.Phase.Finalizable);
        AllianceTypes.TaskParams storage p = t.params;
        AllianceTypes.Round storage r = t.rounds[round];
        r.finalized = true;
        r.finalizer = msg.sender;
        bytes32 h = r.aggregateHash;
        AllianceTypes.Tally memory tally = t.tallies[round][h];
        uint128 reward = uint128(t.state.pool / (p.rounds - round));
        r.reward = reward;
        // Void unless the leading hash holds a strict majority of the revealed weight (so not
        // with no reveals) and its accepting and rejecting weight differ
        AllianceTypes.Outcome outcome = AllianceTypes.Outcome.Void;
        if (
            2 * uint256(tally.weight) > r.revealedWeight
                && tally.acceptWeight != tally.rejectWeight
        ) {
            outcome = tally.acceptWeight > tally.rejectWeight
                ? AllianceTypes.Outcome.Accepted
                : AllianceTypes.Outcome.Rejected;
        }
        r.outcome = outcome; // read by _derive in _allot
        uint256 allotted;
        if (outcome != AllianceTypes.Outcome.Void) {
            bool accepted = outcome == AllianceTypes.Outcome.Accepted;
            allotted = _allot(t, round, r, reward, accepted ? tally.acceptWeight : tally.rejectWeight);
        }
        emit AllianceTypes.RoundFinalized(
            taskId,
            round,
            uint8(outcome),
            h,
            t.state.globalModelHash,
            reward,
            allotted,
            tally.acceptWeight,
            tally.rejectWeight,
            msg.sender
        );
    }

    /// @notice FlockAlliance.reportNoShow, the caller reporting.
    function reportNoShow(Task storage t, uint256 taskId, uint256 round, address account)
        external
    {
        requirePhase(t, taskId, round, AllianceTypes.Phase.Finalized);
        AllianceTypes.Record storage rec = t.records[round][account];
        Sortition.Role role = roleOf(t, round, account);
        bool missedUpdate = Sortition.proposes(role) && !rec.submitted;
        bool missedVote = Sortition.votes(role) && t.rounds[round].updates > 0
            && rec.vote == AllianceTypes.VoteState.None;
        if (rec.noShow || !(missedUpdate || missedVote)) {
            revert AllianceTypes.NotANoShow(taskId, round, account);
        }
        rec.noShow = true;
        // an account that did nothing at all has no other settlement in this round
        if (!rec.submitted && rec.vote == AllianceTypes.VoteState.None) rec.settled = true;
        emit AllianceTypes.NoShowReported(taskId, round, account, msg.sender);
        _slash(t, taskId, account, stakeAt(t, account, round), t.params.slashBps, msg.sender);
    }

    /// @notice Settles `account`'s pending round if finalized; returns whether nothing is
    ///         pending. Both roles are settled in turn: rewards add up, each slash takes what is
    ///         left.
    function settle(Task storage t, uint256 taskId, address account) public returns (bool) {
        AllianceTypes.Participant storage me = t.participants[account];
        if (me.pendingRound == 0) return true;
        uint256 round = me.pendingRound - 1;
        AllianceTypes.Round storage r = t.rounds[round];
        if (!r.finalized) return false;
        me.pendingRound = 0;
        AllianceTypes.Record storage rec = t.records[round][account];
        rec.settled = true;
        AllianceTypes.TaskParams storage p = t.params;
        bool decided = r.outcome != AllianceTypes.Outcome.Void;
        uint256 reward;
        uint256 slashed;
        if (rec.submitted && decided) {
            (bool flagged, uint256 part) = _derive(t, round, r, rec.updateIndex);
            if (flagged) {
                slashed = _slash(t, taskId, account, rec.weight, p.penaltyBps, r.finalizer);
            } else if (part > 0) {
                uint256 left = r.contributionLeft;
                reward = Math.mulDiv(r.proposerRewardLeft, part, left);
                r.proposerRewardLeft -= uint128(reward);
                r.contributionLeft = left - part;
            }
        }
        if (rec.vote == AllianceTypes.VoteState.Committed) {
            // Never cheaper than revealing another hash: a voter that sees the reveals name
            // another aggregate cannot escape voterSlashBps by keeping its vote to itself.
            uint256 bps = p.voterSlashBps > p.slashBps ? p.voterSlashBps : p.slashBps;
            slashed += _slash(t, taskId, account, rec.weight, bps, r.finalizer);
        } else if (rec.vote == AllianceTypes.VoteState.Revealed && decided) {
            if (rec.aggregateHash != r.aggregateHash) {
                // The aggregate is a deterministic function of committed data: another hash
                // is provably not the round's.
                slashed += _slash(t, taskId, account, rec.weight, p.voterSlashBps, r.finalizer);
            } else if (rec.accept == (r.outcome == AllianceTypes.Outcome.Accepted)) {
                uint128 weight = voterWeight(t, r, rec);
                uint256 amount = uint256(r.voterRewardLeft) * weight / r.voterWeightLeft;
                r.voterRewardLeft -= uint128(amount);
                r.voterWeightLeft -= weight;
                reward += amount;
            }
            // The losing side of the judgement is unpaid, never slashed, either way: an honest
            // voter's own data can disagree with the majority's.
        }
        if (reward > 0) {
            t.state.allotted -= uint128(reward);
            t.state.claimable += uint128(reward);
            t.claimable[account] += reward;
        }
        emit AllianceTypes.Settled(taskId, round, account, reward, slashed);
        return true;
    }

    /// @notice FlockAlliance.roundUpdates.
    function roundUpdates(Task storage t, uint256 round)
        external
        view
        returns (AllianceTypes.UpdateView[] memory views)
    {
        AllianceTypes.Round storage r = t.rounds[round];
        mapping(uint256 => AllianceTypes.Score) storage scores = t.scores[round][r.aggregateHash];
        views = new AllianceTypes.UpdateView[](r.updates);
        for (uint256 i = 0; i < views.length; i++) {
            AllianceTypes.Update storage u = t.updates[round][i];
            AllianceTypes.Score storage s = scores[i];
            (bool flagged, uint256 part) = _derive(t, round, r, i);
            views[i] = AllianceTypes.UpdateView(
                u.proposer, u.weight, s.contribution, s.flagWeight, flagged, part
            );
        }
    }

    // ------------------------------------------------------------------ shared internals

    /// @notice The commitment a voter submits (see FlockAlliance.voteCommitment).
    function commitment(
        uint256 taskId,
        uint256 round,
        address voter,
        bytes32 aggregateHash,
        int128 score,
        int128[] calldata contributions,
        bytes32 salt
    ) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(taskId, round, voter, aggregateHash, score, contributions, salt)
        );
    }

    /// @notice The phase of `round` now.
    function phase(Task storage t, uint256 round) internal view returns (AllianceTypes.Phase) {
        if (round >= t.state.roundsStarted) return AllianceTypes.Phase.NotStarted;
        AllianceTypes.Round storage r = t.rounds[round];
        if (r.finalized) return AllianceTypes.Phase.Finalized;
        if (r.seed == bytes32(0)) return AllianceTypes.Phase.WaitingForSeed;
        if (block.timestamp < r.trainingEnds) return AllianceTypes.Phase.Training;
        if (block.timestamp < r.commitEnds) return AllianceTypes.Phase.Committing;
        if (block.timestamp < r.revealEnds) return AllianceTypes.Phase.Revealing;
        return AllianceTypes.Phase.Finalizable;
    }

    /// @notice Reverts UnknownTask or WrongPhase unless `round` is in `expected`.
    function requirePhase(
        Task storage t,
        uint256 taskId,
        uint256 round,
        AllianceTypes.Phase expected
    ) internal view {
        if (t.state.creator == address(0)) revert AllianceTypes.UnknownTask(taskId);
        AllianceTypes.Phase actual = phase(t, round);
        if (actual != expected) revert AllianceTypes.WrongPhase(taskId, round, expected, actual);
    }

    /// @notice `account`'s active stake as counted for `round`'s roles.
    function stakeAt(Task storage t, address account, uint256 round)
        internal
        view
        returns (uint256)
    {
        return t.stakeHistory[account].upperLookup(round.toUint48());
    }

    /// @notice The role sortition gives `account` in `round` (None before its seed is drawn).
    function roleOf(Task storage t, uint256 round, address account)
        internal
        view
        returns (Sortition.Role)
    {
        AllianceTypes.Round storage r = t.rounds[round];
        AllianceTypes.TaskParams storage p = t.params;
        if (r.seed == bytes32(0)) return Sortition.Role.None;
        uint256 weight = stakeAt(t, account, round);
        if (weight < p.minStake) return Sortition.Role.None;
        return Sortition.roleOf(
            r.seed, account, weight, r.totalStake, p.proposersPerRound, p.votersPerRound
        );
    }

    /// @notice The weight of `rec`'s vote: its stake weighted for the voter draw's odds.
    function voterWeight(
        Task storage t,
        AllianceTypes.Round storage r,
        AllianceTypes.Record storage rec
    ) internal view returns (uint128) {
        return uint128(Sortition.weight(rec.weight, r.totalStake, t.params.votersPerRound));
    }

    /// @notice Sets `account`'s active stake and checkpoints it (and the task total) from the
    ///         next round on.
    function setActive(Task storage t, address account, uint256 active) internal {
        AllianceTypes.Participant storage me = t.participants[account];
        uint48 key = t.state.roundsStarted;
        uint256 newTotal = uint256(t.totalStake.latest()) + active - me.active;
        t.totalStake.push(key, newTotal.toUint208());
        t.stakeHistory[account].push(key, active.toUint208());
        me.active = active.toUint128();
    }

    // ------------------------------------------------------------------ private

    /// @dev Proposer calls take Proposer or Both, voter calls Voter or Both.
    function _requireRole(Task storage t, uint256 taskId, uint256 round, Sortition.Role role)
        private
        view
    {
        Sortition.Role actual = roleOf(t, round, msg.sender);
        if (actual != role && actual != Sortition.Role.Both) {
            revert AllianceTypes.NotSelected(taskId, round, msg.sender, role);
        }
    }

    /// @dev Settles the caller's previous round and returns its stake for this one: its stake
    ///      at the round's start, capped by what is still there to slash. Fixed by the caller's
    ///      first action in the round, so both roles of a participant share one stake.
    function _enter(
        Task storage t,
        uint256 taskId,
        uint256 round,
        AllianceTypes.Record storage rec
    ) private returns (uint128 weight) {
        weight = rec.weight;
        if (weight != 0) return weight;
        settle(t, taskId, msg.sender);
        AllianceTypes.Participant storage me = t.participants[msg.sender];
        uint256 atStart = stakeAt(t, msg.sender, round);
        uint256 available = uint256(me.active) + me.unbonding;
        weight = uint128(atStart < available ? atStart : available);
        if (weight == 0) revert AllianceTypes.InsufficientStake(1, 0);
        rec.weight = weight;
        me.pendingRound = uint32(round + 1);
    }

    /// @dev Checks every contribution; for each update but the voter's own, adds the voter's
    ///      weight to its flagWeight where the contribution is -SCORE_SCALE and, for an accepting
    ///      vote, weight * contribution to its contribution.
    function _score(
        mapping(uint256 => AllianceTypes.Score) storage scores,
        AllianceTypes.Record storage rec,
        uint128 weight,
        int128[] calldata contributions,
        bool accept
    ) private {
        uint256 own = rec.submitted ? rec.updateIndex : type(uint256).max;
        int256 w = int256(uint256(weight));
        for (uint256 i = 0; i < contributions.length; i++) {
            int256 c = contributions[i];
            if (c < -SCORE_SCALE || c > SCORE_SCALE) {
                revert AllianceTypes.ContributionOutOfRange(i, c);
            }
            if (i == own) continue;
            if (c == -SCORE_SCALE) scores[i].flagWeight += weight;
            if (accept && c != 0) scores[i].contribution += w * c;
        }
    }

    /// @dev Allots a decided round's reward (see finalizeRound); `winners` is the weight of
    ///      the winning side of the aggregate's tally.
    function _allot(
        Task storage t,
        uint256 round,
        AllianceTypes.Round storage r,
        uint256 reward,
        uint256 winners
    ) private returns (uint256 allotted) {
        uint256 stake = r.totalStake;
        uint256 proposerPart = reward * t.params.proposerRewardBps / BPS;
        uint256 proposerAllot;
        if (r.outcome == AllianceTypes.Outcome.Accepted) {
            (uint256 total, uint256 paidWeight) = _parts(t, round, r);
            r.contributionTotal = total;
            if (total > 0) {
                proposerAllot = Math.mulDiv(proposerPart, paidWeight, stake);
                r.contributionLeft = total;
            }
            t.state.globalModelHash = r.aggregateHash;
        }
        uint256 voterAllot = Math.mulDiv(reward - proposerPart, winners, stake);
        uint256 pool = t.state.pool;
        if (proposerAllot + voterAllot > pool) {
            proposerAllot = Math.mulDiv(proposerAllot, pool, proposerAllot + voterAllot);
            voterAllot = pool - proposerAllot;
        }
        r.proposerRewardLeft = uint128(proposerAllot);
        r.voterRewardLeft = uint128(voterAllot);
        r.voterWeightLeft = uint128(winners);
        allotted = proposerAllot + voterAllot;
        t.state.pool = uint128(pool - allotted);
        t.state.allotted += uint128(allotted);
    }

    /// @dev The sum of the round's parts and the weight of the updates with a part.
    function _parts(Task storage t, uint256 round, AllianceTypes.Round storage r)
        private
        view
        returns (uint256 total, uint256 paidWeight)
    {
        for (uint256 i = 0; i < r.updates; i++) {
            (, uint256 part) = _derive(t, round, r, i);
            if (part > 0) {
                total += part;
                paidWeight += t.updates[round][i].weight;
            }
        }
    }

    /// @dev Whether update `index` of a finalized, non-void round is flagged, and its part.
    ///      The proposer's own vote, if it revealed the aggregate, leaves both denominators.
    function _derive(Task storage t, uint256 round, AllianceTypes.Round storage r, uint256 index)
        private
        view
        returns (bool flagged, uint256 part)
    {
        AllianceTypes.Outcome outcome = r.outcome;
        if (outcome == AllianceTypes.Outcome.Pending || outcome == AllianceTypes.Outcome.Void) {
            return (false, 0);
        }
        bytes32 h = r.aggregateHash;
        AllianceTypes.Score storage s = t.scores[round][h][index];
        AllianceTypes.Update storage u = t.updates[round][index];
        (uint256 flagDen, uint256 payDen) = _denominators(t, round, r, u.proposer);
        flagged = 2 * uint256(s.flagWeight) > flagDen;
        int256 c = s.contribution;
        if (outcome == AllianceTypes.Outcome.Accepted && !flagged && c > 0 && payDen > 0) {
            part = Math.mulDiv(u.weight, uint256(c), payDen);
        }
    }

    /// @dev The flag vote's and the pay's denominators for `proposer`'s update: the aggregate's
    ///      scoring and accepting weight, less the proposer's own vote if it revealed the
    ///      aggregate (nobody judges itself).
    function _denominators(
        Task storage t,
        uint256 round,
        AllianceTypes.Round storage r,
        address proposer
    ) private view returns (uint256 flagDen, uint256 payDen) {
        bytes32 h = r.aggregateHash;
        AllianceTypes.Tally storage tally = t.tallies[round][h];
        AllianceTypes.Record storage pr = t.records[round][proposer];
        flagDen = tally.flagVoterWeight;
        payDen = tally.acceptWeight;
        if (pr.vote == AllianceTypes.VoteState.Revealed && pr.aggregateHash == h) {
            uint256 own = voterWeight(t, r, pr);
            if (pr.scored) flagDen -= own;
            if (pr.accept) payDen -= own;
        }
    }

    /// @dev Takes `bps` of `weight` (capped by what is there), unbonding stake first; the
    ///      beneficiary gets finalizerShareBps of it, the pool the rest.
    function _slash(
        Task storage t,
        uint256 taskId,
        address account,
        uint256 weight,
        uint256 bps,
        address beneficiary
    ) private returns (uint256 amount) {
        AllianceTypes.Participant storage me = t.participants[account];
        amount = weight * bps / BPS;
        uint256 available = uint256(me.active) + me.unbonding;
        if (amount > available) amount = available;
        if (amount == 0) return 0;
        uint256 fromUnbonding = amount < me.unbonding ? amount : me.unbonding;
        me.unbonding -= uint128(fromUnbonding);
        if (amount > fromUnbonding) {
            uint256 active = me.active - (amount - fromUnbonding);
            if (active == 0) t.state.participants -= 1;
            setActive(t, account, active);
        }
        uint256 cut = amount * t.params.finalizerShareBps / BPS;
        t.state.staked -= uint128(amount);
        t.state.pool += uint128(amount - cut);
        t.state.claimable += uint128(cut);
        t.claimable[beneficiary] += cut;
        emit AllianceTypes.Slashed(taskId, account, amount, beneficiary, cut);
    }
}
