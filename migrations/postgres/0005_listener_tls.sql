-- PostgreSQL's dialect of ../0005_listener_tls.sql (the same statement).
-- A messenger user whose client listens over TLS (docs/tls.md): the SHA-256 of its
-- listener's certificate, in hex, announced with CONNECTTLS over a TLS connection. Pushes to
-- that listener go over TLS and accept only that certificate. NULL: a plain listener.
ALTER TABLE users ADD COLUMN listener_pin TEXT;
