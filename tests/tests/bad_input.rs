//! Malformed, oversized, truncated, slow and hostile requests: each gets its error code or a
//! closed connection and a stderr line; nothing stored changes; the server keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e::{encode, read_to_close, register, sent, Server};

fn server(args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), args);
    (dir, server)
}

fn raw(server: &Server, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.write_all(bytes).unwrap();
    read_to_close(&mut stream)
}

fn user_count(server: &Server) -> i64 {
    server.db.int("SELECT count(*) FROM users")
}

fn still_serving(server: &Server) {
    assert_eq!(
        server.call(&["REGISTER", "still-here"]),
        [0],
        "server keeps serving"
    );
}

#[test]
fn unknown_operation_closes_the_connection() {
    let (_dir, server) = server(&[]);
    assert_eq!(raw(&server, b"HELLO\0world\0"), b"");
    assert_eq!(
        raw(&server, &[b'A'; 100]),
        b"",
        "an op name longer than any op"
    );
    server.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("unknown operation \"HELLO\"")),
        "unknown op line",
    );
    still_serving(&server);
}

#[test]
fn message_over_255_bytes_answers_2_with_or_without_nul() {
    let (_dir, server) = server(&[]);
    register(&server, "ana");
    register(&server, "bea");
    let long = vec![b'x'; 256];
    assert_eq!(
        raw(&server, &encode(&[b"SEND", b"ana", b"bea", &long])),
        [2]
    );
    assert_eq!(
        raw(
            &server,
            &[encode(&[b"SEND", b"ana", b"bea"]), long.clone()].concat()
        ),
        [2]
    );
    assert_eq!(
        server.call(&["SEND", "ana", "bea", &"y".repeat(255)]),
        sent(1),
        "255 bytes is fine"
    );
    server.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("over 255 bytes")),
        "oversize line",
    );
}

#[test]
fn names_over_255_bytes_get_the_error_code() {
    let (_dir, server) = server(&[]);
    let long = vec![b'n'; 256];
    assert_eq!(raw(&server, &encode(&[b"REGISTER", &long])), [2]);
    assert_eq!(
        raw(&server, &[b"CONNECT\0".as_slice(), &long].concat()),
        [3]
    );
    assert_eq!(
        raw(&server, &encode(&[b"SENDATTACH", b"a", b"b", b"m", &long])),
        [2],
        "file name over the limit"
    );
    assert_eq!(user_count(&server), 0);
    still_serving(&server);
}

#[test]
fn connection_closed_mid_request_or_right_after_connecting() {
    let (_dir, server) = server(&[]);
    {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream.write_all(b"REGISTER\0an").unwrap();
    }
    drop(TcpStream::connect(server.addr()).unwrap());
    server.stderr.wait_until(
        |l| {
            l.iter()
                .any(|l| l.contains("closed mid-request after 11 bytes"))
        },
        "mid-request line",
    );
    server.stderr.wait_until(
        |l| {
            l.iter()
                .any(|l| l.contains("closed mid-request after 0 bytes"))
        },
        "empty line",
    );
    assert_eq!(user_count(&server), 0);
    still_serving(&server);
}

