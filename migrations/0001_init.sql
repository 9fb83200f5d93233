-- Users and the messages waiting for them. Readable with the sqlite3 shell, e.g.
--   sqlite3 messages.db 'select * from pending_messages'
CREATE TABLE users (
    alias       TEXT PRIMARY KEY NOT NULL,   -- the key every operation names
    full_name   TEXT,                        -- 2022-23 REGISTER only
    birth_date  TEXT,                        -- DD/MM/YYYY, 2022-23 REGISTER only
    connected   INTEGER NOT NULL DEFAULT 0 CHECK (connected IN (0, 1)),
    ip          TEXT,                        -- listener address while connected
    port        INTEGER,
    last_id     INTEGER NOT NULL DEFAULT 0,  -- id of the last message this user sent (u32)
    registered_at INTEGER NOT NULL           -- unix seconds
) WITHOUT ROWID;

CREATE INDEX users_connected ON users (connected) WHERE connected = 1;

CREATE TABLE pending_messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- acceptance order, never reused
    recipient   TEXT NOT NULL REFERENCES users (alias) ON DELETE CASCADE,
    sender      TEXT NOT NULL,
    id          INTEGER NOT NULL,                  -- the sender's message id
    text        TEXT NOT NULL,
    attachment  TEXT,                              -- file name of SENDATTACH, else NULL
    accepted_at INTEGER NOT NULL                   -- unix seconds
);

CREATE INDEX pending_by_recipient ON pending_messages (recipient, seq);
