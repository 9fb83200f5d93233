//! Pushes to real listeners: both op-name styles, acks, attachments, ordered flushes, and what
//! happens when a listener is not there.

use std::net::TcpListener;
use std::time::Duration;

use e2e::{closed_port, connect, encode, register, sent, Listener, Server};

fn push_message(sender: &str, id: u32, text: &str) -> Vec<u8> {
    encode(&[
        b"SEND MESSAGE",
        sender.as_bytes(),
        id.to_string().as_bytes(),
        text.as_bytes(),
    ])
}

/// A server with users ana and bea registered and connected to fresh listeners.
fn ana_and_bea_connected(args: &[&str]) -> (tempfile::TempDir, Server, Listener, Listener) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), args);
    register(&server, "ana");
    register(&server, "bea");
    let ana = connect(&server, "ana");
    let bea = connect(&server, "bea");
    (dir, server, ana, bea)
}

#[test]
fn live_message_then_ack_in_the_spaces_style() {
    let (_dir, server, ana, bea) = ana_and_bea_connected(&[]);
    assert_eq!(server.call(&["SEND", "ana", "bea", "hola bea"]), sent(1));
    assert_eq!(bea.next(), push_message("ana", 1, "hola bea"));
    assert_eq!(ana.next(), encode(&[b"SEND MESS ACK", b"1"]));
    server.stdout.wait_for("s> SEND MESSAGE 1 FROM ana TO bea");
    assert_eq!(
        e2e::pending_count(&server.db),
        0,
        "a delivered message leaves the store"
    );
}

#[test]
fn underscore_style_and_attachments() {
    let (_dir, server, ana, bea) = ana_and_bea_connected(&["--push-style", "underscores"]);
    assert_eq!(server.call(&["SEND", "ana", "bea", "uno"]), sent(1));
    assert_eq!(bea.next(), encode(&[b"SEND_MESSAGE", b"ana", b"1", b"uno"]));
    assert_eq!(ana.next(), encode(&[b"SEND_MESS_ACK", b"1"]));
    assert_eq!(
        server.call(&["SENDATTACH", "ana", "bea", "foto", "/home/ana/f.png"]),
        sent(2)
    );
    assert_eq!(
        bea.next(),
        encode(&[
            b"SEND_MESSAGE_ATTACH",
            b"ana",
            b"2",
            b"foto",
            b"/home/ana/f.png"
        ])
    );
    assert_eq!(
        ana.next(),
        encode(&[b"SEND_MESS_ATTACH_ACK", b"2", b"/home/ana/f.png"])
    );
}

#[test]
fn attachment_pushes_in_the_spaces_style() {
    let (_dir, server, ana, bea) = ana_and_bea_connected(&[]);
    assert_eq!(
        server.call(&["SENDATTACH", "ana", "bea", "foto", "/f"]),
        sent(1)
    );
    assert_eq!(
        bea.next(),
        encode(&[b"SEND MESSAGE ATTACH", b"ana", b"1", b"foto", b"/f"])
    );
    assert_eq!(ana.next(), encode(&[b"SEND MESS ATTACH ACK", b"1", b"/f"]));
}

#[test]
fn no_ack_when_the_sender_is_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    register(&server, "ana");
    register(&server, "bea");
    let bea = connect(&server, "bea");
    assert_eq!(server.call(&["SEND", "ana", "bea", "x"]), sent(1));
    assert_eq!(bea.next(), push_message("ana", 1, "x"));
    server.stdout.wait_for("s> SEND MESSAGE 1 FROM ana TO bea");
}

/// Message `n` of the flush test: every third from carla, the rest from ana, with their ids.
fn origin(n: u32) -> (&'static str, u32) {
    if n.is_multiple_of(3) {
        ("carla", n / 3)
    } else {
        ("ana", n - n / 3)
    }
}

#[test]
fn many_pending_messages_flush_in_order_when_the_recipient_connects() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    register(&server, "ana");
    register(&server, "carla");
    register(&server, "bea");
    for n in 1..=100u32 {
        let (from, id) = origin(n);
        assert_eq!(
            server.call(&["SEND", from, "bea", &format!("m{n}")]),
            sent(id)
        );
    }
    let bea = connect(&server, "bea");
    for n in 1..=100u32 {
        let (from, id) = origin(n);
        assert_eq!(
            bea.next(),
            push_message(from, id, &format!("m{n}")),
            "push {n} in acceptance order"
        );
    }
    bea.expect_none(Duration::from_millis(100));
    server.stdout.wait_for("s> SEND MESSAGE 67 FROM ana TO bea");
    let lines = server.stdout.snapshot();
    let delivered: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("s> SEND MESSAGE"))
        .collect();
    assert_eq!(delivered.len(), 100);
    assert_eq!(delivered[0], "s> SEND MESSAGE 1 FROM ana TO bea");
    assert_eq!(delivered[2], "s> SEND MESSAGE 1 FROM carla TO bea");
}

#[test]
fn a_listener_that_is_gone_keeps_the_message_and_marks_the_user_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--connect-window-ms", "0"]);
    register(&server, "ana");
    register(&server, "bea");
    let port = closed_port();
    assert_eq!(server.call(&["CONNECT", "bea", &port.to_string()]), [0]);
    assert_eq!(server.call(&["SEND", "ana", "bea", "perdido"]), sent(1));
    server.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("push to bea failed")),
        "a push failure line",
    );
    assert_eq!(
        server.call(&["DISCONNECT", "bea"]),
        [2],
        "marked disconnected"
    );
    let bea = connect(&server, "bea");
    assert_eq!(
        bea.next(),
        push_message("ana", 1, "perdido"),
        "kept and delivered at the next CONNECT"
    );
}

#[test]
fn a_refused_push_right_after_connect_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    register(&server, "ana");
    register(&server, "bea");
    assert_eq!(server.call(&["SEND", "ana", "bea", "temprano"]), sent(1));
    // Like clients that only listen() after reading the CONNECT answer.
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    drop(socket);
    assert_eq!(server.call(&["CONNECT", "bea", &port.to_string()]), [0]);
    std::thread::sleep(Duration::from_millis(300));
    let late = Listener::start_on(port);
    assert_eq!(late.next(), push_message("ana", 1, "temprano"));
}
