-- The delivery service's tables (docs/delivery.md). Node ids, issue ids and accounts use the
-- protocol's alphabet; times are ns since the epoch, like the protocol's.

-- The venue's keys: the SSH certificate authority's public key (nodes trust it) and the
-- prober's sample-signing keys (verifiers check samples against them). Private keys never
-- enter the database.
CREATE TABLE delivery.authority (
    name        text    COLLATE "C" PRIMARY KEY CHECK (name IN ('ssh_ca')),
    public_key  text    NOT NULL,  -- OpenSSH public key line
    created_ns  bigint  NOT NULL
);
CREATE TABLE delivery.signers (
    signer_id   text    COLLATE "C" PRIMARY KEY,  -- 'ed25519:' + first 16 hex of sha256(key)
    public_key  bytea   NOT NULL CHECK (octet_length(public_key) = 32),  -- raw Ed25519
    created_ns  bigint  NOT NULL
);

-- A node an operator registered (the gateway's `register_node`); one account owns it.
CREATE TABLE delivery.nodes (
    node_id         text     COLLATE "C" PRIMARY KEY,
    account         text     COLLATE "C" NOT NULL,
    gpu             text     COLLATE "C" NOT NULL,
    region          text     COLLATE "C" NOT NULL,
    gpu_count       integer  NOT NULL CHECK (gpu_count >= 1),
    gpu_memory_mib  integer  NOT NULL CHECK (gpu_memory_mib >= 0),  -- per GPU
    host            text     NOT NULL,
    port            integer  NOT NULL CHECK (port BETWEEN 1 AND 65535),
    login           text     NOT NULL,
    host_key        text     NOT NULL,  -- the node's OpenSSH host public key line
    inventory       jsonb    NOT NULL,  -- what the agent read: {"source": "nvml"|"profile", ...}
    registered_ns   bigint   NOT NULL,
    updated_ns      bigint   NOT NULL
);

-- A holder's SSH public keys (the gateway's `register_ssh_key`).
CREATE TABLE delivery.ssh_keys (
    account      text    COLLATE "C" NOT NULL,
    fingerprint  text    COLLATE "C" NOT NULL,  -- 'SHA256:...', as ssh-keygen -l prints it
    public_key   text    NOT NULL,              -- 'ssh-ed25519 AAAA...' without a comment
    added_ns     bigint  NOT NULL,
    PRIMARY KEY (account, fingerprint)
);

-- From the event log (read committed): deliverable instruments and their assignments.
CREATE TABLE delivery.instruments (
    symbol             text     COLLATE "C" PRIMARY KEY,
    gpu                text     COLLATE "C" NOT NULL,
    region             text     COLLATE "C" NOT NULL,
    delivery_start_ns  bigint   NOT NULL,
    delivery_hours     integer  NOT NULL CHECK (delivery_hours >= 1),
    listed_seq         bigint   NOT NULL
);
CREATE TABLE delivery.assignments (
    issue_id         text     COLLATE "C" NOT NULL,
    holder           text     COLLATE "C" NOT NULL,
    instrument       text     COLLATE "C" NOT NULL REFERENCES delivery.instruments,
    issuer           text     COLLATE "C" NOT NULL,
    node_id          text     COLLATE "C" NOT NULL,
    quantity         bigint   NOT NULL CHECK (quantity >= 1),
    window_start_ns  bigint   NOT NULL,
    window_end_ns    bigint   NOT NULL CHECK (window_end_ns > window_start_ns),
    assigned_seq     bigint   NOT NULL UNIQUE,
    PRIMARY KEY (issue_id, holder)
);
-- The event log position the service has applied (one row): the last event's seq and the
-- log offset to read on from, written in the same transaction as what the events added.
CREATE TABLE delivery.progress (
    name         text    COLLATE "C" PRIMARY KEY CHECK (name = 'events'),
    last_seq     bigint  NOT NULL CHECK (last_seq >= 0),
    next_offset  bigint  NOT NULL CHECK (next_offset >= 0)
);

-- Certificates issued: one per (assignment, holder key), valid exactly for the window.
CREATE TABLE delivery.certificates (
    issue_id         text    COLLATE "C" NOT NULL,
    holder           text    COLLATE "C" NOT NULL,
    fingerprint      text    COLLATE "C" NOT NULL,
    serial           bigint  NOT NULL UNIQUE,
    certificate      text    NOT NULL,  -- OpenSSH certificate line
    valid_after_ns   bigint  NOT NULL,
    valid_before_ns  bigint  NOT NULL CHECK (valid_before_ns > valid_after_ns),
    issued_ns        bigint  NOT NULL,
    PRIMARY KEY (issue_id, holder, fingerprint),
    FOREIGN KEY (issue_id, holder) REFERENCES delivery.assignments
);
-- Certificate serials, holders' and the prober's alike: never reused.
CREATE SEQUENCE delivery.certificate_serial AS bigint START 1;

