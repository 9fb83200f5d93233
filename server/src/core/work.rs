//! The storage steps of the messenger's requests, apart from the core's memory: what runs in the
//! reactor's turn on SQLite and on a storage worker beside it on PostgreSQL (`beside.rs`).
//! [`perform`] does the steps of one [`Work`] and says what it did ([`Done`]); the core then
//! applies what that means for presence and deliveries (`Core::finished`), on the reactor.

use std::net::IpAddr;

use super::{ConnectOutcome, DisconnectOutcome};
use crate::storage::{self, Storage};

/// A request's storage work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Send {
        sender: String,
        recipient: String,
        text: Vec<u8>,
        attachment: Option<Vec<u8>>,
        /// `--max-pending-per-user`.
        max_pending: Option<usize>,
    },
    Register {
        alias: String,
        full_name: Option<String>,
        birth_date: Option<String>,
    },
    Unregister {
        alias: String,
    },
    Connect {
        alias: String,
        ip: IpAddr,
        port: u16,
    },
    /// Only from the address the user connected from (seed 000 section 8.4).
    Disconnect {
        alias: String,
        from: IpAddr,
    },
    /// USERS and CONNECTEDUSERS: who is connected, and the requester, named or else found by
    /// the address it asks `from`.
    ListUsers {
        requester: Option<String>,
        from: IpAddr,
    },
}

/// A SEND as storage sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Queued under the sender's next id; `connected`: the recipient is connected through the
    /// messenger (on any node).
    Accepted {
        id: u32,
        connected: bool,
    },
    NoSuchUser,
    MailboxFull,
}

/// What the storage steps of a [`Work`] did (committed with the turn, or by the worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Sent {
        recipient: String,
        stored: Stored,
    },
    /// False: the alias was taken.
    Registered(bool),
    /// False: there was no such user.
    Unregistered {
        alias: String,
        removed: bool,
    },
    Connected {
        alias: String,
        outcome: ConnectOutcome,
    },
    Disconnected {
        alias: String,
        outcome: DisconnectOutcome,
    },
    /// The users connected through the messenger as `(alias, ip, port)` in alias order, and
    /// the named requester as storage knows them (None: no such user).
    Listed {
        users: Vec<(String, String, u16)>,
        requester: Option<(String, Option<storage::User>)>,
    },
}

/// Runs the storage steps of `work` in `store`'s current transaction.
pub fn perform(store: &dyn Storage, work: &Work) -> storage::Result<Done> {
    Ok(match work {
        Work::Send {
            sender,
            recipient,
            text,
            attachment,
            max_pending,
        } => Done::Sent {
            recipient: recipient.clone(),
            stored: store_message(
                store,
                sender,
                recipient,
                text,
                attachment.as_deref(),
                *max_pending,
            )?,
        },
        Work::Register {
            alias,
            full_name,
            birth_date,
        } => Done::Registered(store.insert_user(
            alias,
            full_name.as_deref(),
            birth_date.as_deref(),
        )?),
        Work::Unregister { alias } => Done::Unregistered {
            alias: alias.clone(),
            removed: store.delete_user(alias)?,
        },
        Work::Connect { alias, ip, port } => Done::Connected {
            alias: alias.clone(),
            outcome: match store.user(alias)? {
                None => ConnectOutcome::NoSuchUser,
                Some(user) if user.connected => ConnectOutcome::AlreadyConnected,
                Some(_) => {
                    store.set_connected(alias, &ip.to_canonical().to_string(), *port)?;
                    ConnectOutcome::Connected
                }
            },
        },
        Work::Disconnect { alias, from } => Done::Disconnected {
            alias: alias.clone(),
            outcome: match store.user(alias)? {
                None => DisconnectOutcome::NoSuchUser,
                Some(user) if !user.connected => DisconnectOutcome::NotConnected,
                Some(user)
                    if user
                        .listener()
                        .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
                        .is_some_and(|ip| ip.to_canonical() != from.to_canonical()) =>
                {
                    DisconnectOutcome::NotFromThere
                }
                Some(_) => {
                    store.set_disconnected(alias)?;
                    DisconnectOutcome::Disconnected
                }
            },
        },
        Work::ListUsers { requester, .. } => Done::Listed {
            users: store.connected_users()?,
            requester: match requester {
                Some(alias) => Some((alias.clone(), store.user(alias)?)),
                None => None,
            },
        },
    })
}

/// A SEND's storage steps: both users exist, the recipient's mailbox has room, then the
/// message is accepted.
pub fn store_message(
    store: &dyn Storage,
    sender: &str,
    recipient: &str,
    text: &[u8],
    attachment: Option<&[u8]>,
    max_pending: Option<usize>,
) -> storage::Result<Stored> {
    let (Some(_), Some(to)) = (store.user(sender)?, store.user(recipient)?) else {
        return Ok(Stored::NoSuchUser);
    };
    if let Some(max) = max_pending {
        if store.pending_count(recipient, max)? >= max {
            return Ok(Stored::MailboxFull);
        }
    }
    let id = store.accept_message(sender, recipient, text, attachment)?;
    Ok(Stored::Accepted {
        id,
        connected: to.connected,
    })
}
