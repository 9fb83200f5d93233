//! The session bus of nodes sharing a PostgreSQL database: what one node's chat, rooms and
//! presence changes mean for the sessions of the others.
//!
//! A node publishes its [`Event`]s with `NOTIFY`, after the storage work they report has
//! committed, from one storage worker in the order the reactor made them (`Chore::Publish`),
//! so every node hears every node's events in that node's order; all hear them in one order
//! (commit order). Canvas paints are written in the same transaction as their event, under
//! the board's row lock, so that order is also the stored one. Each node has a thread that
//! `LISTEN`s on a connection of its own and hands the events to the reactor through a
//! bounded channel and the waker; when the channel is full the thread waits, and PostgreSQL
//! keeps the rest in its notification queue.
//!
//! Private messages never travel here (NOTIFY takes a cluster-wide lock at commit): a SEND's
//! node pushes to a listener itself, and for a recipient in a session on another node it
//! publishes only [`Event::Pending`], which makes that node look at the mailbox.
//!
//! A node is named by the backend process id of its reactor's storage connection, carried in
//! each payload (a worker's connection sends it); a node whose id is no longer among the
//! database's backends has died, and the others forget its sessions (see
//! `Core::nodes_looked_at`).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use postgres::fallible_iterator::FallibleIterator;
use serde::{Deserialize, Serialize};

/// The channel every node listens on.
pub const CHANNEL: &str = "messenger_sessions";

/// Events waiting for the reactor; past it the listening thread waits.
const QUEUE: usize = 4096;

/// How long the listening thread waits before connecting again after losing its connection:
/// the first wait, doubled after each failed try up to the most.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MOST: Duration = Duration::from_secs(2);

/// A node: the backend process id of its reactor's storage connection.
pub type NodeId = i32;

/// PostgreSQL's limit on a NOTIFY payload, in bytes.
pub const MAX_PAYLOAD: usize = 8000;

/// What a node tells the others. Sessions are named by their user's alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A node started: the others announce their sessions and room members again, so that it
    /// learns the state it missed.
    Hello,
    /// `alias` came online: through a session of the publishing node (`session`), or through
    /// the messenger (whose presence is in the users table and outlives nodes).
    Online {
        alias: String,
        #[serde(default)]
        session: bool,
    },
    Offline {
        alias: String,
    },
    /// A message waits for `alias`, who is in a session on another node: that node delivers.
    Pending {
        alias: String,
    },
    Joined {
        room: String,
        user: String,
    },
    /// `user` is in `room` (said in answer to [`Event::Hello`]: no one is told).
    Member {
        room: String,
        user: String,
    },
    Left {
        room: String,
        user: String,
    },
    /// A member of `room` ended their session.
    LeftChat {
        room: String,
        user: String,
    },
    RoomMessage {
        room: String,
        from: String,
        text: String,
    },
    Broadcast {
        from: String,
        text: String,
    },
    /// Canvas paints, `(x, y, colour)` in order. Unlike the others, a node applies its own
    /// too, in the bus's order: that order is the database's, so every node's board ends as
    /// the stored one when two nodes paint one pixel at once.
    Paints {
        paints: Vec<(u8, u8, u8)>,
    },
}

impl Event {
    /// True for the events a node applies even when it published them itself.
    pub fn applies_to_its_publisher(&self) -> bool {
        matches!(self, Event::Paints { .. })
    }
}

/// An event as it travels: JSON with the publishing node in `"node"` and the kind in
/// `"event"`.
#[derive(Serialize, Deserialize)]
struct Envelope<E> {
    node: NodeId,
    #[serde(flatten)]
    event: E,
}

impl Event {
    /// The NOTIFY payload of `node`'s event (PostgreSQL allows fewer than [`MAX_PAYLOAD`]
    /// bytes, and the front-ends' line limits keep every event far below it).
    pub fn encode(&self, node: NodeId) -> String {
        serde_json::to_string(&Envelope { node, event: self }).expect("an event always serializes")
    }

    /// The publishing node and its event.
    pub fn decode(payload: &str) -> Result<(NodeId, Event), String> {
        let envelope: Envelope<Event> =
            serde_json::from_str(payload).map_err(|e| format!("bad event ({e}): {payload}"))?;
        Ok((envelope.node, envelope.event))
    }
}

/// The reactor's end of the bus.
pub struct Bus {
    pub events: Receiver<(NodeId, Event)>,
}

