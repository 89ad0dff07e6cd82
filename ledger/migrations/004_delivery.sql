-- Delivery (v2): a bond is its own account, '@bond:ISSUE_ID' ('@' keeps it outside the
-- engine's account alphabet, like '@chain'), and four more kinds of entry move money:
--   capacity_issued   issuer USDC -bond, bond +bond; '@chain' token -quantity, issuer +quantity
--   bond_released     bond USDC -amount, account +amount
--   delivery_settled  bond USDC -compensation, holder +compensation
--   redeemed          (the close of a deliverable instrument) every holder's tokens of it
--                     to 0, '@chain' +total
-- Side tables keep what the projector needs to book a close after a restart (which
-- instruments are deliverable) and what verify and the reads need about each issue.

ALTER TABLE ledger.entries DROP CONSTRAINT entries_kind_check;
ALTER TABLE ledger.entries ADD CONSTRAINT entries_kind_check CHECK (kind IN (
    'deposited', 'withdrawn', 'trade',
    'capacity_issued', 'bond_released', 'delivery_settled', 'redeemed'
));
-- Settlement reads the delivery entries after its watermark (`ledger.reads.
-- delivery_postings`) while trades keep coming: this index holds only those entries, so the
-- read skips the trades and an insert of a trade entry does not touch it.
CREATE INDEX entries_delivery ON ledger.entries (seq)
    WHERE kind IN ('capacity_issued', 'bond_released', 'delivery_settled', 'redeemed');

-- Every instrument listed (instrument_listed), deliverable when bond_per_gpu_hour (in
-- micro-USDC) is not NULL.
CREATE TABLE ledger.instruments (
    symbol            text   PRIMARY KEY,
    seq               bigint NOT NULL UNIQUE CHECK (seq > 0),
    bond_per_gpu_hour bigint CHECK (bond_per_gpu_hour >= 0)
);

-- Every accepted issue (capacity_issued), bond in micro-USDC as issued.
CREATE TABLE ledger.issues (
    seq        bigint PRIMARY KEY,
    issue_id   text   NOT NULL UNIQUE,
    account    text   NOT NULL,
    instrument text   NOT NULL,
    node_id    text   NOT NULL,
    quantity   bigint NOT NULL CHECK (quantity > 0),
    bond       bigint NOT NULL CHECK (bond >= 0),
    ts         bigint NOT NULL
);
CREATE INDEX issues_by_account ON ledger.issues (account, seq);

-- Every bond_released, also those of amount 0, which have no entry: an issue whose
-- released quantities add up to its quantity owes nothing more, and its bond account must
-- then be 0.
CREATE TABLE ledger.bond_releases (
    seq      bigint PRIMARY KEY,
    issue_id text   NOT NULL,
    account  text   NOT NULL,
    quantity bigint NOT NULL CHECK (quantity > 0),
    amount   bigint NOT NULL CHECK (amount >= 0),
    ts       bigint NOT NULL
);
CREATE INDEX bond_releases_by_issue ON ledger.bond_releases (issue_id);

-- Every close of a deliverable instrument, with the tokens it redeemed (a 'redeemed'
-- entry exists when that is above 0): after it no account holds the token.
CREATE TABLE ledger.redemptions (
    seq        bigint PRIMARY KEY,
    instrument text   NOT NULL UNIQUE,
    quantity   bigint NOT NULL CHECK (quantity >= 0),
    ts         bigint NOT NULL
);

DO $$
DECLARE
    table_name text;
BEGIN
    FOREACH table_name IN ARRAY ARRAY['instruments', 'issues', 'bond_releases', 'redemptions']
    LOOP
        EXECUTE format(
            'CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON ledger.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change()',
            table_name || '_refuse_update_delete', table_name);
        EXECUTE format('ALTER TABLE ledger.%I ENABLE ALWAYS TRIGGER %I',
            table_name, table_name || '_refuse_update_delete');
        EXECUTE format(
            'CREATE TRIGGER %I BEFORE TRUNCATE ON ledger.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change()',
            table_name || '_refuse_truncate', table_name);
        EXECUTE format('ALTER TABLE ledger.%I ENABLE ALWAYS TRIGGER %I',
            table_name, table_name || '_refuse_truncate');
    END LOOP;
END
$$;

REVOKE ALL ON ledger.instruments, ledger.issues, ledger.bond_releases, ledger.redemptions
    FROM PUBLIC;
GRANT SELECT, INSERT ON
    ledger.instruments, ledger.issues, ledger.bond_releases, ledger.redemptions
    TO gpux_ledger;
