// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ERC1155Holder} from "@openzeppelin/contracts/token/ERC1155/utils/ERC1155Holder.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

import {GpuHourToken} from "./GpuHourToken.sol";

/// @title Vault: custody of USDC and GPU-hour tokens, settled in netted batches.
/// @notice Balances are kept per wallet address and asset; asset 0 is USDC, any other asset is
/// a GpuHourToken id. A deposit credits the depositor's balance and names the exchange account
/// to credit off chain. The exchange's settler applies each batch of fills as net deltas per
/// address and asset (each asset's deltas sum to zero: fees go to the fee account's address)
/// and records the Merkle root of the batch's fills, so any fill can be proven later. Payouts
/// of withdrawals go to the owner's wallet, once per withdrawal id.
///
/// Delta encoding (one 32-byte word per address and asset, for cheap calldata and no per-fill
/// work on chain): bits 255..96 the address, bits 95..88 an index into the batch's `assets`
/// array, bits 87..0 the signed delta as a two's complement int88.
contract Vault is AccessControl, ERC1155Holder, ReentrancyGuard {
    using SafeERC20 for IERC20;

    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    uint256 public constant USDC_ASSET = 0;
    uint256 public constant ACCOUNT_LENGTH_MAX = 64;
    uint256 public constant BATCH_ASSETS_MAX = 256;

    IERC20 public immutable usdc;
    GpuHourToken public immutable gpuHours;

    mapping(address account => mapping(uint256 asset => uint256 amount)) private _balances;
    /// @notice The fills root of each settled batch; zero for a batch id never used.
    mapping(uint256 batchId => bytes32 fillsRoot) public batchRoots;
    mapping(uint256 withdrawalId => bool paid) public withdrawalPaid;

    event Deposited(address indexed depositor, uint256 indexed asset, uint256 amount, string account);
    event BatchSettled(uint256 indexed batchId, bytes32 fillsRoot, uint256 deltaCount);
    event PaidOut(
        uint256 indexed withdrawalId, address indexed account, uint256 indexed asset, uint256 amount
    );

    error ZeroAmount();
    error AccountTooLong();
    error UnknownAsset(uint256 asset);
    error EmptyFillsRoot();
    error BatchAlreadySettled(uint256 batchId);
    error TooManyAssets(uint256 count);
    error DeltasNotZeroSum(uint256 asset, int256 sum);
    error InsufficientBalance(address account, uint256 asset, uint256 balance, uint256 debit);
    error WithdrawalAlreadyPaid(uint256 withdrawalId);
    error UnexpectedTokenTransfer();

    constructor(address admin, IERC20 usdc_, GpuHourToken gpuHours_) {
        usdc = usdc_;
        gpuHours = gpuHours_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    function balanceOf(address account, uint256 asset) external view returns (uint256) {
        return _balances[account][asset];
    }

    /// @notice Pull `amount` of `asset` from the caller into custody and credit the caller.
    /// @param account the exchange account to credit; "" means the caller's address.
    function deposit(uint256 asset, uint256 amount, string calldata account) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (bytes(account).length > ACCOUNT_LENGTH_MAX) revert AccountTooLong();
        if (asset == USDC_ASSET) {
            usdc.safeTransferFrom(msg.sender, address(this), amount);
        } else {
            if (!gpuHours.isInstrument(asset)) revert UnknownAsset(asset);
            gpuHours.safeTransferFrom(msg.sender, address(this), asset, amount, "");
        }
        _balances[msg.sender][asset] += amount;
        emit Deposited(msg.sender, asset, amount, account);
    }

    /// @notice Apply one batch of netted fills: see the contract's notes for `deltas`.
    /// Reverts on a batch id used before, a debit above a balance, or an asset whose deltas do
    /// not sum to zero; nothing is written per fill, only the batch's root.
    function settle(
        uint256 batchId,
        bytes32 fillsRoot,
        uint256[] calldata assets,
        uint256[] calldata deltas
    ) external onlyRole(SETTLER_ROLE) {
        if (fillsRoot == bytes32(0)) revert EmptyFillsRoot();
        if (batchRoots[batchId] != bytes32(0)) revert BatchAlreadySettled(batchId);
        uint256 assetCount = assets.length;
        if (assetCount > BATCH_ASSETS_MAX) revert TooManyAssets(assetCount);
        batchRoots[batchId] = fillsRoot;
        int256[] memory sums = new int256[](assetCount);
        uint256 deltaCount = deltas.length;
        for (uint256 i; i < deltaCount;) {
            uint256 word = deltas[i];
            uint256 index = (word >> 88) & 0xff;
            uint256 asset = assets[index]; // an index past the end reverts
            int256 delta = int256(int88(uint88(word)));
            address account = address(uint160(word >> 96));
            mapping(uint256 => uint256) storage balances = _balances[account];
            uint256 balance = balances[asset];
            unchecked {
                if (delta < 0) {
                    uint256 debit = uint256(-delta);
                    if (debit > balance) revert InsufficientBalance(account, asset, balance, debit);
                    balances[asset] = balance - debit;
                } else {
                    uint256 credited = balance + uint256(delta);
                    if (credited < balance) revert InsufficientBalance(account, asset, balance, 0);
                    balances[asset] = credited;
                }
                // |delta| < 2**87 and deltaCount < 2**64: the sums cannot overflow an int256
                sums[index] += delta;
                ++i;
            }
        }
        for (uint256 index; index < assetCount; ++index) {
            if (sums[index] != 0) revert DeltasNotZeroSum(assets[index], sums[index]);
        }
        emit BatchSettled(batchId, fillsRoot, deltaCount);
    }

    /// @notice Pay a withdrawal the exchange has debited: from `account`'s balance to its wallet.
    function payout(uint256 withdrawalId, address account, uint256 asset, uint256 amount)
        external
        onlyRole(SETTLER_ROLE)
        nonReentrant
    {
        if (amount == 0) revert ZeroAmount();
        if (withdrawalPaid[withdrawalId]) revert WithdrawalAlreadyPaid(withdrawalId);
        uint256 balance = _balances[account][asset];
        if (amount > balance) revert InsufficientBalance(account, asset, balance, amount);
        withdrawalPaid[withdrawalId] = true;
        unchecked {
            _balances[account][asset] = balance - amount;
        }
        if (asset == USDC_ASSET) {
            usdc.safeTransfer(account, amount);
        } else {
            gpuHours.safeTransferFrom(address(this), account, asset, amount, "");
        }
        emit PaidOut(withdrawalId, account, asset, amount);
    }

    /// @notice Tell whether `leaf` is a fill of settled batch `batchId`.
    function verifyFill(uint256 batchId, bytes32[] calldata proof, bytes32 leaf)
        external
        view
        returns (bool)
    {
        bytes32 root = batchRoots[batchId];
        return root != bytes32(0) && MerkleProof.verifyCalldata(proof, root, leaf);
    }

    /// @dev Accept GPU-hour tokens only when this vault pulls them in `deposit`.
    function onERC1155Received(address operator, address, uint256, uint256, bytes memory)
        public
        view
        override
        returns (bytes4)
    {
        if (operator != address(this) || msg.sender != address(gpuHours)) {
            revert UnexpectedTokenTransfer();
        }
        return this.onERC1155Received.selector;
    }

    function onERC1155BatchReceived(address, address, uint256[] memory, uint256[] memory, bytes memory)
        public
        pure
        override
        returns (bytes4)
    {
        revert UnexpectedTokenTransfer();
    }

    function supportsInterface(bytes4 interfaceId)
        public
        view
        override(AccessControl, ERC1155Holder)
        returns (bool)
    {
        return super.supportsInterface(interfaceId);
    }
}
