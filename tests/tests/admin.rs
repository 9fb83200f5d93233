//! `--admin-addr`: the metrics after a known sequence of operations, and the status page as a
//! real browser (Debian's chromium, headless) renders it.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use e2e::{http, register, sent, CanvasConn, LineConn, Server, PATIENCE};

fn metrics(server: &Server) -> String {
    http(server.admin_port.unwrap(), "GET", "/metrics", None, b"").text()
}

/// Waits until the metrics contain `line`.
fn wait_metric(server: &Server, line: &str) {
    let start = Instant::now();
    while !metrics(server).lines().any(|l| l == line) {
        assert!(
            start.elapsed() < PATIENCE,
            "no {line:?} in\n{}",
            metrics(server)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_what_happened_and_the_status_page_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &["--admin-addr", "127.0.0.1:0"]);
    register(&server, "ana");
    assert_eq!(server.call(&["REGISTER", "ana"]), [1]);
    register(&server, "bea");
    assert_eq!(server.call(&["SEND", "ana", "bea", "hola"]), sent(1));
    assert_eq!(server.call(&["SEND", "ana", "nadie", "hola"]), [1]);
    let text = metrics(&server);
    for line in [
        r#"messenger_requests_total{op="REGISTER",result="0"} 2"#,
        r#"messenger_requests_total{op="REGISTER",result="1"} 1"#,
        r#"messenger_requests_total{op="SEND",result="0"} 1"#,
        r#"messenger_requests_total{op="SEND",result="1"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    // What only the database knows is a snapshot, read again beside the reactor.
    wait_metric(&server, "messenger_pending_messages 1");
    wait_metric(&server, r#"messenger_online_users{frontend="messenger"} 0"#);
    // Three writes were answered durably: at least one sync (an fsync of SQLite's WAL, or
    // PostgreSQL's barrier commit), all in the +Inf bucket.
    let fsyncs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("messenger_fsync_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(fsyncs >= 1, "{text}");
    assert!(text.contains(&format!(
        "messenger_fsync_seconds_bucket{{le=\"+Inf\"}} {fsyncs}"
    )));

    // Online through every front-end, and a delivery.
    let _chat = LineConn::chat(&server, "carla");
    let mut rooms = LineConn::rooms(&server, "dani");
    rooms.send("ROOM Patio");
    rooms.line();
    let mut canvas = CanvasConn::connect(&server);
    canvas.send(r#"{"comando": "nuevo"}"#);
    canvas.recv();
    let bea = e2e::connect(&server, "bea");
    bea.next();
    wait_metric(&server, r#"messenger_pushes_total{result="delivered"} 1"#);
    wait_metric(&server, r#"messenger_online_users{frontend="chat"} 1"#);
    wait_metric(&server, r#"messenger_online_users{frontend="rooms"} 1"#);
    wait_metric(&server, r#"messenger_online_users{frontend="canvas"} 1"#);
    wait_metric(&server, r#"messenger_online_users{frontend="messenger"} 1"#);
    assert_eq!(server.call(&["SEND", "ana", "eva", "x"]), [1]);
    register(&server, "eva");
    assert_eq!(server.call(&["SEND", "ana", "eva", "espera"]), sent(2));

    // The status page, rendered by a real browser, once its snapshot of the database has
    // caught up.
    let start = Instant::now();
    while !http(server.admin_port.unwrap(), "GET", "/", None, b"")
        .text()
        .contains("<td>eva</td><td>1</td>")
    {
        assert!(
            start.elapsed() < PATIENCE,
            "the page's snapshot never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/", server.admin_port.unwrap());
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .output()
        .expect("chromium (Debian's package; .ci/run installs it)");
    let dom = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "<title>Messenger status</title>",
        "<td>messenger</td><td>1</td>",
        "<td>chat</td><td>1</td>",
        "<td>rooms</td><td>1</td>",
        "<td>canvas (viewers)</td><td>1</td>",
        "Pending messages: 1",
        "<td>eva</td><td>1</td>",
        "<td>Patio</td><td>0</td><td>dani</td>",
        "<td>carla</td><td>chat</td>",
        "<td>dani</td><td>rooms</td>",
        "<td>bea</td><td>messenger</td>",
        "<td>127.0.0.1</td><td>Patio</td>",
    ] {
        assert!(
            dom.contains(expected),
            "{expected} in the rendered page:\n{dom}"
        );
    }
}

/// The value of the series `series` (its name and labels as written) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Issue 28: the chat, the rooms and the canvas have metrics of their own (logins, what is
/// delivered to their sessions by kind, bytes written, slow readers disconnected); the build
/// and the start time are there; every family has its HELP and TYPE.
#[test]
fn every_front_end_has_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(
        dir.path(),
        &[
            "--admin-addr",
            "127.0.0.1:0",
            "--flood-rate",
            "0",
            "--session-buffer-bytes",
            "4096",
        ],
    );
    let mut carla = LineConn::chat(&server, "carla");
    let mut dani = LineConn::rooms(&server, "dani");
    let mut eli = LineConn::rooms(&server, "eli");
    // A name in use: refused, and counted.
    let mut other = LineConn::connect(server.rooms_addr());
    other.send("JOIN eli");
    assert_eq!(other.line(), "ERROR: Username ya en uso.");
    dani.send("ROOM Patio");
    assert_eq!(dani.line(), "Te has unido a la sala Patio.");
    eli.send("ROOM Patio");
    assert_eq!(eli.line(), "Te has unido a la sala Patio.");
    assert_eq!(dani.line(), "eli se ha unido a la sala.");
    eli.send("MESSAGE hola");
    assert_eq!(dani.line(), "eli: hola");
    carla.send("BROADCAST|buenas");
    while carla.line() != "BROADCAST|carla|buenas" {}
    let mut canvas = CanvasConn::connect(&server);
    canvas.send(r#"{"comando": "nuevo"}"#);
    canvas.recv();
    // A pixel painted: the board (or its change) goes to the viewer as a notice.
    canvas.send(r#"{"comando": "pintar", "x_pos": 7, "y_pos": 3, "nombre_color": "red"}"#);
    canvas.recv();
    wait_metric(
        &server,
        r#"messenger_session_logins_total{frontend="chat"} 1"#,
    );
    wait_metric(
        &server,
        r#"messenger_session_logins_total{frontend="rooms"} 2"#,
    );
    wait_metric(
        &server,
        r#"messenger_session_logins_total{frontend="canvas"} 1"#,
    );
    let text = metrics(&server);
    for line in [
        r#"messenger_session_deliveries_total{frontend="rooms",kind="room_line"} 1"#,
        r#"messenger_session_deliveries_total{frontend="rooms",kind="room_event"} 1"#,
        r#"messenger_session_deliveries_total{frontend="chat",kind="broadcast"} 1"#,
        r#"messenger_slow_consumers_disconnected_total{frontend="rooms"} 0"#,
        r#"messenger_refusals_total{reason="name_taken"} 1"#,
        r#"messenger_session_login_failures_total{frontend="rooms"} 1"#,
        r#"messenger_session_login_failures_total{frontend="chat"} 0"#,
        r#"messenger_messages_total{kind="room_line"} 1"#,
        r#"messenger_messages_total{kind="broadcast"} 1"#,
        r#"messenger_messages_total{kind="paint"} 1"#,
        r#"messenger_messages_total{kind="private"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} in
{text}"
        );
    }
    let user_lists = value(
        &text,
        r#"messenger_session_deliveries_total{frontend="chat",kind="user_list"}"#,
    );
    assert!(
        user_lists >= Some(1.0),
        "a user list to carla in
{text}"
    );
    let canvas_notices = value(
        &text,
        r#"messenger_session_deliveries_total{frontend="canvas",kind="canvas"}"#,
    );
    assert!(canvas_notices >= Some(1.0), "the painted pixel in\n{text}");
    for frontend in ["chat", "rooms", "canvas"] {
        let series = format!(r#"messenger_session_written_bytes_total{{frontend="{frontend}"}}"#);
        assert!(
            value(&text, &series) > Some(0.0),
            "{series} in
{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("messenger_build_info{version=") && l.ends_with(" 1")),
        "{text}"
    );
    // Storage: the turn's commits on SQLite; on PostgreSQL the storage workers' queues and
    // the events published to the other nodes (logins, room lines).
    match e2e::engine() {
        e2e::Engine::Sqlite => {
            let commits = value(&text, "messenger_commit_seconds_count");
            assert!(commits >= Some(1.0), "{text}");
        }
        e2e::Engine::Postgres => {
            let published = value(&text, r#"messenger_bus_events_total{direction="out"}"#);
            assert!(published >= Some(3.0), "{text}");
            let queued = value(&text, r#"messenger_storage_queue_jobs{queue="mail"}"#);
            assert!(queued.is_some(), "{text}");
        }
    }
    let started = value(&text, "process_start_time_seconds").expect("start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now && started > now - 600.0,
        "{started} against {now}"
    );
    // Each family: its HELP, then its TYPE.
    let mut families = 0;
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let name = family.split(' ').next().unwrap();
            assert!(
                n > 0 && lines[n - 1].starts_with(&format!("# HELP {name} ")),
                "{name} has no HELP in
{text}"
            );
            families += 1;
        }
    }
    assert!(
        families >= 15,
        "{families} families in
{text}"
    );

    // A rooms session that stops reading while a room fills its buffer: disconnected, and
    // counted.
    // (Far more than the kernel's buffers on both sides hold.)
    let burst = format!("MESSAGE {}\n", "x".repeat(900)).repeat(10_000);
    dani.stream.write_all(burst.as_bytes()).unwrap();
    wait_metric(
        &server,
        r#"messenger_slow_consumers_disconnected_total{frontend="rooms"} 1"#,
    );
}

/// Issue 28: `/status.json` says what the page says, for scripts.
#[test]
fn status_json_lists_who_is_online_and_the_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &["--admin-addr", "127.0.0.1:0"]);
    let _carla = LineConn::chat(&server, "carla");
    let mut dani = LineConn::rooms(&server, "dani");
    dani.send("ROOM Patio");
    assert_eq!(dani.line(), "Te has unido a la sala Patio.");
    register(&server, "bea");
    assert_eq!(server.call(&["SEND", "carla", "bea", "hola"]), sent(1));
    let port = server.admin_port.unwrap();
    let start = Instant::now();
    let status = loop {
        let answer = http(port, "GET", "/status.json", None, b"");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let status: serde_json::Value = serde_json::from_str(&answer.text()).unwrap();
        // The database's figures are a snapshot read beside the reactor.
        if status["pending_messages"] == 1 {
            break status;
        }
        assert!(start.elapsed() < PATIENCE, "never caught up: {status}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status["people_online"], 2, "{status}");
    let people = status["people"].as_array().unwrap();
    let carla = &people[0];
    assert_eq!(carla["name"], "carla");
    assert_eq!(carla["frontend"], "chat");
    assert_eq!(carla["address"], "127.0.0.1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let since = carla["since"].as_u64().unwrap();
    assert!(since <= now && since + 600 > now, "{since} against {now}");
    assert_eq!(people[1]["name"], "dani");
    assert_eq!(people[1]["room"], "Patio");
    let rooms = status["rooms"].as_array().unwrap();
    let patio = rooms.iter().find(|r| r["name"] == "Patio").unwrap();
    assert_eq!(patio["members"], serde_json::json!(["dani"]));
    assert_eq!(
        status["pending_by_recipient"],
        serde_json::json!([["bea", 1]])
    );
    let online = status["online"].as_array().unwrap();
    assert!(online.contains(&serde_json::json!(["chat", 1])), "{status}");
    assert!(
        online.contains(&serde_json::json!(["rooms", 1])),
        "{status}"
    );
    assert!(status["database_bytes"].as_i64() > Some(0), "{status}");
    assert!(status["rates_last_hour"].is_array(), "{status}");
    let nodes = status["nodes"].as_array().unwrap();
    match e2e::engine() {
        // A file: its size and its WAL's.
        e2e::Engine::Sqlite => {
            assert!(nodes.is_empty(), "{status}");
            assert!(status["wal_bytes"].as_i64() > Some(0), "{status}");
            assert!(carla["node"].is_null(), "{status}");
        }
        // This node, by its reactor's connection: the one carla is on.
        e2e::Engine::Postgres => {
            assert_eq!(nodes.len(), 1, "{status}");
            assert!(nodes[0]["id"].as_i64() > Some(0), "{status}");
            assert_eq!(carla["node"], nodes[0]["id"], "{status}");
        }
    }
}

#[test]
fn other_paths_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--admin-addr", "127.0.0.1:0"]);
    let answer = http(server.admin_port.unwrap(), "GET", "/nada", None, b"");
    assert_eq!(answer.status, 404);
}

/// Finding: one connection pipelining 3000 `GET`s without reading froze `/metrics` for
/// everyone until it closed. Now each connection gets one answer and is closed; everybody
/// else is answered meanwhile.
#[test]
fn a_pipelining_client_that_never_reads_freezes_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--admin-addr", "127.0.0.1:0"]);
    let port = server.admin_port.unwrap();
    let mut hog = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    hog.set_write_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let many = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3000);
    // The server takes one request and closes: the rest may not even be accepted.
    let _ = std::io::Write::write_all(&mut hog, many.as_bytes());
    for _ in 0..20 {
        assert_eq!(http(port, "GET", "/metrics", None, b"").status, 200);
    }
    drop(hog);
}

/// Finding: one endless header line grew the server by 62 to 80 MB. Now a request head is
/// at most 8 KiB: past it the answer is 431 and the connection is closed.
#[test]
fn an_endless_header_line_is_cut_at_8_kib() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--admin-addr", "127.0.0.1:0"]);
    let port = server.admin_port.unwrap();
    let mut endless = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    endless
        .set_write_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    endless.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut written = 0usize;
    let chunk = vec![b'a'; 64 * 1024];
    let _ = std::io::Write::write_all(&mut endless, b"GET / HTTP/1.1\r\nX-Endless: ");
    while written < 64 << 20 {
        match std::io::Write::write(&mut endless, &chunk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(
        written < 64 << 20,
        "the server kept reading {written} bytes"
    );
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut endless, &mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
    assert_eq!(http(port, "GET", "/metrics", None, b"").status, 200);
}

/// Finding: every admin connection got a thread (300 slowloris connections: 309 threads).
/// Now the reactor serves them: no thread is added, and they are closed at the idle timeout.
#[test]
fn slow_connections_add_no_thread_and_delay_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--admin-addr", "127.0.0.1:0", "--idle-timeout-ms", "1000"],
    );
    let port = server.admin_port.unwrap();
    assert_eq!(http(port, "GET", "/metrics", None, b"").status, 200);
    let threads = server.threads();
    let slow: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            std::io::Write::write_all(&mut conn, b"GET / HTTP/1.1\r\nX-Slow: ").unwrap();
            conn
        })
        .collect();
    assert_eq!(http(port, "GET", "/metrics", None, b"").status, 200);
    // (PostgreSQL's client may start a thread of its own for the snapshot's connection.)
    assert!(
        server.threads() <= threads + 2,
        "no thread per connection: {threads} threads, then {}",
        server.threads()
    );
    // Each is closed at its deadline.
    for mut conn in slow {
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut conn, &mut rest);
    }
    assert_eq!(http(port, "GET", "/", None, b"").status, 200);
}

/// The status page names users and their addresses: on a non-loopback address the server
/// refuses to start without `--admin-token-file`, and with a token every request must carry
/// it (a bearer token, or basic auth for browsers).
#[test]
fn the_admin_token_is_required_off_loopback_and_checked_on_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let (code, stderr) = e2e::run_server_to_exit(
        &[
            "-p",
            "0",
            "--bind",
            "127.0.0.1",
            "--db",
            db.to_str().unwrap(),
            "--admin-addr",
            "0.0.0.0:0",
        ],
        |_| {},
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--admin-token-file"), "{stderr}");
    assert!(!db.exists(), "refused before the database was made");

    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--admin-addr",
            "127.0.0.1:0",
            "--admin-token-file",
            token.to_str().unwrap(),
        ],
    );
    let port = server.admin_port.unwrap();
    let get = |auth: Option<&str>| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let header = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        std::io::Write::write_all(
            &mut stream,
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{header}\r\n").as_bytes(),
        )
        .unwrap();
        String::from_utf8(e2e::read_to_close(&mut stream)).unwrap()
    };
    let refused = get(None);
    assert!(refused.starts_with("HTTP/1.1 401 "), "{refused}");
    assert!(refused.contains("WWW-Authenticate: Basic"), "{refused}");
    assert!(get(Some("Bearer wrong")).starts_with("HTTP/1.1 401 "));
    assert!(get(Some("Bearer s3cret")).starts_with("HTTP/1.1 200 "));
    // "admin:s3cret", as a browser sends it.
    assert!(get(Some("Basic YWRtaW46czNjcmV0")).starts_with("HTTP/1.1 200 "));
}

/// Issue 28: the pending messages on the page and in `/metrics` are sizes the database keeps
/// as messages come and go (never a count of the mailbox), so they follow a send, a
/// delivery and a user's removal.
#[test]
fn the_pending_gauge_follows_sends_deliveries_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--admin-addr", "127.0.0.1:0"]);
    for alias in ["ana", "bea", "carla", "eva"] {
        register(&server, alias);
    }
    for (to, id) in [
        ("bea", 1),
        ("carla", 2),
        ("bea", 3),
        ("eva", 4),
        ("carla", 5),
        ("bea", 6),
    ] {
        assert_eq!(server.call(&["SEND", "ana", to, "hola"]), sent(id));
    }
    let waiting = |total: i64, top: serde_json::Value| {
        let start = Instant::now();
        loop {
            let answer = http(server.admin_port.unwrap(), "GET", "/status.json", None, b"");
            let status: serde_json::Value = serde_json::from_str(&answer.text()).unwrap();
            if status["pending_messages"] == total && status["pending_by_recipient"] == top {
                break;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "never {total} {top}: {status} {:?}",
                server.stderr.snapshot()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        wait_metric(&server, &format!("messenger_pending_messages {total}"));
    };
    waiting(6, serde_json::json!([["bea", 3], ["carla", 2], ["eva", 1]]));
    assert_eq!(server.call(&["UNREGISTER", "carla"]), [0]);
    waiting(4, serde_json::json!([["bea", 3], ["eva", 1]]));
    let bea = e2e::connect(&server, "bea");
    for _ in 0..3 {
        bea.next();
    }
    waiting(1, serde_json::json!([["eva", 1]]));
    // The figures live in the database: a restart finds them as they were.
    drop(bea);
    let server = server.restart(&["--admin-addr", "127.0.0.1:0"]);
    wait_metric(&server, "messenger_pending_messages 1");
}
