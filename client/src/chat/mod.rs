//! The chat of seed 001 (myChatProtocol) as our clients speak it: the connection ([`Link`]:
//! login, framing, a reader thread), and the two clients over it, the console's
//! ([`console`]) and the window ([`window`]).
//!
//! Framing: right after `CONNECT_ACK|OK` it offers line framing (`HELLO|lines`) and waits a
//! moment for the answer. Our server answers and from then on both sides end messages with
//! `\n`. An original server ignores the offer: then the client writes one message per write
//! with a pause between two, as the original client does, and splits what the server glued
//! together (`CONNECT_ACK|OKUSER_LIST|a`) before each known command name.
//!
//! A password (docs/accounts.md) is sent with the login as `CONNECT|name|password`.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use crate::link::{self, Stream};

pub mod console;
pub mod window;

pub use console::run;

/// Longest message of the protocol.
pub const MAX_MESSAGE: usize = 1024;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for the answer to `HELLO|lines`.
const HELLO_WAIT: Duration = Duration::from_millis(500);

/// Pause between two writes without line framing, so the server reads them apart.
const UNFRAMED_PAUSE: Duration = Duration::from_millis(50);

/// Every command a server sends, for splitting glued messages.
const COMMANDS: [&str; 7] = [
    "CONNECT_ACK|",
    "PASSWORD_ACK|",
    "USER_LIST|",
    "MESSAGE|",
    "BROADCAST|",
    "ERROR|",
    "HELLO|",
];

const HELLO_ANSWER: &[u8] = b"HELLO|lines\n";

/// Splits what one read returned without framing into messages, before each command name.
pub fn split_glued(text: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = COMMANDS
        .iter()
        .flat_map(|name| text.match_indices(name).map(|(at, _)| at))
        .filter(|&at| at > 0)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    // A name inside another one's text (`BROADCAST|ana|MESSAGE|...`) cannot be told apart
    // from a glued message; the original client has the same ambiguity.
    let mut messages = Vec::new();
    let mut from = 0;
    for at in starts {
        if at > from {
            messages.push(&text[from..at]);
            from = at;
        }
    }
    messages.push(&text[from..]);
    messages.into_iter().filter(|m| !m.is_empty()).collect()
}

/// The line the original client prints for a server message, if any.
pub fn shown(message: &str) -> Option<String> {
    let message = message.trim_end_matches(['\n', '\r']);
    let mut parts = message.splitn(3, '|');
    let command = parts.next()?;
    let first = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("");
    Some(match command {
        "CONNECT_ACK" if first == "OK" => "Conectado exitosamente".to_string(),
        "CONNECT_ACK" => "Conexión fallida".to_string(),
        "PASSWORD_ACK" if first == "OK" => "Contraseña guardada".to_string(),
        "PASSWORD_ACK" => format!("Contraseña no guardada: {rest}"),
        "USER_LIST" => format!(
            "Usuarios conectados: {}",
            first.split(',').collect::<Vec<_>>().join(", ")
        ),
        "MESSAGE" => format!("Mensaje de {first}: {rest}"),
        "BROADCAST" => format!("Broadcast de {first}: {rest}"),
        "ERROR" => format!("Error {first}: {rest}"),
        _ => return None,
    })
}

/// What the reader thread tells the thread that logs in.
enum Heard {
    /// The answer to a CONNECT: true for OK.
    ConnectAck(bool),
    /// The server answered `HELLO|lines`: line framing from here on.
    Lines,
    Closed,
}

/// What the reader thread hands the client: each message the server sent, then the end.
pub enum FromServer<'a> {
    Message(&'a str),
    Closed,
}

/// Reads the server, hands each message to `sink`, and reports what the login waits for.
/// `lines`: the connection speaks line framing from its first byte (over TLS).
fn read_server(
    mut stream: Stream,
    heard: mpsc::Sender<Heard>,
    mut lines: bool,
    sink: impl Fn(FromServer),
) {
    let handle = |message: &str| {
        // Handed on before the login hears of it: the console prints it first.
        sink(FromServer::Message(message));
        if let Some(ack) = message.strip_prefix("CONNECT_ACK|") {
            let ok = ack.trim_end() == "OK";
            let _ = heard.send(Heard::ConnectAck(ok));
        }
    };
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => {
                sink(FromServer::Closed);
                let _ = heard.send(Heard::Closed);
                return;
            }
            Ok(n) => n,
        };
        let mut data = &chunk[..n];
        if !lines {
            // Everything before the HELLO answer is unframed; a message is what one read
            // returned, split where the original server glued several.
            let hello = data
                .windows(HELLO_ANSWER.len())
                .position(|w| w == HELLO_ANSWER);
            let unframed = &data[..hello.unwrap_or(data.len())];
            for message in split_glued(&String::from_utf8_lossy(unframed)) {
                handle(message);
            }
            match hello {
                Some(at) => {
                    lines = true;
                    let _ = heard.send(Heard::Lines);
                    data = &data[at + HELLO_ANSWER.len()..];
                }
                None => continue,
            }
        }
        pending.extend_from_slice(data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            handle(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']));
        }
    }
}

/// A connection to a chat server: the writing side, in whichever framing was agreed, and
/// what its reader thread reports.
pub struct Link {
    stream: Stream,
    lines: bool,
    /// Over TLS the framing is lines from the first byte (docs/chat.md): nothing to offer.
    tls: bool,
    heard: mpsc::Receiver<Heard>,
}

/// How a login ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    Accepted,
    Refused,
    /// The server closed the connection.
    Closed,
    /// No answer yet, and the caller stopped waiting.
    GaveUp,
}

