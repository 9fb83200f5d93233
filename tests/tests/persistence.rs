//! Restarts lose nothing: kill -9 and SIGTERM, then a new process on the same database.

use e2e::{connect, encode, register, sent, Db, Listener, Server};

#[test]
fn kill9_then_restart_keeps_users_counters_connections_and_queue() {
    // Both modes survive a crash of the server process; `full` also survives power loss.
    for durability in ["full", "normal"] {
        kill9_then_restart(durability);
    }
}

fn kill9_then_restart(durability: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", durability]);
    register(&server, "ana");
    register(&server, "bea");
    assert_eq!(
        server.call(&["REGISTER", "Carla C", "carla", "01/01/2001"]),
        [0]
    );
    for n in 1..=5u32 {
        assert_eq!(
            server.call(&["SEND", "ana", "bea", &format!("m{n}")]),
            sent(n)
        );
    }
    let carla = connect(&server, "carla");
    let db = server.db.clone();
    server.kill9();

    let server = Server::start_on(&db, &[]);
    assert_eq!(
        server.call(&["REGISTER", "ana"]),
        [1],
        "registration survived"
    );
    assert_eq!(
        server.call(&["CONNECT", "carla", &carla.port_field()]),
        [2],
        "connection state survived"
    );
    assert_eq!(
        server.call(&["SEND", "ana", "bea", "m6"]),
        sent(6),
        "the id counter survived"
    );
    let bea = connect(&server, "bea");
    for n in 1..=6u32 {
        assert_eq!(
            bea.next(),
            encode(&[
                b"SEND MESSAGE",
                b"ana",
                n.to_string().as_bytes(),
                format!("m{n}").as_bytes()
            ])
        );
    }
}

#[test]
fn after_a_restart_users_still_connected_get_their_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--connect-window-ms", "0"]);
    register(&server, "ana");
    register(&server, "bea");
    let bea = Listener::start();
    // Connected, but its listener refuses while the server is down and the message arrives.
    assert_eq!(server.call(&["CONNECT", "bea", &bea.port_field()]), [0]);
    let db = server.db.clone();
    server.kill9();
    // Store a message directly in the database, as an older server would have left it.
    db.execute(
        "INSERT INTO pending_messages (recipient, sender, id, text, accepted_at) VALUES ('bea', 'ana', 1, 'guardado', 0)",
    );
    let server = Server::start_on(&db, &[]);
    assert_eq!(
        bea.next(),
        encode(&[b"SEND MESSAGE", b"ana", b"1", b"guardado"])
    );
    server.stdout.wait_for("s> SEND MESSAGE 1 FROM ana TO bea");
}

#[test]
fn sigterm_and_sigint_stop_cleanly_with_exit_code_zero() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &[]);
        register(&server, "ana");
        server.signal(signal);
        let db = server.db.clone();
        assert_eq!(server.wait(), Some(0));
        let server = Server::start_on(&db, &[]);
        assert_eq!(server.call(&["REGISTER", "ana"]), [1]);
    }
}

#[test]
fn schema_migrations_are_recorded_and_a_second_start_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let db = server.db.clone();
    server.kill9();
    let (version, dialect) = match &db {
        Db::Sqlite(path) => {
            let version: i64 = rusqlite::Connection::open(path)
                .unwrap()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            (version, "")
        }
        Db::Postgres(_) => (
            db.int("SELECT count(*) FROM schema_migrations"),
            "/postgres",
        ),
    };
    let dir = format!("{}/../migrations{dialect}", env!("CARGO_MANIFEST_DIR"));
    let files = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count();
    assert_eq!(version as usize, files, "every migration file applied");
    let server = Server::start_on(&db, &[]);
    register(&server, "ana");
}
