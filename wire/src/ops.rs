//! Client-to-server operations and how many fields follow each op name.

/// The operations a client opens a connection for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Register,
    Unregister,
    Connect,
    Disconnect,
    Send,
    SendAttach,
    /// Seed 000's name; answers plain aliases.
    ConnectedUsers,
    /// The later edition's name; answers `alias::IP::port` entries.
    Users,
    /// Ours, not the seeds' (docs/accounts.md): `SETPASSWORD alias new` sets the user's
    /// password (an empty one removes it).
    SetPassword,
    /// Ours (docs/tls.md): `CONNECTTLS alias port pin`, over TLS only: as CONNECT, for a
    /// listener that speaks TLS with the certificate whose SHA-256 is `pin` (hex).
    ConnectTls,
}

/// Ours, not the seeds' (docs/accounts.md): `AUTH alias password` before any operation
/// proves that the caller is `alias`. No original client sends it.
pub const AUTH: &str = "AUTH";

/// How many fields follow the op name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldCount {
    Exactly(usize),
    /// REGISTER: `name` (later edition) or `full name`, `alias`, `DD/MM/YYYY` (2022-23).
    OneOrThree,
    /// CONNECTEDUSERS/USERS: the requester's alias, which seed 000 forgets to mention.
    ZeroOrOne,
}

impl FieldCount {
    /// The most fields this op can carry after its name.
    pub fn max(self) -> usize {
        match self {
            FieldCount::Exactly(n) => n,
            FieldCount::OneOrThree => 3,
            FieldCount::ZeroOrOne => 1,
        }
    }
}

impl Op {
    pub const ALL: [Op; 10] = [
        Op::Register,
        Op::Unregister,
        Op::Connect,
        Op::Disconnect,
        Op::Send,
        Op::SendAttach,
        Op::ConnectedUsers,
        Op::Users,
        Op::SetPassword,
        Op::ConnectTls,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Register => "REGISTER",
            Op::Unregister => "UNREGISTER",
            Op::Connect => "CONNECT",
            Op::Disconnect => "DISCONNECT",
            Op::Send => "SEND",
            Op::SendAttach => "SENDATTACH",
            Op::ConnectedUsers => "CONNECTEDUSERS",
            Op::Users => "USERS",
            Op::SetPassword => "SETPASSWORD",
            Op::ConnectTls => "CONNECTTLS",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name().as_bytes() == name)
    }

    pub fn fields(self) -> FieldCount {
        match self {
            Op::Register => FieldCount::OneOrThree,
            Op::Unregister | Op::Disconnect => FieldCount::Exactly(1),
            Op::Connect | Op::SetPassword => FieldCount::Exactly(2),
            Op::Send | Op::ConnectTls => FieldCount::Exactly(3),
            Op::SendAttach => FieldCount::Exactly(4),
            Op::ConnectedUsers | Op::Users => FieldCount::ZeroOrOne,
        }
    }

    /// The code this op answers for "anything else went wrong" (docs/messenger.md's table).
    pub fn error_code(self) -> u8 {
        match self {
            Op::Connect | Op::ConnectTls | Op::Disconnect => crate::code::THREE,
            _ => crate::code::TWO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_rejected() {
        for op in Op::ALL {
            assert_eq!(Op::from_name(op.name().as_bytes()), Some(op));
        }
        assert_eq!(Op::from_name(b"register"), None);
        assert_eq!(Op::from_name(b"SEND MESSAGE"), None);
    }
}