#[test]
fn a_silent_client_times_out_and_holds_up_nobody() {
    let (_dir, server) = server(&["--idle-timeout-ms", "300"]);
    let mut silent = TcpStream::connect(server.addr()).unwrap();
    silent.write_all(b"SEND\0ana").unwrap();
    // Others are served while it dawdles.
    still_serving(&server);
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    silent.read_to_end(&mut buf).unwrap();
    assert!(buf.is_empty(), "closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(9));
    server.stderr.wait_until(
        |l| {
            l.iter()
                .any(|l| l.contains("no whole request within the idle timeout"))
        },
        "timeout line",
    );
}

#[test]
fn non_numeric_or_out_of_range_ports_answer_3() {
    let (_dir, server) = server(&[]);
    register(&server, "ana");
    for port in ["", "abc", "0", "65536", "-1", "80a"] {
        assert_eq!(server.call(&["CONNECT", "ana", port]), [3], "port {port:?}");
    }
    assert_eq!(server.call(&["CONNECT", "ana", "65535"]), [0]);
}

#[test]
fn invalid_utf8_or_control_characters_in_names_are_errors() {
    let (_dir, server) = server(&[]);
    assert_eq!(server.request(&[b"REGISTER", b"\xff\xfeana"]), [2]);
    assert_eq!(server.request(&[b"REGISTER", b"ana\nbea"]), [2]);
    assert_eq!(server.request(&[b"REGISTER", b""]), [2]);
    assert_eq!(server.request(&[b"UNREGISTER", b"\x1b[31m"]), [2]);
    assert_eq!(server.request(&[b"CONNECT", b"a\tb", b"4000"]), [3]);
    assert_eq!(server.request(&[b"DISCONNECT", b"\xc3"]), [3]);
    assert_eq!(server.request(&[b"SEND", b"a\x07", b"b", b"m"]), [2]);
    assert_eq!(server.request(&[b"USERS", b"\x00"]), [2]);
    assert_eq!(user_count(&server), 0);
    still_serving(&server);
}

#[test]
fn more_connections_than_the_limit_are_refused_and_the_rest_served() {
    let (_dir, server) = server(&["--max-connections", "5"]);
    let hogs: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    let mut extra = TcpStream::connect(server.addr()).unwrap();
    // The server closes at once: the write or the read may meet a reset instead of a clean end.
    let _ = extra.write_all(&encode(&[b"REGISTER", b"ana"]));
    let mut answer = Vec::new();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = extra.read_to_end(&mut answer);
    assert_eq!(answer, b"", "over the limit: closed without an answer");
    assert_eq!(user_count(&server), 0);
    server.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("--max-connections")),
        "refusal line",
    );
    drop(hogs);
    // Once the hogs are gone, service resumes.
    let start = Instant::now();
    loop {
        if e2e::try_request(server.addr(), &[b"REGISTER", b"ana"]).is_ok_and(|a| a == [0]) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "service did not resume"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigpipe_does_not_kill_the_server() {
    let (_dir, mut server) = server(&[]);
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.write_all(&encode(&[b"REGISTER", b"x"])).unwrap();
        // Reset instead of reading: the server's answer then meets a closed socket.
        e2e::reset_on_drop(&s);
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(server.alive());
    assert_eq!(server.call(&["REGISTER", "y"]), [0]);
}

/// Runs the server to its exit with `args`, as user `uid` if given; returns the exit code and
/// stderr.
fn failed_start(args: &[&str], uid: Option<u32>) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt;
    e2e::run_server_to_exit(args, |command| {
        if let Some(uid) = uid {
            // SAFETY: only setgid/setuid, async-signal-safe, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    })
}

#[test]
fn a_failed_start_says_why_and_leaves_no_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let db = db.to_str().unwrap();
    // The port is taken: nothing is created.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = failed_start(&["-p", &port, "--bind", "127.0.0.1", "--db", db], None);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot listen on 127.0.0.1"), "{stderr}");
    assert!(
        !dir.path().join("m.db").exists(),
        "no empty database left behind"
    );
    // A directory that does not exist.
    let missing = dir.path().join("nope/m.db");
    let (code, stderr) = failed_start(&["-p", "0", "--db", missing.to_str().unwrap()], None);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("does not exist"), "{stderr}");
    // Permissions: a user who may not write in the directory (root may, so run as nobody).
    let (code, stderr) = failed_start(&["-p", "0", "--db", db], Some(65534));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("permission denied"), "{stderr}");
}

#[test]
fn bind_takes_a_host_name() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(e2e::bin("server"))
        .args(["-p", "0", "--bind", "localhost", "--db"])
        .arg(dir.path().join("m.db"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with("s> init server 127.0.0.1:"), "{first:?}");
}
