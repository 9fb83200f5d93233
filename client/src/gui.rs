//! The desktop client of seed 000 sections 5-6: the seven buttons, the Dest/Message fields, the
//! register dialog, and two panes: `c>` lines on the left, `s>` lines on the right.
//!
//! All network work runs on one worker thread that owns the [`Session`]; results and pushes
//! come back through an FLTK channel, so the window never waits on the network.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{mpsc, Arc};

use fltk::app;
use fltk::button::Button;
use fltk::dialog::{FileDialogType, NativeFileChooser};
use fltk::enums::{Color, Event};
use fltk::frame::Frame;
use fltk::group::Flex;
use fltk::input::Input;
use fltk::output::Output;
use fltk::prelude::*;
use fltk::text::TextDisplay;
use fltk::window::Window;

use crate::session::{Command, Session, Sinks};
use crate::window_kit::{append, pane, status_line};
use crate::Endpoints;

/// What the worker and the listener tell the window.
#[derive(Debug, Clone)]
pub enum UiMsg {
    /// Result lines of a command, for the server pane; `quit` once the window may close.
    Result { lines: Vec<String>, quit: bool },
    /// A push: a message block or an ack.
    Incoming(Vec<String>),
    /// A diagnostic for the status bar.
    Note(String),
    /// A file transfer's progress: `(bytes so far, bytes in all)`.
    Progress(u64, u64),
    /// The server refused a name that may need a password: ask for it (the answer goes back
    /// to the session's thread, which waits for it).
    AskPassword(String, std::sync::mpsc::Sender<Option<String>>),
}

/// The REGISTER dialog: full name, alias and a birth date picked in a calendar ("Select
/// Date", as the seed's window has it).
#[derive(Clone)]
pub struct RegisterDialog {
    pub window: Window,
    pub full_name: Input,
    pub alias: Input,
    pub select_date: Button,
    pub date: Output,
    pub error: Frame,
    pub submit: Button,
}

pub struct Gui {
    pub window: Window,
    pub register: Button,
    pub unregister: Button,
    pub connect: Button,
    pub disconnect: Button,
    pub users: Button,
    pub send: Button,
    pub send_attach: Button,
    pub browse: Button,
    pub dest: Input,
    pub message: Input,
    pub file: Input,
    /// Where GET FILE saves the attachment named in File, fetched from the user in Dest.
    pub save_as: Input,
    pub get_file: Button,
    pub progress: fltk::misc::Progress,
    pub client_pane: TextDisplay,
    pub server_pane: TextDisplay,
    pub status: Frame,
    pub dialog: Rc<RefCell<RegisterDialog>>,
    /// The alias of the last REGISTER, which UNREGISTER/CONNECT/DISCONNECT use (seed 000 6.1).
    pub alias: Rc<RefCell<Option<String>>>,
    receiver: app::Receiver<UiMsg>,
}

/// True if an X display can be reached (FLTK would abort the process otherwise).
pub fn display_available() -> bool {
    let Ok(display) = std::env::var("DISPLAY") else {
        return false;
    };
    match display.strip_prefix(':') {
        // A local display `:N` or `:N.S` is a socket in /tmp/.X11-unix.
        Some(rest) => {
            let number = rest.split('.').next().unwrap_or("");
            std::path::Path::new(&format!("/tmp/.X11-unix/X{number}")).exists()
        }
        None => !display.is_empty(),
    }
}

pub fn run(endpoints: Endpoints) -> Result<(), String> {
    if !display_available() {
        return Err("no display found (DISPLAY is unset or unreachable). \
                    Use `client --console -s HOST -p PORT` for the console client."
            .into());
    }
    let app = app::App::default();
    let mut gui = Gui::build(endpoints);
    gui.window.show();
    while app.wait() {
        if gui.pump() {
            break;
        }
    }
    Ok(())
}

