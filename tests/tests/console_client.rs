//! The console client driven through stdin against the real server and formatter.

use std::time::{Duration, Instant};

use e2e::{encode, register, ConsoleClient, Formatter, Server};

fn setup(args: &[&str]) -> (tempfile::TempDir, Server, Formatter) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), args);
    (dir, server, Formatter::start())
}

#[test]
fn a_whole_conversation_with_exact_lines() {
    let (_dir, server, formatter) = setup(&[]);
    let mut ana = ConsoleClient::start(server.port, &formatter.url());
    let mut bea = ConsoleClient::start(server.port, &formatter.url());
    ana.run("REGISTER ana", "REGISTER OK");
    ana.run("REGISTER ana", "USERNAME IN USE");
    bea.run("REGISTER bea", "REGISTER OK");
    ana.run("CONNECT ana", "CONNECT OK");
    bea.run("CONNECT bea", "CONNECT OK");
    bea.run("CONNECT bea", "CONNECT FAIL");
    ana.run(
        "SEND bea   hola    bea,  ¿qué   tal? ",
        "SEND OK - MESSAGE 1",
    );
    bea.wait_for("MESSAGE 1 FROM ana\nhola bea, ¿qué tal?\nEND\nc> ");
    ana.wait_for("SEND MESSAGE 1 OK\nc> ");
    ana.run("USERS", "CONNECTED USERS (2 users connected) OK - ana, bea");
    bea.run(
        "CONNECTEDUSERS",
        "CONNECTED USERS (2 users connected) OK - ana, bea",
    );
    ana.run("SEND nadie hola", "SEND FAIL / USER DOES NOT EXIST");
    bea.run("DISCONNECT bea", "DISCONNECT OK");
    ana.run("SEND bea guardado", "SEND OK - MESSAGE 2");
    ana.run("DISCONNECT bea", "DISCONNECT FAIL / USER NOT CONNECTED");
    ana.run("DISCONNECT nadie", "DISCONNECT FAIL / USER DOES NOT EXIST");
    ana.run("UNREGISTER nadie", "USER DOES NOT EXIST");
    bea.run("CONNECT bea", "CONNECT OK");
    bea.wait_for("MESSAGE 2 FROM ana\nguardado\nEND\n");
    ana.wait_for("SEND MESSAGE 2 OK\n");
    // QUIT disconnects first.
    let before = ana.output().len();
    ana.type_line("QUIT");
    ana.wait_for_after(before, "DISCONNECT OK\n");
    assert_eq!(ana.finish(), Some(0));
    bea.run("USERS", "CONNECTED USERS (1 users connected) OK - bea");
    bea.run("UNREGISTER bea", "UNREGISTER OK");
    let out = bea.finish();
    assert_eq!(out, Some(0), "end of input exits cleanly");
    server.stdout.wait_for("s> UNREGISTER bea OK");
}

