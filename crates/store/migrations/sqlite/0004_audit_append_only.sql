-- The audit log is append-only: the application never updates or deletes a row, so the
-- database refuses to. This stops a bug or an injected statement from rewriting history;
-- someone with the database's own privileges can drop these triggers, which is what the
-- hash chain (`tessera audit verify`) is for.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