impl Gui {
    /// Builds the window and starts the worker thread.
    pub fn build(endpoints: Endpoints) -> Gui {
        let (ui_tx, receiver) = app::channel::<UiMsg>();
        let commands = spawn_worker(endpoints, ui_tx);

        let mut window = Window::default()
            .with_size(960, 620)
            .with_label("Messenger");
        window.set_xclass("messenger");
        let mut root = Flex::default_fill().column();
        root.set_margin(8);
        root.set_pad(6);

        let mut actions = Flex::default().row();
        actions.set_pad(6);
        let register = Button::default().with_label("REGISTER");
        let mut unregister = Button::default().with_label("UNREGISTER");
        let mut connect = Button::default().with_label("CONNECT");
        let mut disconnect = Button::default().with_label("DISCONNECT");
        let mut users = Button::default().with_label("CONNECTED USERS");
        actions.end();
        root.fixed(&actions, 32);

        let mut compose = Flex::default().row();
        compose.set_pad(6);
        let dest_label = Frame::default().with_label("Dest");
        let dest = Input::default();
        let message_label = Frame::default().with_label("Message");
        let message = Input::default();
        let mut send = Button::default().with_label("SEND");
        compose.fixed(&dest_label, 40);
        compose.fixed(&dest, 140);
        compose.fixed(&message_label, 70);
        compose.fixed(&send, 110);
        compose.end();
        root.fixed(&compose, 30);

        let mut attach = Flex::default().row();
        attach.set_pad(6);
        let file_label = Frame::default().with_label("File");
        let file = Input::default();
        let browse = Button::default().with_label("Browse…");
        let mut send_attach = Button::default().with_label("SENDATTACH");
        attach.fixed(&file_label, 40);
        attach.fixed(&browse, 90);
        attach.fixed(&send_attach, 110);
        attach.end();
        root.fixed(&attach, 30);

        let mut fetch = Flex::default().row();
        fetch.set_pad(6);
        let save_label = Frame::default().with_label("Save as");
        let save_as = Input::default();
        let mut progress = fltk::misc::Progress::default();
        progress.set_minimum(0.0);
        progress.set_maximum(100.0);
        progress.set_selection_color(Color::from_rgb(80, 140, 220));
        let mut get_file = Button::default().with_label("GET FILE");
        fetch.fixed(&save_label, 56);
        fetch.fixed(&progress, 90);
        fetch.fixed(&get_file, 110);
        fetch.end();
        root.fixed(&fetch, 30);

        let spacer = Frame::default();
        root.fixed(&spacer, 16);
        let mut panes = Flex::default().row();
        panes.set_pad(8);
        let (client_pane, _) = pane("Client");
        let (server_pane, _) = pane("Server");
        panes.end();

        let status = status_line("Register to begin.");
        root.fixed(&status, 22);
        root.end();
        window.end();
        window.resizable(&root);
        window.size_range(720, 420, 0, 0);

        for button in [
            &mut unregister,
            &mut connect,
            &mut disconnect,
            &mut users,
            &mut send,
            &mut send_attach,
            &mut get_file,
        ] {
            button.deactivate();
        }

        let dialog = Rc::new(RefCell::new(RegisterDialog::build()));
        let alias: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
        let mut gui = Gui {
            window,
            register,
            unregister,
            connect,
            disconnect,
            users,
            send,
            send_attach,
            browse,
            dest,
            message,
            file,
            save_as,
            get_file,
            progress,
            client_pane,
            server_pane,
            status,
            dialog,
            alias,
            receiver,
        };
        gui.wire_callbacks(commands);
        gui
    }

