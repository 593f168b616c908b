-- The audit log is append-only: the application never updates, deletes or truncates it,
-- so the database refuses to. This stops a bug or an injected statement from rewriting
-- history; the table's owner can drop these triggers, which is what the hash chain
-- (`tessera audit verify`) is for.
CREATE FUNCTION tessera_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION tessera_audit_append_only();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION tessera_audit_append_only();
