// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title Holds every token of the FL Alliance: stakes, unbonding stake, task pools, allotted
///        rewards and claimable balances
/// @notice Tokens come in by the alliance's transferFrom (stake, task creation) and leave only
///         when the alliance pays out (withdraw, claim, reclaimPool). The books (which token
///         belongs to which bucket) are the alliance's: this contract only keeps the tokens,
///         so its balance is the sum of the alliance's buckets over all tasks.
contract StakeVault {
    using SafeERC20 for IERC20;

    /// @notice The FLOCK token held here.
    IERC20 public immutable token;
    /// @notice The only caller allowed to move tokens out (set once, see bind).
    address public alliance;

    address private immutable _binder;

    /// @notice Only the alliance may pay out.
    error NotAlliance(address account);
    /// @notice bind was called by someone else than the deployer, or a second time.
    error AlreadyBound();

    /// @param token_ The FLOCK token.
    constructor(IERC20 token_) {
        token = token_;
        _binder = msg.sender;
    }

    /// @notice Name the alliance (deployed after the vault, which it takes as an argument);
    ///         once, by the deployer.
    function bind(address alliance_) external {
        if (msg.sender != _binder || alliance != address(0) || alliance_ == address(0)) {
            revert AlreadyBound();
        }
        alliance = alliance_;
    }

    /// @notice Pay `amount` to `to`, for the alliance.
    function pay(address to, uint256 amount) external {
        if (msg.sender != alliance) revert NotAlliance(msg.sender);
        token.safeTransfer(to, amount);
    }
}
