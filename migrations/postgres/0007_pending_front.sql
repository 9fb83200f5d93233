-- PostgreSQL's version of ../0007_pending_front.sql. Nodes that share a database take no
-- message around the mailbox (another node may be adding to the recipient's), so nothing is
-- put back in front here; the table keeps the two schemas' steps the same.
CREATE TABLE pending_front (
    seq BIGINT NOT NULL CHECK (seq <= 0)
);

INSERT INTO pending_front (seq) VALUES (0);
