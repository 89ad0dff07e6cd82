-- Delivery (v2): a batch settles the postings of delivery entries (bonds, compensation,
-- issued and redeemed tokens) beside its fills, in seq order, and may mint and burn tokens.
-- A batch may hold moves only; its leaves are its fills, then its moves.
ALTER TABLE settlement.batches DROP CONSTRAINT batches_fill_count_check;
ALTER TABLE settlement.batches
    ADD COLUMN move_count integer NOT NULL DEFAULT 0 CHECK (move_count >= 0),
    -- Vault.SupplyChange arguments: [[asset index, minted, burned, symbol], ...]
    ADD COLUMN supply jsonb NOT NULL DEFAULT '[]',
    ADD CONSTRAINT batches_not_empty CHECK (fill_count >= 0 AND fill_count + move_count > 0);
CREATE TABLE IF NOT EXISTS settlement.batch_moves (
    batch_id bigint NOT NULL REFERENCES settlement.batches,
    leaf_index integer NOT NULL,
    seq bigint NOT NULL,
    account text NOT NULL,
    asset numeric NOT NULL,
    leaf bytea NOT NULL CHECK (length(leaf) = 32),
    move jsonb NOT NULL,
    PRIMARY KEY (batch_id, leaf_index),
    UNIQUE (seq, account, asset)
);