#[test]
fn piped_input_produces_the_exact_byte_stream() {
    let (_dir, server, formatter) = setup(&[]);
    let mut client = ConsoleClient::start(server.port, &formatter.url());
    for line in [
        "REGISTER zoe",
        "bogus",
        "REGISTER",
        "",
        "UNREGISTER zoe",
        "UNREGISTER zoe",
    ] {
        client.type_line(line);
    }
    let output = {
        let c = client;
        let start = Instant::now();
        while !c.output().contains("USER DOES NOT EXIST\n") {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        let output = c.output();
        assert_eq!(c.finish(), Some(0));
        output
    };
    assert_eq!(
        output,
        "c> REGISTER OK\nc> Error: command bogus not valid.\nc> Syntax error. Usage: REGISTER <userName>\nc> c> UNREGISTER OK\nc> USER DOES NOT EXIST\nc> "
    );
}

#[test]
fn usage_lines_for_every_command() {
    let (_dir, server, formatter) = setup(&[]);
    let mut client = ConsoleClient::start(server.port, &formatter.url());
    for (line, usage) in [
        ("REGISTER a b", "REGISTER <userName>"),
        ("UNREGISTER", "UNREGISTER <userName>"),
        ("CONNECT", "CONNECT <userName>"),
        ("DISCONNECT", "DISCONNECT <userName>"),
        ("USERS x", "USERS"),
        ("SEND bea", "SEND <userName> <message>"),
        (
            "SENDATTACH bea /tmp/x",
            "SENDATTACH <userName> <message> <fileName>",
        ),
        (
            "GETFILE a b",
            "GETFILE <userName> <remote_FileName> <local_fileName>",
        ),
        ("QUIT now", "QUIT"),
    ] {
        client.run(line, &format!("Syntax error. Usage: {usage}"));
    }
}

#[test]
fn server_down_gives_fail_lines_quickly() {
    let port = e2e::closed_port();
    let mut client = ConsoleClient::start(port, "http://127.0.0.1:1");
    let start = Instant::now();
    client.run("REGISTER ana", "REGISTER FAIL");
    client.run("UNREGISTER ana", "UNREGISTER FAIL");
    client.run("CONNECT ana", "CONNECT FAIL");
    client.run("DISCONNECT ana", "DISCONNECT FAIL");
    client.run("USERS", "CONNECTED USERS FAIL / USER IS NOT CONNECTED");
    client.run("SEND bea hola", "SEND FAIL");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "refused connections fail at once"
    );
    client
        .stderr
        .wait_until(|lines| !lines.is_empty(), "the reasons, on stderr");
}

#[test]
fn a_silent_server_costs_a_few_seconds_not_a_hang() {
    // Accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(20));
        drop(held);
    });
    let mut client = ConsoleClient::start(port, "http://127.0.0.1:1");
    let start = Instant::now();
    client.run("REGISTER ana", "REGISTER FAIL");
    assert!(start.elapsed() < Duration::from_secs(8));
}

#[test]
fn malformed_answers_are_a_fail_line_not_a_crash() {
    // Answers the character '0' instead of the byte 0, as some broken servers do.
    let bad = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = bad.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in bad.incoming().take(1) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 64];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = std::io::Write::write_all(&mut stream, b"0");
        }
    });
    let mut client = ConsoleClient::start(port, "http://127.0.0.1:1");
    client.run("REGISTER ana", "REGISTER FAIL");
    client.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("not one the protocol defines")),
        "a diagnostic",
    );
}

#[test]
fn long_messages_are_refused_locally_and_the_formatter_may_be_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    register(&server, "bea");
    let mut ana = ConsoleClient::start(server.port, "http://127.0.0.1:1");
    ana.run("REGISTER ana", "REGISTER OK");
    ana.run("CONNECT ana", "CONNECT OK");
    ana.run(&format!("SEND bea {}", "x".repeat(256)), "SEND FAIL");
    ana.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("256 bytes, at most 255")),
        "the reason on stderr, not stdout",
    );
    ana.run("SEND bea tal   cual", "SEND OK - MESSAGE 1");
    ana.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("formatter unreachable")),
        "the client says so",
    );
    let text = server.db.text("SELECT text FROM pending_messages");
    assert_eq!(text, "tal   cual", "sent as typed");
}

#[test]
fn the_listener_takes_pushes_in_both_styles() {
    for style in ["spaces", "underscores"] {
        let (_dir, server, formatter) = setup(&["--push-style", style]);
        register(&server, "ana");
        let mut bea = ConsoleClient::start(server.port, &formatter.url());
        bea.run("REGISTER bea", "REGISTER OK");
        bea.run("CONNECT bea", "CONNECT OK");
        assert_eq!(server.call(&["SEND", "ana", "bea", "estilo"]), e2e::sent(1));
        bea.wait_for("MESSAGE 1 FROM ana\nestilo\nEND\n");
        // And an ack for a message of ours, sent straight to the listener.
        let port = server.db.int("SELECT port FROM users WHERE alias='bea'") as u16;
        let ack: &[u8] = if style == "spaces" {
            b"SEND MESS ACK"
        } else {
            b"SEND_MESS_ACK"
        };
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::io::Write::write_all(&mut stream, &encode(&[ack, b"7"])).unwrap();
        drop(stream);
        bea.wait_for("SEND MESSAGE 7 OK\n");
    }
}

