-- Integrity the database enforces by itself, whoever writes.

-- Every entry balances per asset. Checked once per INSERT or COPY statement over the rows
-- it added (a transition table), so each statement must carry whole, balanced entries:
-- postings split over two statements are refused, and so is a posting without an entry.
CREATE FUNCTION ledger.check_postings_balance() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
    orphan_seq bigint;
BEGIN
    SELECT seq, asset, sum(amount) AS total INTO unbalanced
      FROM new_postings
     GROUP BY seq, asset
    HAVING sum(amount) <> 0
     ORDER BY seq, asset
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger entry % does not balance in %: its postings sum to %',
            unbalanced.seq, unbalanced.asset, unbalanced.total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'postings_balance_per_asset';
    END IF;
    SELECT n.seq INTO orphan_seq
      FROM (SELECT DISTINCT seq FROM new_postings) AS n
     WHERE NOT EXISTS (SELECT 1 FROM ledger.entries AS e WHERE e.seq = n.seq)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'postings for seq % have no journal entry', orphan_seq
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'postings_entry';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER postings_balance_per_asset
    AFTER INSERT ON ledger.postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_postings_balance();
-- ALWAYS: the check runs under session_replication_role = replica too.
ALTER TABLE ledger.postings ENABLE ALWAYS TRIGGER postings_balance_per_asset;

-- Checkpoints continue each other without a gap, and no entry lies beyond the newest one.
CREATE FUNCTION ledger.check_checkpoint_continuity() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    previous_seq bigint;
    newest_entry_seq bigint;
BEGIN
    SELECT last_seq INTO previous_seq FROM ledger.checkpoints ORDER BY last_seq DESC LIMIT 1;
    IF NEW.first_seq <> coalesce(previous_seq, 0) + 1 THEN
        RAISE EXCEPTION 'checkpoint from seq % does not continue the ledger at seq %',
            NEW.first_seq, coalesce(previous_seq, 0)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'checkpoints_continuous';
    END IF;
    SELECT seq INTO newest_entry_seq FROM ledger.entries ORDER BY seq DESC LIMIT 1;
    IF newest_entry_seq > NEW.last_seq THEN
        RAISE EXCEPTION 'entry % lies beyond the checkpoint at seq %',
            newest_entry_seq, NEW.last_seq
            USING ERRCODE = 'check_violation', CONSTRAINT = 'checkpoints_cover_entries';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER checkpoints_continuous
    BEFORE INSERT ON ledger.checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger.check_checkpoint_continuity();
ALTER TABLE ledger.checkpoints ENABLE ALWAYS TRIGGER checkpoints_continuous;
