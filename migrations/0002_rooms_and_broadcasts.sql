-- The chat front-ends (seeds 001 and 004): rooms with their messages, and the chat's
-- broadcasts, replayed to users who join a room or log in.
CREATE TABLE rooms (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- creation order, the order LIST_ROOMS shows
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL                   -- unix seconds
);

INSERT INTO rooms (name, created_at) VALUES ('Sala1', 0);

CREATE TABLE room_messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    room        TEXT NOT NULL REFERENCES rooms (name),
    sender      TEXT NOT NULL,
    text        TEXT NOT NULL,
    sent_at     INTEGER NOT NULL
);

CREATE INDEX room_messages_by_room ON room_messages (room, seq);

CREATE TABLE chat_broadcasts (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    sender      TEXT NOT NULL,
    text        TEXT NOT NULL,
    sent_at     INTEGER NOT NULL
);
