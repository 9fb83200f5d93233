//! What the desktop windows share: the conversation pane, the login dialog of the chat and
//! the rooms, the status line, and the worker thread that connects, logs in and writes for
//! the chat and rooms windows. The messenger's window ([`crate::gui`]) uses the pane too.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;

use fltk::app;
use fltk::button::{Button, ReturnButton};
use fltk::enums::{Align, CallbackTrigger, Color, Font, FrameType};
use fltk::frame::Frame;
use fltk::group::Flex;
use fltk::input::{Input, SecretInput};
use fltk::prelude::*;
use fltk::text::{TextBuffer, TextDisplay};
use fltk::window::Window;

/// A read-only pane of lines, wrapped at its edge.
pub fn pane(label: &str) -> (TextDisplay, TextBuffer) {
    let mut display = TextDisplay::default().with_label(label);
    // Long messages wrap at the pane's edge instead of running out of sight.
    display.wrap_mode(fltk::text::WrapMode::AtBounds, 0);
    display.set_align(Align::Top | Align::Left);
    display.set_text_font(Font::Courier);
    display.set_text_size(13);
    let buffer = TextBuffer::default();
    display.set_buffer(buffer.clone());
    (display, buffer)
}

/// Adds `line` at the end of `display` and scrolls to it. Control characters from the
/// network (a server of somebody else's may send them) are shown escaped, never acted on.
pub fn append(display: &mut TextDisplay, line: &str) {
    if let Some(mut buffer) = display.buffer() {
        buffer.append(&wire::escape_controls(line));
        buffer.append("\n");
        let lines = display.count_lines(0, buffer.length(), true);
        display.scroll(lines, 0);
    }
}

/// The text of a pane, for tests and screenshots.
pub fn pane_text(pane: &TextDisplay) -> String {
    pane.buffer().map(|b| b.text()).unwrap_or_default()
}

/// The grey line at the bottom of a window that says how things stand.
pub fn status_line(text: &str) -> Frame {
    let mut status = Frame::default().with_label(text);
    status.set_align(Align::Left | Align::Inside);
    status.set_frame(FrameType::FlatBox);
    status.set_label_color(Color::from_rgb(90, 90, 90));
    status
}

/// The input line of a conversation: Return sends (its callback), even when it is empty.
pub fn message_input() -> Input {
    let mut input = Input::default();
    input.set_trigger(CallbackTrigger::EnterKeyAlways);
    input
}

/// A small dialog of a name and a secret: the login of the chat and the rooms windows (a
/// user's name and password), and the key of a room.
#[derive(Clone)]
pub struct LoginDialog {
    pub window: Window,
    pub name: Input,
    pub password: SecretInput,
    pub error: Frame,
    pub submit: ReturnButton,
}

impl LoginDialog {
    /// The login dialog: `Nombre`, `Contraseña`, `Entrar`.
    pub fn login(title: &str) -> LoginDialog {
        LoginDialog::build(title, "Nombre", "Contraseña")
    }

    pub fn build(title: &str, name_label: &str, secret_label: &str) -> LoginDialog {
        let mut window = Window::default().with_size(400, 190).with_label(title);
        window.make_modal(true);
        let mut col = Flex::default_fill().column();
        col.set_margin(12);
        col.set_pad(8);
        let labelled = |label: &str| labelled_row(label, 100);
        let row = labelled(name_label);
        let name = Input::default();
        row.end();
        col.fixed(&row, 28);
        let row = labelled(secret_label);
        let password = SecretInput::default();
        row.end();
        col.fixed(&row, 28);
        let mut error = Frame::default();
        error.set_label_color(Color::Red);
        error.set_align(Align::Left | Align::Inside | Align::Wrap);
        let mut buttons = Flex::default().row();
        Frame::default();
        let submit = ReturnButton::default().with_label("Entrar");
        buttons.fixed(&submit, 110);
        buttons.end();
        col.fixed(&buttons, 30);
        col.end();
        window.end();
        LoginDialog {
            window,
            name,
            password,
            error,
            submit,
        }
    }

    /// Shows the dialog with `why` (empty: nothing went wrong), the first empty field
    /// focused.
    pub fn open(&mut self, why: &str) {
        self.error.set_label(why);
        self.window.show();
        let _ = if self.name.value().is_empty() {
            self.name.take_focus()
        } else {
            self.password.take_focus()
        };
    }

    /// The name (not empty) and the secret typed (None when left empty).
    pub fn values(&self) -> Result<(String, Option<String>), String> {
        let name = self.name.value().trim().to_string();
        if name.is_empty() {
            return Err("Escribe un nombre.".into());
        }
        let secret = Some(self.password.value()).filter(|p| !p.is_empty());
        Ok((name, secret))
    }

    /// The user's name, if a valid one (docs/text.md), and password.
    pub fn login_values(&self) -> Result<(String, Option<String>), String> {
        let (name, password) = self.values()?;
        wire::validate_name(name.as_bytes()).map_err(|e| format!("Nombre: {e}."))?;
        Ok((name, password))
    }
}

/// A row of a dialog that starts with `label` in a column `width` wide; the caller adds the
/// field and ends it.
pub fn labelled_row(label: &str, width: i32) -> Flex {
    let mut row = Flex::default().row();
    let caption = Frame::default()
        .with_label(label)
        .with_align(Align::Left | Align::Inside);
    row.fixed(&caption, width);
    row
}

/// A button of a fixed width in `row`.
pub fn button(row: &mut Flex, label: &str, width: i32) -> Button {
    let button = Button::default().with_label(label);
    row.fixed(&button, width);
    button
}

