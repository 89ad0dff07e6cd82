-- The price index (issue 18): values of index.values published on the IndexOracle, each
-- transaction a job of its own beside batches and payouts, with the same pending / sent /
-- settled life.
CREATE TABLE IF NOT EXISTS settlement.index_publications (
    publication_id bigint PRIMARY KEY CHECK (publication_id > 0),
    -- the settled batch its values follow: every value's last_seq is at most that batch's
    batch_id bigint NOT NULL REFERENCES settlement.batches,
    -- its last value's place in index.values' order (last_seq, minute_ns, gpu, region): the
    -- next publication starts after it
    last_seq bigint NOT NULL CHECK (last_seq > 0),
    minute_ns bigint NOT NULL,
    gpu text COLLATE "C" NOT NULL,
    region text COLLATE "C" NOT NULL,
    value_count integer NOT NULL CHECK (value_count > 0),
    -- the values published, in order (index.value.IndexValue as JSON)
    index_values jsonb NOT NULL,
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
CREATE INDEX IF NOT EXISTS index_publications_open ON settlement.index_publications
    (publication_id) WHERE status <> 'settled';
