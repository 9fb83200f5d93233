-- Accounts (docs/accounts.md): a name's password and a room's key, only ever as argon2id
-- hashes in the PHC string form ('$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>'); NULL: none,
-- and anybody may use the name or enter the room, as the original protocols assume.
ALTER TABLE users ADD COLUMN password_hash TEXT;

-- Who created a room (the first to enter it): the one member who may set its key. NULL for
-- rooms made before accounts existed, and for Sala1.
ALTER TABLE rooms ADD COLUMN creator TEXT;
ALTER TABLE rooms ADD COLUMN key_hash TEXT;
