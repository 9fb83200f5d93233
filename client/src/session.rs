//! What both front-ends do: parse a command, run it against the server, and say what happened
//! in the lines of seeds 000 and 003. The console prints the lines; the window puts them in its
//! panes. Neither front-end talks to the network itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wire::{parse_user_entry, Push, MAX_FIELD_LEN};

use crate::formatting;
use crate::listener::{fetch_file, Listener, SharedFiles};
use crate::protocol::ServerLink;

/// One thing the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Register {
        alias: String,
    },
    /// The 2022-23 form, from the desktop client's dialog.
    RegisterProfile {
        full_name: String,
        alias: String,
        birth_date: String,
    },
    Unregister {
        alias: String,
    },
    Connect {
        alias: String,
    },
    Disconnect {
        alias: String,
    },
    /// `USERS` (later edition) or `CONNECTEDUSERS` (2022-23).
    Users {
        op: &'static str,
    },
    Send {
        to: String,
        text: String,
    },
    SendAttach {
        to: String,
        text: String,
        file: String,
    },
    GetFile {
        user: String,
        remote: String,
        local: String,
    },
    Quit,
}

impl Command {
    /// How the command is echoed after `c> `.
    pub fn echo(&self) -> String {
        match self {
            Command::Register { alias } | Command::RegisterProfile { alias, .. } => {
                format!("REGISTER {alias}")
            }
            Command::Unregister { alias } => format!("UNREGISTER {alias}"),
            Command::Connect { alias } => format!("CONNECT {alias}"),
            Command::Disconnect { alias } => format!("DISCONNECT {alias}"),
            Command::Users { op } => op.to_string(),
            Command::Send { to, text } => format!("SEND {to} {text}"),
            Command::SendAttach { to, text, file } => format!("SENDATTACH {to} {text} {file}"),
            Command::GetFile {
                user,
                remote,
                local,
            } => format!("GETFILE {user} {remote} {local}"),
            Command::Quit => "QUIT".into(),
        }
    }
}

