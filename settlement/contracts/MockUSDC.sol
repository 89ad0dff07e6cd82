// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title MockUSDC: a 6-decimal ERC-20 standing in for USDC on dev chains and in tests.
/// @notice Anyone may mint: never deploy this where the token is meant to have value.
contract MockUSDC is ERC20 {
    constructor() ERC20("Mock USD Coin", "USDC") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Mint `amount` micro-USDC to `to` (a faucet for dev chains).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
