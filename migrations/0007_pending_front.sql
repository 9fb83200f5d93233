-- The front of the mailboxes: a private message written to a session around the mailbox
-- (two sessions on one node, nothing waiting for the recipient: docs/chat.md) that the
-- session ended before it went out is put back in front of whatever came for its recipient
-- since, with a seq below every other. The seqs of the front count down from 0 here and are
-- never reused, as those of the back are not (AUTOINCREMENT).
CREATE TABLE pending_front (
    seq INTEGER NOT NULL CHECK (seq <= 0)
);

INSERT INTO pending_front (seq) VALUES (0);
