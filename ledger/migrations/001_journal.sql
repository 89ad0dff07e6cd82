-- The double-entry journal: one entry per money-moving event (deposited, withdrawn, trade),
-- keyed by the event seq, its postings, the trade and withdrawal rows settlement reads, and
-- the projector's checkpoints (the last applied seq and the log offset after it).
-- Amounts are integers: micro-USDC for USDC, whole tokens for an instrument's token.

CREATE TABLE ledger.entries (
    seq       bigint PRIMARY KEY CHECK (seq > 0),
    kind      text   NOT NULL CHECK (kind IN ('deposited', 'withdrawn', 'trade')),
    ts        bigint NOT NULL,
    prev_hash bytea  NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash      bytea  NOT NULL CHECK (octet_length(hash) = 32)
);
COMMENT ON TABLE ledger.entries IS
    'One journal entry per money-moving event; seq is the event seq (the idempotency key). '
    'hash = sha256(prev_hash || [seq, [[account, asset, amount], ...]] as compact JSON, '
    'postings sorted), chained from 32 zero bytes.';

-- One posting per (entry, account, asset): the projector merges an entry's moves per
-- account and asset. The primary key leads with seq, so appends always land at the right
-- edge of the index (cheap) and reads by seq range use it. There is deliberately no index
-- by account: one on (account, asset, seq) would serve statements without a scan, but
-- inserting into it at hundreds of places at once costs about a third of the projection
-- rate (benchmarks/README.md); add it in a migration when statement latency matters more.
CREATE TABLE ledger.postings (
    seq     bigint NOT NULL,
    account text   NOT NULL,
    asset   text   NOT NULL,
    amount  bigint NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (seq, account, asset)
);

CREATE TABLE ledger.trades (
    seq              bigint PRIMARY KEY,
    trade_id         text   NOT NULL UNIQUE,
    instrument       text   NOT NULL,
    price_micro      bigint NOT NULL CHECK (price_micro > 0),
    quantity         bigint NOT NULL CHECK (quantity > 0),
    buyer            text   NOT NULL,
    seller           text   NOT NULL,
    buyer_fee_micro  bigint NOT NULL CHECK (buyer_fee_micro >= 0),
    seller_fee_micro bigint NOT NULL CHECK (seller_fee_micro >= 0),
    maker_account    text   NOT NULL,
    taker_account    text   NOT NULL,
    aggressor_side   text   NOT NULL CHECK (aggressor_side IN ('buy', 'sell')),
    ts               bigint NOT NULL
);

CREATE TABLE ledger.withdrawals (
    seq     bigint PRIMARY KEY,
    account text   NOT NULL,
    asset   text   NOT NULL,
    amount  bigint NOT NULL CHECK (amount > 0),
    ts      bigint NOT NULL
);

-- One row per applied batch, in the batch's transaction: where the projector resumes.
CREATE TABLE ledger.checkpoints (
    last_seq     bigint      PRIMARY KEY,
    first_seq    bigint      NOT NULL UNIQUE CHECK (first_seq > 0),
    next_offset  bigint      NOT NULL CHECK (next_offset > 0),
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (last_seq >= first_seq)
);
