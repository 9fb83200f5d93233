//! The rooms' desktop window (`client --rooms --window`): the rooms with their members on
//! the left (refreshed every [`REFRESH_EVERY`] and on Actualizar; a click enters one), a field
//! to create or enter a room by name, Salir de la sala, the conversation on the right, and
//! an input line with the original client's emoji buttons (LOVE, LIKE, DISLIKE) below. One's
//! own lines are shown as the original shows them, `Tú: <text>`.
//!
//! The network runs on threads of its own: a worker that connects, joins and writes, and a
//! reader; both report through an FLTK channel, so the window opens at once and stays
//! responsive when the server is slow, dead or gone, and says so in its status line.
//!
//! The answer to `LIST_ROOMS` (`Salas disponibles:` and a `name (n)` line per room) has no
//! end marker and may come between a room's lines. Both our server and the original write it
//! in one write, so the reader takes the `name (n)` lines that follow the header up to the
//! end of the read that ends at a line's end, or up to the first line of another shape.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use fltk::app;
use fltk::browser::HoldBrowser;
use fltk::button::Button;
use fltk::enums::Align;
use fltk::frame::Frame;
use fltk::group::Flex;
use fltk::input::Input;
use fltk::prelude::*;
use fltk::text::TextDisplay;
use fltk::window::Window;

use super::{emoji, joined, left, RoomEntry, EMOJI, KEY_NEEDED, PASSWORD_NEEDED, ROOM_LIST};
use crate::link::{self, Stream};
use crate::protocol::ServerLink;
use crate::window_kit::{self, append, Command, Connection, LoginDialog, ToWindow};

/// How often the room list is asked for again.
pub const REFRESH_EVERY: f64 = 3.0;

