//! The chat's desktop window (`client --chat --window`): who is online on the left, the
//! conversation on the right (broadcasts, private messages marked as such, the history the
//! server sends at login), an input line at the bottom. Choosing a user in the list sends the
//! next lines to that user alone; `(todos)` goes back to everybody.
//!
//! The network runs on threads of its own, as in the canvas window: a worker that connects,
//! logs in and writes, and the [`Link`]'s reader; both report through an FLTK channel, so the
//! window opens at once and stays responsive when the server is slow, dead or gone, and says
//! so in its status line.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use fltk::browser::HoldBrowser;
use fltk::button::Button;
use fltk::enums::Align;
use fltk::frame::Frame;
use fltk::group::Flex;
use fltk::input::Input;
use fltk::prelude::*;
use fltk::text::TextDisplay;
use fltk::window::Window;

use super::{FromServer, Incoming, Link, Login};
use crate::protocol::ServerLink;
use crate::window_kit::{self, append, Command, LoginDialog, ToWindow};

/// How long a login may go unanswered before the window says the server does not answer
/// (it keeps waiting).
const LOGIN_PATIENCE: Duration = Duration::from_secs(3);

/// The first line of the user list: everybody (a broadcast).
const EVERYBODY: &str = "(todos)";

/// What the worker and the reader tell the window.
#[derive(Debug, Clone)]
pub enum ChatEvent {
    /// For the status line.
    Note(String),
    LoggedIn(String),
    /// The server refused the name; `with_password` says whether one was sent.
    Refused {
        name: String,
        with_password: bool,
    },
    /// No connection, or it ended: why.
    Lost(String),
    Server(Incoming),
}

pub struct ChatWindow {
    pub window: Window,
    /// `(todos)`, then who is online.
    pub users: HoldBrowser,
    pub conversation: TextDisplay,
    /// Whom the input line goes to.
    pub to: Frame,
    pub input: Input,
    pub send: Button,
    pub status: Frame,
    pub login: LoginDialog,
    /// The name logged in, once the server accepted it.
    pub me: Rc<RefCell<Option<String>>>,
    /// The user chosen in the list (None: everybody).
    pub target: Rc<RefCell<Option<String>>>,
    /// Who is online, as the list shows them after `(todos)`.
    pub online: Rc<RefCell<Vec<String>>>,
    /// Why the last login was refused, when the server said.
    refusal: Option<String>,
    /// No name was given: the login dialog opens with the window.
    ask_name: bool,
    commands: mpsc::Sender<Command>,
    receiver: mpsc::Receiver<ChatEvent>,
}

impl ChatWindow {
    /// Builds the window and starts the worker; with `user` it logs in at once, else the
    /// login dialog asks (once the window is shown: [`ChatWindow::show`]).
    pub fn build(server: ServerLink, user: Option<String>) -> ChatWindow {
        let (ui, receiver) = window_kit::to_window::<ChatEvent>();
        let commands = spawn_worker(server.clone(), ui);

        let mut window = Window::default().with_size(900, 600).with_label("Chat");
        window.set_xclass("messenger-chat");
        let mut root = Flex::default_fill().column();
        root.set_margin(8);
        root.set_pad(6);
        let mut middle = Flex::default().row();
        middle.set_pad(8);
        let mut left = Flex::default().column();
        let caption = Frame::default()
            .with_label("Conectados")
            .with_align(Align::Left | Align::Inside);
        left.fixed(&caption, 20);
        let mut users = HoldBrowser::default();
        users.add(EVERYBODY);
        users.select(1);
        left.end();
        middle.fixed(&left, 200);
        let (conversation, _) = window_kit::pane("");
        middle.end();
        let mut bottom = Flex::default().row();
        bottom.set_pad(6);
        let to = Frame::default()
            .with_label("Para: todos")
            .with_align(Align::Left | Align::Inside);
        bottom.fixed(&to, 160);
        let mut input = window_kit::message_input();
        let mut send = window_kit::button(&mut bottom, "Enviar", 90);
        bottom.end();
        root.fixed(&bottom, 30);
        let status =
            window_kit::status_line(&format!("Conectando con {}:{}…", server.host, server.port));
        root.fixed(&status, 22);
        root.end();
        window.end();
        window.resizable(&root);
        window.size_range(600, 400, 0, 0);
        input.deactivate();
        send.deactivate();

        let mut chat = ChatWindow {
            window,
            users,
            conversation,
            to,
            input,
            send,
            status,
            login: LoginDialog::login("Entrar al chat"),
            me: Rc::new(RefCell::new(None)),
            target: Rc::new(RefCell::new(None)),
            online: Rc::new(RefCell::new(Vec::new())),
            refusal: None,
            ask_name: user.is_none(),
            commands,
            receiver,
        };
        chat.wire_callbacks();
        match user {
            Some(name) => chat.ask(Command::Login {
                name,
                password: None,
            }),
            None => chat.status.set_label("Escribe tu nombre para entrar."),
        }
        chat
    }

