//! On PostgreSQL, a `0` to SEND means the message's COMMIT was flushed with
//! `synchronous_commit` on, which the node's syncer asks for once for many turns (the node's
//! own commits run with it off). This file runs in a process of its own, so the cluster it
//! reconfigures serves nothing else.
//!
//! `synchronous_standby_names` naming a standby that never comes makes every synchronous
//! commit wait: the syncer's barrier waits, so the SEND must stay unanswered while its row is
//! already committed, and the node must go on answering everything else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{encode, register, sent, Db, Server, PATIENCE};

/// Waits until `count` backends of `application_name` wait for a synchronous standby.
fn wait_for_sync_rep_waiters(db: &Db, application_name: &str, count: i64) {
    let start = Instant::now();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' \
         AND application_name = '{application_name}' AND datname = current_database()"
    );
    while db.int(&sql) < count {
        assert!(
            start.elapsed() < PATIENCE,
            "no {application_name} waits for SyncRep"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn send_is_answered_only_after_a_synchronous_commit_covers_it() {
    let db = Db::postgres();
    let server = Server::start_on(&db, &["--durability", "full"]);
    register(&server, "ana");
    register(&server, "bea");

    Db::postgres_admin(&[
        "ALTER SYSTEM SET synchronous_standby_names = 'never_connects'",
        "SELECT pg_reload_conf()",
    ]);
    // The setting takes effect once every process has reread it: a probe committing
    // synchronously again and again until one commit waits for the standby shows that it has.
    let url = match &db {
        Db::Postgres(url) => url.clone(),
        Db::Sqlite(_) => unreachable!("Db::postgres"),
    };
    let released = Arc::new(AtomicBool::new(false));
    let probe = std::thread::spawn({
        let released = released.clone();
        move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client
                .batch_execute("SET application_name = 'probe'; SET synchronous_commit = on")
                .unwrap();
            while !released.load(Ordering::SeqCst) {
                // A transaction that writes no WAL would commit asynchronously and never wait.
                client
                    .batch_execute(
                        "BEGIN; SELECT pg_logical_emit_message(true, 'probe', ''); COMMIT",
                    )
                    .unwrap();
            }
        }
    });
    wait_for_sync_rep_waiters(&db, "probe", 1);

    let mut sending = TcpStream::connect(server.addr()).unwrap();
    sending
        .write_all(&encode(&[b"SEND", b"ana", b"bea", b"hola"]))
        .unwrap();
    wait_for_sync_rep_waiters(&db, "messenger syncer", 1);
    assert_eq!(
        db.int("SELECT count(*) FROM pending_messages"),
        1,
        "committed by the node, not yet flushed for a synchronous commit"
    );
    // The node goes on while its durability barrier waits; the SEND waits with it.
    assert_eq!(server.call(&["REGISTER", "ana"]), [1]);
    sending
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = sending.read(&mut byte);
    assert!(
        early
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "SEND answered before a synchronous commit covered it: {early:?} {byte:?}"
    );

    released.store(true, Ordering::SeqCst);
    Db::postgres_admin(&[
        "ALTER SYSTEM RESET synchronous_standby_names",
        "SELECT pg_reload_conf()",
    ]);
    probe.join().unwrap();
    sending.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    sending.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, sent(1));
}
