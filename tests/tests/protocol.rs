//! Every operation of docs/messenger.md with every result code, and the console lines of seed 000
//! section 7, against the real server binary.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use e2e::{connect, encode, read_to_close, register, sent, Server};

fn server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    (dir, server)
}

#[test]
fn init_line_shows_the_real_port_then_a_prompt() {
    let (_dir, server) = server();
    let lines = server.stdout.snapshot();
    assert_eq!(
        lines[0],
        format!("s> init server 127.0.0.1:{}", server.port)
    );
    server.stdout.wait_for("s>");
}

#[test]
fn register_in_both_forms_and_twice() {
    let (_dir, server) = server();
    assert_eq!(server.call(&["REGISTER", "ana"]), [0]);
    assert_eq!(server.call(&["REGISTER", "ana"]), [1]);
    assert_eq!(
        server.call(&["REGISTER", "Bea Bravo", "bea", "29/02/2000"]),
        [0]
    );
    // The 2022-23 form is keyed by the alias, not the full name.
    assert_eq!(server.call(&["REGISTER", "bea"]), [1]);
    // A full name may hold spaces; an alias may not (it would break console commands).
    assert_eq!(server.call(&["REGISTER", "Bea Bravo"]), [2]);
    assert_eq!(
        server.call(&["REGISTER", "Carla", "carla", "31/02/2000"]),
        [2],
        "impossible birth date"
    );
    server.stdout.wait_for("s> REGISTER carla FAIL");
    let lines = server.stdout.snapshot();
    assert_eq!(
        &lines[2..],
        [
            "s> REGISTER ana OK",
            "s> REGISTER ana FAIL",
            "s> REGISTER bea OK",
            "s> REGISTER bea FAIL",
            "s> REGISTER Bea Bravo FAIL",
            "s> REGISTER carla FAIL",
        ]
    );
    let row = server
        .db
        .rows("SELECT full_name, birth_date FROM users WHERE alias = 'bea'");
    assert_eq!(
        row,
        [[
            Some("Bea Bravo".to_string()),
            Some("29/02/2000".to_string())
        ]]
    );
}

#[test]
fn pinned_register_forms_answer_without_the_grace_wait() {
    let dir = tempfile::tempdir().unwrap();
    let one = Server::start(
        dir.path(),
        &["--register-form", "one", "--grace-ms", "60000"],
    );
    assert_eq!(one.call(&["REGISTER", "ana"]), [0]);
    let dir3 = tempfile::tempdir().unwrap();
    let three = Server::start(
        dir3.path(),
        &["--register-form", "three", "--grace-ms", "1"],
    );
    let mut stream = TcpStream::connect(three.addr()).unwrap();
    stream.write_all(&encode(&[b"REGISTER", b"Ana"])).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stream.write_all(&encode(&[b"ana", b"01/01/1990"])).unwrap();
    assert_eq!(read_to_close(&mut stream), [0]);
    three.stdout.wait_for("s> REGISTER ana OK");
}

#[test]
fn unregister_ok_missing_and_drops_the_queue() {
    let (_dir, server) = server();
    register(&server, "ana");
    register(&server, "bea");
    assert_eq!(server.call(&["SEND", "ana", "bea", "hola"]), sent(1));
    assert_eq!(server.call(&["UNREGISTER", "bea"]), [0]);
    assert_eq!(server.call(&["UNREGISTER", "bea"]), [1]);
    server.stdout.wait_for("s> UNREGISTER bea FAIL");
    assert!(server
        .stdout
        .snapshot()
        .contains(&"s> UNREGISTER bea OK".to_string()));
    assert_eq!(e2e::pending_count(&server.db), 0);
}

#[test]
fn connect_codes() {
    let (_dir, server) = server();
    register(&server, "ana");
    assert_eq!(server.call(&["CONNECT", "nobody", "4000"]), [1]);
    let _listener = connect(&server, "ana");
    assert_eq!(server.call(&["CONNECT", "ana", "4001"]), [2]);
    assert_eq!(server.call(&["CONNECT", "ana", "port"]), [3]);
    server.stdout.wait_for("s> CONNECT nobody FAIL");
    server.stdout.wait_for("s> CONNECT ana OK");
}

#[test]
fn disconnect_codes_and_only_from_the_connecting_address() {
    let (_dir, server) = server();
    register(&server, "ana");
    assert_eq!(server.call(&["DISCONNECT", "nobody"]), [1]);
    assert_eq!(server.call(&["DISCONNECT", "ana"]), [2]);
    let _listener = connect(&server, "ana");
    // From 127.0.0.2, another address on the loopback: refused with 3, nothing changes.
    let from_other = request_from([127, 0, 0, 2], server.addr(), &[b"DISCONNECT", b"ana"]);
    assert_eq!(from_other, [3]);
    assert_eq!(
        server.call(&["CONNECTEDUSERS", "ana"])[0],
        0,
        "still connected"
    );
    assert_eq!(server.call(&["DISCONNECT", "ana"]), [0]);
    server.stdout.wait_for("s> DISCONNECT ana OK");
    assert!(server
        .stdout
        .snapshot()
        .contains(&"s> DISCONNECT ana FAIL".to_string()));
}

