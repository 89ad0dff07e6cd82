-- The GPU-hour price index: one row per GPU class, region and minute boundary, upserted by
-- its key (a value is a function of the event log alone, so writing it again is a no-op).
-- docs/index-methodology.md defines every column.
CREATE TABLE index.values (
    gpu              text     COLLATE "C" NOT NULL,
    region           text     COLLATE "C" NOT NULL,
    minute_ns        bigint   NOT NULL CHECK (minute_ns % 60000000000 = 0),
    value_micro      bigint   CHECK (value_micro > 0),
    source           text     NOT NULL CHECK (source IN ('trades', 'mid', 'last', 'none')),
    trade_count      integer  NOT NULL CHECK (trade_count >= 0),
    volume           bigint   NOT NULL CHECK (volume >= 0),
    instrument_count integer  NOT NULL CHECK (instrument_count >= 0),
    sufficient       boolean  NOT NULL,
    inputs_hash      bytea    NOT NULL CHECK (octet_length(inputs_hash) = 32),
    last_seq         bigint   NOT NULL CHECK (last_seq > 0),
    PRIMARY KEY (gpu, region, minute_ns),
    CHECK ((value_micro IS NULL) = (source = 'none')),
    CHECK ((source = 'trades') = (trade_count > 0)),
    CHECK (source = 'trades' OR (volume = 0 AND instrument_count = 0)),
    CHECK (source = 'trades' OR NOT sufficient)
);
COMMENT ON TABLE index.values IS
    'The GPU-hour price index per (gpu, region), one value a minute (docs/index-methodology.md). '
    'last_seq is the seq of the last event before minute_ns: settlement reads rows in '
    'last_seq order, and every row of one last_seq is written in one transaction.';

-- Settlement reads the values the log has passed since its watermark, in last_seq order.
CREATE INDEX values_by_last_seq ON index.values (last_seq);
