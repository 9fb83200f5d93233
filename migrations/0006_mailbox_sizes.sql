-- How many messages wait for each recipient, kept by triggers as messages come and go, so
-- that the status page and /metrics read a gauge rather than count a mailbox of a million
-- rows (docs/operations.md). A recipient with nothing waiting has no row.
CREATE TABLE mailbox_sizes (
    recipient TEXT PRIMARY KEY NOT NULL,
    messages  INTEGER NOT NULL CHECK (messages >= 0)
) WITHOUT ROWID;

-- The status page's "most waiting" table.
CREATE INDEX mailbox_sizes_largest ON mailbox_sizes (messages DESC, recipient);

INSERT INTO mailbox_sizes (recipient, messages)
    SELECT recipient, count(*) FROM pending_messages GROUP BY recipient;

CREATE TRIGGER mailbox_grows AFTER INSERT ON pending_messages BEGIN
    INSERT INTO mailbox_sizes (recipient, messages) VALUES (NEW.recipient, 1)
        ON CONFLICT (recipient) DO UPDATE SET messages = messages + 1;
END;

CREATE TRIGGER mailbox_shrinks AFTER DELETE ON pending_messages BEGIN
    UPDATE mailbox_sizes SET messages = messages - 1 WHERE recipient = OLD.recipient;
    DELETE FROM mailbox_sizes WHERE recipient = OLD.recipient AND messages = 0;
END;
