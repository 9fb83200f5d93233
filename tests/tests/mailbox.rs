//! Mailbox limits: a full mailbox refuses more, and messages that wait too long expire.

use std::time::Duration;

use e2e::{pending_count, register, sent, LineConn, Server};

#[test]
fn a_full_mailbox_refuses_more_until_it_drains() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &["--max-pending-per-user", "3"]);
    register(&server, "ana");
    register(&server, "bea");
    for id in 1..=3 {
        assert_eq!(server.call(&["SEND", "ana", "bea", "hola"]), sent(id));
    }
    assert_eq!(server.call(&["SEND", "ana", "bea", "una más"]), [2]);
    server.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("bea's mailbox is full")),
        "the reason on stderr",
    );
    // The chat gets its own error for the same.
    let mut cid = LineConn::chat(&server, "cid");
    cid.send("MESSAGE|bea|desde el chat");
    cid.until("ERROR|507|Buzón del destinatario lleno");
    // Delivered messages make room again.
    let bea = e2e::connect(&server, "bea");
    for _ in 0..3 {
        bea.next();
    }
    let start = std::time::Instant::now();
    while pending_count(&server.db) > 0 {
        assert!(start.elapsed() < e2e::PATIENCE);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.call(&["SEND", "ana", "bea", "otra"]), sent(4));
}

#[test]
fn messages_that_wait_longer_than_the_ttl_are_dropped_with_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--pending-ttl", "1"]);
    register(&server, "ana");
    register(&server, "bea");
    assert_eq!(server.call(&["SEND", "ana", "bea", "caduca"]), sent(1));
    server.stderr.wait_until(
        |l| {
            l.iter()
                .any(|l| l.contains("message 1 from ana to bea waited longer than --pending-ttl"))
        },
        "the expiry on stderr",
    );
    assert_eq!(pending_count(&server.db), 0);
    let bea = e2e::connect(&server, "bea");
    bea.expect_none(Duration::from_millis(300));
}
