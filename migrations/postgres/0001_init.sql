-- PostgreSQL's dialect of ../0001_init.sql: users and the messages waiting for them. Message
-- texts and attachment names are bytes (BYTEA): clients may send bytes that are not UTF-8.
--   psql "$URL" -c 'select seq, recipient, sender, id, convert_from(text, 'UTF8') from pending_messages'
CREATE TABLE users (
    alias       TEXT PRIMARY KEY,            -- the key every operation names
    full_name   TEXT,                        -- 2022-23 REGISTER only
    birth_date  TEXT,                        -- DD/MM/YYYY, 2022-23 REGISTER only
    connected   BOOLEAN NOT NULL DEFAULT false,
    ip          TEXT,                        -- listener address while connected
    port        INTEGER,
    last_id     BIGINT NOT NULL DEFAULT 0,   -- id of the last message this user sent (u32)
    registered_at BIGINT NOT NULL            -- unix seconds
);

CREATE INDEX users_connected ON users (connected) WHERE connected;

CREATE TABLE pending_messages (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- acceptance order
    recipient   TEXT NOT NULL REFERENCES users (alias) ON DELETE CASCADE,
    sender      TEXT NOT NULL,
    id          BIGINT NOT NULL,                  -- the sender's message id
    text        BYTEA NOT NULL,
    attachment  BYTEA,                            -- file name of SENDATTACH, else NULL
    accepted_at BIGINT NOT NULL                   -- unix seconds
);

CREATE INDEX pending_by_recipient ON pending_messages (recipient, seq);