-- The prober's samples: one per minute of an assignment's window, signed, hash-chained per
-- assignment (prev_hash is the previous minute's sample_hash, 32 zero bytes for minute 0).
-- Append-only: a trigger refuses UPDATE and DELETE.
CREATE TABLE delivery.samples (
    issue_id     text     COLLATE "C" NOT NULL,
    holder       text     COLLATE "C" NOT NULL,
    minute       integer  NOT NULL CHECK (minute >= 0),
    body         bytea    NOT NULL,  -- the sample's canonical encoding (delivery.evidence)
    sample_hash  bytea    NOT NULL CHECK (octet_length(sample_hash) = 32),
    prev_hash    bytea    NOT NULL CHECK (octet_length(prev_hash) = 32),
    signer_id    text     COLLATE "C" NOT NULL REFERENCES delivery.signers,
    signature    bytea    NOT NULL CHECK (octet_length(signature) = 64),
    written_ns   bigint   NOT NULL,
    PRIMARY KEY (issue_id, holder, minute),
    FOREIGN KEY (issue_id, holder) REFERENCES delivery.assignments
);
CREATE FUNCTION delivery.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'delivery.% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER samples_append_only BEFORE UPDATE OR DELETE ON delivery.samples
    FOR EACH ROW EXECUTE FUNCTION delivery.refuse_change();
-- A sample extends its assignment's chain or is refused: minute 0 links to 32 zero bytes,
-- minute k to minute k-1's sample_hash, and the minute lies inside the window's minutes.
-- With the primary key this keeps a chain whole and in order whoever writes it.
CREATE FUNCTION delivery.check_sample_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    window_minutes bigint;
BEGIN
    SELECT (window_end_ns - window_start_ns) / 60000000000 INTO window_minutes
        FROM delivery.assignments WHERE issue_id = NEW.issue_id AND holder = NEW.holder;
    IF window_minutes IS NOT NULL AND NEW.minute >= window_minutes THEN
        RAISE EXCEPTION 'sample minute % is beyond the window''s % minutes', NEW.minute,
            window_minutes USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.minute = 0 THEN
        IF NEW.prev_hash <> decode(repeat('00', 32), 'hex') THEN
            RAISE EXCEPTION 'minute 0 must link to 32 zero bytes'
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NOT EXISTS (SELECT 1 FROM delivery.samples WHERE issue_id = NEW.issue_id
            AND holder = NEW.holder AND minute = NEW.minute - 1
            AND sample_hash = NEW.prev_hash) THEN
        RAISE EXCEPTION 'sample minute % does not extend the chain at minute %', NEW.minute,
            NEW.minute - 1 USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER samples_extend_chain BEFORE INSERT ON delivery.samples
    FOR EACH ROW EXECUTE FUNCTION delivery.check_sample_link();

-- One report per assignment: what the service measured and sent as `delivery_report`, and
-- what the engine answered. recorded_id orders the rows for readers that follow them (the
-- gateway's quality feed).
CREATE TABLE delivery.reports (
    recorded_id        bigserial  UNIQUE,
    issue_id           text     COLLATE "C" NOT NULL,
    holder             text     COLLATE "C" NOT NULL,
    node_id            text     COLLATE "C" NOT NULL,
    issuer             text     COLLATE "C" NOT NULL,
    delivered_ppm      integer  NOT NULL CHECK (delivered_ppm BETWEEN 0 AND 1000000),
    delivered_minutes  integer  NOT NULL CHECK (delivered_minutes >= 0),
    window_minutes     integer  NOT NULL CHECK (window_minutes >= 1),
    evidence_root      bytea    NOT NULL CHECK (octet_length(evidence_root) = 32),
    quality            jsonb    NOT NULL,  -- delivery.quality.HourRecord of the assignment
    reported_ns        bigint   NOT NULL,
    outcome            text     COLLATE "C",  -- NULL until answered: 'settled' or a reason
    PRIMARY KEY (issue_id, holder),
    FOREIGN KEY (issue_id, holder) REFERENCES delivery.assignments
);
