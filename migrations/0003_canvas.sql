-- The shared canvas of seed 002: one 50x50 board, a byte per pixel (the index of its colour in
-- white, black, red, green, yellow, blue, cyan, magenta), row by row: pixel (x, y) is byte
-- y * 50 + x. A new board is all white.
CREATE TABLE canvas (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    pixels  BLOB NOT NULL CHECK (length(pixels) = 2500)
);

INSERT INTO canvas (id, pixels) VALUES (1, zeroblob(2500));
