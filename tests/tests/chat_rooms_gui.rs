//! Issue 25: the chat and the rooms windows in process: real widgets, driven through
//! `do_callback()`, against the real server, against stand-ins for the original servers, and
//! against a server that never answers and one that is not there. Needs a display
//! (scripts/test provides Xvfb). One test function, since FLTK wants one thread.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Instant;

use client::chat::window::ChatWindow;
use client::protocol::ServerLink;
use client::rooms::window::RoomsWindow;
use client::window_kit::pane_text;
use e2e::{LineConn, Server, PATIENCE};
use fltk::{app, prelude::*};

/// Runs FLTK's loop, and `pump`, until `ready` holds (a signal may interrupt a wait: that is
/// no failure).
fn until<W>(window: &mut W, pump: fn(&mut W) -> bool, what: &str, ready: impl Fn(&W) -> bool)
where
    W: Described,
{
    let start = Instant::now();
    while !ready(window) {
        let _ = app::wait_for(0.01);
        pump(window);
        assert!(
            start.elapsed() < PATIENCE,
            "waited for {what}; {}",
            window.described()
        );
    }
}

/// What a failed wait prints.
trait Described {
    fn described(&self) -> String;
}

impl Described for ChatWindow {
    fn described(&self) -> String {
        format!(
            "status: {:?}, conversation:\n{}",
            self.status.label(),
            pane_text(&self.conversation)
        )
    }
}

impl Described for RoomsWindow {
    fn described(&self) -> String {
        format!(
            "status: {:?}, rooms: {:?}, conversation:\n{}",
            self.status.label(),
            self.listed.borrow(),
            pane_text(&self.conversation)
        )
    }
}

fn link(port: u16, password: Option<&str>) -> ServerLink {
    ServerLink {
        host: "127.0.0.1".into(),
        port,
        password: password.map(str::to_string),
        tls: None,
    }
}

fn lines_of(browser: &fltk::browser::HoldBrowser) -> Vec<String> {
    (1..=browser.size())
        .filter_map(|n| browser.text(n))
        .collect()
}

/// The next line of `conn` that is not a user list.
fn said(conn: &mut LineConn) -> String {
    loop {
        let line = conn.line();
        if !line.starts_with("USER_LIST|") {
            return line;
        }
    }
}

