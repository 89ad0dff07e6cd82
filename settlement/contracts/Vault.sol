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
/// to credit off chain. The exchange's settler applies each batch of fills and delivery moves
/// as net deltas per address and asset (each asset's deltas sum to zero, fees going to the fee
/// account's address, except for the tokens the batch declares minted or burned) and records
/// the Merkle root of the batch's leaves, so any fill or move can be proven later. Payouts of
/// withdrawals go to the owner's wallet, once per withdrawal id.
///
/// Delivery (v2): capacity issued at the venue is minted into custody (this vault holds the
/// GpuHourToken MINTER role) and credited to the issuer in the same batch; the close of a
/// deliverable instrument burns every token of it held here, after which the token is
/// redeemed: never paid out, deposited or minted again. Bonds are USDC held under one
/// reserved address, BOND_ESCROW, whose key nobody has; which issue each bond belongs to is in
/// the batches' leaves, and only a batch moves USDC in or out of it.
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

    /// @notice Holds every issue's bond: an address derived from a hash, so no key signs for it.
    address public constant BOND_ESCROW =
        address(uint160(uint256(keccak256("gpux.vault.bond-escrow"))));

    /// @notice A batch's change to the supply of one GPU-hour token: `minted` tokens issued
    /// into custody, `burned` tokens redeemed from it. `symbol` names the instrument (its id
    /// is keccak256(symbol), and minting records it on the token contract).
    struct SupplyChange {
        uint8 assetIndex;
        uint128 minted;
        uint128 burned;
        string symbol;
    }

    IERC20 public immutable usdc;
    GpuHourToken public immutable gpuHours;

    mapping(address account => mapping(uint256 asset => uint256 amount)) private _balances;
    /// @notice The fills root of each settled batch; zero for a batch id never used.
    mapping(uint256 batchId => bytes32 fillsRoot) public batchRoots;
    mapping(uint256 withdrawalId => bool paid) public withdrawalPaid;
    /// @notice Tokens burned at the close of their instrument: no longer in circulation here.
    mapping(uint256 asset => bool) public redeemed;

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
    error TokenRedeemed(uint256 asset);
    error SymbolMismatch(uint256 asset, string symbol);
    error DuplicateSupplyChange(uint256 asset);
    error BondEscrowPayout();

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
        if (redeemed[asset]) revert TokenRedeemed(asset);
        if (asset == USDC_ASSET) {
            usdc.safeTransferFrom(msg.sender, address(this), amount);
        } else {
            if (!gpuHours.isInstrument(asset)) revert UnknownAsset(asset);
            gpuHours.safeTransferFrom(msg.sender, address(this), asset, amount, "");
        }
        _balances[msg.sender][asset] += amount;
        emit Deposited(msg.sender, asset, amount, account);
    }

    /// @notice Apply one batch of netted fills and delivery moves: see the contract's notes
    /// for `deltas`. Reverts on a batch id used before, an empty root, a debit above a
    /// balance, or an asset whose deltas do not sum to its declared supply change (zero when
    /// `supply` names none: USDC always); then mints and burns what `supply` declares.
    /// Nothing is written per fill or move, only the batch's root.
    function settle(
        uint256 batchId,
        bytes32 fillsRoot,
        uint256[] calldata assets,
        uint256[] calldata deltas,
        SupplyChange[] calldata supply
    ) external onlyRole(SETTLER_ROLE) nonReentrant {
        if (fillsRoot == bytes32(0)) revert EmptyFillsRoot();
        if (batchRoots[batchId] != bytes32(0)) revert BatchAlreadySettled(batchId);
        uint256 assetCount = assets.length;
        if (assetCount > BATCH_ASSETS_MAX) revert TooManyAssets(assetCount);
        batchRoots[batchId] = fillsRoot;
        int256[] memory sums = _declaredSupply(assets, supply);
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
                // |delta| < 2**87, deltaCount < 2**64 and |declared| < 2**129: no overflow
                sums[index] += delta;
                ++i;
            }
        }
        for (uint256 index; index < assetCount; ++index) {
            if (sums[index] != 0) revert DeltasNotZeroSum(assets[index], sums[index]);
        }
        _changeSupply(assets, supply);
        emit BatchSettled(batchId, fillsRoot, deltaCount);
    }

    /// @dev Return, per asset of the batch, minus its declared supply change: what its deltas
    /// must bring back to zero. Each change names a token by its symbol, once, with an amount.
    function _declaredSupply(uint256[] calldata assets, SupplyChange[] calldata supply)
        private
        view
        returns (int256[] memory sums)
    {
        sums = new int256[](assets.length);
        uint256 seen; // one bit per asset index (at most 256)
        for (uint256 i; i < supply.length; ++i) {
            SupplyChange calldata change = supply[i];
            uint256 asset = assets[change.assetIndex]; // an index past the end reverts
            // the token's own rule (GpuHourToken.tokenIdOf), without a call to it
            if (uint256(keccak256(bytes(change.symbol))) != asset) {
                revert SymbolMismatch(asset, change.symbol);
            }
            uint256 bit = uint256(1) << change.assetIndex;
            if (seen & bit != 0) revert DuplicateSupplyChange(asset);
            seen |= bit;
            if (change.minted == 0 && change.burned == 0) revert ZeroAmount();
            if (change.minted != 0 && redeemed[asset]) revert TokenRedeemed(asset);
            sums[change.assetIndex] =
                int256(uint256(change.burned)) - int256(uint256(change.minted));
        }
    }

    /// @dev Mint into custody, then burn from it (a batch may issue and redeem one token);
    /// a token burned is redeemed for good.
    function _changeSupply(uint256[] calldata assets, SupplyChange[] calldata supply) private {
        for (uint256 i; i < supply.length; ++i) {
            SupplyChange calldata change = supply[i];
            uint256 asset = assets[change.assetIndex];
            if (change.minted != 0) {
                gpuHours.registerCapacity(address(this), change.symbol, change.minted);
            }
            if (change.burned != 0) {
                redeemed[asset] = true;
                gpuHours.redeem(asset, change.burned);
            }
        }
    }

    /// @notice Pay a withdrawal the exchange has debited: from `account`'s balance to its wallet.
    function payout(uint256 withdrawalId, address account, uint256 asset, uint256 amount)
        external
        onlyRole(SETTLER_ROLE)
        nonReentrant
    {
        if (amount == 0) revert ZeroAmount();
        if (withdrawalPaid[withdrawalId]) revert WithdrawalAlreadyPaid(withdrawalId);
        if (redeemed[asset]) revert TokenRedeemed(asset);
        if (account == BOND_ESCROW) revert BondEscrowPayout();
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

    /// @notice Tell whether `leaf` (a fill's or a delivery move's) is in settled batch `batchId`.
    function verifyLeaf(uint256 batchId, bytes32[] calldata proof, bytes32 leaf)
        external
        view
        returns (bool)
    {
        bytes32 root = batchRoots[batchId];
        return root != bytes32(0) && MerkleProof.verifyCalldata(proof, root, leaf);
    }

    /// @dev Accept GPU-hour tokens only when this vault pulls them in `deposit` or mints them.
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
