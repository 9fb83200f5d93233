//! `--admin-addr`: the metrics after a known sequence of operations, and the status page as a
//! real browser (Debian's chromium, headless) renders it.

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
        "messenger_pending_messages 1",
        r#"messenger_online_users{frontend="messenger"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
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

    // The status page, rendered by a real browser.
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
        "<td>Patio</td><td>0</td>",
    ] {
        assert!(
            dom.contains(expected),
            "{expected} in the rendered page:\n{dom}"
        );
    }
}

#[test]
fn other_paths_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--admin-addr", "127.0.0.1:0"]);
    let answer = http(server.admin_port.unwrap(), "GET", "/nada", None, b"");
    assert_eq!(answer.status, 404);
}