/// Longest line of the protocol, its `\n` aside.
const MAX_LINE: usize = 1024;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a JOIN may go unanswered before the window says the server does not answer (it
/// keeps waiting).
const LOGIN_PATIENCE: Duration = Duration::from_secs(3);

/// What the worker and the reader tell the window.
#[derive(Debug, Clone)]
pub enum RoomsEvent {
    /// For the status line.
    Note(String),
    LoggedIn(String),
    /// The server refused the JOIN: its answer, and whether a password was sent.
    Refused {
        name: String,
        answer: String,
        with_password: bool,
    },
    /// No connection, or it ended: why.
    Lost(String),
    Joined(String),
    Left(String),
    Rooms(Vec<RoomEntry>),
    /// Any other line: a room's message, somebody coming or going, an error.
    Line(String),
}

pub struct RoomsWindow {
    pub window: Window,
    pub rooms: HoldBrowser,
    pub refresh: Button,
    /// A room's name, to create it or enter it.
    pub room_name: Input,
    pub enter: Button,
    pub leave: Button,
    pub conversation: TextDisplay,
    pub input: Input,
    pub send: Button,
    /// LOVE, LIKE, DISLIKE.
    pub emoji: Vec<Button>,
    pub status: Frame,
    pub login: LoginDialog,
    /// Asks for the key of a room that has one (docs/accounts.md).
    pub key: LoginDialog,
    pub me: Rc<RefCell<Option<String>>>,
    /// The room we are in.
    pub room: Rc<RefCell<Option<String>>>,
    /// The rooms as last listed.
    pub listed: Rc<RefCell<Vec<RoomEntry>>>,
    /// The room asked for last, for its key if it has one.
    asked_room: Rc<RefCell<Option<String>>>,
    ask_name: bool,
    commands: mpsc::Sender<Command>,
    receiver: mpsc::Receiver<RoomsEvent>,
}

impl RoomsWindow {
    /// Builds the window and starts the worker; with `user` it joins at once, else the login
    /// dialog asks (once the window is shown: [`RoomsWindow::show`]).
    pub fn build(server: ServerLink, user: Option<String>) -> RoomsWindow {
        let (ui, receiver) = window_kit::to_window::<RoomsEvent>();
        let commands = spawn_worker(server.clone(), ui);

        let mut window = Window::default().with_size(960, 640).with_label("Wassop");
        window.set_xclass("messenger-rooms");
        let mut root = Flex::default_fill().column();
        root.set_margin(8);
        root.set_pad(6);
        let mut middle = Flex::default().row();
        middle.set_pad(8);
        let mut left_side = Flex::default().column();
        left_side.set_pad(4);
        let caption = Frame::default()
            .with_label("Salas")
            .with_align(Align::Left | Align::Inside);
        left_side.fixed(&caption, 20);
        let rooms = HoldBrowser::default();
        let mut by_name = Flex::default().row();
        let room_name = Input::default();
        let enter = window_kit::button(&mut by_name, "Crear / entrar", 110);
        by_name.end();
        left_side.fixed(&by_name, 28);
        let actions = Flex::default().row();
        let refresh = Button::default().with_label("Actualizar");
        let leave = Button::default().with_label("Salir de la sala");
        actions.end();
        left_side.fixed(&actions, 28);
        left_side.end();
        middle.fixed(&left_side, 280);
        let (conversation, _) = window_kit::pane("");
        middle.end();
        let mut bottom = Flex::default().row();
        bottom.set_pad(6);
        let input = window_kit::message_input();
        let send = window_kit::button(&mut bottom, "Enviar", 90);
        let emoji: Vec<Button> = EMOJI
            .iter()
            .map(|(name, text)| {
                let mut button = window_kit::button(&mut bottom, name, 80);
                button.set_tooltip(text);
                button
            })
            .collect();
        bottom.end();
        root.fixed(&bottom, 30);
        let status =
            window_kit::status_line(&format!("Conectando con {}:{}…", server.host, server.port));
        root.fixed(&status, 22);
        root.end();
        window.end();
        window.resizable(&root);
        window.size_range(640, 400, 0, 0);

        let mut rooms = RoomsWindow {
            window,
            rooms,
            refresh,
            room_name,
            enter,
            leave,
            conversation,
            input,
            send,
            emoji,
            status,
            login: LoginDialog::login("Entrar en Wassop"),
            key: LoginDialog::build("Sala con clave", "Sala", "Clave"),
            me: Rc::new(RefCell::new(None)),
            room: Rc::new(RefCell::new(None)),
            listed: Rc::new(RefCell::new(Vec::new())),
            asked_room: Rc::new(RefCell::new(None)),
            ask_name: user.is_none(),
            commands,
            receiver,
        };
        rooms.logged_in(false);
        rooms.wire_callbacks();
        match user {
            Some(name) => rooms.ask(Command::Login {
                name,
                password: None,
            }),
            None => rooms.status.set_label("Escribe tu nombre para entrar."),
        }
        rooms
    }

    /// Shows the window, and the login dialog if no name was given.
    pub fn show(&mut self) {
        self.window.show();
        if self.ask_name {
            self.ask_name = false;
            self.login.open("");
        }
        // The list refreshes itself while the window lives.
        let commands = self.commands.clone();
        let me = Rc::clone(&self.me);
        app::add_timeout3(REFRESH_EVERY, move |handle| {
            if me.borrow().is_some() {
                let _ = commands.send(Command::Say("LIST_ROOMS".into()));
            }
            app::repeat_timeout3(REFRESH_EVERY, handle);
        });
    }

    fn ask(&self, command: Command) {
        // The worker lives as long as the window.
        let _ = self.commands.send(command);
    }

    /// Leaves (the protocol's goodbye) and closes the window, as its close box does.
    pub fn close(&mut self) {
        self.ask(Command::Quit);
        self.login.window.hide();
        self.key.window.hide();
        self.window.hide();
    }

    /// What works only once logged in.
    fn logged_in(&mut self, yes: bool) {
        for button in [
            &mut self.refresh,
            &mut self.enter,
            &mut self.leave,
            &mut self.send,
        ]
        .into_iter()
        .chain(self.emoji.iter_mut())
        {
            if yes {
                button.activate();
            } else {
                button.deactivate();
            }
        }
        if yes {
            self.input.activate();
            self.room_name.activate();
        } else {
            self.input.deactivate();
            self.room_name.deactivate();
        }
    }

    fn wire_callbacks(&mut self) {
        window_kit::wire_login_and_close(
            &self.window,
            &self.login,
            &self.status,
            &self.me,
            &self.commands,
        );
        self.key.submit.set_callback({
            let mut dialog = self.key.clone();
            let commands = self.commands.clone();
            move |_| match dialog.values() {
                Ok((room, Some(key))) if !key.contains(' ') => {
                    dialog.window.hide();
                    let _ = commands.send(Command::Say(format!("ROOM_KEY {key} {room}")));
                }
                Ok(_) => dialog.error.set_label("La clave es una palabra."),
                Err(why) => dialog.error.set_label(&why),
            }
        });
        // Enters a room: `ROOM r` (a room that does not exist is created).
        let enter = {
            let commands = self.commands.clone();
            let asked = Rc::clone(&self.asked_room);
            move |name: &str| {
                let name = name.trim();
                if !name.is_empty() {
                    *asked.borrow_mut() = Some(name.to_string());
                    let _ = commands.send(Command::Say(format!("ROOM {name}")));
                }
            }
        };
        let enter = Rc::new(enter);
        self.enter.set_callback({
            let (enter, field) = (Rc::clone(&enter), self.room_name.clone());
            move |_| enter(&field.value())
        });
        self.rooms.set_callback({
            let (enter, listed, room) = (
                Rc::clone(&enter),
                Rc::clone(&self.listed),
                Rc::clone(&self.room),
            );
            let mut input = self.input.clone();
            move |browser| {
                let chosen = usize::try_from(browser.value() - 1)
                    .ok()
                    .and_then(|at| listed.borrow().get(at).map(|r| r.name.clone()));
                if let Some(name) = chosen {
                    if room.borrow().as_deref() != Some(name.as_str()) {
                        enter(&name);
                    }
                }
                let _ = input.take_focus();
            }
        });
        self.refresh.set_callback({
            let commands = self.commands.clone();
            move |_| {
                let _ = commands.send(Command::Say("LIST_ROOMS".into()));
            }
        });
        self.leave.set_callback({
            let commands = self.commands.clone();
            let room = Rc::clone(&self.room);
            move |_| {
                if let Some(name) = room.borrow().clone() {
                    let _ = commands.send(Command::Say(format!("EXIT {name}")));
                }
            }
        });
        // Sends a line to the room and shows it as the original client does.
        let say = {
            let commands = self.commands.clone();
            let room = Rc::clone(&self.room);
            let (conversation, status) = (self.conversation.clone(), self.status.clone());
            move |text: &str| {
                let (mut conversation, mut status) = (conversation.clone(), status.clone());
                if text.trim().is_empty() {
                    return false;
                }
                if room.borrow().is_none() {
                    status.set_label("Entra en una sala para escribir.");
                    return false;
                }
                // A line is 1024 bytes at most (docs/rooms.md); a longer one would end the
                // session.
                if "MESSAGE ".len() + text.len() > MAX_LINE {
                    status.set_label(&format!("Mensaje demasiado largo: {} bytes.", text.len()));
                    return false;
                }
                let _ = commands.send(Command::Say(format!("MESSAGE {text}")));
                append(&mut conversation, &format!("Tú: {text}"));
                true
            }
        };
        let say = Rc::new(say);
        let typed = {
            let say = Rc::clone(&say);
            let input = self.input.clone();
            move || {
                let mut input = input.clone();
                if say(&input.value()) {
                    input.set_value("");
                }
                let _ = input.take_focus();
            }
        };
        let typed = Rc::new(typed);
        self.input.set_callback({
            let typed = Rc::clone(&typed);
            move |_| typed()
        });
        self.send.set_callback(move |_| typed());
        for button in &mut self.emoji {
            let text = emoji(&button.label()).unwrap_or_default();
            let say = Rc::clone(&say);
            let mut input = self.input.clone();
            button.set_callback(move |_| {
                say(text);
                let _ = input.take_focus();
            });
        }
    }

    /// Handles what the worker and the reader sent. Returns true once the window closed.
    pub fn pump(&mut self) -> bool {
        while let Ok(event) = self.receiver.try_recv() {
            match event {
                RoomsEvent::Note(text) => self.status.set_label(&text),
                RoomsEvent::LoggedIn(name) => {
                    self.status
                        .set_label(&format!("Conectado como {name}. Elige una sala."));
                    self.window.set_label(&format!("Wassop - {name}"));
                    *self.me.borrow_mut() = Some(name);
                    self.logged_in(true);
                    let _ = self.input.take_focus();
                }
                RoomsEvent::Refused {
                    name,
                    answer,
                    with_password,
                } => {
                    self.login.name.set_value(&name);
                    let why = if answer == PASSWORD_NEEDED && !with_password {
                        format!("{name} tiene contraseña: escríbela.")
                    } else {
                        answer
                    };
                    self.status.set_label(&why);
                    self.login.open(&why);
                }
                RoomsEvent::Lost(why) => {
                    self.status.set_label(&why);
                    self.logged_in(false);
                    *self.room.borrow_mut() = None;
                    if let Some(name) = self.me.borrow_mut().take() {
                        self.login.name.set_value(&name);
                        append(&mut self.conversation, &format!("— {why}"));
                    }
                    self.login.open(&why);
                }
                RoomsEvent::Joined(room) => {
                    append(
                        &mut self.conversation,
                        &format!("Te has unido a la sala {room}."),
                    );
                    let me = self.me.borrow().clone().unwrap_or_default();
                    self.status.set_label(&format!("{me} en la sala {room}."));
                    *self.room.borrow_mut() = Some(room);
                    self.show_rooms();
                    self.ask(Command::Say("LIST_ROOMS".into()));
                }
                RoomsEvent::Left(room) => {
                    append(
                        &mut self.conversation,
                        &format!("Has salido de la sala {room}."),
                    );
                    *self.room.borrow_mut() = None;
                    self.status.set_label("Elige una sala.");
                    self.show_rooms();
                    self.ask(Command::Say("LIST_ROOMS".into()));
                }
                RoomsEvent::Rooms(list) => {
                    *self.listed.borrow_mut() = list;
                    self.show_rooms();
                }
                RoomsEvent::Line(line) => {
                    if line == KEY_NEEDED {
                        self.ask_key();
                    }
                    append(&mut self.conversation, &line);
                }
            }
        }
        !self.window.shown()
    }

    /// The room asked for has a key: asks for it (the dialog enters with it).
    fn ask_key(&mut self) {
        let Some(room) = self.asked_room.borrow().clone() else {
            return;
        };
        self.key.name.set_value(&room);
        self.key.password.set_value("");
        self.key.open(&format!("La sala {room} tiene clave."));
    }

    /// Fills the list again from the last one, the room we are in selected.
    fn show_rooms(&mut self) {
        self.rooms.clear();
        let current = self.room.borrow().clone();
        for (at, entry) in self.listed.borrow().iter().enumerate() {
            let mut line = format!("{} ({})", entry.name, entry.members);
            if entry.keyed {
                line.push_str(" [clave]");
            }
            // `@` starts a format code in a browser's line: `@.` shows the rest as it is.
            self.rooms
                .add(&format!("@.{}", wire::escape_controls(&line)));
            if current.as_deref() == Some(entry.name.as_str()) {
                self.rooms.select(at as i32 + 1);
            }
        }
    }
}

/// What the reader tells the worker: each read's text until the JOIN is accepted.
enum Answer {
    Read(String),
    Closed,
}

/// Reads the server. Until a JOIN is accepted each read is one answer (as the original
/// client reads them), for the worker; then lines, for the window.
fn read_server(
    mut stream: Stream,
    answers: mpsc::Sender<Answer>,
    ui: ToWindow<RoomsEvent>,
    live: Arc<AtomicBool>,
) {
    let say = |event: RoomsEvent| {
        if live.load(Ordering::SeqCst) {
            ui.send(event);
        }
    };
    let mut logged_in = false;
    let mut pending = Vec::new();
    let mut list: Option<Vec<RoomEntry>> = None;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => {
                let _ = answers.send(Answer::Closed);
                say(RoomsEvent::Lost("Desconectado del servidor.".into()));
                return;
            }
            Ok(n) => n,
        };
        if !logged_in {
            let answer = String::from_utf8_lossy(&chunk[..n]).trim_end().to_string();
            logged_in = answer == "OK";
            let _ = answers.send(Answer::Read(answer));
            continue;
        }
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&raw);
            let line = text.trim_end_matches(['\n', '\r']);
            if let Some(rooms) = &mut list {
                if let Some(entry) = RoomEntry::parse(line) {
                    rooms.push(entry);
                    continue;
                }
                say(RoomsEvent::Rooms(list.take().unwrap_or_default()));
            }
            if line == ROOM_LIST {
                list = Some(Vec::new());
            } else if let Some(room) = joined(line) {
                say(RoomsEvent::Joined(room.to_string()));
            } else if let Some(room) = left(line) {
                say(RoomsEvent::Left(room.to_string()));
            } else {
                say(RoomsEvent::Line(line.to_string()));
            }
        }
        // The list came in one write: a read that ends at a line's end ends it.
        if pending.is_empty() {
            if let Some(rooms) = list.take() {
                say(RoomsEvent::Rooms(rooms));
            }
        }
    }
}