fn chat_window_on_our_server(server: &Server, tls: &std::sync::Arc<rustls::ClientConfig>) {
    let mut bea = LineConn::chat(server, "bea");
    bea.send("BROADCAST|antes de que llegues");
    assert_eq!(said(&mut bea), "BROADCAST|bea|antes de que llegues");
    let mut chat = ChatWindow::build(link(server.chat_port.unwrap(), None), None);
    chat.show();
    assert!(
        chat.window.w() <= 1280 && chat.window.h() <= 800,
        "fits in 1280x800"
    );
    assert!(chat.login.window.shown(), "without --user a dialog asks");
    assert!(!chat.input.active(), "nothing to send before the login");
    // A name the server cannot take is refused by the dialog itself.
    chat.login.name.set_value("a|b");
    chat.login.submit.do_callback();
    assert!(chat.login.window.shown());
    assert!(!chat.login.error.label().is_empty());
    chat.login.name.set_value("ana");
    chat.login.submit.do_callback();
    until(&mut chat, ChatWindow::pump, "the login", |c| {
        c.me.borrow().as_deref() == Some("ana")
    });
    assert!(!chat.login.window.shown());
    until(&mut chat, ChatWindow::pump, "the user list", |c| {
        *c.online.borrow() == ["bea", "ana"] && lines_of(&c.users) == ["(todos)", "@.bea", "@.ana"]
    });
    assert!(chat.input.has_focus(), "the input line has the focus");
    // The history the server sends at login.
    until(&mut chat, ChatWindow::pump, "the history", |c| {
        pane_text(&c.conversation).starts_with("bea: antes de que llegues\n")
    });

    // Return in the input line sends to everybody; the server echoes a broadcast.
    chat.input.set_value("hola a todos");
    chat.input.do_callback();
    assert_eq!(said(&mut bea), "BROADCAST|ana|hola a todos");
    assert_eq!(chat.input.value(), "");
    until(&mut chat, ChatWindow::pump, "the echo", |c| {
        pane_text(&c.conversation).contains("ana: hola a todos\n")
    });

    // Choosing bea in the list sends to her alone, shown as private.
    chat.users.select(2);
    chat.users.do_callback();
    assert_eq!(chat.to.label(), "Para: bea (privado)");
    chat.input.set_value("solo para ti");
    chat.send.do_callback();
    assert_eq!(said(&mut bea), "MESSAGE|ana|solo para ti");
    assert!(pane_text(&chat.conversation).contains("[privado] tú → bea: solo para ti\n"));
    bea.send("MESSAGE|ana|recibido");
    bea.send("BROADCAST|y para todos");
    until(&mut chat, ChatWindow::pump, "bea's answers", |c| {
        let text = pane_text(&c.conversation);
        text.contains("[privado] bea: recibido\n") && text.contains("bea: y para todos\n")
    });
    // A line longer than the protocol's 1024 bytes is refused by the window, not cut.
    chat.input.set_value(&"ñ".repeat(600));
    chat.input.do_callback();
    assert_eq!(chat.status.label(), "Mensaje demasiado largo: 1200 bytes.");
    assert_eq!(
        chat.input.value().len(),
        1200,
        "kept for the user to shorten"
    );
    chat.input.set_value("");
    // Back to everybody; bea leaves and the list follows.
    chat.users.select(1);
    chat.users.do_callback();
    assert_eq!(chat.to.label(), "Para: todos");
    bea.send("DISCONNECT");
    until(&mut chat, ChatWindow::pump, "bea gone", |c| {
        *c.online.borrow() == ["ana"]
    });
    // An unknown user's error is shown.
    chat.users.select(2);
    chat.users.do_callback();
    drop(bea);
    chat.input.set_value("hola yo");
    chat.input.do_callback();
    until(&mut chat, ChatWindow::pump, "a message to oneself", |c| {
        pane_text(&c.conversation).contains("[privado] ana: hola yo\n")
    });

    // A name with a password (claimed by another client first): --user logs in at once,
    // is refused without it, and the dialog asks; with it, the window is in.
    let claim = LineConn::chat_login(
        LineConn::connect(server.chat_addr()),
        "CONNECT|carla|clave de carla",
    )
    .unwrap();
    drop(claim);
    let mut carla = ChatWindow::build(link(server.chat_port.unwrap(), None), Some("carla".into()));
    carla.show();
    assert!(
        !carla.login.window.shown(),
        "with --user no dialog at first"
    );
    until(&mut carla, ChatWindow::pump, "the refusal", |c| {
        c.login.window.shown()
    });
    assert!(
        carla.login.error.label().contains("contraseña"),
        "{}",
        carla.login.error.label()
    );
    assert_eq!(carla.login.name.value(), "carla");
    carla.login.password.set_value("clave de carla");
    carla.login.submit.do_callback();
    until(&mut carla, ChatWindow::pump, "carla's login", |c| {
        c.me.borrow().as_deref() == Some("carla")
    });
    carla.close();
    carla.pump();

    // MESSENGER_PASSWORD (the link's password) logs in without asking; over TLS too.
    let mut over_tls = link(server.tls_port("chat"), Some("clave de carla"));
    over_tls.tls = Some(tls.clone());
    let mut again = ChatWindow::build(over_tls, Some("carla".into()));
    again.show();
    until(
        &mut again,
        ChatWindow::pump,
        "the login with the password",
        |c| c.me.borrow().is_some(),
    );
    again.close();
    again.pump();
    chat.close();
    assert!(chat.pump(), "closed");
}

