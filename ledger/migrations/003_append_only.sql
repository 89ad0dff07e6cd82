-- Append-only for real: the service role may only read and insert, and triggers refuse
-- UPDATE, DELETE and TRUNCATE on every ledger table even for the owner or a superuser
-- (ENABLE ALWAYS: also under session_replication_role = replica). Changing history takes
-- ALTER TABLE ... DISABLE TRIGGER by the owner, which `gpux ledger verify` then exposes.

CREATE FUNCTION ledger.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

DO $$
DECLARE
    table_name text;
BEGIN
    FOREACH table_name IN ARRAY
        ARRAY['entries', 'postings', 'trades', 'withdrawals', 'checkpoints']
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

-- The role the projector and readers use. Roles belong to the whole cluster, so it may
-- exist already (another database's ledger); it cannot log in until `gpux ledger migrate
-- --service-password` (or an operator) gives it a password.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gpux_ledger') THEN
        CREATE ROLE gpux_ledger NOLOGIN;
    END IF;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA ledger FROM PUBLIC;
GRANT USAGE ON SCHEMA ledger TO gpux_ledger;
GRANT SELECT, INSERT ON
    ledger.entries, ledger.postings, ledger.trades, ledger.withdrawals, ledger.checkpoints
    TO gpux_ledger;
GRANT SELECT ON ledger.schema_migrations TO gpux_ledger;