    fn wire_callbacks(&mut self, commands: mpsc::Sender<Command>) {
        let issue = {
            let client_pane = self.client_pane.clone();
            Rc::new(move |command: Command| {
                let mut client_pane = client_pane.clone();
                append(&mut client_pane, &format!("c> {}", command.echo()));
                // The worker lives as long as the window; a send can only fail after it.
                let _ = commands.send(command);
            })
        };

        self.register.set_callback({
            let dialog = Rc::clone(&self.dialog);
            move |_| dialog.borrow_mut().open()
        });
        {
            let mut dialog = self.dialog.borrow_mut();
            let form = dialog.clone();
            let issue = Rc::clone(&issue);
            let alias = Rc::clone(&self.alias);
            let mut enable = vec![
                self.unregister.clone(),
                self.connect.clone(),
                self.disconnect.clone(),
                self.users.clone(),
                self.send.clone(),
                self.send_attach.clone(),
                self.get_file.clone(),
            ];
            let mut status = self.status.clone();
            dialog.submit.set_callback(move |_| {
                let mut form = form.clone();
                match form.validated() {
                    Ok((full_name, new_alias, birth_date)) => {
                        form.error.set_label("");
                        form.window.hide();
                        *alias.borrow_mut() = Some(new_alias.clone());
                        for button in &mut enable {
                            button.activate();
                        }
                        status.set_label(&format!("User: {new_alias}"));
                        issue(Command::RegisterProfile {
                            full_name,
                            alias: new_alias,
                            birth_date,
                        });
                    }
                    Err(why) => form.error.set_label(&why),
                }
            });
        }

        let with_alias = |make: fn(String) -> Command| {
            let alias = Rc::clone(&self.alias);
            let issue = Rc::clone(&issue);
            move |_: &mut Button| {
                if let Some(alias) = alias.borrow().clone() {
                    issue(make(alias));
                }
            }
        };
        self.unregister
            .set_callback(with_alias(|alias| Command::Unregister { alias }));
        self.connect
            .set_callback(with_alias(|alias| Command::Connect { alias }));
        self.disconnect
            .set_callback(with_alias(|alias| Command::Disconnect { alias }));
        self.users.set_callback({
            let issue = Rc::clone(&issue);
            move |_| {
                issue(Command::Users {
                    op: "CONNECTEDUSERS",
                })
            }
        });

        let compose = |attach: bool| {
            let (dest, message, file, issue) = (
                self.dest.clone(),
                self.message.clone(),
                self.file.clone(),
                Rc::clone(&issue),
            );
            let mut status = self.status.clone();
            move |_: &mut Button| {
                let (to, text, path) = (
                    dest.value().trim().to_string(),
                    message.value(),
                    file.value().trim().to_string(),
                );
                if to.is_empty() || text.trim().is_empty() || (attach && path.is_empty()) {
                    let needed = if attach {
                        "Dest, Message and File"
                    } else {
                        "Dest and Message"
                    };
                    status.set_label(&format!("{needed} are needed to send."));
                    return;
                }
                issue(match attach {
                    false => Command::Send { to, text },
                    true => Command::SendAttach {
                        to,
                        text,
                        file: path,
                    },
                });
            }
        };
        self.send.set_callback(compose(false));
        self.send_attach.set_callback(compose(true));
        self.get_file.set_callback({
            let (dest, file, save_as, issue) = (
                self.dest.clone(),
                self.file.clone(),
                self.save_as.clone(),
                Rc::clone(&issue),
            );
            let mut status = self.status.clone();
            move |_| {
                let (user, remote, local) = (
                    dest.value().trim().to_string(),
                    file.value().trim().to_string(),
                    save_as.value().trim().to_string(),
                );
                if user.is_empty() || remote.is_empty() || local.is_empty() {
                    status.set_label("Dest, File and Save as are needed to get a file.");
                    return;
                }
                issue(Command::GetFile {
                    user,
                    remote,
                    local,
                });
            }
        });
        self.browse.set_callback({
            let mut file = self.file.clone();
            move |_| {
                let mut chooser = NativeFileChooser::new(FileDialogType::BrowseFile);
                chooser.set_title("Attachment");
                chooser.show();
                let chosen = chooser.filename();
                if !chosen.as_os_str().is_empty() {
                    file.set_value(&chosen.to_string_lossy());
                }
            }
        });

        // Closing the window disconnects first, like QUIT.
        self.window.set_callback({
            let issue = Rc::clone(&issue);
            move |window| {
                if app::event() == Event::Close || app::event() == Event::Shortcut {
                    window.deactivate();
                    issue(Command::Quit);
                }
            }
        });
    }

    /// Handles what the worker and the listener sent. Returns true once the window may close.
    pub fn pump(&mut self) -> bool {
        while let Some(msg) = self.receiver.recv() {
            match msg {
                UiMsg::Result { lines, quit } => {
                    for line in &lines {
                        append(&mut self.server_pane, &format!("s> {line}"));
                    }
                    if quit {
                        self.window.hide();
                        return true;
                    }
                    self.after(&lines);
                }
                UiMsg::Incoming(lines) => {
                    self.offer_attachment(&lines);
                    let mut lines = lines.into_iter();
                    if let Some(first) = lines.next() {
                        append(&mut self.server_pane, &format!("s> {first}"));
                    }
                    for line in lines {
                        append(&mut self.server_pane, &format!("   {line}"));
                    }
                }
                UiMsg::Note(text) => self.status.set_label(&text),
                UiMsg::AskPassword(prompt, answer) => {
                    let password =
                        fltk::dialog::password_default(&prompt, "").filter(|p| !p.is_empty());
                    let _ = answer.send(password);
                }
                UiMsg::Progress(done, all) => {
                    let percent = if all == 0 {
                        100.0
                    } else {
                        done as f64 * 100.0 / all as f64
                    };
                    self.progress.set_value(percent);
                    self.progress.set_label(&format!("{percent:.0} %"));
                }
            }
        }
        false
    }

    /// An incoming attachment fills in what GET FILE needs: the sender, the file, and a name
    /// to save it as (its own name, in the current directory).
    fn offer_attachment(&mut self, lines: &[String]) {
        let (Some(first), Some(file)) = (
            lines.first(),
            lines.last().and_then(|l| l.strip_prefix("FILE ")),
        ) else {
            return;
        };
        let Some(sender) = first.split_once(" FROM ").map(|(_, s)| s) else {
            return;
        };
        self.dest.set_value(sender);
        self.file.set_value(file);
        let name = std::path::Path::new(file)
            .file_name()
            .map_or_else(|| "attachment".into(), |n| n.to_string_lossy().into_owned());
        self.save_as.set_value(&name);
        self.status
            .set_label(&format!("{sender} sent {file}: GET FILE saves it."));
    }