fn rooms_window_on_our_server(server: &Server, tls: &std::sync::Arc<rustls::ClientConfig>) {
    let mut dani = LineConn::rooms(server, "dani");
    dani.send("ROOM Patio");
    assert_eq!(dani.line(), "Te has unido a la sala Patio.");
    let mut rooms = RoomsWindow::build(link(server.rooms_port.unwrap(), None), Some("eva".into()));
    rooms.show();
    assert!(
        rooms.window.w() <= 1280 && rooms.window.h() <= 800,
        "fits in 1280x800"
    );
    assert!(!rooms.login.window.shown(), "with --user no dialog");
    until(&mut rooms, RoomsWindow::pump, "the room list", |r| {
        lines_of(&r.rooms) == ["@.Sala1 (0)", "@.Patio (1)"]
    });
    assert!(rooms.input.has_focus(), "the input line has the focus");
    // Writing outside a room says what to do.
    rooms.input.set_value("¿hola?");
    rooms.input.do_callback();
    assert_eq!(rooms.status.label(), "Entra en una sala para escribir.");

    // A click on Patio enters it.
    rooms.rooms.select(2);
    rooms.rooms.do_callback();
    assert_eq!(dani.line(), "eva se ha unido a la sala.");
    until(&mut rooms, RoomsWindow::pump, "inside Patio", |r| {
        r.room.borrow().as_deref() == Some("Patio")
            && lines_of(&r.rooms).contains(&"@.Patio (2)".to_string())
    });
    rooms.input.set_value(&"ñ".repeat(600));
    rooms.input.do_callback();
    assert_eq!(rooms.status.label(), "Mensaje demasiado largo: 1200 bytes.");
    rooms.input.set_value("hola dani");
    rooms.input.do_callback();
    assert_eq!(dani.line(), "eva: hola dani", "the session was not ended");
    let like = rooms.emoji.iter().find(|b| b.label() == "LIKE").unwrap();
    like.clone().do_callback();
    assert_eq!(dani.line(), "eva: 👍");
    let love = rooms.emoji.iter().find(|b| b.label() == "LOVE").unwrap();
    love.clone().do_callback();
    assert_eq!(dani.line(), "eva: ❤️❤️❤️");
    dani.send("MESSAGE hola eva");
    until(&mut rooms, RoomsWindow::pump, "dani's line", |r| {
        pane_text(&r.conversation).ends_with("Tú: hola dani\nTú: 👍\nTú: ❤️❤️❤️\ndani: hola eva\n")
    });

    // The list refreshes by itself: a room made elsewhere appears with no click.
    let mut flor = LineConn::rooms(server, "flor");
    flor.send("ROOM Jardín");
    assert_eq!(flor.line(), "Te has unido a la sala Jardín.");
    until(&mut rooms, RoomsWindow::pump, "the list refreshed", |r| {
        lines_of(&r.rooms).contains(&"@.Jardín (1)".to_string())
    });
    // And on Actualizar.
    flor.send("ROOM Huerto");
    assert_eq!(flor.line(), "Te has unido a la sala Huerto.");
    rooms.refresh.do_callback();
    until(
        &mut rooms,
        RoomsWindow::pump,
        "the list refreshed on click",
        |r| lines_of(&r.rooms).contains(&"@.Huerto (1)".to_string()),
    );

    // Create a room by its name, leave it.
    rooms.room_name.set_value("Nueva sala");
    rooms.enter.do_callback();
    assert_eq!(dani.line(), "eva ha salido de la sala.");
    until(&mut rooms, RoomsWindow::pump, "in the new room", |r| {
        r.room.borrow().as_deref() == Some("Nueva sala")
    });
    rooms.leave.do_callback();
    until(&mut rooms, RoomsWindow::pump, "out of the room", |r| {
        r.room.borrow().is_none()
            && pane_text(&r.conversation).ends_with("Has salido de la sala Nueva sala.\n")
    });

    // A room with a key: its creator sets one; the window asks for it and enters.
    flor.send("ROOM Secreta");
    assert_eq!(flor.line(), "Te has unido a la sala Secreta.");
    flor.send("KEY llave-7");
    assert_eq!(flor.line(), "La sala Secreta tiene clave.");
    rooms.room_name.set_value("Secreta");
    rooms.enter.do_callback();
    until(&mut rooms, RoomsWindow::pump, "the key asked for", |r| {
        r.key.window.shown()
    });
    assert_eq!(rooms.key.name.value(), "Secreta");
    rooms.key.password.set_value("llave-7");
    rooms.key.submit.do_callback();
    assert_eq!(flor.line(), "eva se ha unido a la sala.");
    until(&mut rooms, RoomsWindow::pump, "in the keyed room", |r| {
        r.room.borrow().as_deref() == Some("Secreta")
    });
    rooms.close();
    assert!(rooms.pump(), "closed");
    // QUIT on closing: the others hear it.
    assert_eq!(flor.line(), "eva ha salido del chat.");

    // Over TLS, with the password of MESSENGER_PASSWORD (a new name is claimed with it).
    let mut over_tls = link(server.tls_port("rooms"), Some("clave de gema"));
    over_tls.tls = Some(tls.clone());
    let mut gema = RoomsWindow::build(over_tls, Some("gema".into()));
    gema.show();
    until(
        &mut gema,
        RoomsWindow::pump,
        "the room list over TLS",
        |r| r.listed.borrow().iter().any(|room| room.name == "Secreta"),
    );
    gema.room_name.set_value("Patio");
    gema.enter.do_callback();
    assert_eq!(dani.line(), "gema se ha unido a la sala.");
    gema.close();
    assert!(gema.pump());
    // Her session is over once dani hears it (not before: the name would still be in use).
    assert_eq!(dani.line(), "gema ha salido del chat.");
    // The name is gema's now: without the password the window asks for it.
    let mut intruder =
        RoomsWindow::build(link(server.rooms_port.unwrap(), None), Some("gema".into()));
    intruder.show();
    until(
        &mut intruder,
        RoomsWindow::pump,
        "the password asked for",
        |r| r.login.window.shown() && r.login.error.label() == "gema tiene contraseña: escríbela.",
    );
    intruder.close();
    assert!(intruder.pump());
}

