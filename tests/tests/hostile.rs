//! Regression tests for what trying the server as a hostile user found: each test names the
//! finding it guards, drives the real binary, and fails on the old behaviour.

use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::{
    connected, encode, pending_count, read_to_close, register, sent, try_request, wait_for_file,
    with_fsync_shim, Db, HoldingListener, Server, PATIENCE,
};

/// Finding 1: listeners that accept a push and never read nor close held a deliverer thread
/// each for the whole push timeout, delaying every other user's deliveries.
#[test]
fn fifty_stuck_listeners_delay_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--push-timeout-ms",
            "4000",
            "--connect-window-ms",
            "0",
            "--register-form",
            "one",
        ],
    );
    register(&server, "ana");
    let stuck = HoldingListener::start();
    for n in 0..50 {
        let alias = format!("s{n}");
        register(&server, &alias);
        let port = stuck.port.to_string();
        assert_eq!(server.call(&["CONNECT", &alias, &port]), [0]);
        assert_eq!(server.call(&["SEND", "ana", &alias, "hola"]), sent(n + 1));
    }
    // All fifty pushes are under way at once: none waits for another to time out.
    stuck.wait_accepted(50);
    register(&server, "good");
    let good = e2e::connect(&server, "good");
    for k in 1..=20u32 {
        let text = format!("m{k}");
        assert_eq!(server.call(&["SEND", "ana", "good", &text]), sent(50 + k));
        assert_eq!(
            good.next(),
            encode(&[
                b"SEND MESSAGE",
                b"ana",
                (50 + k).to_string().as_bytes(),
                text.as_bytes()
            ])
        );
    }
    assert!(
        (0..50).all(|n| connected(&server, &format!("s{n}"))),
        "every healthy push arrived while the stuck ones were still waiting"
    );
    server.stderr.wait_until(
        |lines| {
            lines
                .iter()
                .filter(|l| l.contains("timed out after 4000 ms"))
                .count()
                == 50
        },
        "a clear timeout line for each stuck push",
    );
    let stderr = server.stderr.snapshot();
    assert!(
        !stderr.iter().any(|l| l.contains("temporarily unavailable")),
        "{stderr:?}"
    );
    assert_eq!(pending_count(&server.db), 50, "stuck messages stay pending");
}

/// Finding 2: once accept failed with EMFILE the server never accepted again, even after
/// descriptors were freed, until somebody else connected.
#[test]
fn out_of_descriptors_the_server_accepts_again_once_they_free_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        &Db::fresh(dir.path()),
        // On PostgreSQL each database connection takes descriptors of its own: two workers.
        &["--idle-timeout-ms", "60000", "--db-workers", "1"],
        |command| e2e::limit_descriptors(command, 48),
    );
    let idle: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    server.stderr.wait_until(
        |lines| lines.iter().any(|l| l.contains("Too many open files")),
        "the server running out of descriptors",
    );
    // Queued while there are no descriptors; nobody connects after it.
    let addr = server.addr();
    let queued = std::thread::spawn(move || try_request(addr, &[b"REGISTER", b"ana"]));
    std::thread::sleep(Duration::from_millis(50));
    drop(idle);
    let answer = queued.join().unwrap().expect("the queued client is served");
    assert_eq!(answer, [0]);
    assert_eq!(server.call(&["REGISTER", "ana"]), [1]);
    assert!(server.alive());
}

/// Finding 3: a write lock held by another process (a sqlite3 shell) made every write of a
/// turn sleep the busy timeout on the reactor thread, stalling everybody.
#[test]
fn a_locked_database_refuses_writes_at_once_while_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on(&Db::sqlite_in(dir.path()), &["--register-form", "one"]);
    register(&server, "ana");
    let ana = e2e::connect(&server, "ana");
    let lock = rusqlite::Connection::open(server.db.path()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let start = Instant::now();
    for n in 0..25 {
        assert_eq!(server.call(&["REGISTER", &format!("u{n}")]), [2]);
    }
    let users = server.call(&["USERS", "ana"]);
    let elapsed = start.elapsed();
    let entry = format!("ana::127.0.0.1::{}", ana.port);
    assert_eq!(users, [vec![0], encode(&[b"1", entry.as_bytes()])].concat());
    // The old server slept 200 ms per locked write (5 s here); this bound is 50 times what
    // the requests need.
    assert!(
        elapsed < Duration::from_millis(2500),
        "25 refused writes and a read took {elapsed:?}: something waited for the lock"
    );
    // The log line travels through the server's stderr writer thread and the harness's
    // reader thread: wait for it rather than race it.
    server.stderr.wait_until(
        |lines| lines.iter().any(|l| l.contains("database is locked")),
        "the refused writes' log line",
    );
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(server.call(&["REGISTER", "u0"]), [0], "writes resume");
}