/// A connection logged in: its writing side and the flag that lets its reader speak.
struct Joined {
    stream: Stream,
    live: Arc<AtomicBool>,
}

impl window_kit::Connection for Joined {
    fn say(&mut self, line: &str) -> std::io::Result<()> {
        self.stream.write_all(format!("{line}\n").as_bytes())
    }

    fn end(self, goodbye: bool) {
        self.live.store(false, Ordering::SeqCst);
        let mut stream = self.stream;
        if goodbye {
            let _ = stream.write_all(b"QUIT\n");
        }
        stream.close();
    }
}

/// The worker thread: connects, joins and writes, one command at a time.
fn spawn_worker(server: ServerLink, ui: ToWindow<RoomsEvent>) -> mpsc::Sender<Command> {
    let lost = ui.clone();
    window_kit::spawn_worker(
        move |name, password, keep_waiting| {
            let password = password.or_else(|| server.password.clone());
            join(&server, name, password, &ui, keep_waiting)
        },
        move |why| lost.send(RoomsEvent::Lost(why)),
    )
}

/// Connects and joins as `name`; the connection if the server accepted. While the answer
/// does not come the window is told so, and `keep_waiting` asked.
fn join(
    server: &ServerLink,
    name: &str,
    password: Option<String>,
    ui: &ToWindow<RoomsEvent>,
    keep_waiting: &mut dyn FnMut() -> bool,
) -> Option<Joined> {
    let place = format!("{}:{}", server.host, server.port);
    ui.send(RoomsEvent::Note(format!("Conectando con {place}…")));
    let connected = link::connect(&server.host, server.port, &server.tls, CONNECT_TIMEOUT)
        .and_then(|stream| Ok((stream.try_clone()?, stream)));
    let (reader, stream) = match connected {
        Ok(pair) => pair,
        Err(e) => {
            ui.send(RoomsEvent::Lost(format!(
                "El servidor {place} no contesta: {e}."
            )));
            return None;
        }
    };
    let live = Arc::new(AtomicBool::new(true));
    let (answers_tx, answers) = mpsc::channel();
    {
        let (ui, live) = (ui.clone(), live.clone());
        std::thread::spawn(move || read_server(reader, answers_tx, ui, live));
    }
    let mut joined = Joined { stream, live };
    let line = match &password {
        Some(password) => format!("JOIN {name} {password}\n"),
        None => format!("JOIN {name}\n"),
    };
    if let Err(e) = joined.stream.write_all(line.as_bytes()) {
        joined.end(false);
        ui.send(RoomsEvent::Lost(format!("Desconectado del servidor: {e}")));
        return None;
    }
    let answer = loop {
        match answers.recv_timeout(LOGIN_PATIENCE) {
            Ok(Answer::Read(answer)) => break answer,
            Err(mpsc::RecvTimeoutError::Timeout) if keep_waiting() => ui.send(RoomsEvent::Note(
                format!("El servidor {place} no contesta; esperando…"),
            )),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                joined.end(false);
                return None;
            }
            // The reader has said so.
            Ok(Answer::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    };
    if answer == "OK" {
        ui.send(RoomsEvent::LoggedIn(name.to_string()));
        let _ = joined.stream.write_all(b"LIST_ROOMS\n");
        return Some(joined);
    }
    joined.end(false);
    ui.send(RoomsEvent::Refused {
        name: name.to_string(),
        answer,
        with_password: password.is_some(),
    });
    None
}

/// Runs the window until it is closed.
pub fn run(server: &ServerLink, user: Option<String>) -> Result<(), String> {
    window_kit::run_until_closed(
        "--rooms",
        || {
            let mut rooms = RoomsWindow::build(server.clone(), user);
            rooms.show();
            rooms
        },
        RoomsWindow::pump,
    )
}