/// How many events from the network may wait for a window; a reader that gets ahead waits
/// (and so does the server behind it) rather than grow the queue.
const WINDOW_QUEUE: usize = 4096;

/// The sending side of a channel from the network threads to a window: it wakes FLTK's loop.
/// (FLTK's own `app::channel` is one queue for the whole process, whose receivers drop what
/// is not of their type: two windows in one process would lose each other's events.)
pub struct ToWindow<T>(mpsc::SyncSender<T>);

impl<T> Clone for ToWindow<T> {
    fn clone(&self) -> Self {
        ToWindow(self.0.clone())
    }
}

impl<T: Send> ToWindow<T> {
    /// Queues `event` for the window (nothing if it is gone) and wakes its loop.
    pub fn send(&self, event: T) {
        let _ = self.0.send(event);
        app::awake();
    }
}

/// A bounded channel to a window, whose loop drains the receiver.
pub fn to_window<T>() -> (ToWindow<T>, mpsc::Receiver<T>) {
    let (sender, receiver) = mpsc::sync_channel(WINDOW_QUEUE);
    (ToWindow(sender), receiver)
}

/// What a chat or rooms window asks of its worker thread.
pub enum Command {
    Login {
        name: String,
        password: Option<String>,
    },
    /// A message or line of the protocol, as it goes on the wire.
    Say(String),
    Quit,
}

/// A connection logged in, as a window's worker holds it.
pub trait Connection {
    /// Writes a message or line of the protocol.
    fn say(&mut self, message: &str) -> std::io::Result<()>;
    /// Stops its reader speaking to the window and closes it; `goodbye`: with the protocol's
    /// goodbye first.
    fn end(self, goodbye: bool);
}

/// The worker thread of a chat or rooms window: logs in (`log_in(name, password,
/// keep_waiting)`, which asks `keep_waiting` while the answer does not come), writes, one
/// command at a time. A Login or Quit that comes while a login waits is done next (the lines
/// typed meanwhile are dropped); a write that fails ends the connection and is told to
/// `lost`. The worker lives as long as the window's sender.
pub fn spawn_worker<C, L>(
    mut log_in: L,
    lost: impl Fn(String) + Send + 'static,
) -> mpsc::Sender<Command>
where
    C: Connection,
    L: FnMut(&str, Option<String>, &mut dyn FnMut() -> bool) -> Option<C> + Send + 'static,
{
    let (commands, queue) = mpsc::channel::<Command>();
    std::thread::spawn(move || {
        let mut current: Option<C> = None;
        let mut next: Option<Command> = None;
        loop {
            let command = match next.take() {
                Some(command) => command,
                None => match queue.recv() {
                    Ok(command) => command,
                    Err(_) => return,
                },
            };
            match command {
                Command::Login { name, password } => {
                    if let Some(old) = current.take() {
                        old.end(true);
                    }
                    current = log_in(&name, password, &mut || {
                        next = queue.try_iter().find(|command| {
                            matches!(command, Command::Login { .. } | Command::Quit)
                        });
                        next.is_none()
                    });
                }
                Command::Say(message) => {
                    let Some(connection) = current.as_mut() else {
                        continue;
                    };
                    if let Err(e) = connection.say(&message) {
                        if let Some(gone) = current.take() {
                            gone.end(false);
                        }
                        lost(format!("Desconectado del servidor: {e}"));
                    }
                }
                Command::Quit => {
                    if let Some(old) = current.take() {
                        old.end(true);
                    }
                    return;
                }
            }
        }
    });
    commands
}

/// Opens a chat or rooms window (`open`) and runs FLTK's loop until `pump` says it closed.
/// Without a display, says that `client FLAG` without --window is the console client.
pub fn run_until_closed<W>(
    flag: &str,
    open: impl FnOnce() -> W,
    pump: fn(&mut W) -> bool,
) -> Result<(), String> {
    if !crate::gui::display_available() {
        return Err(format!(
            "no display found (DISPLAY is unset or unreachable): `client {flag}` without \
             --window is the console client"
        ));
    }
    let app = app::App::default();
    let mut window = open();
    while app.wait() {
        if pump(&mut window) {
            break;
        }
    }
    Ok(())
}

/// What the chat and rooms windows do with their login dialog and close box: the dialog's
/// button logs in as typed (`status` says so); closing the window, or the dialog while
/// nobody (`me`) is logged in, says goodbye and closes the window.
pub fn wire_login_and_close(
    window: &Window,
    login: &LoginDialog,
    status: &Frame,
    me: &Rc<RefCell<Option<String>>>,
    commands: &mpsc::Sender<Command>,
) {
    login.submit.clone().set_callback({
        let mut dialog = login.clone();
        let commands = commands.clone();
        let mut status = status.clone();
        move |_| match dialog.login_values() {
            Ok((name, password)) => {
                dialog.window.hide();
                status.set_label("Entrando…");
                let _ = commands.send(Command::Login { name, password });
            }
            Err(why) => dialog.error.set_label(&why),
        }
    });
    window.clone().set_callback({
        let commands = commands.clone();
        move |window| {
            if app::event() == fltk::enums::Event::Close {
                let _ = commands.send(Command::Quit);
                window.hide();
            }
        }
    });
    login.window.clone().set_callback({
        let (commands, me, window) = (commands.clone(), Rc::clone(me), window.clone());
        move |dialog| {
            dialog.hide();
            if me.borrow().is_none() {
                let _ = commands.send(Command::Quit);
                window.clone().hide();
            }
        }
    });
}