/// A listener that reads each push and reports it; it closes the first connection only when
/// told to, and every later one at once.
fn gated_listener() -> (u16, mpsc::Receiver<Vec<u8>>, mpsc::Sender<()>) {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let (pushes_tx, pushes) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for (n, stream) in socket.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let push = read_to_close(&mut stream);
            // The server connects the next push of a flush ahead of time and writes it only
            // after the one before was delivered: a flush stopped meanwhile leaves that
            // connection closed with nothing written, which carries no message.
            if push.is_empty() && n > 0 {
                continue;
            }
            if pushes_tx.send(push).is_err() {
                return;
            }
            if n == 0 {
                let _ = released.recv();
            }
        }
    });
    (port, pushes, release)
}

/// With ten messages from ana waiting for bea, starts bea's flush into a listener that holds
/// the first push open (read, not closed), sends `stop` (UNREGISTER or DISCONNECT bea), lets
/// the listener go on, and checks that no further push arrives.
fn stop_a_flush_after_its_first_push(server: &Server, stop: &[&str]) {
    for k in 1..=10 {
        assert_eq!(
            server.call(&["SEND", "ana", "bea", &format!("m{k}")]),
            sent(k)
        );
    }
    let (port, pushes, release) = gated_listener();
    assert_eq!(server.call(&["CONNECT", "bea", &port.to_string()]), [0]);
    let first = pushes.recv_timeout(PATIENCE).unwrap();
    assert_eq!(first, encode(&[b"SEND MESSAGE", b"ana", b"1", b"m1"]));
    // The first push is read but not yet closed (in flight), the second is connected behind it.
    assert_eq!(server.call(stop), [0]);
    release.send(()).unwrap();
    register(server, "zed");
    server.stdout.wait_for("s> REGISTER zed OK");
    if let Ok(push) = pushes.recv_timeout(Duration::from_millis(300)) {
        panic!(
            "pushed after {}: {:?}",
            stop[0],
            String::from_utf8_lossy(&push)
        );
    }
}

/// Finding 4: UNREGISTER did not cancel the batch already handed to a deliverer: up to 63
/// deleted messages were still pushed, and logged as delivered, after its answer.
#[test]
fn unregister_stops_the_flush_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--connect-window-ms", "0"]);
    register(&server, "ana");
    register(&server, "bea");
    let ana = e2e::connect(&server, "ana");
    stop_a_flush_after_its_first_push(&server, &["UNREGISTER", "bea"]);
    ana.expect_none(Duration::from_millis(50));
    let lines = server.stdout.snapshot();
    assert!(
        !lines.iter().any(|l| l.ends_with("TO bea")),
        "nothing counts as delivered to bea: {lines:?}"
    );
    assert_eq!(pending_count(&server.db), 0);
}

/// A flush overlaps its pushes (the next one connects while the listener reads the one
/// ahead): after DISCONNECT no later message may still come through that connection, and the
/// flush resumes in order, the interrupted push included, at the next CONNECT.
#[test]
fn disconnect_stops_the_flush_in_flight_and_the_next_connect_resumes_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--connect-window-ms", "0"]);
    register(&server, "ana");
    register(&server, "bea");
    stop_a_flush_after_its_first_push(&server, &["DISCONNECT", "bea"]);
    assert_eq!(
        pending_count(&server.db),
        10,
        "nothing counted as delivered"
    );
    let bea = e2e::connect(&server, "bea");
    for k in 1..=10u32 {
        assert_eq!(
            bea.next(),
            encode(&[
                b"SEND MESSAGE",
                b"ana",
                k.to_string().as_bytes(),
                format!("m{k}").as_bytes()
            ]),
            "push {k} in order"
        );
    }
    bea.expect_none(Duration::from_millis(100));
}

