//! The chat of seed 001 (myChatProtocol): a persistent connection, UTF-8 `COMMAND|param|...`
//! messages of at most 1024 bytes.
//!
//! The original framing has no delimiter: a message is what one read returns, and the original
//! client reads one message per `recv`. So until a session asks for line framing (`HELLO|lines`,
//! which our own client sends), everything written to it is one message per write with a pause
//! between two, `|` inside a field becomes `¦`, and a message never passes 1024 bytes. With line
//! framing every message ends in `\n` and nothing is substituted or cut.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use wire::validate_name;

use crate::accounts::{Denial, NewSecret, Proof};
use crate::beside::Ticket;
use crate::core::{
    Core, Ending, Finished, Interests, LoginOutcome, Notice, SendOutcome, SessionId, Started,
};
use crate::frontend::{
    frame_line, strip_line_end, Applied, Caller, EncodeMemo, Framing, Frontend, Input, Mode,
    Pacing, Reply, Shared,
};
use crate::storage;

/// Longest message either way, in bytes (seed 001, 3.1.2), without a line's `\n`.
pub const MAX_MESSAGE: usize = 1024;

/// Longest private text: the mailbox's limit (the messenger's field limit).
const MAX_PRIVATE_TEXT: usize = wire::MAX_FIELD_LEN;

/// `ERROR|500|...` for a private message that was not stored, as a line (the original
/// framing drops the `\n`): fixed, since one is kept for every message in case its commit
/// fails.
const NOT_STORED: &[u8] = b"ERROR|500|El mensaje no se pudo guardar\n";

#[derive(Default)]
struct ChatSession {
    /// Shared with each private message the session sends (no copy per message).
    alias: Option<Rc<str>>,
    /// The session asked for line framing.
    lines: bool,
}

/// The chat front-end and its sessions.
#[derive(Default)]
pub struct Chat {
    sessions: crate::ids::IdMap<SessionId, ChatSession>,
    /// Every session speaks line framing from its first byte (over TLS, where one read is
    /// no message).
    lines_from_start: bool,
    memo: EncodeMemo,
    /// Where a private message's line is encoded (kept: no allocation per message).
    scratch: String,
    /// Requests whose storage work runs beside the reactor, by storage ticket.
    waiting: HashMap<Ticket, Waiting>,
}

/// A request waiting for its storage work, with what its answer needs.
enum Waiting {
    Login {
        caller: Caller,
        name: String,
        /// The login came with a password field: the client speaks our extension, and a
        /// failure says why.
        extended: bool,
    },
    Password {
        caller: Caller,
    },
    Private {
        caller: Caller,
        from: String,
        to: String,
    },
    Broadcast {
        caller: Caller,
    },
}

