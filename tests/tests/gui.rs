//! The desktop client in process: real widgets, driven through `do_callback()`, against the real
//! server and formatter. Needs a display (scripts/test provides Xvfb). One test function, since
//! FLTK wants one thread.

use std::process::Command;
use std::time::Instant;

use client::gui::Gui;
use client::protocol::ServerLink;
use client::Endpoints;
use e2e::{bin, encode, register, ConsoleClient, Formatter, Listener, Server, PATIENCE};
use fltk::app;
use fltk::prelude::*;

/// Runs FLTK's loop for up to `seconds`. A signal (SIGCHLD from the other test of this file
/// reaping its child) interrupts the wait with an error; that is not a failure, so it retries.
fn wait(seconds: f64) {
    if app::wait_for(seconds).is_err() {
        let _ = app::wait_for(seconds);
    }
}

fn pump_until(gui: &mut Gui, what: &str, ready: impl Fn(&Gui) -> bool) {
    let start = Instant::now();
    while !ready(gui) {
        wait(0.01);
        gui.pump();
        assert!(
            start.elapsed() < PATIENCE,
            "waited for {what}\nclient pane:\n{}\nserver pane:\n{}\nstatus: {}",
            client::window_kit::pane_text(&gui.client_pane),
            client::window_kit::pane_text(&gui.server_pane),
            gui.status.label()
        );
    }
}

fn wait_server_line(gui: &mut Gui, line: &str) {
    pump_until(gui, line, |g| {
        client::window_kit::pane_text(&g.server_pane)
            .lines()
            .any(|l| l == line)
    });
}