/// Finding 5: names with `::`, `,`, `|` or white space were accepted, and `::` broke the
/// `alias::IP::port` entries of USERS.
#[test]
fn names_with_separators_or_white_space_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for bad in ["a::b", "a:b", "a,b", "a|b", "a b", "a\tb", "a\u{a0}b"] {
        assert_eq!(server.call(&["REGISTER", bad]), [2], "{bad:?}");
    }
    register(&server, "ana");
    assert_eq!(server.call(&["CONNECT", "an::a", "4000"]), [3]);
    assert_eq!(server.call(&["SEND", "ana", "b|c", "hola"]), [2]);
    // The full name of the three-field form is not a key: spaces stay allowed there.
    assert_eq!(
        server.call(&["REGISTER", "Ana Alba", "anita", "01/01/2000"]),
        [0]
    );
    let aliases: Vec<String> = server
        .db
        .rows("SELECT alias FROM users ORDER BY alias")
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect();
    assert_eq!(aliases, ["ana", "anita"]);
}

/// Finding 6: WAL checkpoints (with their fsyncs) ran inside commits on the reactor thread.
#[test]
fn checkpoints_run_on_the_checkpointer_never_in_the_reactor() {
    let fill = |server: &Server, count: u32| {
        register(server, "ana");
        register(server, "bea");
        for k in 1..=count {
            assert_eq!(server.call(&["SEND", "ana", "bea", "x"]), sent(k));
        }
    };
    // With the checkpointer held off, the database file must not grow however large the WAL
    // gets: SQLite's own automatic checkpoint (at 1000 pages) would have copied it back inside
    // a commit.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &Db::sqlite_in(dir.path()),
        &["--checkpoint-pages", "1000000", "--durability", "normal"],
    );
    let db_size = std::fs::metadata(server.db.path()).unwrap().len();
    fill(&server, 600);
    let wal = dir.path().join("messages.db-wal");
    let wal_size = std::fs::metadata(&wal).unwrap().len();
    assert!(wal_size > 1200 * 4096, "the WAL grew to {wal_size} bytes");
    assert_eq!(std::fs::metadata(server.db.path()).unwrap().len(), db_size);
    drop(server);

    // With a low threshold, the checkpointer copies the WAL back while the server runs.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &Db::sqlite_in(dir.path()),
        &["--checkpoint-pages", "50", "--durability", "normal"],
    );
    let db_size = std::fs::metadata(server.db.path()).unwrap().len();
    fill(&server, 100);
    let start = Instant::now();
    while std::fs::metadata(server.db.path()).unwrap().len() <= db_size {
        assert!(start.elapsed() < PATIENCE, "the checkpointer never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Finding 7: a failed fsync was answered with error codes while the syncer went on, so a
/// later success could cover pages the kernel had dropped. Now it stops the server.
#[test]
fn a_failed_fsync_stops_the_server_without_answering_and_a_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let control = tempfile::tempdir().unwrap();
    let db = Db::sqlite_in(dir.path());
    let mut server = Server::start_with(&db, &[], with_fsync_shim(control.path()));
    register(&server, "ana");
    register(&server, "bea");
    std::fs::write(control.path().join("fail"), b"").unwrap();
    let answer = try_request(server.addr(), &[b"SEND", b"ana", b"bea", b"perdido"]);
    assert!(
        answer.as_deref().map_or(true, <[u8]>::is_empty),
        "no answer at all, not even an error code: {answer:?}"
    );
    assert_eq!(server.wait_in_place(), Some(1));
    let stderr = server.stderr.snapshot();
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("fatal: fsync of") && l.contains("Input/output error")),
        "{stderr:?}"
    );
    drop(server);
    std::fs::remove_file(control.path().join("fail")).unwrap();
    let server = Server::start_on(&db, &[]);
    assert_eq!(server.call(&["REGISTER", "ana"]), [1], "ana survived");
    let answer = server.call(&["SEND", "ana", "bea", "otra vez"]);
    assert_eq!(answer[0], 0, "the restarted server works");
}

