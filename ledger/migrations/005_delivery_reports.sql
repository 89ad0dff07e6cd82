-- Issue 17: every delivery_settled keeps what was reported, the measured share delivered
-- (delivered_ppm) and the evidence (the root of the delivery service's signed samples, or
-- NULL when none was given). Its entry holds only the money (none at all when nothing is
-- owed), so this row is the ledger's record of the report; settlement puts it on chain as
-- an evidence leaf of the batch that settles the seq (`settlement.reports`).
--
-- A journal projected before this migration has no row for its earlier reports: the event
-- log is the record of those (re-projecting it into a new database fills them).

CREATE TABLE ledger.delivery_reports (
    seq           bigint  PRIMARY KEY,
    issue_id      text    NOT NULL,
    holder        text    NOT NULL,
    delivered_ppm integer NOT NULL CHECK (delivered_ppm BETWEEN 0 AND 1000000),
    evidence      text    CHECK (length(evidence) <= 128),
    ts            bigint  NOT NULL,
    UNIQUE (issue_id, holder)
);

CREATE TRIGGER delivery_reports_refuse_update_delete
    BEFORE UPDATE OR DELETE ON ledger.delivery_reports
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
ALTER TABLE ledger.delivery_reports ENABLE ALWAYS TRIGGER delivery_reports_refuse_update_delete;
CREATE TRIGGER delivery_reports_refuse_truncate
    BEFORE TRUNCATE ON ledger.delivery_reports
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
ALTER TABLE ledger.delivery_reports ENABLE ALWAYS TRIGGER delivery_reports_refuse_truncate;

REVOKE ALL ON ledger.delivery_reports FROM PUBLIC;
GRANT SELECT, INSERT ON ledger.delivery_reports TO gpux_ledger;