    /// Shows the window, and the login dialog if nobody is logging in yet.
    pub fn show(&mut self) {
        self.window.show();
        if self.ask_name {
            self.ask_name = false;
            self.login.open("");
        }
    }

    fn ask(&self, command: Command) {
        // The worker lives as long as the window.
        let _ = self.commands.send(command);
    }

    /// Leaves (the protocol's goodbye) and closes the window, as its close box does.
    pub fn close(&mut self) {
        self.ask(Command::Quit);
        self.login.window.hide();
        self.window.hide();
    }

    fn wire_callbacks(&mut self) {
        window_kit::wire_login_and_close(
            &self.window,
            &self.login,
            &self.status,
            &self.me,
            &self.commands,
        );
        let say = {
            let commands = self.commands.clone();
            let target = Rc::clone(&self.target);
            let me = Rc::clone(&self.me);
            let (input, conversation) = (self.input.clone(), self.conversation.clone());
            let status = self.status.clone();
            move || {
                let (mut input, mut conversation) = (input.clone(), conversation.clone());
                let text = input.value();
                if text.trim().is_empty() || me.borrow().is_none() {
                    return;
                }
                let to = target.borrow().clone();
                let message = match &to {
                    Some(to) => format!("MESSAGE|{to}|{text}"),
                    None => format!("BROADCAST|{text}"),
                };
                // A message is 1024 bytes at most on the wire (docs/chat.md): say so rather
                // than cut a character in two.
                if message.len() > super::MAX_MESSAGE {
                    status
                        .clone()
                        .set_label(&format!("Mensaje demasiado largo: {} bytes.", text.len()));
                    return;
                }
                if let Some(to) = &to {
                    // The server does not echo a private message: the window shows it.
                    append(&mut conversation, &format!("[privado] tú → {to}: {text}"));
                }
                let _ = commands.send(Command::Say(message));
                input.set_value("");
                let _ = input.take_focus();
            }
        };
        let say = Rc::new(say);
        self.input.set_callback({
            let say = Rc::clone(&say);
            move |_| say()
        });
        self.send.set_callback(move |_| say());
        self.users.set_callback({
            let (target, online) = (Rc::clone(&self.target), Rc::clone(&self.online));
            let mut to = self.to.clone();
            let mut input = self.input.clone();
            move |users| {
                // Line 1 is everybody; line n + 2 the n-th user online.
                let chosen = usize::try_from(users.value() - 2)
                    .ok()
                    .and_then(|at| online.borrow().get(at).cloned());
                to.set_label(&match &chosen {
                    Some(name) => format!("Para: {name} (privado)"),
                    None => "Para: todos".to_string(),
                });
                *target.borrow_mut() = chosen;
                let _ = input.take_focus();
            }
        });
    }

    /// Handles what the worker and the reader sent. Returns true once the window closed.
    pub fn pump(&mut self) -> bool {
        while let Ok(event) = self.receiver.try_recv() {
            match event {
                ChatEvent::Note(text) => self.status.set_label(&text),
                ChatEvent::LoggedIn(name) => {
                    self.status.set_label(&format!("Conectado como {name}."));
                    self.window.set_label(&format!("Chat - {name}"));
                    *self.me.borrow_mut() = Some(name);
                    self.input.activate();
                    self.send.activate();
                    let _ = self.input.take_focus();
                }
                ChatEvent::Refused {
                    name,
                    with_password,
                } => {
                    let why = match (self.refusal.take(), with_password) {
                        (Some(reason), _) => format!("No se pudo entrar como {name}: {reason}."),
                        (None, false) => {
                            format!("No se pudo entrar como {name}: en uso, o tiene contraseña.")
                        }
                        (None, true) => format!("No se pudo entrar como {name}."),
                    };
                    self.status.set_label(&why);
                    self.login.name.set_value(&name);
                    self.login.open(&why);
                }
                ChatEvent::Lost(why) => self.lost(&why),
                ChatEvent::Server(incoming) => self.heard(incoming),
            }
        }
        !self.window.shown()
    }

    fn lost(&mut self, why: &str) {
        self.status.set_label(why);
        self.input.deactivate();
        self.send.deactivate();
        if let Some(name) = self.me.borrow_mut().take() {
            self.login.name.set_value(&name);
            append(&mut self.conversation, &format!("— {why}"));
        }
        self.login.open(why);
    }

