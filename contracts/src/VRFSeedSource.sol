// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ISeedSource} from "./ISeedSource.sol";
import {IVRFCoordinatorV2Plus} from "./IVRFCoordinatorV2Plus.sol";

/// @title Seeds from a VRF v2.5 coordinator (Chainlink-shaped), for chains whose block
///        producer could otherwise pick the seed (an L2 sequencer)
/// @notice One random word per round, requested when the round starts. The coordinator proves
///         each word against the key hash's public key, so neither the requester, the caller of
///         startRound nor the sequencer can choose it; the seed is keccak256 of the word with
///         (requester, taskId, round). A request not answered within `lapseBlocks` lapses and
///         can be renewed; an answer to a renewed (superseded) request is ignored.
/// @dev Only the bound requester (the alliance) may request: requests spend the subscription.
contract VRFSeedSource is ISeedSource {
    /// @notice The coordinator; only it may fulfil.
    IVRFCoordinatorV2Plus public immutable coordinator;
    /// @notice Which VRF key (and gas lane) answers.
    bytes32 public immutable keyHash;
    /// @notice The subscription that pays.
    uint256 public immutable subId;
    /// @notice Blocks the coordinator waits before answering.
    uint16 public immutable requestConfirmations;
    /// @notice Gas the coordinator gives rawFulfillRandomWords.
    uint32 public immutable callbackGasLimit;
    /// @notice Pay in the native token (else LINK).
    bool public immutable nativePayment;
    /// @notice Blocks after which an unanswered request lapses.
    uint256 public immutable lapseBlocks;
    /// @notice Who may request (set once by the deployer, see bind).
    address public requester;

    address private immutable _binder;

    struct Request {
        uint256 requestId;
        uint64 requestedAt;
        bytes32 seed;
    }

    mapping(bytes32 key => Request) private _requests;
    mapping(uint256 requestId => bytes32 key) private _keys;

    /// @notice The coordinator answered a request.
    event SeedFulfilled(uint256 indexed requestId, bytes32 seed);

    /// @notice Only the coordinator may fulfil (`have` called, `want` is the coordinator).
    error OnlyCoordinatorCanFulfill(address have, address want);
    /// @notice Only the bound requester may request seeds.
    error NotRequester(address account);
    /// @notice bind was called by someone else than the deployer, or a second time.
    error AlreadyBound();
    /// @notice A zero address or count was given.
    error InvalidSetting();

    constructor(
        IVRFCoordinatorV2Plus coordinator_,
        bytes32 keyHash_,
        uint256 subId_,
        uint16 requestConfirmations_,
        uint32 callbackGasLimit_,
        bool nativePayment_,
        uint256 lapseBlocks_
    ) {
        if (address(coordinator_) == address(0) || lapseBlocks_ == 0) revert InvalidSetting();
        coordinator = coordinator_;
        keyHash = keyHash_;
        subId = subId_;
        requestConfirmations = requestConfirmations_;
        callbackGasLimit = callbackGasLimit_;
        nativePayment = nativePayment_;
        lapseBlocks = lapseBlocks_;
        _binder = msg.sender;
    }

    /// @notice Name the one requester (the alliance, deployed after this source); once.
    function bind(address requester_) external {
        if (msg.sender != _binder || requester != address(0)) revert AlreadyBound();
        if (requester_ == address(0)) revert InvalidSetting();
        requester = requester_;
    }

    /// @inheritdoc ISeedSource
    function requestSeed(uint256 taskId, uint256 round) external {
        if (msg.sender != requester) revert NotRequester(msg.sender);
        bytes32 key = _key(msg.sender, taskId, round);
        Request storage q = _requests[key];
        if (q.requestedAt != 0 && _state(q) != SeedState.Lapsed) {
            revert SeedAlreadyRequested(msg.sender, taskId, round);
        }
        uint256 id = coordinator.requestRandomWords(
            IVRFCoordinatorV2Plus.RandomWordsRequest({
                keyHash: keyHash,
                subId: subId,
                requestConfirmations: requestConfirmations,
                callbackGasLimit: callbackGasLimit,
                numWords: 1,
                extraArgs: abi.encodeWithSelector(
                    bytes4(keccak256("VRF ExtraArgsV1")), nativePayment
                )
            })
        );
        delete _keys[q.requestId];
        q.requestId = id;
        q.requestedAt = uint64(block.number);
        _keys[id] = key;
        emit SeedRequested(msg.sender, taskId, round, id);
    }

    /// @notice The coordinator's answer. Never reverts on an unknown or superseded request (the
    ///         coordinator would only retry it), only on a caller that is not the coordinator.
    function rawFulfillRandomWords(uint256 requestId, uint256[] calldata randomWords) external {
        if (msg.sender != address(coordinator)) {
            revert OnlyCoordinatorCanFulfill(msg.sender, address(coordinator));
        }
        bytes32 key = _keys[requestId];
        if (key == bytes32(0) || randomWords.length == 0) return;
        delete _keys[requestId];
        Request storage q = _requests[key];
        if (q.seed != bytes32(0)) return;
        q.seed = keccak256(abi.encode(randomWords[0], key));
        emit SeedFulfilled(requestId, q.seed);
    }

    /// @inheritdoc ISeedSource
    function seedOf(address requester_, uint256 taskId, uint256 round)
        external
        view
        returns (SeedState state, bytes32 seed)
    {
        Request storage q = _requests[_key(requester_, taskId, round)];
        if (q.requestedAt == 0) return (SeedState.None, bytes32(0));
        state = _state(q);
        if (state == SeedState.Ready) seed = q.seed;
    }

    /// @notice The coordinator's request id of `requester_`'s (taskId, round) request (0: none).
    function requestIdOf(address requester_, uint256 taskId, uint256 round)
        external
        view
        returns (uint256)
    {
        return _requests[_key(requester_, taskId, round)].requestId;
    }

    function _state(Request storage q) private view returns (SeedState) {
        if (q.seed != bytes32(0)) return SeedState.Ready;
        if (block.number - q.requestedAt > lapseBlocks) return SeedState.Lapsed;
        return SeedState.Pending;
    }

    function _key(address requester_, uint256 taskId, uint256 round)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(requester_, taskId, round));
    }
}
