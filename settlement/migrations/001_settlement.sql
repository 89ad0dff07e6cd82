-- Accounts' wallet addresses, batches of fills and their leaves, payouts, and the
-- deposit watchers' positions.
CREATE TABLE IF NOT EXISTS settlement.accounts (
    account text PRIMARY KEY,
    address text NOT NULL CHECK (address ~ '^0x[0-9a-fA-F]{40}$'),
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS settlement.batches (
    batch_id bigint PRIMARY KEY CHECK (batch_id > 0),
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL CHECK (last_seq >= first_seq),
    fill_count integer NOT NULL CHECK (fill_count > 0),
    fills_root bytea NOT NULL CHECK (length(fills_root) = 32),
    assets numeric[] NOT NULL,
    deltas numeric[] NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'sent', 'settled')),
    nonce bigint,
    tx_hashes bytea[] NOT NULL DEFAULT '{}',
    max_fee_per_gas numeric,
    priority_fee_per_gas numeric,
    sent_at timestamptz,
    send_count integer NOT NULL DEFAULT 0,
    tx_hash bytea,
    block_number bigint,
    gas_used bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz
);
CREATE INDEX IF NOT EXISTS batches_open ON settlement.batches (batch_id)
    WHERE status <> 'settled';
CREATE TABLE IF NOT EXISTS settlement.batch_fills (
    batch_id bigint NOT NULL REFERENCES settlement.batches,
    leaf_index integer NOT NULL,
    seq bigint NOT NULL,
    trade_id text NOT NULL UNIQUE,
    leaf bytea NOT NULL CHECK (length(leaf) = 32),
    fill jsonb NOT NULL,
    PRIMARY KEY (batch_id, leaf_index)
);
CREATE TABLE IF NOT EXISTS settlement.payouts (
    withdrawal_seq bigint PRIMARY KEY,
    account text NOT NULL,
    address text NOT NULL,
    asset numeric NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    status text NOT NULL CHECK (status IN ('pending', 'sent', 'settled')),
    nonce bigint,
    tx_hashes bytea[] NOT NULL DEFAULT '{}',
    max_fee_per_gas numeric,
    priority_fee_per_gas numeric,
    sent_at timestamptz,
    send_count integer NOT NULL DEFAULT 0,
    tx_hash bytea,
    block_number bigint,
    gas_used bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz
);
CREATE TABLE IF NOT EXISTS settlement.watchers (
    name text PRIMARY KEY,
    next_block bigint NOT NULL CHECK (next_block >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