    fn heard(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Users(names) => self.list_users(names),
            Incoming::Broadcast { from, text } => {
                append(&mut self.conversation, &format!("{from}: {text}"))
            }
            Incoming::Private { from, text } => {
                append(&mut self.conversation, &format!("[privado] {from}: {text}"))
            }
            Incoming::Refused(reason) => self.refusal = Some(reason),
            Incoming::Said(line) => append(&mut self.conversation, &line),
        }
    }

    /// Fills the list again, keeping the user chosen if still online.
    fn list_users(&mut self, names: Vec<String>) {
        self.users.clear();
        self.users.add(EVERYBODY);
        for name in &names {
            // `@` starts a format code in a browser's line: `@.` shows the rest as it is.
            self.users
                .add(&format!("@.{}", wire::escape_controls(name)));
        }
        let chosen = self.target.borrow().clone();
        let line = chosen
            .and_then(|name| names.iter().position(|n| *n == name))
            .map_or(1, |at| at as i32 + 2);
        *self.online.borrow_mut() = names;
        self.users.select(line);
        if line == 1 {
            *self.target.borrow_mut() = None;
            self.to.set_label("Para: todos");
        }
    }
}

/// The worker thread: connects, logs in and writes, one command at a time.
fn spawn_worker(server: ServerLink, ui: ToWindow<ChatEvent>) -> mpsc::Sender<Command> {
    let lost = ui.clone();
    window_kit::spawn_worker(
        move |name, password, keep_waiting| {
            let password = password.or_else(|| server.password.clone());
            log_in(&server, name, password, &ui, keep_waiting)
        },
        move |why| lost.send(ChatEvent::Lost(why)),
    )
}

/// A chat session logged in: its link, and the flag that lets its reader speak to the window.
struct LoggedIn {
    link: Link,
    live: Arc<AtomicBool>,
}

impl window_kit::Connection for LoggedIn {
    fn say(&mut self, message: &str) -> std::io::Result<()> {
        self.link.send(message)
    }

    fn end(self, goodbye: bool) {
        self.live.store(false, Ordering::SeqCst);
        if goodbye {
            self.link.disconnect();
        } else {
            self.link.close();
        }
    }
}

/// Connects and logs in as `name`; the session if the server accepted.
/// While the answer does not come the window is told so, and `keep_waiting` asked.
fn log_in(
    server: &ServerLink,
    name: &str,
    password: Option<String>,
    ui: &ToWindow<ChatEvent>,
    keep_waiting: &mut dyn FnMut() -> bool,
) -> Option<LoggedIn> {
    let place = format!("{}:{}", server.host, server.port);
    ui.send(ChatEvent::Note(format!("Conectando con {place}…")));
    let live = Arc::new(AtomicBool::new(true));
    let sink = {
        let (ui, live) = (ui.clone(), live.clone());
        move |from: FromServer| {
            if !live.load(Ordering::SeqCst) {
                return;
            }
            match from {
                FromServer::Message(message) => {
                    if let Some(incoming) = Incoming::parse(message) {
                        ui.send(ChatEvent::Server(incoming));
                    }
                }
                FromServer::Closed => {
                    live.store(false, Ordering::SeqCst);
                    ui.send(ChatEvent::Lost("Desconectado del servidor.".into()));
                }
            }
        }
    };
    let mut link = match Link::open(server, sink) {
        Ok(link) => link,
        Err(e) => {
            ui.send(ChatEvent::Lost(format!(
                "El servidor {place} no contesta: {e}."
            )));
            return None;
        }
    };
    let login = link.login(name, password.as_deref(), LOGIN_PATIENCE, || {
        let waiting = keep_waiting();
        if waiting {
            ui.send(ChatEvent::Note(format!(
                "El servidor {place} no contesta; esperando…"
            )));
        }
        waiting
    });
    let refused = |link: Link| {
        live.store(false, Ordering::SeqCst);
        link.close();
    };
    match login {
        Ok(Login::Accepted) => match link.agree_framing() {
            Ok(true) => {
                ui.send(ChatEvent::LoggedIn(name.to_string()));
                Some(LoggedIn { link, live })
            }
            // The reader has said so.
            _ => None,
        },
        Ok(Login::Refused) => {
            refused(link);
            ui.send(ChatEvent::Refused {
                name: name.to_string(),
                with_password: password.is_some(),
            });
            None
        }
        // The reader has said so.
        Ok(Login::Closed) => None,
        Ok(Login::GaveUp) => {
            refused(link);
            None
        }
        Err(e) => {
            refused(link);
            ui.send(ChatEvent::Lost(format!("Desconectado del servidor: {e}")));
            None
        }
    }
}

/// Runs the window until it is closed.
pub fn run(server: &ServerLink, user: Option<String>) -> Result<(), String> {
    window_kit::run_until_closed(
        "--chat",
        || {
            let mut chat = ChatWindow::build(server.clone(), user);
            chat.show();
            chat
        },
        ChatWindow::pump,
    )
}