/// A stand-in for the original chat server: it glues its replies, ignores HELLO, and reads
/// one message per `recv`. Returns what it read.
fn original_chat() -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = socket.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let recv = |stream: &mut std::net::TcpStream| {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).unwrap_or(0);
            String::from_utf8(buf[..n].to_vec()).unwrap()
        };
        let mut received = vec![recv(&mut stream)];
        stream
            .write_all(b"CONNECT_ACK|OKUSER_LIST|dora,eli")
            .unwrap();
        received.push(recv(&mut stream));
        stream
            .write_all(b"BROADCAST|eli|hola doraMESSAGE|eli|psst")
            .unwrap();
        loop {
            let message = recv(&mut stream);
            if message.is_empty() {
                return received;
            }
            received.push(message);
        }
    });
    (port, server)
}

fn chat_window_on_an_original_server() {
    let (port, original) = original_chat();
    let mut chat = ChatWindow::build(link(port, None), Some("dora".into()));
    chat.show();
    until(&mut chat, ChatWindow::pump, "the glued replies", |c| {
        let text = pane_text(&c.conversation);
        c.me.borrow().is_some()
            && *c.online.borrow() == ["dora", "eli"]
            && text == "eli: hola dora\n[privado] eli: psst\n"
    });
    chat.input.set_value("hola eli");
    chat.input.do_callback();
    chat.users.select(3);
    chat.users.do_callback();
    chat.input.set_value("privado");
    chat.input.do_callback();
    chat.close();
    assert!(chat.pump());
    assert_eq!(
        original.join().unwrap(),
        [
            "CONNECT|dora",
            "HELLO|lines",
            "BROADCAST|hola eli",
            "MESSAGE|eli|privado",
            "DISCONNECT"
        ],
        "one message per write, no delimiter"
    );
}

/// A stand-in for the original rooms server: `OK` with no line end, the room list and a
/// room's answer as the original writes them. Returns every line it read but LIST_ROOMS.
fn original_rooms() -> (u16, std::thread::JoinHandle<Vec<String>>) {
    use std::io::BufRead;
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (stream, _) = socket.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut received = Vec::new();
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let answer = match line.split_once(' ').map_or(line.as_str(), |(c, _)| c) {
                "JOIN" => "OK".to_string(),
                "LIST_ROOMS" => "Salas disponibles:\nSala1 (0)\nSala2 (2)\n".to_string(),
                "ROOM" => format!(
                    "Te has unido a la sala {}.\njuan: hola gus\n",
                    &line["ROOM ".len()..]
                ),
                _ => String::new(),
            };
            if line != "LIST_ROOMS" {
                received.push(line.clone());
            }
            if line == "QUIT" {
                break;
            }
            out.write_all(answer.as_bytes()).unwrap();
        }
        received
    });
    (port, server)
}

