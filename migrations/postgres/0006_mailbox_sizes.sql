-- PostgreSQL's version of ../0006_mailbox_sizes.sql: how many messages wait for each
-- recipient, for the status page and /metrics. Several nodes send to one recipient at once,
-- so a sender's transaction does not update the recipient's row (it would hold that row's
-- lock until its commit, and two turns sending to two recipients in opposite orders would
-- deadlock): a trigger appends the change to mailbox_size_changes, which takes no lock
-- anybody waits for, and a node's background sweep folds the changes into mailbox_sizes
-- about once a second (PgStore::fold_mailbox_sizes): the status page's figures are as of
-- the last fold.
-- (No CHECK (messages >= 0) as in SQLite's: PostgreSQL checks the row an INSERT proposes
-- before ON CONFLICT turns it into an update, and a fold proposes a negative change.)
CREATE TABLE mailbox_sizes (
    recipient TEXT PRIMARY KEY,
    messages  BIGINT NOT NULL
);

CREATE INDEX mailbox_sizes_largest ON mailbox_sizes (messages DESC, recipient);

CREATE TABLE mailbox_size_changes (
    recipient TEXT NOT NULL,
    change    INTEGER NOT NULL
);

INSERT INTO mailbox_sizes (recipient, messages)
    SELECT recipient, count(*) FROM pending_messages GROUP BY recipient;

CREATE FUNCTION mailbox_size_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO mailbox_size_changes (recipient, change) VALUES (NEW.recipient, 1);
    ELSE
        INSERT INTO mailbox_size_changes (recipient, change) VALUES (OLD.recipient, -1);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER mailbox_size_change AFTER INSERT OR DELETE ON pending_messages
    FOR EACH ROW EXECUTE FUNCTION mailbox_size_change();