/// Parses a console line. `Ok(None)` for a blank line; `Err` carries the usage line to print.
pub fn parse_command(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    let Some(word) = line.split_whitespace().next() else {
        return Ok(None);
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    // The text of a message is everything after its recipient, as typed.
    let rest_after = |n: usize| -> &str {
        let mut rest = line;
        for _ in 0..n {
            rest = rest.trim_start();
            rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
        }
        rest.trim()
    };
    let usage = |form: &str| Err(format!("Syntax error. Usage: {form}"));
    let command = word.to_ascii_uppercase();
    let parsed = match (command.as_str(), words.len()) {
        ("REGISTER", 2) => Command::Register {
            alias: words[1].into(),
        },
        ("REGISTER", _) => return usage("REGISTER <userName>"),
        ("UNREGISTER", 2) => Command::Unregister {
            alias: words[1].into(),
        },
        ("UNREGISTER", _) => return usage("UNREGISTER <userName>"),
        ("CONNECT", 2) => Command::Connect {
            alias: words[1].into(),
        },
        ("CONNECT", _) => return usage("CONNECT <userName>"),
        ("DISCONNECT", 2) => Command::Disconnect {
            alias: words[1].into(),
        },
        ("DISCONNECT", _) => return usage("DISCONNECT <userName>"),
        ("USERS", 1) => Command::Users { op: "USERS" },
        ("CONNECTEDUSERS", 1) => Command::Users {
            op: "CONNECTEDUSERS",
        },
        ("USERS", _) => return usage("USERS"),
        ("CONNECTEDUSERS", _) => return usage("CONNECTEDUSERS"),
        ("SEND", n) if n >= 3 => Command::Send {
            to: words[1].into(),
            text: rest_after(2).into(),
        },
        ("SEND", _) => return usage("SEND <userName> <message>"),
        ("SENDATTACH", n) if n >= 4 => {
            let file = words[n - 1];
            let text = rest_after(2);
            let text = text[..text.len() - file.len()].trim_end();
            Command::SendAttach {
                to: words[1].into(),
                text: text.into(),
                file: file.into(),
            }
        }
        ("SENDATTACH", _) => return usage("SENDATTACH <userName> <message> <fileName>"),
        ("GETFILE", 4) => Command::GetFile {
            user: words[1].into(),
            remote: words[2].into(),
            local: words[3].into(),
        },
        ("GETFILE", _) => return usage("GETFILE <userName> <remote_FileName> <local_fileName>"),
        ("QUIT", 1) => Command::Quit,
        ("QUIT", _) => return usage("QUIT"),
        _ => return Err(format!("Error: command {word} not valid.")),
    };
    Ok(Some(parsed))
}

/// The lines a push shows: a message block, or the ack of one of ours.
pub fn incoming_lines(push: &Push) -> Vec<String> {
    match push {
        Push::Message {
            sender,
            id,
            text,
            attachment,
        } => {
            let mut lines = vec![
                format!("MESSAGE {id} FROM {sender}"),
                String::from_utf8_lossy(text).into_owned(),
                "END".into(),
            ];
            if let Some(file) = attachment {
                lines.push(format!("FILE {}", String::from_utf8_lossy(file)));
            }
            lines
        }
        Push::Ack {
            id,
            attachment: None,
        } => vec![format!("SEND MESSAGE {id} OK")],
        // The later edition's line for an attachment's ack (docs/messenger.md).
        Push::Ack {
            id,
            attachment: Some(file),
        } => vec![format!(
            "SENDATTACH MESSAGE {id} {} OK",
            String::from_utf8_lossy(file)
        )],
    }
}

/// Where a session's asynchronous output goes: pushes from the listener and diagnostics.
#[derive(Clone)]
pub struct Sinks {
    pub incoming: Arc<dyn Fn(Vec<String>) + Send + Sync>,
    pub note: Arc<dyn Fn(String) + Send + Sync>,
    /// A file transfer's progress: `(bytes so far, bytes in all)`.
    pub progress: Arc<dyn Fn(u64, u64) + Send + Sync>,
    /// Asks the user for a password (without echo) with this prompt; None if they give none.
    pub ask_password: PasswordPrompt,
}

/// Asks the user for a password with a prompt: the console's terminal, the window's dialog.
pub type PasswordPrompt = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct Session {
    server: ServerLink,
    formatter_url: String,
    sinks: Sinks,
    /// The connected user and their listener.
    connected: Option<(String, Listener)>,
    shared: SharedFiles,
}

/// The result of one command: the lines to show, and whether the client should exit.
pub struct Outcome {
    pub lines: Vec<String>,
    pub quit: bool,
}

impl Session {
    pub fn new(server: ServerLink, formatter_url: String, sinks: Sinks) -> Session {
        Session {
            server,
            formatter_url,
            sinks,
            connected: None,
            shared: SharedFiles::default(),
        }
    }

    /// The alias this client is connected as.
    pub fn user(&self) -> Option<&str> {
        self.connected.as_ref().map(|(alias, _)| alias.as_str())
    }

    fn note(&self, text: String) {
        (self.sinks.note)(text);
    }

    /// Runs a command to completion.
    pub fn execute(&mut self, command: Command) -> Outcome {
        let lines = match command {
            Command::Register { alias } => vec![self.register(|s| s.register(&alias))],
            Command::RegisterProfile {
                full_name,
                alias,
                birth_date,
            } => {
                vec![self.register(|s| s.register_profile(&full_name, &alias, &birth_date))]
            }
            Command::Unregister { alias } => vec![self.unregister(&alias)],
            Command::Connect { alias } => vec![self.connect(alias)],
            Command::Disconnect { alias } => vec![self.disconnect(&alias)],
            Command::Users { op } => vec![self.users(op)],
            Command::Send { to, text } => vec![self.send("SEND", &to, &text, None)],
            Command::SendAttach { to, text, file } => {
                vec![self.send("SENDATTACH", &to, &text, Some(&file))]
            }
            Command::GetFile {
                user,
                remote,
                local,
            } => vec![self.get_file(&user, &remote, Path::new(&local))],
            Command::Quit => {
                let lines = match self.user().map(str::to_string) {
                    Some(alias) => vec![self.disconnect(&alias)],
                    None => vec![],
                };
                return Outcome { lines, quit: true };
            }
        };
        Outcome { lines, quit: false }
    }

    /// Answers a code, or says why there was none.
    fn code(&self, op: &str, result: std::io::Result<u8>) -> Option<u8> {
        result.inspect_err(|e| self.note(format!("{op}: {e}"))).ok()
    }

    fn register(&self, call: impl FnOnce(&ServerLink) -> std::io::Result<u8>) -> String {
        match self.code("REGISTER", call(&self.server)) {
            Some(0) => "REGISTER OK",
            Some(1) => "USERNAME IN USE",
            _ => "REGISTER FAIL",
        }
        .into()
    }

    fn unregister(&mut self, alias: &str) -> String {
        match self.code("UNREGISTER", self.server.unregister(alias)) {
            Some(0) => {
                if self.user() == Some(alias) {
                    self.drop_listener();
                }
                "UNREGISTER OK"
            }
            Some(1) => "USER DOES NOT EXIST",
            _ => "UNREGISTER FAIL",
        }
        .into()
    }

    fn connect(&mut self, alias: String) -> String {
        if let Some(current) = self.user() {
            self.note(format!(
                "CONNECT: this client is already connected as {current}; DISCONNECT first"
            ));
            return "CONNECT FAIL".into();
        }
        let incoming = Arc::clone(&self.sinks.incoming);
        let note = Arc::clone(&self.sinks.note);
        let listener = match Listener::start(
            self.shared.clone(),
            self.server.tls.is_some(),
            move |push| incoming(incoming_lines(&push)),
            move |e| note(e),
        ) {
            Ok(listener) => listener,
            Err(e) => {
                self.note(format!("CONNECT: cannot open a listening port: {e}"));
                return "CONNECT FAIL".into();
            }
        };
        // The listener is up before the server hears of it, so the first pushes find it.
        let mut code = self.code(
            "CONNECT",
            self.server
                .connect(&alias, listener.port, listener.pin.as_deref()),
        );
        // Refused without a password: perhaps the name has one (the protocol's error code
        // cannot say), so the user is asked once; a password given is kept for the session.
        if code == Some(3) && self.server.password.is_none() {
            let prompt = format!("Contraseña de {alias} (Intro si no tiene): ");
            if let Some(password) = (self.sinks.ask_password)(&prompt) {
                self.server.password = Some(password);
                code = self.code(
                    "CONNECT",
                    self.server
                        .connect(&alias, listener.port, listener.pin.as_deref()),
                );
            }
        }
        match code {
            Some(0) => {
                self.connected = Some((alias, listener));
                "CONNECT OK"
            }
            code => {
                listener.stop();
                match code {
                    Some(1) => "CONNECT FAIL, USER DOES NOT EXIST",
                    Some(2) => "USER ALREADY CONNECTED",
                    _ => "CONNECT FAIL",
                }
            }
        }
        .into()
    }

    fn disconnect(&mut self, alias: &str) -> String {
        let code = self.code("DISCONNECT", self.server.disconnect(alias));
        // Seed 000 section 6.4: the listener stops whatever the answer.
        if self.user() == Some(alias) {
            self.drop_listener();
        }
        match code {
            Some(0) => "DISCONNECT OK",
            Some(1) => "DISCONNECT FAIL / USER DOES NOT EXIST",
            Some(2) => "DISCONNECT FAIL / USER NOT CONNECTED",
            _ => "DISCONNECT FAIL",
        }
        .into()
    }

    fn drop_listener(&mut self) {
        if let Some((_, listener)) = self.connected.take() {
            listener.stop();
        }
    }

    fn requester(&self, op: &str) -> Option<String> {
        let user = self.user().map(str::to_string);
        if user.is_none() {
            self.note(format!("{op}: not connected; CONNECT first"));
        }
        user
    }

    fn users(&self, op: &str) -> String {
        let Some(me) = self.requester(op) else {
            return "CONNECTED USERS FAIL / USER IS NOT CONNECTED".into();
        };
        match self.server.users(op, &me) {
            Ok(Ok(entries)) => {
                let aliases: Vec<String> = entries.iter().map(|e| parse_user_entry(e).0).collect();
                format!(
                    "CONNECTED USERS ({} users connected) OK - {}",
                    aliases.len(),
                    aliases.join(", ")
                )
            }
            Ok(Err(1)) => "CONNECTED USERS FAIL / USER IS NOT CONNECTED".into(),
            Ok(Err(_)) => "CONNECTED USERS FAIL".into(),
            Err(e) => {
                self.note(format!("{op}: {e}"));
                "CONNECTED USERS FAIL".into()
            }
        }
    }

    /// SEND and SENDATTACH: the text goes through the formatter first.
    fn send(&mut self, op: &str, to: &str, typed: &str, file: Option<&str>) -> String {
        let fail = format!("{op} FAIL");
        let Some(me) = self.requester(op) else {
            return fail;
        };
        let text = match formatting::normalize(&self.formatter_url, typed, &self.server.tls) {
            Ok(text) => text,
            Err(e) => {
                self.note(format!(
                    "formatter unreachable ({e}); sending the text as typed"
                ));
                typed.to_string()
            }
        };
        if text.len() > MAX_FIELD_LEN {
            // stdout carries only the seeds' lines; the reason goes to stderr.
            self.note(format!(
                "{op}: the message is {} bytes, at most {MAX_FIELD_LEN} are allowed",
                text.len()
            ));
            return fail;
        }
        let file = match file.map(absolute_existing).transpose() {
            Ok(file) => file,
            Err(why) => {
                self.note(format!("{op}: {why}"));
                return fail;
            }
        };
        let file_name = file.as_ref().map(|p| p.to_string_lossy().into_owned());
        if file_name.as_ref().is_some_and(|f| f.len() > MAX_FIELD_LEN) {
            self.note(format!(
                "{op}: the file's path is over {MAX_FIELD_LEN} bytes"
            ));
            return fail;
        }
        match self.server.send(&me, to, &text, file_name.as_deref()) {
            Ok(Ok(id)) => {
                if let Some(path) = file {
                    self.shared.lock().unwrap().insert(path);
                }
                format!("{op} OK - MESSAGE {id}")
            }
            // Seed 000 writes SEND's line with a slash, the later edition SENDATTACH's with a comma.
            Ok(Err(1)) if op == "SENDATTACH" => "SENDATTACH FAIL, USER DOES NOT EXIST".into(),
            Ok(Err(1)) => format!("{op} FAIL / USER DOES NOT EXIST"),
            Ok(Err(_)) => fail,
            Err(e) => {
                self.note(format!("{op}: {e}"));
                fail
            }
        }
    }

    fn get_file(&self, user: &str, remote: &str, local: &Path) -> String {
        let Some(me) = self.requester("GETFILE") else {
            return "GET_FILE FAIL".into();
        };
        let address = match self.server.users("USERS", &me) {
            Ok(Ok(entries)) => entries
                .iter()
                .map(|e| parse_user_entry(e))
                .find(|(alias, _)| alias == user)
                .and_then(|(_, a)| a),
            Ok(Err(code)) => {
                self.note(format!("GETFILE: USERS answered {code}"));
                None
            }
            Err(e) => {
                self.note(format!("GETFILE: USERS: {e}"));
                None
            }
        };
        let Some((ip, port)) = address else {
            self.note(format!(
                "GETFILE: {user} is not among the connected users (or the server gives no addresses)"
            ));
            return "FILE TRANSFER FAILED, user not connected.".into();
        };
        let progress = Arc::clone(&self.sinks.progress);
        match fetch_file((&ip, port), &me, remote, local, &mut |done, all| {
            progress(done, all)
        }) {
            Ok(true) => "GET_FILE OK",
            Ok(false) => "GET_FILE FAIL / FILE NOT EXIST",
            Err(e) => {
                self.note(format!("GETFILE from {user} at {ip}:{port}: {e}"));
                "GET_FILE FAIL"
            }
        }
        .into()
    }
}

/// The absolute path of an existing regular file, as the protocol sends attachment names.
fn absolute_existing(file: &str) -> Result<PathBuf, String> {
    let path = std::fs::canonicalize(file).map_err(|e| format!("{file}: {e}"))?;
    if !path.is_file() {
        return Err(format!("{file} is not a regular file"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_their_usage_lines() {
        assert_eq!(parse_command("  "), Ok(None));
        assert_eq!(
            parse_command("register ana"),
            Ok(Some(Command::Register {
                alias: "ana".into()
            }))
        );
        assert_eq!(
            parse_command("REGISTER"),
            Err("Syntax error. Usage: REGISTER <userName>".into())
        );
        assert_eq!(
            parse_command("FOO x"),
            Err("Error: command FOO not valid.".into())
        );
        assert_eq!(
            parse_command("SEND bea  hola   que tal "),
            Ok(Some(Command::Send {
                to: "bea".into(),
                text: "hola   que tal".into()
            }))
        );
        assert_eq!(
            parse_command("SENDATTACH bea mira  esto /tmp/a.png"),
            Ok(Some(Command::SendAttach {
                to: "bea".into(),
                text: "mira  esto".into(),
                file: "/tmp/a.png".into()
            }))
        );
        assert_eq!(
            parse_command("SENDATTACH bea /tmp/a.png").unwrap_err(),
            "Syntax error. Usage: SENDATTACH <userName> <message> <fileName>"
        );
        assert_eq!(
            parse_command("USERS"),
            Ok(Some(Command::Users { op: "USERS" }))
        );
        assert_eq!(
            parse_command("GETFILE a b"),
            Err(
                "Syntax error. Usage: GETFILE <userName> <remote_FileName> <local_fileName>".into()
            )
        );
    }

    #[test]
    fn incoming_pushes_render_as_the_seeds_write_them() {
        let message = Push::Message {
            sender: "bea".into(),
            id: 3,
            text: b"hola".to_vec(),
            attachment: Some(b"/f".to_vec()),
        };
        assert_eq!(
            incoming_lines(&message),
            ["MESSAGE 3 FROM bea", "hola", "END", "FILE /f"]
        );
        assert_eq!(
            incoming_lines(&Push::Ack {
                id: 3,
                attachment: None
            }),
            ["SEND MESSAGE 3 OK"]
        );
        assert_eq!(
            incoming_lines(&Push::Ack {
                id: 4,
                attachment: Some(b"/tmp/f.txt".to_vec())
            }),
            ["SENDATTACH MESSAGE 4 /tmp/f.txt OK"]
        );
    }
}
