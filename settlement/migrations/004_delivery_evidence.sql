-- Issue 17: a batch commits each delivery report it settles (`ledger.delivery_reports`) as an
-- evidence leaf after its fills and moves. A report of full delivery moves no money, so a
-- batch may hold reports only.
ALTER TABLE settlement.batches
    ADD COLUMN evidence_count integer NOT NULL DEFAULT 0 CHECK (evidence_count >= 0),
    DROP CONSTRAINT batches_not_empty,
    ADD CONSTRAINT batches_not_empty
        CHECK (fill_count >= 0 AND fill_count + move_count + evidence_count > 0);
CREATE TABLE IF NOT EXISTS settlement.batch_evidence (
    batch_id bigint NOT NULL REFERENCES settlement.batches,
    leaf_index integer NOT NULL,
    seq bigint NOT NULL UNIQUE,
    issue_id text NOT NULL,
    holder text NOT NULL,
    leaf bytea NOT NULL CHECK (length(leaf) = 32),
    evidence jsonb NOT NULL,
    PRIMARY KEY (batch_id, leaf_index),
    UNIQUE (issue_id, holder)
);
