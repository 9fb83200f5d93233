//! Issue 25: the chat and the rooms windows as a person uses them: real processes on the Xvfb
//! display of scripts/test, real clicks and typing through xdotool, checked from raw clients
//! of each protocol. (The layouts' places: the windows open at a fixed size; each list's
//! lines are 17 pixels apart below its caption.)

use std::time::{Duration, Instant};

use e2e::{visible_window, xdotool, LineConn, Server, PATIENCE};

/// Window-relative place of the list's `line`-th line (from 1), in the left column of both
/// windows.
fn list_line(line: u32) -> (String, String) {
    ("60".into(), (42 + (line - 1) * 17).to_string())
}

fn click(window: &str, (x, y): &(String, String)) {
    xdotool(&["mousemove", "--window", window, x, y, "click", "1"]);
}

/// Types `text` and Return into whatever has the keyboard focus.
fn type_line(text: &str) {
    xdotool(&["type", "--delay", "20", text]);
    xdotool(&["key", "Return"]);
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

/// Both windows, one after the other: typing goes to whichever window has the focus, so two
/// at once would type into each other.
#[test]
fn the_chat_and_rooms_windows_with_real_clicks_and_typing() {
    assert!(
        client::gui::display_available(),
        "needs the Xvfb of scripts/test"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    chat_window(&server);
    rooms_window(&server);
}

fn chat_window(server: &Server) {
    let mut bea = LineConn::chat(server, "bea");
    let port = server.chat_port.unwrap().to_string();
    let mut window = e2e::spawn_client(&["--chat", "--window", "-s", "127.0.0.1", "-p", &port]);
    // The login dialog: a click in the name field, the name, Return.
    let dialog = visible_window("^Entrar al chat$", &mut window);
    xdotool(&["mousemove", "--window", &dialog, "250", "26", "click", "1"]);
    type_line("ana");
    let chat = visible_window("^Chat - ana$", &mut window);
    bea.until("USER_LIST|bea,ana");
    // The input line has the focus: typing and Return broadcast.
    type_line("hola bea");
    assert_eq!(said(&mut bea), "BROADCAST|ana|hola bea");
    // bea is the list's second line (after "(todos)"): chosen, the next line is hers alone.
    click(&chat, &list_line(2));
    type_line("solo para ti");
    assert_eq!(said(&mut bea), "MESSAGE|ana|solo para ti");
    let _ = window.kill();
    let _ = window.wait();
}

fn rooms_window(server: &Server) {
    let mut dani = LineConn::rooms(server, "dani");
    dani.send("ROOM Patio");
    assert_eq!(dani.line(), "Te has unido a la sala Patio.");
    let port = server.rooms_port.unwrap().to_string();
    let mut window = e2e::spawn_client(&[
        "--rooms",
        "--window",
        "--user",
        "eva",
        "-s",
        "127.0.0.1",
        "-p",
        &port,
    ]);
    let rooms = visible_window("^Wassop - eva$", &mut window);
    // Patio is the list's second line, once the list has come: a click on it enters.
    let start = Instant::now();
    let joined = loop {
        click(&rooms, &list_line(2));
        if let Some(line) = dani.line_within(Duration::from_millis(500)) {
            break line;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "a click on Patio never entered it"
        );
    };
    assert_eq!(joined, "eva se ha unido a la sala.");
    type_line("hola dani");
    assert_eq!(dani.line(), "eva: hola dani");
    // The emoji buttons, at the bottom right of the 960x640 window.
    click(&rooms, &("825".into(), "588".into()));
    assert_eq!(dani.line(), "eva: 👍");
    let _ = window.kill();
    let _ = window.wait();
}
