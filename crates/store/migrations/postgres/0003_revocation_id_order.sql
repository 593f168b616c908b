-- The revocation feed is read by id cursor (`revocations_since(after)`): a reader that has
-- seen id N never asks for ids at or below N again. Identity values are drawn at insert
-- time but become visible at commit, in any order, so without this a transaction could
-- commit id N+1 while id N was still in flight, and every reader past N+1 would miss N.
--
-- Serialize the inserting transactions instead: a statement-level BEFORE trigger runs
-- before the statement produces its rows (and draws their ids), and the advisory lock it
-- takes is held until the transaction ends, so ids become visible in the order they were
-- drawn. Every writer (the store, an operator's psql session) goes through it. The store
-- inserts revocation events only after taking any row locks it needs, so the lock is
-- always the last one a transaction takes and cannot be part of a deadlock.
CREATE FUNCTION tessera_revocation_order_lock() RETURNS trigger AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7411020002);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER revocation_events_in_id_order BEFORE INSERT ON revocation_events
    FOR EACH STATEMENT EXECUTE FUNCTION tessera_revocation_order_lock();
