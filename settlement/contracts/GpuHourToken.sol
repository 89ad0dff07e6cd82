// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC1155} from "@openzeppelin/contracts/token/ERC1155/ERC1155.sol";

/// @title GpuHourToken: one ERC-1155 token id per GPU-hour instrument.
/// @notice The id of an instrument is uint256(keccak256(bytes(symbol))), so anyone can derive
/// it from the exchange's symbol; the contract records the symbol of every id it has minted,
/// which is how a deposit watcher names the asset. The MINTER role mints tokens to an operator
/// when it registers capacity (the Vault holds it too: capacity issued at the venue is minted
/// into its custody); a holder burns them when it redeems the GPU-hours (the Vault, at the
/// close of a deliverable instrument).
contract GpuHourToken is ERC1155, AccessControl {
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");
    uint256 public constant SYMBOL_LENGTH_MAX = 64;

    mapping(uint256 id => string symbol) private _symbols;

    event InstrumentRegistered(uint256 indexed id, string symbol);
    event CapacityRegistered(address indexed operator, uint256 indexed id, uint256 amount);
    event Redeemed(address indexed holder, uint256 indexed id, uint256 amount);

    error InvalidSymbol();
    error ZeroAmount();

    constructor(address admin, string memory uri_) ERC1155(uri_) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Return the token id of an instrument symbol.
    function tokenIdOf(string calldata symbol) public pure returns (uint256) {
        return uint256(keccak256(bytes(symbol)));
    }

    /// @notice Return the symbol of a token id, or "" when no capacity was ever registered.
    function symbolOf(uint256 id) external view returns (string memory) {
        return _symbols[id];
    }

    function isInstrument(uint256 id) public view returns (bool) {
        return bytes(_symbols[id]).length != 0;
    }

    /// @notice Mint `amount` GPU-hours of `symbol` to `operator`, who registers that capacity.
    function registerCapacity(address operator, string calldata symbol, uint256 amount)
        external
        onlyRole(MINTER_ROLE)
        returns (uint256 id)
    {
        uint256 length = bytes(symbol).length;
        if (length == 0 || length > SYMBOL_LENGTH_MAX) revert InvalidSymbol();
        if (amount == 0) revert ZeroAmount();
        id = tokenIdOf(symbol);
        if (!isInstrument(id)) {
            _symbols[id] = symbol;
            emit InstrumentRegistered(id, symbol);
        }
        _mint(operator, id, amount, "");
        emit CapacityRegistered(operator, id, amount);
    }

    /// @notice Burn `amount` of the caller's GPU-hours of `id`: they are being delivered.
    function redeem(uint256 id, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        _burn(msg.sender, id, amount);
        emit Redeemed(msg.sender, id, amount);
    }

    function supportsInterface(bytes4 interfaceId)
        public
        view
        override(ERC1155, AccessControl)
        returns (bool)
    {
        return super.supportsInterface(interfaceId);
    }
}