fn request_from(source: [u8; 4], to: SocketAddr, fields: &[&[u8]]) -> Vec<u8> {
    let mut stream = connect_from(source, to);
    stream.write_all(&encode(fields)).unwrap();
    read_to_close(&mut stream)
}

/// A TCP connection from a chosen loopback source address (std cannot bind before connect).
fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain socket/bind/connect sequence on a descriptor we own and hand to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_addr.s_addr = u32::from_ne_bytes(source);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(
            libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len),
            0,
            "bind source"
        );
        let SocketAddr::V4(to) = to else {
            unreachable!()
        };
        addr.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
        addr.sin_port = to.port().to_be();
        assert_eq!(
            libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len),
            0,
            "connect"
        );
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn send_codes_and_per_sender_ids() {
    let (_dir, server) = server();
    register(&server, "ana");
    register(&server, "bea");
    assert_eq!(server.call(&["SEND", "ana", "bea", "uno"]), sent(1));
    assert_eq!(server.call(&["SEND", "ana", "bea", "dos"]), sent(2));
    assert_eq!(
        server.call(&["SEND", "bea", "ana", "hola"]),
        sent(1),
        "ids are per sender"
    );
    assert_eq!(server.call(&["SEND", "ana", "nobody", "x"]), [1]);
    assert_eq!(server.call(&["SEND", "nobody", "ana", "x"]), [1]);
    assert_eq!(
        server.call(&["SENDATTACH", "ana", "bea", "mira", "/tmp/foto.png"]),
        sent(3)
    );
    server
        .stdout
        .wait_for("s> MESSAGE 3 FROM ana TO bea STORED");
    let lines = server.stdout.snapshot();
    assert!(lines.contains(&"s> MESSAGE 1 FROM ana TO bea STORED".to_string()));
    assert!(lines.contains(&"s> MESSAGE 1 FROM bea TO ana STORED".to_string()));
    let attachment = server
        .db
        .text("SELECT attachment FROM pending_messages WHERE sender='ana' AND id=3");
    assert_eq!(attachment, "/tmp/foto.png");
}

#[test]
fn ids_wrap_past_u32_max_to_one() {
    let (_dir, server) = server();
    register(&server, "ana");
    register(&server, "bea");
    // The server owns the database while it runs (it caches users): edit it between runs.
    let db = server.db.clone();
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(), Some(0));
    db.execute("UPDATE users SET last_id = 4294967294 WHERE alias = 'ana'");
    let server = Server::start_on(&db, &[]);
    assert_eq!(server.call(&["SEND", "ana", "bea", "a"]), sent(4294967295));
    assert_eq!(server.call(&["SEND", "ana", "bea", "b"]), sent(1));
    assert_eq!(server.call(&["SEND", "ana", "bea", "c"]), sent(2));
}

#[test]
fn users_and_connectedusers_lists() {
    let (_dir, server) = server();
    for alias in ["ana", "bea", "carla"] {
        register(&server, alias);
    }
    assert_eq!(
        server.call(&["USERS", "ana"]),
        [1],
        "requester not connected"
    );
    assert_eq!(
        server.call(&["USERS", "nobody"]),
        [2],
        "requester not registered"
    );
    let ana = connect(&server, "ana");
    let bea = connect(&server, "bea");
    let expected_users = [
        vec![0],
        b"2\0".to_vec(),
        format!("ana::127.0.0.1::{}\0", ana.port).into_bytes(),
        format!("bea::127.0.0.1::{}\0", bea.port).into_bytes(),
    ]
    .concat();
    assert_eq!(server.call(&["USERS", "ana"]), expected_users);
    assert_eq!(
        server.call(&["CONNECTEDUSERS", "bea"]),
        b"\x002\0ana\0bea\0"
    );
    assert_eq!(server.call(&["CONNECTEDUSERS", "carla"]), [1]);
    // No alias (seed 000 section 8.7 as written): the caller is found by its address.
    assert_eq!(server.call(&["CONNECTEDUSERS"]), b"\x002\0ana\0bea\0");
    server.stdout.wait_until(
        |lines| {
            lines
                .iter()
                .filter(|l| *l == "s> CONNECTEDUSERS OK")
                .count()
                == 3
        },
        "three CONNECTEDUSERS OK lines",
    );
    assert!(server
        .stdout
        .snapshot()
        .contains(&"s> CONNECTEDUSERS FAIL".to_string()));
}
