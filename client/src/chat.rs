//! The console client of seed 001 (myChatProtocol): the user name from stdin, then `@user text`
//! sends a private message, `/logout` leaves, any other line is broadcast. It prints the
//! original client's lines.
//!
//! Framing: right after `CONNECT_ACK|OK` it offers line framing (`HELLO|lines`) and waits a
//! moment for the answer. Our server answers and from then on both sides end messages with
//! `\n`. An original server ignores the offer: then the client writes one message per write
//! with a pause between two, as the original client does, and splits what the server glued
//! together (`CONNECT_ACK|OKUSER_LIST|a`) before each known command name.
//!
//! A password (docs/accounts.md) comes from `MESSENGER_PASSWORD` and is sent with the login as
//! `CONNECT|name|password`; without one, after a failed login the client asks for one on the
//! terminal (the original server's failure cannot say why). `/password` sets or removes the
//! password of the name logged in.

use std::io::{self, BufRead, Read, Write};

use crate::link::{self, Stream};
use std::sync::mpsc;
use std::time::Duration;

/// Longest message of the protocol.
const MAX_MESSAGE: usize = 1024;

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
        "CONNECT_ACK" => {
            // Our server's reason, to a client that sent a password: for stderr.
            if !rest.is_empty() {
                eprintln!("chat: {rest}");
            }
            "Conexión fallida".to_string()
        }
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

fn print(line: &str) {
    let mut out = io::stdout().lock();
    // A closed stdout only means nobody reads us any more.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// What the reader thread tells the main thread.
enum Heard {
    /// The answer to a CONNECT: true for OK.
    ConnectAck(bool),
    /// The server answered `HELLO|lines`: line framing from here on.
    Lines,
    Closed,
}

/// Reads the server, prints what the original client prints, and reports what the main thread
/// waits for.
/// `lines`: the connection speaks line framing from its first byte (over TLS).
fn read_server(mut stream: Stream, heard: mpsc::Sender<Heard>, mut lines: bool) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => {
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
                handle(message, &heard);
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
            handle(&String::from_utf8_lossy(&line), &heard);
        }
    }
}

fn handle(message: &str, heard: &mpsc::Sender<Heard>) {
    // Printed before the main thread hears of it: at the end of input it exits at once.
    if let Some(line) = shown(message) {
        print(&line);
    }
    if let Some(ack) = message.strip_prefix("CONNECT_ACK|") {
        let _ = heard.send(Heard::ConnectAck(ack.trim_end() == "OK"));
    }
}

/// The connection's writing side, in whichever framing was agreed.
struct Writer {
    stream: Stream,
    lines: bool,
}

impl Writer {
    fn send(&mut self, message: &str) -> io::Result<()> {
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
}

/// Runs the chat client against `server` until `/logout` or the end of input.
pub fn run(server: &crate::protocol::ServerLink) -> io::Result<()> {
    let stream = link::connect(&server.host, server.port, &server.tls, CONNECT_TIMEOUT)?;
    // Over TLS a read is no message: lines from the first byte (docs/chat.md).
    let tls = server.tls.is_some();
    let (heard_tx, heard) = mpsc::channel();
    let reader = stream.try_clone()?;
    std::thread::spawn(move || read_server(reader, heard_tx, tls));
    let mut writer = Writer { stream, lines: tls };
    let stdin = io::stdin();
    let mut input = String::new();
    // The user name, until the server accepts one.
    let mut password = server.password.clone();
    let mut asked = false;
    loop {
        input.clear();
        if stdin.lock().read_line(&mut input)? == 0 {
            return Ok(());
        }
        let name = input.trim().to_string();
        if name.is_empty() {
            continue;
        }
        let mut accepted = login(&mut writer, &heard, &name, password.as_deref())?;
        // Refused without a password: perhaps the name has one (the terminal says).
        if accepted == Some(false) && password.is_none() && !asked {
            asked = true;
            password = crate::secret::ask(&format!("Contraseña de {name} (Intro si no tiene): "));
            if password.is_some() {
                accepted = login(&mut writer, &heard, &name, password.as_deref())?;
            }
        }
        match accepted {
            Some(true) => break,
            Some(false) => continue,
            None => {
                print("Desconectado del servidor");
                return Ok(());
            }
        }
    }
    // Without TLS, line framing is offered (docs/chat.md); over TLS it is already so.
    if !tls && !negotiate_lines(&mut writer, &heard)? {
        print("Desconectado del servidor");
        return Ok(());
    }
    loop {
        input.clear();
        let done = stdin.lock().read_line(&mut input)? == 0;
        let line = input.trim_end_matches(['\n', '\r']);
        if done || line == "/logout" {
            let _ = writer.send("DISCONNECT");
            writer.stream.close();
            print("Desconectado del servidor");
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        if line == "/password" {
            let new = crate::secret::ask("Nueva contraseña (Intro para quitarla): ");
            writer.send(&format!("PASSWORD|{}", new.unwrap_or_default()))?;
            continue;
        }
        let message = match line.strip_prefix('@').and_then(|rest| rest.split_once(' ')) {
            Some((to, text)) => format!("MESSAGE|{to}|{text}"),
            None => format!("BROADCAST|{line}"),
        };
        if writer.send(&message).is_err() {
            print("Desconectado del servidor");
            return Ok(());
        }
        if let Ok(Heard::Closed) = heard.try_recv() {
            print("Desconectado del servidor");
            return Ok(());
        }
    }
}

/// Offers line framing and waits a moment for the answer (an original server ignores it);
/// false if the server went away.
fn negotiate_lines(writer: &mut Writer, heard: &mpsc::Receiver<Heard>) -> io::Result<bool> {
    writer.send("HELLO|lines")?;
    let deadline = std::time::Instant::now() + HELLO_WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match heard.recv_timeout(left) {
            Ok(Heard::Lines) => {
                writer.lines = true;
                return Ok(true);
            }
            Ok(Heard::Closed) => return Ok(false),
            Ok(Heard::ConnectAck(_)) => {}
            Err(_) => return Ok(true),
        }
    }
}

/// Sends a login as `name` (with `password`, if any): Some(accepted), or None if the server
/// went away.
fn login(
    writer: &mut Writer,
    heard: &mpsc::Receiver<Heard>,
    name: &str,
    password: Option<&str>,
) -> io::Result<Option<bool>> {
    match password {
        Some(password) => writer.send(&format!("CONNECT|{name}|{password}"))?,
        None => writer.send(&format!("CONNECT|{name}"))?,
    }
    loop {
        return Ok(match heard.recv() {
            Ok(Heard::ConnectAck(ok)) => Some(ok),
            Ok(Heard::Lines) => continue,
            Ok(Heard::Closed) | Err(_) => None,
        });
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
