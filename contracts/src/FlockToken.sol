// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Capped} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Capped.sol";

/// @title FLOCK token
/// @notice ERC-20 with a hard supply cap; holders of MINTER_ROLE emit new tokens up to the cap.
/// @dev One concern only: supply. Staking, rewards and slashing live in FlockAlliance.
contract FlockToken is ERC20Capped, AccessControl {
    /// @notice Role allowed to mint (emissions schedule, faucets on test chains).
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    /// @param cap_ Maximum total supply, in the smallest unit.
    /// @param admin Receives DEFAULT_ADMIN_ROLE and MINTER_ROLE.
    constructor(uint256 cap_, address admin) ERC20("FLock", "FLOCK") ERC20Capped(cap_) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(MINTER_ROLE, admin);
    }

    /// @notice Mint `amount` new tokens to `to`; reverts past the cap.
    /// @param to Receiver of the new tokens.
    /// @param amount Amount in the smallest unit.
    function mint(address to, uint256 amount) external onlyRole(MINTER_ROLE) {
        _mint(to, amount);
    }
}