/// Finding 10: no test failed if the durability gate was removed. A SEND must stay unanswered
/// while the fsync that covers it has not returned, and the server must go on serving reads.
#[test]
fn send_is_answered_only_after_its_fsync_returns() {
    let dir = tempfile::tempdir().unwrap();
    let control = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &Db::sqlite_in(dir.path()),
        &[],
        with_fsync_shim(control.path()),
    );
    register(&server, "ana");
    register(&server, "bea");
    std::fs::write(control.path().join("hang"), b"").unwrap();
    let addr = server.addr();
    let sending =
        std::thread::spawn(move || try_request(addr, &[b"SEND", b"ana", b"bea", b"hola"]));
    wait_for_file(&control.path().join("entered"));
    // The reactor goes on while the disk hangs; the SEND waits for it.
    assert_eq!(server.call(&["REGISTER", "ana"]), [1]);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        assert!(
            !sending.is_finished(),
            "SEND was answered before its fsync returned"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::remove_file(control.path().join("hang")).unwrap();
    assert_eq!(sending.join().unwrap().unwrap(), sent(1));
}

/// Finding 8: every channel and queue was unbounded. Pushes in flight stay within
/// `--max-pushes`; the recipients beyond it wait their turn and are served as room frees up.
#[test]
fn pushes_in_flight_never_exceed_max_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--max-pushes",
            "4",
            "--push-timeout-ms",
            "60000",
            "--connect-window-ms",
            "0",
        ],
    );
    register(&server, "ana");
    let stuck = HoldingListener::start();
    for n in 0..10 {
        let alias = format!("s{n}");
        register(&server, &alias);
        assert_eq!(
            server.call(&["CONNECT", &alias, &stuck.port.to_string()]),
            [0]
        );
        assert_eq!(server.call(&["SEND", "ana", &alias, "hola"]), sent(n + 1));
    }
    for expected in [4, 8, 10] {
        stuck.wait_accepted(expected);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(stuck.accepted(), expected, "at most 4 pushes at once");
        stuck.release_all();
    }
}

/// Finding 9: console lines were written with blocking writes from the reactor, so a stdout
/// pipe nobody read froze the server.
#[test]
fn a_stalled_stdout_does_not_stall_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--durability", "normal", "--register-form", "one"],
    );
    server.stdout.pause();
    // About 90 KiB of console lines: more than a pipe holds.
    for n in 0..4000 {
        assert_eq!(server.call(&["REGISTER", &format!("u{n}")]), [0]);
    }
    server.stdout.resume();
    server.stdout.wait_for("s> REGISTER u3999 OK");
    let lines = server.stdout.snapshot();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("s> REGISTER"))
            .count(),
        4000,
        "every line arrives once the pipe is read again"
    );
}

#[test]
fn diagnostics_carry_a_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.call(&["REGISTER", "a b"]), [2]);
    server.stderr.wait_until(|l| !l.is_empty(), "a diagnostic");
    let line = server.stderr.snapshot()[0].clone();
    let (stamp, text) = line.split_once(' ').unwrap();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{line:?}"
    );
    assert!(text.starts_with("INFO  REGISTER rejected"), "{line:?}");
}

#[test]
fn the_log_level_chooses_what_reaches_stderr() {
    // A rejected request is info; a failed push is a warning.
    let provoke = |server: &Server| {
        assert_eq!(server.call(&["REGISTER", "a b"]), [2]);
        register(server, "ana");
        register(server, "bea");
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = gone.local_addr().unwrap().port().to_string();
        drop(gone);
        assert_eq!(server.call(&["CONNECT", "bea", &port]), [0]);
        assert_eq!(server.call(&["SEND", "ana", "bea", "hola"]), sent(1));
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--log-level", "warn", "--connect-window-ms", "0"],
    );
    provoke(&server);
    server.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("WARN  push to bea failed")),
        "the warning",
    );
    assert!(
        !server.stderr.snapshot().iter().any(|l| l.contains("INFO")),
        "no info lines at --log-level warn: {:?}",
        server.stderr.snapshot()
    );
    drop(server);
    // RUST_LOG names the level when the flag is absent.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &Db::fresh(dir.path()),
        &["--connect-window-ms", "0"],
        |command| {
            command.env("RUST_LOG", "error");
        },
    );
    provoke(&server);
    // The failed push marks bea disconnected: by then its warning would have been written.
    let start = Instant::now();
    while e2e::connected(&server, "bea") {
        assert!(start.elapsed() < PATIENCE, "the push failed");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.signal(libc::SIGTERM);
    let stderr = server.stderr.clone();
    assert_eq!(server.wait(), Some(0));
    assert!(
        stderr.snapshot().is_empty(),
        "nothing below error: {:?}",
        stderr.snapshot()
    );
}