#[test]
fn attachments_end_to_end() {
    let (dir, server, formatter) = setup(&[]);
    let mut ana = ConsoleClient::start(server.port, &formatter.url());
    let mut bea = ConsoleClient::start(server.port, &formatter.url());
    ana.run("REGISTER ana", "REGISTER OK");
    bea.run("REGISTER bea", "REGISTER OK");
    ana.run("CONNECT ana", "CONNECT OK");
    bea.run("CONNECT bea", "CONNECT OK");
    // A multi-megabyte file of varied bytes.
    let original: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let path = dir.path().join("datos.bin");
    std::fs::write(&path, &original).unwrap();
    let path = std::fs::canonicalize(&path).unwrap().display().to_string();
    ana.run(
        &format!("SENDATTACH bea mira   esto {path}"),
        "SENDATTACH OK - MESSAGE 1",
    );
    bea.wait_for(&format!(
        "MESSAGE 1 FROM ana\nmira esto\nEND\nFILE {path}\n"
    ));
    // The sender's ack names the file (the later edition's line).
    ana.wait_for(&format!("SENDATTACH MESSAGE 1 {path} OK\n"));
    let local = dir.path().join("copia.bin");
    bea.run(
        &format!("GETFILE ana {path} {}", local.display()),
        "GET_FILE OK",
    );
    // The progress is drawn on stderr, never on stdout.
    bea.stderr.wait_until(
        |l| l.iter().any(|l| l.ends_with("100% (4.8 of 4.8 MiB)")),
        "the finished progress bar",
    );
    assert!(!bea.output().contains("GETFILE ["), "no progress on stdout");
    assert!(
        std::fs::read(&local).unwrap() == original,
        "identical bytes"
    );
    // Only files offered as attachments are served.
    bea.run(
        &format!("GETFILE ana /etc/passwd {}", dir.path().join("x").display()),
        "GET_FILE FAIL / FILE NOT EXIST",
    );
    assert!(!dir.path().join("x").exists());
    // A missing file is refused before anything is sent.
    ana.run("SENDATTACH bea hola /no/such/file", "SENDATTACH FAIL");
    ana.stderr
        .wait_until(|l| l.iter().any(|l| l.contains("/no/such/file")), "why");
    bea.run(
        "GETFILE nadie /x /tmp/y",
        "FILE TRANSFER FAILED, user not connected.",
    );
    ana.run(
        &format!("SENDATTACH nadie hola {path}"),
        "SENDATTACH FAIL, USER DOES NOT EXIST",
    );
    ana.run("SEND nadie hola", "SEND FAIL / USER DOES NOT EXIST");
}

#[test]
fn a_truncated_transfer_is_detected() {
    let (dir, server, formatter) = setup(&[]);
    // A fake peer that promises 1000 bytes and sends 10.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_port = fake.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in fake.incoming() {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 512];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = std::io::Write::write_all(&mut stream, b"1000\0only ten");
        }
    });
    register(&server, "eve");
    assert_eq!(
        server.call(&["CONNECT", "eve", &fake_port.to_string()]),
        [0]
    );
    let mut bea = ConsoleClient::start(server.port, &formatter.url());
    bea.run("REGISTER bea", "REGISTER OK");
    bea.run("CONNECT bea", "CONNECT OK");
    let local = dir.path().join("cut.bin");
    bea.run(
        &format!("GETFILE eve /f {}", local.display()),
        "GET_FILE FAIL",
    );
    assert!(!local.exists(), "no partial file is left");
    bea.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("cut short")),
        "truncation diagnostic",
    );
}