/// A parsed request.
enum Request<'a> {
    /// `CONNECT|name`, or ours `CONNECT|name|password` (names hold no `|`, so everything
    /// after the second is the password).
    Connect {
        name: &'a str,
        password: Option<&'a str>,
    },
    /// Ours: `PASSWORD|new` sets the session's user's password; `PASSWORD|` removes it.
    Password(&'a str),
    Hello(&'a str),
    Message {
        to: &'a str,
        text: &'a str,
    },
    Broadcast(&'a str),
    Disconnect,
}

fn parse(message: &str) -> Result<Request<'_>, &'static str> {
    let (command, rest) = match message.split_once('|') {
        Some((command, rest)) => (command, Some(rest)),
        None => (message, None),
    };
    match (command, rest) {
        ("CONNECT", Some(rest)) => Ok(match rest.split_once('|') {
            Some((name, password)) => Request::Connect {
                name,
                password: Some(password),
            },
            None => Request::Connect {
                name: rest,
                password: None,
            },
        }),
        ("PASSWORD", Some(new)) => Ok(Request::Password(new)),
        ("HELLO", Some(framing)) => Ok(Request::Hello(framing)),
        ("MESSAGE", Some(rest)) => match rest.split_once('|') {
            Some((to, text)) => Ok(Request::Message { to, text }),
            None => Err("MESSAGE necesita destinatario y texto"),
        },
        ("BROADCAST", Some(text)) => Ok(Request::Broadcast(text)),
        ("DISCONNECT", None | Some("")) => Ok(Request::Disconnect),
        ("CONNECT" | "HELLO" | "MESSAGE" | "BROADCAST" | "DISCONNECT" | "PASSWORD", _) => {
            Err("Mensaje mal formado")
        }
        _ => Err("Comando desconocido"),
    }
}

impl Chat {
    /// The chat with line framing from the first byte (its TLS port).
    pub fn with_lines() -> Chat {
        Chat {
            lines_from_start: true,
            ..Chat::default()
        }
    }

    fn session(&mut self, id: SessionId) -> &mut ChatSession {
        let lines = self.lines_from_start;
        self.sessions
            .entry(id)
            .or_insert_with(|| ChatSession { alias: None, lines })
    }

    /// True if `session` speaks line framing.
    fn lines(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .map_or(self.lines_from_start, |s| s.lines)
    }

    /// Encodes one message for `session` in its framing.
    fn message(&self, session: SessionId, fields: &[&str]) -> Vec<u8> {
        encode(fields, self.lines(session))
    }

    /// An `ERROR|code|reason` answer, and a stderr line saying to whom.
    fn error(&self, caller: &Caller, code: u16, reason: &str) -> Reply {
        Reply::bytes(self.message(caller.session, &["ERROR", &code.to_string(), reason]))
            .diagnostic(format!("chat: ERROR {code} {reason} to {}", caller.peer))
    }

    fn connect(
        &mut self,
        name: &str,
        password: Option<&str>,
        caller: &Caller,
        core: &mut Core,
        now: Instant,
    ) -> Applied {
        let session = caller.session;
        if let Some(alias) = &self.session(session).alias {
            let why = format!("Ya conectado como {alias}");
            return Applied::read_only(self.error(caller, 400, &why));
        }
        let extended = password.is_some();
        if let Err(e) = validate_name(name.as_bytes()) {
            let why = e.to_string();
            return Applied::read_only(self.login_failed(caller, name, extended, None, why));
        }
        let proof = Proof::given(password);
        match core.start_login(name, session, Interests::CHAT, caller.peer.ip(), proof, now) {
            Started::Later(ticket) => {
                let caller = caller.clone();
                let name = name.to_string();
                self.wait(
                    ticket,
                    Waiting::Login {
                        caller,
                        name,
                        extended,
                    },
                )
            }
            Started::Now(result) => self.logged_in(caller, name, extended, result),
        }
    }

    /// `PASSWORD|new`: the session's user's password is set (or, empty, removed).
    fn set_password(
        &mut self,
        new: &str,
        caller: &Caller,
        core: &mut Core,
        now: Instant,
    ) -> Applied {
        let new = match NewSecret::given(new) {
            Ok(new) => new,
            Err(why) => {
                let reply = self.password_answer(caller, Err("Contraseña no válida"));
                return Applied::read_only(reply.diagnostic(format!("chat PASSWORD: {why}")));
            }
        };
        match core.start_set_password(caller.session, new, now) {
            Some(Started::Later(ticket)) => {
                let caller = caller.clone();
                self.wait(ticket, Waiting::Password { caller })
            }
            Some(Started::Now(result)) => self.password_set(caller, result),
            None => Applied::read_only(self.error(caller, 400, "Primero CONNECT")),
        }
    }

    /// The answer to `PASSWORD` once its storage work is done.
    fn password_set(&self, caller: &Caller, result: storage::Result<Finished>) -> Applied {
        match result {
            Ok(Finished::PasswordSet(true)) => {
                let ok = self.password_answer(caller, Ok(()));
                let failed = self.error(caller, 500, "No se pudo guardar la contraseña");
                Applied::written(ok, failed)
            }
            Ok(Finished::Denied(denial)) => {
                Applied::read_only(self.password_answer(caller, Err(denial.reason())))
            }
            Ok(other) => Applied::read_only(
                self.error(caller, 500, "No se pudo guardar la contraseña")
                    .diagnostic(format!("chat PASSWORD: unexpected outcome {other:?}")),
            ),
            Err(e) => Applied::read_only(
                self.error(caller, 500, "No se pudo guardar la contraseña")
                    .diagnostic(format!("chat PASSWORD: storage: {e}")),
            ),
        }
    }

    /// `PASSWORD_ACK|OK`, or `PASSWORD_ACK|FAIL|why`.
    fn password_answer(&self, caller: &Caller, result: Result<(), &str>) -> Reply {
        match result {
            Ok(()) => Reply::bytes(self.message(caller.session, &["PASSWORD_ACK", "OK"])),
            Err(why) => Reply::bytes(self.message(caller.session, &["PASSWORD_ACK", "FAIL", why])),
        }
    }

    /// The answer to a login once its storage work is done.
    fn logged_in(
        &mut self,
        caller: &Caller,
        name: &str,
        extended: bool,
        result: storage::Result<Finished>,
    ) -> Applied {
        let failed = |chat: &Chat, denial: Option<Denial>, why: String| {
            Applied::read_only(chat.login_failed(caller, name, extended, denial, why))
        };
        let session = caller.session;
        match result {
            Ok(Finished::Login(LoginOutcome::LoggedIn { registered })) => {
                self.session(session).alias = Some(name.into());
                let ok = Reply::bytes(self.message(session, &["CONNECT_ACK", "OK"]))
                    .console(format!("CHAT LOGIN {name} OK"));
                let why = "registering the name did not commit".into();
                let not_stored = self.login_failed(caller, name, extended, None, why);
                Applied::login(ok, registered, not_stored)
            }
            Ok(Finished::Login(LoginOutcome::Taken)) => {
                failed(self, None, format!("{name} is online"))
            }
            Ok(Finished::Login(LoginOutcome::TooManyNewNames)) => failed(
                self,
                None,
                "its address registered --max-new-names-per-minute names in the last minute".into(),
            ),
            Ok(Finished::Login(LoginOutcome::Gone)) => Applied::read_only(Reply::default()),
            Ok(Finished::Denied(denial)) => failed(self, Some(denial), denial.label().into()),
            Ok(other) => failed(self, None, format!("unexpected outcome {other:?}")),
            Err(e) => failed(self, None, format!("storage: {e}")),
        }
    }

    /// `CONNECT_ACK|FAIL`, as the original clients know it; to a client that sent a
    /// password field (ours), with the accounts' reason after it.
    fn login_failed(
        &self,
        caller: &Caller,
        name: &str,
        extended: bool,
        denial: Option<Denial>,
        why: String,
    ) -> Reply {
        let fields: &[&str] = match denial {
            Some(denial) if extended => &["CONNECT_ACK", "FAIL", denial.reason()],
            _ => &["CONNECT_ACK", "FAIL"],
        };
        Reply::bytes(self.message(caller.session, fields))
            .console(format!("CHAT LOGIN {name} FAIL"))
            .diagnostic(format!("chat login from {} refused: {why}", caller.peer))
    }

    fn private(
        &mut self,
        to: &str,
        text: &str,
        caller: &Caller,
        core: &mut Core,
        now: Instant,
    ) -> Applied {
        let session = caller.session;
        let Some(from) = self.session(session).alias.clone() else {
            return Applied::read_only(self.error(caller, 400, "Primero CONNECT"));
        };
        if text.len() > MAX_PRIVATE_TEXT {
            return Applied::read_only(self.error(caller, 413, "Mensaje demasiado largo"));
        }
        let not_found = |chat: &Chat| chat.error(caller, 404, "Usuario no encontrado");
        if validate_name(to.as_bytes()).is_err() {
            return Applied::read_only(not_found(self));
        }
        let sender = (&from, caller.peer.ip());
        match core.send_from_session(sender, to, text.as_bytes(), now) {
            Started::Later(ticket) => {
                let (caller, from, to) = (caller.clone(), from.to_string(), to.to_string());
                self.wait(ticket, Waiting::Private { caller, from, to })
            }
            Started::Now(result) => self.stored(caller, &from, to, result),
        }
    }

    /// Keeps what the answer to a request needs until its storage work is done.
    fn wait(&mut self, ticket: Ticket, waiting: Waiting) -> Applied {
        self.waiting.insert(ticket, waiting);
        Applied::later(ticket)
    }

    /// The answer to a broadcast once it is stored (and told): nothing, or an error.
    fn broadcasted(&self, caller: &Caller, result: storage::Result<Finished>) -> Applied {
        match result {
            Ok(Finished::Broadcast) => Applied::read_only(Reply::default()),
            Ok(other) => Applied::read_only(
                self.error(caller, 500, "No se pudo difundir")
                    .diagnostic(format!("chat broadcast: unexpected outcome {other:?}")),
            ),
            Err(e) => Applied::read_only(
                self.error(caller, 500, "No se pudo difundir")
                    .diagnostic(format!("chat broadcast: storage: {e}")),
            ),
        }
    }

    /// The answer to a private message once its storage work is done.
    fn stored(
        &self,
        caller: &Caller,
        from: &str,
        to: &str,
        result: storage::Result<Finished>,
    ) -> Applied {
        let refusal = || {
            let answer = NOT_STORED
                .strip_suffix(b"\n")
                .filter(|_| !self.lines(caller.session));
            Reply::fixed(answer.unwrap_or(NOT_STORED))
        };
        let not_stored = |why: &dyn std::fmt::Display| {
            refusal().diagnostic(format!("chat message {from} -> {to}: {why}"))
        };
        // Made for every message, used only if the turn's commit fails, whose cause is
        // logged once: nothing to format.
        let not_committed =
            || refusal().diagnostic("a chat message was refused: its commit failed");
        match result {
            // No echo to the sender; if the message does not reach the disk, it hears so.
            Ok(Finished::Sent(SendOutcome::Accepted { .. })) => {
                Applied::written(Reply::default(), not_committed())
            }
            // Written to the recipient's session at the end of the turn, unless its commit
            // fails: no disk to wait for.
            Ok(Finished::Sent(SendOutcome::Told { .. })) => {
                Applied::committed(Reply::default(), not_committed())
            }
            Ok(Finished::Sent(SendOutcome::NoSuchUser)) => {
                Applied::read_only(self.error(caller, 404, "Usuario no encontrado"))
            }
            Ok(Finished::Sent(SendOutcome::MailboxFull)) => {
                Applied::read_only(self.error(caller, 507, "Buzón del destinatario lleno"))
            }
            Ok(other) => {
                Applied::read_only(not_stored(&format_args!("unexpected outcome {other:?}")))
            }
            Err(e) => Applied::read_only(not_stored(&format_args!("storage: {e}"))),
        }
    }
}

impl Frontend for Chat {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn mode(&self) -> Mode {
        Mode::Persistent
    }

    fn read_limit(&self) -> usize {
        // A line, its `\r\n`, and one byte to tell that it is too long.
        MAX_MESSAGE + 3
    }

    fn frame(&self, input: &Input) -> Framing {
        if !self.lines(input.session) {
            // The original framing: one read is one message.
            return match input.buf.len() {
                0 => Framing::Incomplete,
                len => Framing::Complete(len),
            };
        }
        frame_line(input.buf, self.read_limit(), || {
            Reply::bytes(encode(&["ERROR", "400", "Mensaje demasiado largo"], true))
                .diagnostic(format!("chat line over {MAX_MESSAGE} bytes"))
        })
    }

    fn apply(&mut self, request: &[u8], caller: &Caller, core: &mut Core, now: Instant) -> Applied {
        let session = caller.session;
        let request = strip_line_end(request);
        let Ok(message) = std::str::from_utf8(request) else {
            return Applied::read_only(
                self.error(caller, 400, "El mensaje no es UTF-8")
                    .diagnostic(format!("chat message from {} is not UTF-8", caller.peer)),
            );
        };
        if message.len() > MAX_MESSAGE {
            return Applied::read_only(self.error(caller, 400, "Mensaje demasiado largo"));
        }
        let request = match parse(message) {
            Ok(request) => request,
            Err(why) => return Applied::read_only(self.error(caller, 400, why)),
        };
        let logged_in = self.session(session).alias.is_some();
        match request {
            Request::Connect { name, password } => self.connect(name, password, caller, core, now),
            _ if !logged_in => Applied::read_only(self.error(caller, 400, "Primero CONNECT")),
            Request::Hello("lines") => {
                self.session(session).lines = true;
                Applied::read_only(Reply::bytes(encode(&["HELLO", "lines"], true)))
            }
            Request::Hello(_) => {
                Applied::read_only(self.error(caller, 400, "Solo se ofrece HELLO|lines"))
            }
            Request::Message { to, text } => self.private(to, text, caller, core, now),
            Request::Password(new) => self.set_password(new, caller, core, now),
            Request::Broadcast(text) => {
                let from = self.session(session).alias.clone().unwrap_or_default();
                let work = core.broadcast_work(&from, text);
                match core.start(work, now) {
                    Started::Later(ticket) => {
                        let caller = caller.clone();
                        self.wait(ticket, Waiting::Broadcast { caller })
                    }
                    Started::Now(result) => self.broadcasted(caller, result),
                }
            }
            Request::Disconnect => Applied::read_only(Reply::default().then_close()),
        }
    }

    fn finish(&mut self, ticket: Ticket, result: storage::Result<Finished>) -> Applied {
        let applied = match self.waiting.remove(&ticket) {
            Some(Waiting::Login {
                caller,
                name,
                extended,
            }) => self.logged_in(&caller, &name, extended, result),
            Some(Waiting::Password { caller }) => self.password_set(&caller, result),
            Some(Waiting::Private { caller, from, to }) => self.stored(&caller, &from, &to, result),
            Some(Waiting::Broadcast { caller }) => self.broadcasted(&caller, result),
            None => Applied::read_only(
                Reply::default().diagnostic(format!("chat: no request waits for ticket {ticket}")),
            ),
        };
        applied
    }

    fn slow_down(&self, session: SessionId) -> Option<Vec<u8>> {
        Some(self.message(
            session,
            &["ERROR", "429", "Demasiados mensajes; más despacio"],
        ))
    }

    fn established(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.alias.is_some())
    }

    fn pacing(&self, session: SessionId) -> Pacing {
        if self.lines(session) {
            Pacing::Stream
        } else {
            Pacing::OneMessagePerWrite
        }
    }

    fn encode(&mut self, session: SessionId, notice: &Notice) -> Option<Shared> {
        let state = self.sessions.get(&session)?;
        let lines = state.lines;
        Some(match notice {
            Notice::Private { from, text, .. } => {
                let text = String::from_utf8_lossy(text);
                self.scratch.clear();
                encode_into(&mut self.scratch, &["MESSAGE", from, &text], lines);
                self.scratch.as_bytes().into()
            }
            Notice::Broadcast { from, text } => self.memo.get_or(notice, u8::from(lines), || {
                encode(&["BROADCAST", from, text], lines)
            }),
            Notice::UserList(users) if lines => self
                .memo
                .get_or(notice, 1, || encode(&["USER_LIST", &users.join(",")], true)),
            Notice::UserList(users) => {
                // One message: the earliest names that fit, and the session's own.
                let own = state.alias.clone().unwrap_or_default();
                let earliest = self.memo.get_or(notice, 0, || earliest_users(users));
                with_own_name(earliest, &own)
            }
            Notice::Ended(why) => {
                let why = match why {
                    Ending::Unregistered => "Usuario dado de baja",
                    Ending::Disconnected => "Desconectado desde el messenger",
                };
                encode(&["ERROR", "410", why], lines).into()
            }
            _ => return None,
        })
    }

    fn closed(&mut self, session: SessionId, core: &mut Core) -> Option<String> {
        let state = self.sessions.remove(&session)?;
        // Also when its login is still under way: the name is free again.
        core.logout(session);
        Some(format!("CHAT LOGOUT {}", state.alias?))
    }
}

impl Interests {
    /// A chat session hears the user list and the broadcasts.
    pub const CHAT: Interests = Interests {
        user_list: true,
        broadcasts: true,
        privates_only_in_a_room: false,
    };
}

/// `fields` joined by `|`: with line framing, ending in `\n`; without, with `|` inside a field
/// sent as `¦`, and cut to [`MAX_MESSAGE`] bytes at a character boundary.
fn encode(fields: &[&str], lines: bool) -> Vec<u8> {
    let mut message = String::new();
    encode_into(&mut message, fields, lines);
    message.into_bytes()
}

/// Appends a message of `fields` to `out`: a line, or in the original framing (where `|`
/// in a field would split it) with `¦` for `|` and cut to [`MAX_MESSAGE`] bytes.
fn encode_into(out: &mut String, fields: &[&str], lines: bool) {
    let start = out.len();
    out.reserve(fields.iter().map(|f| f.len() + 1).sum());
    for (n, field) in fields.iter().enumerate() {
        if n > 0 {
            out.push('|');
        }
        // No field carries a control (docs/text.md): a `\n` would end a line early.
        let field = wire::clean_text(field);
        if lines {
            out.push_str(&field);
            continue;
        }
        for (n, part) in field.split('|').enumerate() {
            if n > 0 {
                out.push('¦');
            }
            out.push_str(part);
        }
    }
    if lines {
        out.push('\n');
    } else if out.len() - start > MAX_MESSAGE {
        let mut end = start + MAX_MESSAGE;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
}

/// `USER_LIST|a,b,...` without line framing, where it must fit one message: the earliest
/// names online that leave room for any recipient's own (encoded once for every session).
fn earliest_users(users: &[String]) -> Vec<u8> {
    let mut budget = MAX_MESSAGE - "USER_LIST|".len() - (wire::MAX_FIELD_LEN + 1);
    let mut kept = Vec::new();
    for user in users {
        if user.len() + 1 > budget {
            break;
        }
        budget -= user.len() + 1;
        kept.push(user.as_str());
    }
    encode(&["USER_LIST", &kept.join(",")], false)
}

/// The list of [`earliest_users`] for a session named `own`: as it is if it names them,
/// else with `own` added at the end.
fn with_own_name(earliest: Shared, own: &str) -> Shared {
    let names = &earliest["USER_LIST|".len()..];
    if own.is_empty() || names.split(|&b| b == b',').any(|n| n == own.as_bytes()) {
        return earliest;
    }
    let mut list = earliest.to_vec();
    if !names.is_empty() {
        list.push(b',');
    }
    list.extend_from_slice(own.replace('|', "¦").as_bytes());
    list.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_refusal_is_what_encoding_it_makes_in_both_framings() {
        let fields = ["ERROR", "500", "El mensaje no se pudo guardar"];
        assert_eq!(encode(&fields, true), NOT_STORED);
        assert_eq!(encode(&fields, false), &NOT_STORED[..NOT_STORED.len() - 1]);
    }

    #[test]
    fn without_line_framing_pipes_are_replaced_and_messages_cut() {
        assert_eq!(
            encode(&["MESSAGE", "ana", "a|b"], false),
            "MESSAGE|ana|a¦b".as_bytes()
        );
        assert_eq!(
            encode(&["MESSAGE", "ana", "a|b"], true),
            b"MESSAGE|ana|a|b\n"
        );
        let long = "é".repeat(600);
        let cut = encode(&["BROADCAST", "ana", &long], false);
        assert!(cut.len() <= MAX_MESSAGE && std::str::from_utf8(&cut).is_ok());
    }

    #[test]
    fn a_long_user_list_keeps_the_recipient_and_the_earliest_others() {
        let users: Vec<String> = (0..300).map(|n| format!("user{n:03}")).collect();
        let list = with_own_name(earliest_users(&users).into(), "user299");
        let text = String::from_utf8(list.to_vec()).unwrap();
        assert!(text.len() <= MAX_MESSAGE);
        let names: Vec<&str> = text["USER_LIST|".len()..].split(',').collect();
        assert_eq!(names[0], "user000");
        assert!(names.contains(&"user299"));
    }

    #[test]
    fn requests_parse_like_the_original() {
        assert!(matches!(
            parse("MESSAGE|bob|hola|que tal"),
            Ok(Request::Message {
                to: "bob",
                text: "hola|que tal"
            })
        ));
        assert!(matches!(
            parse("BROADCAST|a|b"),
            Ok(Request::Broadcast("a|b"))
        ));
        assert!(matches!(parse("DISCONNECT|"), Ok(Request::Disconnect)));
        assert!(parse("MESSAGE|bob").is_err());
        assert!(parse("HOLA").is_err());
    }
}