#[test]
fn the_desktop_client_end_to_end() {
    assert!(
        client::gui::display_available(),
        "GUI tests need a display: run them through scripts/test (Xvfb)"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let formatter = Formatter::start();
    let _app = app::App::default();
    let endpoints = Endpoints {
        server: ServerLink {
            host: "127.0.0.1".into(),
            port: server.port,
            // What `MESSENGER_PASSWORD` gives the window (docs/accounts.md).
            password: Some("de la ventana".into()),
            tls: None,
        },
        formatter_url: formatter.url(),
    };
    let mut gui = Gui::build(endpoints);
    gui.window.show();
    assert!(
        !gui.connect.active(),
        "nothing but REGISTER before a registration"
    );

    // REGISTER through the dialog, with its validation.
    gui.register.do_callback();
    pump_until(&mut gui, "the register dialog", |g| {
        g.dialog.borrow().window.shown()
    });
    // "Select Date" opens the calendar; a person picks a day in it. Here a timer does: it
    // selects the third cell of the first row and closes the dialog.
    app::add_timeout3(0.3, |_| {
        let calendar = app::windows()
            .unwrap_or_default()
            .into_iter()
            .find(|w| w.label() == "Calendar")
            .expect("the calendar dialog");
        let mut days = (0..calendar.children())
            .filter_map(|n| calendar.child(n))
            .find_map(|w| fltk::table::TableRow::from_dyn_widget(&w))
            .expect("the calendar's days");
        days.set_selection(0, 2, 0, 2);
        let mut calendar = calendar;
        calendar.hide();
    });
    let mut select_date = gui.dialog.borrow().select_date.clone();
    select_date.do_callback();
    let today = std::process::Command::new("date")
        .arg("+%m/%Y")
        .output()
        .unwrap();
    let month_year = String::from_utf8(today.stdout).unwrap();
    assert_eq!(
        gui.dialog.borrow().date.value(),
        format!("03/{}", month_year.trim()),
        "the third day of this month, as the calendar shows it"
    );
    let submit = |gui: &mut Gui, full: &str, alias: &str, (d, m, y): (f64, f64, f64)| {
        let mut dialog = gui.dialog.borrow_mut();
        dialog.full_name.set_value(full);
        dialog.alias.set_value(alias);
        dialog
            .date
            .set_value(&format!("{:02}/{:02}/{:04}", d as u32, m as u32, y as u32));
        let mut button = dialog.submit.clone();
        drop(dialog);
        button.do_callback();
        gui.dialog.borrow().error.label()
    };
    assert_eq!(
        submit(&mut gui, "Ana Alba", "Text", (1.0, 1.0, 2000.0)),
        "Alias is required."
    );
    assert_eq!(
        submit(&mut gui, "Ana Alba", "ana", (29.0, 2.0, 2001.0)),
        "29/02/2001 is not a valid date."
    );
    assert_eq!(submit(&mut gui, "Ana Alba", "ana", (29.0, 2.0, 2000.0)), "");
    wait_server_line(&mut gui, "s> REGISTER OK");
    assert!(client::window_kit::pane_text(&gui.client_pane).contains("c> REGISTER ana\n"));
    assert!(!gui.dialog.borrow().window.shown());
    let date = server
        .db
        .text("SELECT birth_date FROM users WHERE alias='ana'");
    assert_eq!(date, "29/02/2000");
    // The window's password claimed the name: it now needs it.
    let hash = server
        .db
        .text("SELECT password_hash FROM users WHERE alias='ana'");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert_eq!(server.call(&["SEND", "ana", "nadie", "x"]), [2]);

    // CONNECT, then SEND through the formatter to a real listener.
    gui.connect.do_callback();
    wait_server_line(&mut gui, "s> CONNECT OK");
    register(&server, "bea");
    let bea = Listener::start();
    assert_eq!(server.call(&["CONNECT", "bea", &bea.port_field()]), [0]);
    gui.dest.set_value("bea");
    gui.message.set_value("  hola    desde   la ventana ");
    gui.send.do_callback();
    wait_server_line(&mut gui, "s> SEND OK - MESSAGE 1");
    assert_eq!(
        gui.message.value(),
        "",
        "the Message field is cleared once sent"
    );
    assert_eq!(
        bea.next(),
        encode(&[b"SEND MESSAGE", b"ana", b"1", b"hola desde la ventana"])
    );
    wait_server_line(&mut gui, "s> SEND MESSAGE 1 OK");

    // A message for us appears as it arrives.
    assert_eq!(
        server.call(&["SEND", "bea", "ana", "hola ana"]),
        e2e::sent(1)
    );
    wait_server_line(&mut gui, "s> MESSAGE 1 FROM bea");
    pump_until(&mut gui, "the message block", |g| {
        client::window_kit::pane_text(&g.server_pane)
            .contains("s> MESSAGE 1 FROM bea\n   hola ana\n   END\n")
    });
    assert_eq!(
        bea.next(),
        encode(&[b"SEND MESS ACK", b"1"]),
        "bea is told it arrived"
    );

    gui.users.do_callback();
    wait_server_line(
        &mut gui,
        "s> CONNECTED USERS (2 users connected) OK - ana, bea",
    );
    assert!(client::window_kit::pane_text(&gui.client_pane).contains("c> CONNECTEDUSERS\n"));

    // SENDATTACH with a file.
    let file = dir.path().join("nota.txt");
    std::fs::write(&file, b"adjunto").unwrap();
    gui.file.set_value(&file.display().to_string());
    gui.message.set_value("con adjunto");
    gui.send_attach.do_callback();
    wait_server_line(&mut gui, "s> SENDATTACH OK - MESSAGE 2");
    let canonical = std::fs::canonicalize(&file).unwrap().display().to_string();
    assert_eq!(
        bea.next(),
        encode(&[
            b"SEND MESSAGE ATTACH",
            b"ana",
            b"2",
            b"con adjunto",
            canonical.as_bytes()
        ])
    );

    // An attachment from someone else: the window fills in GET FILE, which fetches it from
    // the sender's listener and shows the progress.
    let mut carlos = ConsoleClient::start(server.port, &formatter.url());
    carlos.run("REGISTER carlos", "REGISTER OK");
    carlos.run("CONNECT carlos", "CONNECT OK");
    let offered = dir.path().join("informe.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&offered, &bytes).unwrap();
    let offered = std::fs::canonicalize(&offered)
        .unwrap()
        .display()
        .to_string();
    carlos.run(
        &format!("SENDATTACH ana toma {offered}"),
        "SENDATTACH OK - MESSAGE 1",
    );
    pump_until(&mut gui, "the attachment offered", |g| {
        g.file.value() == offered && g.dest.value() == "carlos"
    });
    assert_eq!(gui.save_as.value(), "informe.bin");
    let saved = dir.path().join("copia.bin");
    gui.save_as.set_value(&saved.display().to_string());
    gui.get_file.do_callback();
    wait_server_line(&mut gui, "s> GET_FILE OK");
    assert_eq!(std::fs::read(&saved).unwrap(), bytes, "identical bytes");
    pump_until(&mut gui, "the progress at 100 %", |g| {
        g.progress.value() >= 100.0
    });

    // Missing fields are caught before anything is sent.
    gui.dest.set_value("");
    gui.send.do_callback();
    assert_eq!(gui.status.label(), "Dest and Message are needed to send.");

    gui.disconnect.do_callback();
    wait_server_line(&mut gui, "s> DISCONNECT OK");
    assert_eq!(
        gui.status.label(),
        "User: ana",
        "a success clears the stale error"
    );
    gui.unregister.do_callback();
    wait_server_line(&mut gui, "s> UNREGISTER OK");
    // Without a user, only REGISTER is left to press.
    assert!(gui.register.active());
    for button in [&gui.connect, &gui.disconnect, &gui.send, &gui.unregister] {
        assert!(!button.active(), "{} stays enabled", button.label());
    }
    assert_eq!(gui.status.label(), "Register to begin.");

    // The window resizes sensibly: the panes share the width.
    gui.window.resize(0, 0, 1200, 800);
    wait(0.05);
    assert!(
        gui.client_pane.w() > 500 && gui.server_pane.w() > 500,
        "panes grow with the window"
    );
    assert!((gui.client_pane.w() - gui.server_pane.w()).abs() <= 2);
}

#[test]
fn without_a_display_the_client_names_the_console_mode() {
    let out = Command::new(bin("client"))
        .args(["-s", "127.0.0.1", "-p", "1"])
        .env_remove("DISPLAY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no display") && stderr.contains("--console"),
        "{stderr}"
    );
}
