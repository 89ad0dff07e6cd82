// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title IndexOracle: the venue's GPU-hour price index, one value a minute per class.
/// @notice The exchange's settler publishes the index (docs/index-methodology.md) with its
/// settlement batches: per GPU class and region (`key`, see `keyOf`) and minute, the value in
/// micro-USDC per GPU-hour, where it came from, whether its trades met the methodology's
/// minimums, and the hash of its exact inputs, so that anyone can recompute a value from the
/// venue's public trades and compare (`gpux index verify`).
///
/// A minute is a whole minute since the Unix epoch (block.timestamp / 60 is the current one);
/// a value at minute m is computed from the venue's events before m. A published minute is
/// never written again, and each key's minutes only move forward, so a value read once is the
/// value for good and a reader never sees history rewritten.
///
/// Reading: check `source` first. `Unpublished` (nothing published for that minute) and
/// `None` (published: the index had no value, no trade, quote or earlier value to use) both
/// carry a `valueMicro` of 0; every other source carries a value above 0.
contract IndexOracle is AccessControl {
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");

    /// @notice Where a value came from (the methodology's fallbacks, in order): the trades of
    /// its window, else the mid of the best bid and ask, else the previous value, else none.
    enum Source {
        Unpublished,
        Trades,
        Mid,
        Last,
        None
    }

    /// @notice One published value; two storage slots.
    struct Value {
        uint64 valueMicro;
        Source source;
        bool sufficient;
        bytes32 inputsHash;
    }

    /// @notice One value to publish: the class's key, the minute, and the value.
    struct Publication {
        bytes32 key;
        uint64 minute;
        Value value;
    }

    mapping(bytes32 key => mapping(uint64 minute => Value)) private _values;
    /// @notice The last minute published per key; 0 for a key never published.
    mapping(bytes32 key => uint64 minute) public latestMinute;

    event IndexPublished(
        bytes32 indexed key,
        uint64 indexed minute,
        uint64 valueMicro,
        Source source,
        bool sufficient,
        bytes32 inputsHash
    );

    error NothingToPublish();
    error InvalidMinute(bytes32 key);
    error InvalidValue(bytes32 key, uint64 minute);
    error AlreadyPublished(bytes32 key, uint64 minute);
    error NotAfterLatest(bytes32 key, uint64 minute, uint64 latest);

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice The key of a GPU class in a region: both names ABI-encoded, so that no pair of
    /// names can share the key of another.
    function keyOf(string calldata gpu, string calldata region) external pure returns (bytes32) {
        return keccak256(abi.encode(gpu, region));
    }

    /// @notice Publish values, in order. Reverts on an empty list, minute 0, a source of
    /// `Unpublished`, a value of 0 with a source other than `None` (or the reverse), a minute
    /// already published, and a minute not after its key's latest (earlier ones of the same
    /// list included).
    function publish(Publication[] calldata publications) external onlyRole(SETTLER_ROLE) {
        uint256 count = publications.length;
        if (count == 0) revert NothingToPublish();
        for (uint256 i; i < count; ++i) {
            Publication calldata publication = publications[i];
            bytes32 key = publication.key;
            uint64 minute = publication.minute;
            Value calldata value = publication.value;
            if (minute == 0) revert InvalidMinute(key);
            if (value.source == Source.Unpublished || (value.valueMicro == 0) != (value.source == Source.None)) {
                revert InvalidValue(key, minute);
            }
            uint64 latest = latestMinute[key];
            if (minute <= latest) {
                if (_values[key][minute].source != Source.Unpublished) revert AlreadyPublished(key, minute);
                revert NotAfterLatest(key, minute, latest);
            }
            latestMinute[key] = minute;
            _values[key][minute] = value;
            emit IndexPublished(key, minute, value.valueMicro, value.source, value.sufficient, value.inputsHash);
        }
    }

    /// @notice The value of `key` at `minute` (source `Unpublished` when none was published).
    function valueAt(bytes32 key, uint64 minute) external view returns (Value memory) {
        return _values[key][minute];
    }

    /// @notice The key's last published minute and its value (0 and an `Unpublished` value
    /// for a key never published).
    function latest(bytes32 key) external view returns (uint64 minute, Value memory value) {
        minute = latestMinute[key];
        value = _values[key][minute];
    }
}