impl Link {
    /// Connects to `server` and starts the reader thread, which hands `sink` every message.
    pub fn open(
        server: &crate::protocol::ServerLink,
        sink: impl Fn(FromServer) + Send + 'static,
    ) -> io::Result<Link> {
        let stream = link::connect(&server.host, server.port, &server.tls, CONNECT_TIMEOUT)?;
        let tls = server.tls.is_some();
        let (heard_tx, heard) = mpsc::channel();
        let reader = stream.try_clone()?;
        std::thread::spawn(move || read_server(reader, heard_tx, tls, sink));
        Ok(Link {
            stream,
            lines: tls,
            tls,
            heard,
        })
    }

    pub fn send(&mut self, message: &str) -> io::Result<()> {
        let mut bytes = message.as_bytes().to_vec();
        bytes.truncate(MAX_MESSAGE);
        if self.lines {
            bytes.push(b'\n');
            self.stream.write_all(&bytes)
        } else {
            self.stream.write_all(&bytes)?;
            std::thread::sleep(UNFRAMED_PAUSE);
            Ok(())
        }
    }

    /// Sends a login as `name` (with `password`, if any) and waits for its answer, asking
    /// `keep_waiting` each time `patience` passes without one (false: give up).
    pub fn login(
        &mut self,
        name: &str,
        password: Option<&str>,
        patience: Duration,
        mut keep_waiting: impl FnMut() -> bool,
    ) -> io::Result<Login> {
        match password {
            Some(password) => self.send(&format!("CONNECT|{name}|{password}"))?,
            None => self.send(&format!("CONNECT|{name}"))?,
        }
        loop {
            return Ok(match self.heard.recv_timeout(patience) {
                Ok(Heard::ConnectAck(true)) => Login::Accepted,
                Ok(Heard::ConnectAck(false)) => Login::Refused,
                Ok(Heard::Lines) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) if keep_waiting() => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => Login::GaveUp,
                Ok(Heard::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => Login::Closed,
            });
        }
    }

    /// After a login: offers line framing and waits a moment for the answer (an original
    /// server ignores it); false if the server went away. Over TLS it is already so.
    pub fn agree_framing(&mut self) -> io::Result<bool> {
        if self.tls {
            return Ok(true);
        }
        self.send("HELLO|lines")?;
        let deadline = std::time::Instant::now() + HELLO_WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.heard.recv_timeout(left) {
                Ok(Heard::Lines) => {
                    self.lines = true;
                    return Ok(true);
                }
                Ok(Heard::Closed) => return Ok(false),
                Ok(Heard::ConnectAck(_)) => {}
                Err(_) => return Ok(true),
            }
        }
    }

    /// True once the reader saw the connection end.
    pub fn closed(&self) -> bool {
        matches!(self.heard.try_recv(), Ok(Heard::Closed))
    }

    /// Says goodbye (`DISCONNECT`) and ends the connection once that has reached the server.
    pub fn disconnect(mut self) {
        let _ = self.send("DISCONNECT");
        self.close();
    }

    /// Ends the connection (a login that was refused has no session to leave).
    pub fn close(self) {
        self.stream.close();
    }
}

/// A message of the server, as a client shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `USER_LIST|a,b`: who is online.
    Users(Vec<String>),
    /// `BROADCAST|from|text`, to everybody (the sender's own included).
    Broadcast { from: String, text: String },
    /// `MESSAGE|from|text`, to us alone.
    Private { from: String, text: String },
    /// Why a login was refused, when the server says (ours does, to a login with a password).
    Refused(String),
    /// Any other line the original client prints (errors, the password's answers).
    Said(String),
}

impl Incoming {
    pub fn parse(message: &str) -> Option<Incoming> {
        let message = message.trim_end_matches(['\n', '\r']);
        let (command, rest) = message.split_once('|').unwrap_or((message, ""));
        Some(match command {
            "USER_LIST" => Incoming::Users(
                rest.split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            "BROADCAST" | "MESSAGE" => {
                let (from, text) = rest.split_once('|').unwrap_or((rest, ""));
                let (from, text) = (from.to_string(), text.to_string());
                if command == "BROADCAST" {
                    Incoming::Broadcast { from, text }
                } else {
                    Incoming::Private { from, text }
                }
            }
            // Our server's reason, to a client that sent a password.
            "CONNECT_ACK" => match rest.strip_prefix("FAIL|") {
                Some(reason) => Incoming::Refused(reason.to_string()),
                None => return None,
            },
            "HELLO" => return None,
            _ => Incoming::Said(shown(message)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glued_replies_of_the_original_server_are_split() {
        assert_eq!(
            split_glued("CONNECT_ACK|OKUSER_LIST|ana,bea"),
            vec!["CONNECT_ACK|OK", "USER_LIST|ana,bea"]
        );
        assert_eq!(split_glued("MESSAGE|bea|hola"), vec!["MESSAGE|bea|hola"]);
    }

    #[test]
    fn lines_are_the_original_clients() {
        assert_eq!(shown("USER_LIST|a,b").unwrap(), "Usuarios conectados: a, b");
        assert_eq!(
            shown("MESSAGE|bea|hola|y").unwrap(),
            "Mensaje de bea: hola|y"
        );
        assert_eq!(
            shown("ERROR|404|Usuario no encontrado").unwrap(),
            "Error 404: Usuario no encontrado"
        );
        assert_eq!(shown("CONNECT_ACK|FAIL").unwrap(), "Conexión fallida");
    }
}
