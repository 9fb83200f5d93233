-- PostgreSQL's dialect of ../0002_rooms_and_broadcasts.sql.
CREATE TABLE rooms (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- creation order
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL                   -- unix seconds
);

INSERT INTO rooms (name, created_at) VALUES ('Sala1', 0);

CREATE TABLE room_messages (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room        TEXT NOT NULL REFERENCES rooms (name),
    sender      TEXT NOT NULL,
    text        TEXT NOT NULL,
    sent_at     BIGINT NOT NULL
);

CREATE INDEX room_messages_by_room ON room_messages (room, seq);

CREATE TABLE chat_broadcasts (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender      TEXT NOT NULL,
    text        TEXT NOT NULL,
    sent_at     BIGINT NOT NULL
);