    /// What a command's result changes in the window besides its pane.
    fn after(&mut self, lines: &[String]) {
        let sent = lines
            .iter()
            .any(|l| l.starts_with("SEND OK - ") || l.starts_with("SENDATTACH OK - "));
        if sent {
            self.message.set_value("");
            self.file.set_value("");
        }
        if lines.iter().any(|l| l == "UNREGISTER OK") {
            *self.alias.borrow_mut() = None;
            for button in [
                &mut self.unregister,
                &mut self.connect,
                &mut self.disconnect,
                &mut self.users,
                &mut self.send,
                &mut self.send_attach,
                &mut self.get_file,
            ] {
                button.deactivate();
            }
        }
        // A success clears whatever error the status line still showed.
        if !lines.iter().any(|l| l.contains("FAIL")) {
            let status = match &*self.alias.borrow() {
                Some(alias) => format!("User: {alias}"),
                None => "Register to begin.".to_string(),
            };
            self.status.set_label(&status);
        }
    }
}

/// The worker thread: runs commands one at a time on its own [`Session`].
fn spawn_worker(endpoints: Endpoints, ui: app::Sender<UiMsg>) -> mpsc::Sender<Command> {
    let (tx, rx) = mpsc::channel::<Command>();
    let sinks = Sinks {
        incoming: Arc::new(move |lines| ui.send(UiMsg::Incoming(lines))),
        note: Arc::new(move |text| ui.send(UiMsg::Note(text))),
        progress: Arc::new(move |done, all| ui.send(UiMsg::Progress(done, all))),
        ask_password: Arc::new(move |prompt| {
            let (answer, answered) = std::sync::mpsc::channel();
            ui.send(UiMsg::AskPassword(prompt.to_string(), answer));
            answered.recv().ok().flatten()
        }),
    };
    std::thread::spawn(move || {
        let mut session = Session::new(endpoints.server, endpoints.formatter_url, sinks);
        for command in rx {
            let outcome = session.execute(command);
            ui.send(UiMsg::Result {
                lines: outcome.lines,
                quit: outcome.quit,
            });
            if outcome.quit {
                return;
            }
        }
    });
    tx
}

impl RegisterDialog {
    fn build() -> RegisterDialog {
        let mut window = Window::default().with_size(420, 250).with_label("REGISTER");
        window.make_modal(true);
        let mut col = Flex::default_fill().column();
        col.set_margin(12);
        col.set_pad(8);
        let labelled = |label: &str| crate::window_kit::labelled_row(label, 110);
        let row = labelled("Full name");
        let full_name = Input::default();
        row.end();
        col.fixed(&row, 28);
        let row = labelled("Alias");
        let alias = Input::default();
        row.end();
        col.fixed(&row, 28);
        let mut row = labelled("Birth date");
        let mut date = Output::default();
        date.set_value("01/01/2000");
        let mut select_date = Button::default().with_label("Select Date");
        row.fixed(&select_date, 110);
        row.end();
        col.fixed(&row, 28);
        let mut error = Frame::default();
        error.set_label_color(Color::Red);
        let mut buttons = Flex::default().row();
        Frame::default();
        let submit = Button::default().with_label("SUBMIT");
        buttons.fixed(&submit, 100);
        buttons.end();
        col.fixed(&buttons, 30);
        col.end();
        window.end();

        select_date.set_callback({
            let mut date = date.clone();
            move |_| {
                // The calendar is a modal dialog with its own loop: a double click on a day,
                // or closing it, ends it.
                let calendar = fltk_calendar::calendar::Calendar::default();
                if let Some(day) = calendar.get_date() {
                    date.set_value(&day.format("%d/%m/%Y").to_string());
                }
            }
        });
        RegisterDialog {
            window,
            full_name,
            alias,
            select_date,
            date,
            error,
            submit,
        }
    }

    pub fn open(&mut self) {
        self.error.set_label("");
        self.window.show();
    }

    /// The three fields if they are valid: names that are not empty or the placeholder `Text`
    /// (seed 000 6.1), and a real calendar date.
    pub fn validated(&self) -> Result<(String, String, String), String> {
        let full_name = self.full_name.value().trim().to_string();
        let alias = self.alias.value().trim().to_string();
        for (what, value) in [("Full name", &full_name), ("Alias", &alias)] {
            if value.is_empty() || value == "Text" {
                return Err(format!("{what} is required."));
            }
        }
        wire::validate_full_name(full_name.as_bytes()).map_err(|e| format!("Full name: {e}."))?;
        wire::validate_name(alias.as_bytes()).map_err(|e| format!("Alias: {e}."))?;
        let date = self.date.value();
        if !wire::looks_like_birth_date(date.as_bytes()) {
            return Err(format!("{date} is not a valid date."));
        }
        Ok((full_name, alias, date))
    }
}
