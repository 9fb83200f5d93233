-- PostgreSQL's dialect of ../0003_canvas.sql: one 50x50 board, a byte per pixel, all white
-- (colour 0) when new.
CREATE TABLE canvas (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    pixels  BYTEA NOT NULL CHECK (length(pixels) = 2500)
);

INSERT INTO canvas (id, pixels) VALUES (1, decode(repeat('00', 2500), 'hex'));