fn rooms_window_on_an_original_server() {
    let (port, original) = original_rooms();
    let mut rooms = RoomsWindow::build(link(port, None), Some("gus".into()));
    rooms.show();
    until(
        &mut rooms,
        RoomsWindow::pump,
        "the original's room list",
        |r| lines_of(&r.rooms) == ["@.Sala1 (0)", "@.Sala2 (2)"],
    );
    rooms.rooms.select(2);
    rooms.rooms.do_callback();
    until(&mut rooms, RoomsWindow::pump, "inside Sala2", |r| {
        r.room.borrow().as_deref() == Some("Sala2")
            && pane_text(&r.conversation).ends_with("juan: hola gus\n")
    });
    rooms.input.set_value("hola juan");
    rooms.input.do_callback();
    rooms.close();
    assert!(rooms.pump());
    assert_eq!(
        original.join().unwrap(),
        ["JOIN gus", "ROOM Sala2", "MESSAGE hola juan", "QUIT"]
    );
}

/// A server that takes the connection and never answers, and one that is not there: the
/// windows open, stay responsive and say so.
fn windows_on_silent_and_absent_servers() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    // Nobody listens on port 1 (and, below the ephemeral ports, a connection to it
    // cannot meet itself).
    let absent_port = 1;
    let mut chat = ChatWindow::build(link(silent_port, None), Some("ana".into()));
    chat.show();
    let mut rooms = RoomsWindow::build(link(silent_port, None), Some("eva".into()));
    rooms.show();
    until(&mut chat, ChatWindow::pump, "the chat saying so", |c| {
        c.status.label().contains("no contesta; esperando")
    });
    until(&mut rooms, RoomsWindow::pump, "the rooms saying so", |r| {
        r.status.label().contains("no contesta; esperando")
    });
    // Still responsive: they close at once while their workers wait.
    chat.close();
    assert!(chat.pump());
    rooms.close();
    assert!(rooms.pump());

    let mut chat = ChatWindow::build(link(absent_port, None), Some("ana".into()));
    chat.show();
    let mut rooms = RoomsWindow::build(link(absent_port, None), Some("eva".into()));
    rooms.show();
    until(&mut chat, ChatWindow::pump, "the chat's refusal", |c| {
        c.login.window.shown() && c.status.label().contains("no contesta")
    });
    until(&mut rooms, RoomsWindow::pump, "the rooms' refusal", |r| {
        r.login.window.shown() && r.status.label().contains("no contesta")
    });
    chat.close();
    assert!(chat.pump());
    rooms.close();
    assert!(rooms.pump());
    drop(silent);
}

/// The server goes away in the middle of a session: both windows say so and offer to log in
/// again.
fn windows_when_the_server_dies(server: Server) {
    let mut chat = ChatWindow::build(link(server.chat_port.unwrap(), None), Some("hugo".into()));
    chat.show();
    let mut rooms = RoomsWindow::build(link(server.rooms_port.unwrap(), None), Some("ines".into()));
    rooms.show();
    until(&mut chat, ChatWindow::pump, "hugo's login", |c| {
        c.me.borrow().is_some()
    });
    until(&mut rooms, RoomsWindow::pump, "ines' login", |r| {
        r.me.borrow().is_some()
    });
    server.kill9();
    until(&mut chat, ChatWindow::pump, "the chat's loss", |c| {
        c.login.window.shown() && c.status.label() == "Desconectado del servidor."
    });
    until(&mut rooms, RoomsWindow::pump, "the rooms' loss", |r| {
        r.login.window.shown() && r.status.label() == "Desconectado del servidor."
    });
    assert!(!chat.input.active() && !rooms.input.active());
    assert_eq!(chat.login.name.value(), "hugo", "ready to log in again");
}

#[test]
fn the_chat_and_rooms_windows_end_to_end() {
    assert!(
        client::gui::display_available(),
        "GUI tests need a display: run them through scripts/test (Xvfb)"
    );
    let _app = app::App::default();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = e2e::self_signed(dir.path(), "server", true);
    let server = Server::start_all_tls(dir.path(), &cert, &key, &[]);
    let tls = client::link::client_config(Some(&cert)).unwrap();
    chat_window_on_our_server(&server, &tls);
    rooms_window_on_our_server(&server, &tls);
    chat_window_on_an_original_server();
    rooms_window_on_an_original_server();
    windows_on_silent_and_absent_servers();
    windows_when_the_server_dies(server);
}
