//! The rooms of seed 004 (Wassop): a persistent connection of UTF-8 lines, `COMMAND argument`.
//!
//! Every line that arrives is handled, even several in one read (the original server lost all
//! but the first). The original client reads the answers to JOIN, ROOM and LIST_ROOMS with one
//! `recv` each, so each answer is one write, and nothing unasked reaches a session outside a
//! room (the core holds its private messages until it enters one).

use std::collections::HashMap;
use std::time::Instant;

use wire::validate_name;

use crate::accounts::{NewSecret, Proof};
use crate::beside::Ticket;
use crate::core::{
    Core, Ending, Finished, Interests, JoinOutcome, LoginOutcome, Notice, SessionId, Started,
};
use crate::frontend::{
    frame_line, strip_line_end, Applied, Caller, EncodeMemo, Framing, Frontend, Input, Mode, Reply,
    Shared,
};
use crate::storage;

/// Longest line, in bytes, without its `\n`.
pub const MAX_LINE: usize = 1024;

/// Longest room name, in bytes.
pub const MAX_ROOM_NAME: usize = 64;

/// The rooms front-end and the user of each session.
#[derive(Default)]
pub struct Rooms {
    users: crate::ids::IdMap<SessionId, String>,
    memo: EncodeMemo,
    /// Where a notice's line is formatted (kept: no allocation per private message).
    scratch: String,
    /// Requests whose storage work runs beside the reactor, by storage ticket.
    waiting: HashMap<Ticket, Waiting>,
}

/// A request waiting for its storage work, and what its answer needs.
enum Waiting {
    Login {
        caller: Caller,
        name: String,
    },
    /// `alias` enters `room`, out of `left`.
    Room {
        caller: Caller,
        alias: String,
        room: String,
        left: Option<String>,
    },
    Message {
        caller: Caller,
        alias: String,
    },
    Password {
        caller: Caller,
        removed: bool,
    },
    Key {
        caller: Caller,
        room: String,
    },
}