impl Bus {
    /// Listens on `url`'s database for every node's events (this one's too: the core skips
    /// what it published itself but canvas paints); `wake` rings the reactor after each.
    pub fn start(url: &str, wake: Arc<dyn Fn() + Send + Sync>) -> Result<Bus, String> {
        let client = listen(url).map_err(|e| e.to_string())?;
        let (sender, events) = crossbeam_channel::bounded(QUEUE);
        let url = url.to_string();
        std::thread::Builder::new()
            .name("bus".into())
            .spawn(move || run(client, &url, &sender, &*wake))
            .map_err(|e| format!("cannot start the bus thread: {e}"))?;
        Ok(Bus { events })
    }
}

fn listen(url: &str) -> Result<postgres::Client, crate::storage::Error> {
    let mut client = crate::storage::open_postgres(url)?;
    client.batch_execute(&format!(
        "SET application_name = 'messenger bus'; LISTEN {CHANNEL}"
    ))?;
    Ok(client)
}

/// Hands the notifications of one connection to the reactor: None once the reactor is gone,
/// else why the connection was lost.
fn forward(
    client: &mut postgres::Client,
    sender: &Sender<(NodeId, Event)>,
    wake: &(dyn Fn() + Send + Sync),
) -> Option<String> {
    let mut notifications = client.notifications();
    let mut iter = notifications.blocking_iter();
    loop {
        match iter.next() {
            Ok(Some(notification)) => match Event::decode(notification.payload()) {
                Ok(event) => {
                    sender.send(event).ok()?;
                    wake();
                }
                Err(why) => log::warn!("session bus: ignored an event: {why}"),
            },
            Ok(None) => return Some("the connection closed".into()),
            Err(e) => return Some(crate::storage::Error::from(e).to_string()),
        }
    }
}

/// Hands each notification to the reactor until the reactor is gone. A lost connection is
/// logged and made again: what was published meanwhile is missed (the sessions of other
/// nodes may show stale presence until their next change), which the log says.
fn run(
    mut client: postgres::Client,
    url: &str,
    sender: &Sender<(NodeId, Event)>,
    wake: &(dyn Fn() + Send + Sync),
) {
    loop {
        let lost = forward(&mut client, sender, wake);
        let Some(lost) = lost else {
            return;
        };
        log::error!(
            "session bus: lost the connection ({lost}); other nodes' session events are \
             missed until it is back"
        );
        let mut wait = RECONNECT_FIRST;
        client = loop {
            std::thread::sleep(wait);
            match listen(url) {
                Ok(client) => break client,
                Err(e) => log::error!("session bus: cannot connect again: {e}"),
            }
            wait = (wait * 2).min(RECONNECT_MOST);
        };
        log::warn!("session bus: connected again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_survives_its_payload() {
        let events = [
            Event::Hello,
            Event::Online {
                alias: "ana".into(),
                session: true,
            },
            Event::Offline {
                alias: "ana".into(),
            },
            Event::Pending {
                alias: "ana".into(),
            },
            Event::Joined {
                room: "Sala \"1\"".into(),
                user: "ana".into(),
            },
            Event::Joined {
                room: "s".into(),
                user: "ana".into(),
            },
            Event::Left {
                room: "s".into(),
                user: "ana".into(),
            },
            Event::Member {
                room: "s".into(),
                user: "ana".into(),
            },
            Event::LeftChat {
                room: "s".into(),
                user: "ana".into(),
            },
            Event::RoomMessage {
                room: "s".into(),
                from: "ana".into(),
                text: "¿qué tal?\\ {}".into(),
            },
            Event::Broadcast {
                from: "ana".into(),
                text: "hola|todos".into(),
            },
            Event::Paints {
                paints: vec![(0, 49, 7), (3, 2, 0)],
            },
        ];
        for event in events {
            assert_eq!(Event::decode(&event.encode(-7)), Ok((-7, event)));
        }
        let joined = "{\"node\": 3, \"event\": \"joined\", \"room\": \"s\", \"user\": \"a\"}";
        assert!(Event::decode(joined).is_ok());
        let without_node = "{\"event\": \"joined\", \"room\": \"s\", \"user\": \"a\"}";
        assert!(Event::decode(without_node).is_err());
        assert!(Event::decode("{\"node\": 3, \"event\": \"joined\", \"room\": \"s\"}").is_err());
        assert!(Event::decode("nonsense").is_err());
    }
}