enum Request<'a> {
    /// `JOIN name`, or ours `JOIN name password` (names hold no white space).
    Join {
        name: &'a str,
        password: Option<&'a str>,
    },
    /// `ROOM room` (a room's name may hold spaces), or ours `ROOM_KEY key room`.
    Room {
        room: &'a str,
        key: Option<&'a str>,
    },
    /// Ours: `PASSWORD new` sets the user's password; `PASSWORD` alone removes it.
    Password(&'a str),
    /// Ours: `KEY key` sets the key of the room the user created and is in; `KEY` alone
    /// removes it.
    Key(&'a str),
    ListRooms,
    Message(&'a str),
    Exit,
    Quit,
}

fn parse(line: &str) -> Option<Request<'_>> {
    let (command, argument) = line.split_once(' ').unwrap_or((line, ""));
    let argument = argument.trim();
    Some(match command {
        "JOIN" => match argument.split_once(' ') {
            Some((name, password)) => Request::Join {
                name,
                password: Some(password.trim_start()),
            },
            None => Request::Join {
                name: argument,
                password: None,
            },
        },
        "ROOM" => Request::Room {
            room: argument,
            key: None,
        },
        // A key holds no white space, so the room's name is everything after it.
        "ROOM_KEY" => {
            let (key, room) = argument.split_once(' ').unwrap_or((argument, ""));
            Request::Room {
                room: room.trim_start(),
                key: Some(key),
            }
        }
        "PASSWORD" => Request::Password(argument),
        "KEY" => Request::Key(argument),
        "LIST_ROOMS" => Request::ListRooms,
        "MESSAGE" => Request::Message(argument),
        // `EXIT r` names the room; the current one is left either way.
        "EXIT" => Request::Exit,
        "QUIT" => Request::Quit,
        _ => return None,
    })
}

/// [`line`] made straight into shared bytes: one allocation (a private message's line is
/// made for its one recipient).
fn shared_line(text: &str) -> Shared {
    wire::clean_text(text)
        .bytes()
        .chain(std::iter::once(b'\n'))
        .collect()
}

fn line(text: &str) -> Vec<u8> {
    // A line protocol: a text with line breaks in it stays one line, and carries no control
    // (docs/text.md).
    let text = wire::clean_text(text);
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    bytes
}

/// An `ERROR: ...` line, and a stderr line saying to whom.
fn error(caller: &Caller, text: &str) -> Reply {
    Reply::bytes(line(&format!("ERROR: {text}")))
        .diagnostic(format!("rooms: ERROR: {text} to {}", caller.peer))
}

/// A refused login: the `ERROR: answer` line, the console's `ROOMS JOIN name FAIL` and why.
fn join_failed(caller: &Caller, name: &str, why: String, answer: &str) -> Reply {
    error(caller, answer)
        .console(format!("ROOMS JOIN {name} FAIL"))
        .diagnostic(format!("rooms login from {} refused: {why}", caller.peer))
}

fn valid_room(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_ROOM_NAME && !name.chars().any(wire::is_hidden)
}

impl Rooms {
    fn join(
        &mut self,
        name: &str,
        password: Option<&str>,
        caller: &Caller,
        core: &mut Core,
        now: Instant,
    ) -> Applied {
        if let Err(e) = validate_name(name.as_bytes()) {
            return Applied::read_only(join_failed(
                caller,
                name,
                e.to_string(),
                "Nombre de usuario no válido.",
            ));
        }
        match core.start_login(
            name,
            caller.session,
            Interests::ROOMS,
            caller.peer.ip(),
            Proof::given(password),
            now,
        ) {
            Started::Later(ticket) => self.wait(
                ticket,
                Waiting::Login {
                    caller: caller.clone(),
                    name: name.to_string(),
                },
            ),
            Started::Now(result) => self.joined(caller, name, result),
        }
    }

    fn wait(&mut self, ticket: Ticket, waiting: Waiting) -> Applied {
        self.waiting.insert(ticket, waiting);
        Applied::later(ticket)
    }

    /// The answer to a login once its storage work is done.
    fn joined(
        &mut self,
        caller: &Caller,
        name: &str,
        result: storage::Result<Finished>,
    ) -> Applied {
        match result {
            Ok(Finished::Login(LoginOutcome::LoggedIn { registered })) => {
                self.users.insert(caller.session, name.to_string());
                let ok = Reply::bytes(line("OK")).console(format!("ROOMS JOIN {name} OK"));
                let not_stored = join_failed(
                    caller,
                    name,
                    "registering the name did not commit".into(),
                    "No se pudo registrar el nombre.",
                );
                Applied::login(ok, registered, not_stored)
            }
            Ok(Finished::Login(LoginOutcome::Taken)) => Applied::read_only(join_failed(
                caller,
                name,
                format!("{name} is online"),
                "Username ya en uso.",
            )),
            Ok(Finished::Login(LoginOutcome::TooManyNewNames)) => Applied::read_only(join_failed(
                caller,
                name,
                "its address registered --max-new-names-per-minute names in the last minute".into(),
                "Demasiados nombres nuevos desde tu dirección; espera un minuto.",
            )),
            Ok(Finished::Login(LoginOutcome::Gone)) => Applied::read_only(Reply::default()),
            Ok(Finished::Denied(denial)) => Applied::read_only(join_failed(
                caller,
                name,
                denial.label().into(),
                &format!("{}.", denial.reason()),
            )),
            Ok(other) => Applied::read_only(join_failed(
                caller,
                name,
                format!("unexpected outcome {other:?}"),
                "Error interno.",
            )),
            Err(e) => Applied::read_only(join_failed(
                caller,
                name,
                format!("storage: {e}"),
                "Error interno.",
            )),
        }
    }

    fn room(
        &mut self,
        alias: &str,
        (room, key): (&str, Option<&str>),
        core: &mut Core,
        caller: &Caller,
        now: Instant,
    ) -> Applied {
        let session = caller.session;
        if !valid_room(room) {
            return Applied::read_only(error(caller, "Nombre de sala no válido."));
        }
        let left = core.room_of(session).map(str::to_string);
        match core.start_join_room(session, room, Proof::given(key), now) {
            Started::Later(ticket) => {
                let waiting = Waiting::Room {
                    caller: caller.clone(),
                    alias: alias.to_string(),
                    room: room.to_string(),
                    left,
                };
                self.wait(ticket, waiting)
            }
            Started::Now(result) => entered(caller, alias, room, left, result),
        }
    }

    fn message(
        &mut self,
        alias: &str,
        text: &str,
        core: &mut Core,
        caller: &Caller,
        now: Instant,
    ) -> Applied {
        match core.start_room_message(caller.session, text, now) {
            Some(Started::Later(ticket)) => {
                let waiting = Waiting::Message {
                    caller: caller.clone(),
                    alias: alias.to_string(),
                };
                self.wait(ticket, waiting)
            }
            Some(Started::Now(result)) => said(caller, alias, result),
            None => Applied::read_only(error(caller, "No estás en ninguna sala.")),
        }
    }

    /// `PASSWORD new`: the user's password is set (or, with nothing, removed).
    fn password(&mut self, new: &str, core: &mut Core, caller: &Caller, now: Instant) -> Applied {
        let new = match NewSecret::given(new) {
            Ok(new) => new,
            Err(why) => {
                return Applied::read_only(error(caller, "Contraseña no válida.").diagnostic(why))
            }
        };
        let removed = new.is_none();
        match core.start_set_password(caller.session, new, now) {
            Some(Started::Later(ticket)) => {
                let caller = caller.clone();
                self.wait(ticket, Waiting::Password { caller, removed })
            }
            Some(Started::Now(result)) => password_set(caller, removed, result),
            None => Applied::read_only(error(caller, "Primero JOIN <nombre>.")),
        }
    }

    /// `KEY key`: the key of the room the user is in (and created) is set, or removed.
    fn key(&mut self, key: &str, core: &mut Core, caller: &Caller, now: Instant) -> Applied {
        if key.contains(char::is_whitespace) {
            return Applied::read_only(error(caller, "La clave no puede tener espacios."));
        }
        let new = match NewSecret::given(key) {
            Ok(new) => new,
            Err(why) => {
                return Applied::read_only(error(caller, "Clave no válida.").diagnostic(why))
            }
        };
        let Some(room) = core.room_of(caller.session).map(str::to_string) else {
            return Applied::read_only(error(caller, "No estás en ninguna sala."));
        };
        match core.start_set_room_key(caller.session, new, now) {
            Some(Started::Later(ticket)) => {
                let caller = caller.clone();
                self.wait(ticket, Waiting::Key { caller, room })
            }
            Some(Started::Now(result)) => key_set(caller, &room, result),
            None => Applied::read_only(error(caller, "No estás en ninguna sala.")),
        }
    }
}

/// The answer to `PASSWORD` once its storage work is done.
fn password_set(caller: &Caller, removed: bool, result: storage::Result<Finished>) -> Applied {
    let failed = || error(caller, "No se pudo guardar la contraseña.");
    match result {
        Ok(Finished::PasswordSet(true)) => {
            let done = if removed {
                "Contraseña retirada."
            } else {
                "Contraseña guardada."
            };
            Applied::written(Reply::bytes(line(done)), failed())
        }
        Ok(Finished::Denied(denial)) => {
            Applied::read_only(error(caller, &format!("{}.", denial.reason())))
        }
        Ok(other) => Applied::read_only(failed().diagnostic(format!("PASSWORD: {other:?}"))),
        Err(e) => Applied::read_only(failed().diagnostic(format!("PASSWORD: storage: {e}"))),
    }
}

/// The answer to `KEY` in `room` once its storage work is done.
fn key_set(caller: &Caller, room: &str, result: storage::Result<Finished>) -> Applied {
    let failed = || error(caller, "No se pudo guardar la clave.");
    match result {
        Ok(Finished::RoomKeySet(keyed)) => {
            let done = if keyed {
                format!("La sala {room} tiene clave.")
            } else {
                format!("La sala {room} ya no tiene clave.")
            };
            Applied::written(Reply::bytes(line(&done)), failed())
        }
        Ok(Finished::Denied(denial)) => {
            Applied::read_only(error(caller, &format!("{}.", denial.reason())))
        }
        Ok(other) => Applied::read_only(failed().diagnostic(format!("KEY: {other:?}"))),
        Err(e) => Applied::read_only(failed().diagnostic(format!("KEY: storage: {e}"))),
    }
}

/// The answer to `alias`'s `ROOM room` (out of `left`) once its storage work is done.
fn entered(
    caller: &Caller,
    alias: &str,
    room: &str,
    left: Option<String>,
    result: storage::Result<Finished>,
) -> Applied {
    match result {
        Ok(Finished::Joined(JoinOutcome::Joined { history, created })) => {
            let mut answer = line(&format!("Te has unido a la sala {room}."));
            for (sender, text) in history {
                answer.extend(line(&format!("{sender}: {text}")));
            }
            let mut reply = Reply::bytes(answer).console(match left {
                Some(left) => format!("ROOMS {alias} LEAVES {left} ENTERS {room}"),
                None => format!("ROOMS {alias} ENTERS {room}"),
            });
            if created {
                reply = reply.diagnostic(format!("room {room} created by {alias}"));
            }
            Applied::read_only(reply)
        }
        Ok(Finished::Joined(JoinOutcome::TooManyRooms)) => Applied::read_only(error(
            caller,
            "Hay demasiadas salas; únete a una existente.",
        )),
        Ok(Finished::Joined(JoinOutcome::Gone)) => Applied::read_only(Reply::default()),
        Ok(Finished::Denied(denial)) => {
            Applied::read_only(error(caller, &format!("{}.", denial.reason())))
        }
        Ok(other) => Applied::read_only(
            error(caller, "No se pudo entrar en la sala.")
                .diagnostic(format!("ROOM {room}: unexpected outcome {other:?}")),
        ),
        Err(e) => Applied::read_only(
            error(caller, "No se pudo entrar en la sala.")
                .diagnostic(format!("ROOM {room}: storage: {e}")),
        ),
    }
}

/// The answer to `alias`'s room line once its storage work is done: none if it was stored.
fn said(caller: &Caller, alias: &str, result: storage::Result<Finished>) -> Applied {
    match result {
        Ok(Finished::RoomMessage) => Applied::read_only(Reply::default()),
        Ok(other) => Applied::read_only(error(caller, "No se pudo enviar el mensaje.").diagnostic(
            format!("room message from {alias}: unexpected outcome {other:?}"),
        )),
        Err(e) => Applied::read_only(
            error(caller, "No se pudo enviar el mensaje.")
                .diagnostic(format!("room message from {alias}: storage: {e}")),
        ),
    }
}

impl Frontend for Rooms {
    fn name(&self) -> &'static str {
        "rooms"
    }

    fn mode(&self) -> Mode {
        Mode::Persistent
    }

    fn read_limit(&self) -> usize {
        // A line, its `\r\n`, and one byte to tell that it is too long.
        MAX_LINE + 3
    }

    fn frame(&self, input: &Input) -> Framing {
        frame_line(input.buf, self.read_limit(), || {
            Reply::bytes(line("ERROR: Línea demasiado larga."))
                .diagnostic(format!("rooms line over {MAX_LINE} bytes"))
        })
    }

    fn apply(&mut self, request: &[u8], caller: &Caller, core: &mut Core, now: Instant) -> Applied {
        let Ok(text) = std::str::from_utf8(strip_line_end(request)) else {
            return Applied::read_only(
                error(caller, "La línea no es UTF-8.")
                    .diagnostic(format!("rooms line from {} is not UTF-8", caller.peer)),
            );
        };
        let session = caller.session;
        let alias = self.users.get(&session).cloned();
        match (parse(text), alias) {
            (None, _) => Applied::read_only(error(caller, "Comando desconocido.")),
            (Some(Request::Join { name, password }), None) => {
                self.join(name, password, caller, core, now)
            }
            (Some(Request::Join { .. }), Some(alias)) => {
                Applied::read_only(error(caller, &format!("Ya te uniste como {alias}.")))
            }
            (Some(Request::Quit), _) => Applied::read_only(Reply::default().then_close()),
            (Some(_), None) => Applied::read_only(error(caller, "Primero JOIN <nombre>.")),
            (Some(Request::Room { room, key }), Some(alias)) => {
                self.room(&alias, (room, key), core, caller, now)
            }
            (Some(Request::Password(new)), Some(_)) => self.password(new, core, caller, now),
            (Some(Request::Key(key)), Some(_)) => self.key(key, core, caller, now),
            (Some(Request::ListRooms), Some(_)) => {
                let mut answer = line("Salas disponibles:");
                for (room, members, keyed) in core.room_list() {
                    let mark = if keyed { " [clave]" } else { "" };
                    answer.extend(line(&format!("{room} ({members}){mark}")));
                }
                Applied::read_only(Reply::bytes(answer))
            }
            // The original server's reader dies on an empty message; ours ignores it.
            (Some(Request::Message("")), Some(_)) => Applied::read_only(Reply::default()),
            (Some(Request::Message(text)), Some(alias)) => {
                self.message(&alias, text, core, caller, now)
            }
            (Some(Request::Exit), Some(alias)) => match core.leave_room(session) {
                Some(room) => Applied::read_only(
                    Reply::bytes(line(&format!("Has salido de la sala {room}.")))
                        .console(format!("ROOMS {alias} LEAVES {room}")),
                ),
                None => Applied::read_only(error(caller, "No estás en ninguna sala.")),
            },
        }
    }

    fn established(&self, session: SessionId) -> bool {
        self.users.contains_key(&session)
    }

    fn slow_down(&self, _session: SessionId) -> Option<Vec<u8>> {
        Some(line("ERROR: Demasiados mensajes; más despacio."))
    }

    fn encode(&mut self, _session: SessionId, notice: &Notice) -> Option<Shared> {
        match notice {
            Notice::Private { .. } => {
                notice_text(notice, &mut self.scratch);
                Some(shared_line(&self.scratch))
            }
            Notice::Ended(why) => Some(
                line(match why {
                    Ending::Unregistered => "ERROR: Usuario dado de baja.",
                    Ending::Disconnected => "ERROR: Desconectado desde el messenger.",
                })
                .into(),
            ),
            Notice::RoomMessage { .. }
            | Notice::JoinedRoom { .. }
            | Notice::LeftRoom { .. }
            | Notice::LeftChat { .. } => {
                let scratch = &mut self.scratch;
                Some(self.memo.get_or(notice, 0, || {
                    notice_text(notice, scratch);
                    line(scratch)
                }))
            }
            _ => None,
        }
    }

    fn finish(&mut self, ticket: Ticket, result: storage::Result<Finished>) -> Applied {
        match self.waiting.remove(&ticket) {
            Some(Waiting::Login { caller, name }) => self.joined(&caller, &name, result),
            Some(Waiting::Password { caller, removed }) => password_set(&caller, removed, result),
            Some(Waiting::Key { caller, room }) => key_set(&caller, &room, result),
            Some(Waiting::Room {
                caller,
                alias,
                room,
                left,
            }) => entered(&caller, &alias, &room, left, result),
            Some(Waiting::Message { caller, alias }) => said(&caller, &alias, result),
            None => Applied::read_only(
                Reply::default().diagnostic(format!("rooms: no request waits for ticket {ticket}")),
            ),
        }
    }

    fn closed(&mut self, session: SessionId, core: &mut Core) -> Option<String> {
        let alias = self.users.remove(&session);
        // Also when its login is still under way: the name is free again.
        core.logout(session);
        Some(format!("ROOMS LOGOUT {}", alias?))
    }
}

/// Writes into `out` (emptied first) the text of the line that tells a rooms session about
/// `notice`, if it hears of such things (else leaves it empty).
fn notice_text(notice: &Notice, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    // Writing to a String does not fail.
    let _ = match notice {
        Notice::Private { from, text, .. } => {
            write!(out, "{from} (privado): {}", String::from_utf8_lossy(text))
        }
        Notice::RoomMessage { from, text } => write!(out, "{from}: {text}"),
        Notice::JoinedRoom { user } => write!(out, "{user} se ha unido a la sala."),
        Notice::LeftRoom { user } => write!(out, "{user} ha salido de la sala."),
        Notice::LeftChat { user } => write!(out, "{user} ha salido del chat."),
        Notice::UserList(_)
        | Notice::Ended(_)
        | Notice::Broadcast { .. }
        | Notice::CanvasBoard { .. }
        | Notice::CanvasChanges { .. } => Ok(()),
    };
}

impl Interests {
    /// A rooms session hears its room only.
    pub const ROOMS: Interests = Interests {
        user_list: false,
        broadcasts: false,
        privates_only_in_a_room: true,
    };
}
