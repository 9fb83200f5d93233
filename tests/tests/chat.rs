//! The chat of seed 001 on the real server: every row of the protocol, both framings, the
//! mailbox across front-ends, history across restarts, slow and idle clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e::{encode, register, sent, LineConn, Server, PATIENCE};

/// A client that behaves like the original: no delimiter, one `recv(1024)` per message.
struct Original {
    stream: TcpStream,
}

impl Original {
    fn connect(server: &Server) -> Original {
        let stream = TcpStream::connect(server.chat_addr()).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Original { stream }
    }

    fn send(&mut self, message: &str) {
        self.stream.write_all(message.as_bytes()).unwrap();
    }

    /// One `recv(1024)`: what the original client takes for one message.
    fn recv(&mut self) -> String {
        let mut buf = [0u8; 1024];
        let n = self
            .stream
            .read(&mut buf)
            .expect("a message within PATIENCE");
        assert!(n > 0, "closed");
        String::from_utf8(buf[..n].to_vec()).expect("UTF-8")
    }

    fn login(server: &Server, name: &str) -> Original {
        let mut client = Original::connect(server);
        client.send(&format!("CONNECT|{name}"));
        assert_eq!(client.recv(), "CONNECT_ACK|OK");
        client
    }
}

#[test]
fn login_user_list_private_broadcast_and_logout_with_the_original_framing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = Original::login(&server, "ana");
    assert_eq!(ana.recv(), "USER_LIST|ana");
    let mut bea = Original::login(&server, "bea");
    assert_eq!(bea.recv(), "USER_LIST|ana,bea");
    assert_eq!(ana.recv(), "USER_LIST|ana,bea");
    ana.send("MESSAGE|bea|hola, ¿qué tal?");
    assert_eq!(bea.recv(), "MESSAGE|ana|hola, ¿qué tal?");
    // The text is everything after the second `|`; a `|` sent to an original client is `¦`.
    bea.send("BROADCAST|uno|dos");
    assert_eq!(ana.recv(), "BROADCAST|bea|uno¦dos");
    assert_eq!(bea.recv(), "BROADCAST|bea|uno¦dos", "the sender too");
    ana.send("MESSAGE|nadie|hola");
    assert_eq!(ana.recv(), "ERROR|404|Usuario no encontrado");
    ana.send(&format!("MESSAGE|bea|{}", "x".repeat(256)));
    assert_eq!(ana.recv(), "ERROR|413|Mensaje demasiado largo");
    bea.send("DISCONNECT");
    assert_eq!(ana.recv(), "USER_LIST|ana");
    let mut rest = Vec::new();
    bea.stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "DISCONNECT closes");
    server.stdout.wait_for("s> CHAT LOGOUT bea");
    let lines = server.stdout.snapshot();
    assert!(lines.contains(&"s> CHAT LOGIN ana OK".to_string()));
    assert!(lines.contains(&"s> SEND MESSAGE 1 FROM ana TO bea".to_string()));
}

#[test]
fn a_failed_login_leaves_the_connection_open_for_another_try() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let _ana = Original::login(&server, "ana");
    let mut other = Original::connect(&server);
    for bad in ["ana", "a b", "a,b", ""] {
        other.send(&format!("CONNECT|{bad}"));
        assert_eq!(other.recv(), "CONNECT_ACK|FAIL", "{bad:?}");
    }
    other.send("CONNECT|bea");
    assert_eq!(other.recv(), "CONNECT_ACK|OK");
    server.stdout.wait_for("s> CHAT LOGIN ana FAIL");
}

#[test]
fn bad_requests_get_error_400_and_the_connection_stays() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut client = Original::connect(&server);
    for (request, reason) in [
        ("MESSAGE|bea|hola", "Primero CONNECT"),
        ("HELLO|lines", "Primero CONNECT"),
        ("HOLA", "Comando desconocido"),
        ("MESSAGE|solo", "MESSAGE necesita destinatario y texto"),
    ] {
        client.send(request);
        assert_eq!(client.recv(), format!("ERROR|400|{reason}"), "{request}");
    }
    client.stream.write_all(b"CONNECT|\xff\xfe").unwrap();
    assert_eq!(client.recv(), "ERROR|400|El mensaje no es UTF-8");
    client.send("CONNECT|ana");
    assert_eq!(client.recv(), "CONNECT_ACK|OK");
    assert!(client.recv().starts_with("USER_LIST|"));
    client.send("HELLO|frames");
    assert_eq!(client.recv(), "ERROR|400|Solo se ofrece HELLO¦lines");
    client.send("CONNECT|ana");
    assert_eq!(client.recv(), "ERROR|400|Ya conectado como ana");
    assert_eq!(
        server.call(&["REGISTER", "probe"]),
        [0],
        "the server still serves"
    );
}

#[test]
fn an_original_client_never_sees_two_messages_in_one_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut original = Original::login(&server, "orig");
    assert_eq!(original.recv(), "USER_LIST|orig");
    let mut fast = LineConn::chat(&server, "fast");
    assert_eq!(original.recv(), "USER_LIST|orig,fast");
    fast.until("USER_LIST|orig,fast");
    // Forty broadcasts in one burst of one write.
    let burst: String = (0..40).map(|n| format!("BROADCAST|m{n}\n")).collect();
    fast.stream.write_all(burst.as_bytes()).unwrap();
    for n in 0..40 {
        assert_eq!(original.recv(), format!("BROADCAST|fast|m{n}"));
    }
    // The line-framed sender got the same, as lines.
    for n in 0..40 {
        assert_eq!(fast.line(), format!("BROADCAST|fast|m{n}"));
    }
}

#[test]
fn line_framing_handles_split_and_glued_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = LineConn::chat(&server, "ana");
    let mut bea = LineConn::chat(&server, "bea");
    ana.until("USER_LIST|ana,bea");
    bea.until("USER_LIST|ana,bea");
    ana.stream.write_all(b"MESSAGE|bea|hel").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    ana.stream
        .write_all(b"lo|con barra\r\nBROADCAST|a|b\nMESSAGE|bea|dos\n")
        .unwrap();
    // Private messages go through the mailbox (stored first), broadcasts straight out: each
    // kind keeps its order.
    let mut got: Vec<String> = (0..3).map(|_| bea.line()).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "BROADCAST|ana|a|b",
            "MESSAGE|ana|dos",
            "MESSAGE|ana|hello|con barra"
        ],
        "whole lines, no substitution"
    );
    assert_eq!(ana.line(), "BROADCAST|ana|a|b");
    // A line over 1024 bytes is refused and the connection closed.
    ana.stream.write_all(&[b'x'; 1100]).unwrap();
    assert_eq!(ana.line(), "ERROR|400|Mensaje demasiado largo");
    assert!(ana.closed());
    assert_eq!(bea.line(), "USER_LIST|bea");
}

#[test]
fn private_messages_cross_front_ends_both_ways_with_ids_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    register(&server, "mara");
    let mara = e2e::connect(&server, "mara");
    let mut chat = LineConn::chat(&server, "carlos");
    // The chat's user list names users online through any front-end.
    assert_eq!(chat.until("USER_LIST|mara,carlos"), Vec::<String>::new());
    // Messenger to chat: stored, then written to the session; the sender's ack follows.
    assert_eq!(
        server.call(&["SEND", "mara", "carlos", "hola chat"]),
        sent(1)
    );
    assert_eq!(chat.line(), "MESSAGE|mara|hola chat");
    assert_eq!(mara.next(), encode(&[b"SEND MESS ACK", b"1"]));
    // Chat to messenger: the usual push with the chat user's own id sequence.
    chat.send("MESSAGE|mara|hola messenger");
    assert_eq!(
        mara.next(),
        encode(&[b"SEND MESSAGE", b"carlos", b"1", b"hola messenger"])
    );
    chat.send("MESSAGE|mara|otra");
    assert_eq!(
        mara.next(),
        encode(&[b"SEND MESSAGE", b"carlos", b"2", b"otra"])
    );
    // One presence: the name online in the chat cannot CONNECT through the messenger.
    let listener = e2e::Listener::start();
    assert_eq!(
        server.call(&["CONNECT", "carlos", &listener.port_field()]),
        [2]
    );
    // And the messenger's USERS lists only messenger users.
    let users = server.call(&["USERS", "mara"]);
    assert_eq!(&users[..3], b"\x001\x00");
}

#[test]
fn mail_for_an_offline_chat_user_waits_across_a_restart_and_comes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = LineConn::chat(&server, "ana");
    {
        let _bea = LineConn::chat(&server, "bea");
    }
    // bea came and went; her mail waits for her.
    server.stdout.wait_for("s> CHAT LOGOUT bea");
    for n in 1..=5 {
        ana.send(&format!("MESSAGE|bea|m{n}"));
    }
    ana.send("BROADCAST|antes del reinicio");
    // (User lists come before it; the echo means the requests above were all applied.)
    ana.until("BROADCAST|ana|antes del reinicio");
    drop(ana);
    let server = server.restart(&["--chat-port", "0", "--rooms-port", "0"]);
    let mut bea = LineConn::chat(&server, "bea");
    // After the ack: the user list, then the history, then the mailbox.
    assert_eq!(bea.line(), "USER_LIST|bea");
    assert_eq!(bea.line(), "BROADCAST|ana|antes del reinicio");
    for n in 1..=5 {
        assert_eq!(bea.line(), format!("MESSAGE|ana|m{n}"));
    }
}

/// Issue 24: between two sessions of one node on SQLite a private message goes straight to
/// the recipient's session (the mailbox is never written); one that the first try does not
/// write is stored in front of the mailbox, so a session that ends leaves them all to the
/// next, in order, before what came later, each with its console line once.
#[test]
fn private_messages_between_sessions_skip_the_mailbox_and_none_is_lost_when_a_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    // Room for megabytes in bea's send queue, and no flood limit for ana.
    let server = Server::start_all(
        dir.path(),
        &["--session-buffer-bytes", "16777216", "--flood-rate", "0"],
    );
    let sqlite = e2e::engine() == e2e::Engine::Sqlite;
    let stored_ever = |server: &Server| {
        let rows = server
            .db
            .rows("SELECT count(*) FROM sqlite_sequence WHERE name = 'pending_messages'");
        rows[0][0].clone().unwrap()
    };
    let mut ana = LineConn::chat(&server, "ana");
    let mut bea = LineConn::chat(&server, "bea");
    ana.until("USER_LIST|ana,bea");
    bea.until("USER_LIST|ana,bea");
    ana.send("MESSAGE|bea|1 hola");
    assert_eq!(bea.line(), "MESSAGE|ana|1 hola");
    server.stdout.wait_for("s> SEND MESSAGE 1 FROM ana TO bea");
    if sqlite {
        assert_eq!(stored_ever(&server), "0", "never in the mailbox");
    }

    // bea stops reading (a 4 KiB window); 10 MB of broadcasts fill the kernel's buffers (at
    // most 4 MiB for a connection here) and wait in bea's send queue.
    e2e::set_receive_buffer(&bea.stream, 4096);
    let filler = "z".repeat(1000);
    for n in 0..10_000 {
        ana.send(&format!("BROADCAST|{n} {filler}"));
        if n % 100 == 99 {
            ana.until(&format!("BROADCAST|ana|{n} {filler}"));
        }
    }
    // Twenty private messages behind them: none can be written, so they are stored (the
    // first that went around the mailbox in front of it, the rest behind them).
    let text = "y".repeat(200);
    for n in 2..=21 {
        ana.send(&format!("MESSAGE|bea|{n} {text}"));
    }
    ana.send("BROADCAST|eco");
    ana.until("BROADCAST|ana|eco");
    let waiting = |server: &Server| -> Vec<String> {
        let rows = server
            .db
            .rows("SELECT text FROM pending_messages WHERE recipient = 'bea' ORDER BY seq");
        rows.into_iter()
            .map(|row| row[0].clone().unwrap())
            .collect()
    };
    let expected: Vec<String> = (2..=24).map(|n| format!("{n} {text}")).collect();
    assert_eq!(
        waiting(&server),
        expected[..20],
        "stored, in the order sent"
    );
    if sqlite {
        let front = server.db.rows("SELECT seq FROM pending_front");
        let front: i64 = front[0][0].as_deref().unwrap().parse().unwrap();
        assert!(front < 0, "those around the mailbox went in front of it");
    }
    drop(bea);
    server.stdout.wait_for("s> CHAT LOGOUT bea");
    // Those after the session ended wait in the mailbox, behind the unwritten ones.
    for n in 22..=24 {
        ana.send(&format!("MESSAGE|bea|{n} {text}"));
    }
    ana.send("BROADCAST|eco final");
    ana.until("BROADCAST|ana|eco final");
    assert_eq!(waiting(&server), expected, "all of them, in the order sent");

    // bea again: every one of them, in order.
    let mut bea = LineConn::chat(&server, "bea");
    let mut heard = Vec::new();
    while heard.len() < expected.len() {
        if let Some(body) = bea.line().strip_prefix("MESSAGE|ana|") {
            heard.push(body.to_string());
        }
    }
    assert_eq!(heard, expected);
    // Every message has its console line once, each with an id of ana's that no other has.
    server.stdout.wait_until(
        |lines| {
            lines
                .iter()
                .filter(|l| l.ends_with(" FROM ana TO bea"))
                .count()
                == 24
        },
        "24 console lines",
    );
    let mut ids: Vec<u32> = server
        .stdout
        .snapshot()
        .iter()
        .filter_map(|l| {
            l.strip_prefix("s> SEND MESSAGE ")?
                .strip_suffix(" FROM ana TO bea")
        })
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(ids[0], 1);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 24, "no id given twice");
}

#[test]
fn a_last_message_that_comes_with_the_close_is_delivered_and_the_session_ends() {
    // The server skips the read that would only say "nothing more" after a short one, unless
    // the client's close was reported with the bytes: then that read sees the end. Corked,
    // each client's last line and its FIN go in one segment, so they are always reported
    // together.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut bea = LineConn::chat(&server, "bea");
    for n in 0..20 {
        let name = format!("u{n}");
        let mut conn = LineConn::chat(&server, &name);
        conn.until_prefix("USER_LIST|");
        e2e::set_cork(&conn.stream, true);
        conn.stream
            .write_all(format!("MESSAGE|bea|adiós {n}\n").as_bytes())
            .unwrap();
        conn.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(
            bea.until_prefix("MESSAGE|"),
            format!("MESSAGE|{name}|adiós {n}")
        );
        server.stdout.wait_for(&format!("s> CHAT LOGOUT {name}"));
        assert!(conn.closed(), "the server closed its side too");
    }
}

#[test]
fn a_client_that_never_reads_is_disconnected_and_slows_nobody() {
    let dir = tempfile::tempdir().unwrap();
    // The talker sends as fast as it can: no flood limit.
    let server = Server::start_all(
        dir.path(),
        &["--session-buffer-bytes", "65536", "--flood-rate", "0"],
    );
    let stuck = LineConn::chat(&server, "stuck");
    // A small receive window, so the kernel does not absorb megabytes for it (the server's
    // own send buffer still holds up to tcp_wmem's 4 MiB before our limit counts).
    e2e::set_receive_buffer(&stuck.stream, 4096);
    let mut talker = LineConn::chat(&server, "talker");
    let mut reader = LineConn::chat(&server, "reader");
    talker.until("USER_LIST|stuck,talker,reader");
    reader.until("USER_LIST|stuck,talker,reader");
    let text = "y".repeat(1000);
    let mut user_lists = Vec::new();
    let mut next = [0; 2];
    for n in 0..6000 {
        talker.send(&format!("BROADCAST|{n} {text}"));
        if n % 100 == 99 {
            // The readers keep up, every broadcast in order; the stuck one never reads.
            for (who, conn) in [&mut reader, &mut talker].into_iter().enumerate() {
                while next[who] <= n {
                    let line = conn.line();
                    if line.starts_with("USER_LIST|") {
                        user_lists.push(line);
                        continue;
                    }
                    assert_eq!(line, format!("BROADCAST|talker|{} {text}", next[who]));
                    next[who] += 1;
                }
            }
        }
    }
    server.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("it stopped reading")),
        "the stuck client disconnected",
    );
    server.stdout.wait_for("s> CHAT LOGOUT stuck");
    assert!(
        user_lists.contains(&"USER_LIST|talker,reader".to_string()),
        "the others heard that stuck left: {user_lists:?}"
    );
    // (Reading what the kernel still holds for `stuck` through its 4 KiB window would take
    // a minute; the console line above is the server's word that the session ended.)
    drop(stuck);
}

#[test]
fn a_thousand_idle_sessions_do_not_delay_a_conversation() {
    e2e::raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(server.chat_addr()).unwrap())
        .collect();
    let mut ana = LineConn::chat(&server, "ana");
    let mut bea = LineConn::chat(&server, "bea");
    ana.until("USER_LIST|ana,bea");
    bea.until("USER_LIST|ana,bea");
    let start = Instant::now();
    for n in 0..100 {
        ana.send(&format!("MESSAGE|bea|{n}"));
        assert_eq!(bea.line(), format!("MESSAGE|ana|{n}"));
    }
    assert!(start.elapsed() < PATIENCE);
    drop(idle);
}

#[test]
fn the_console_chat_client_through_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut bea = LineConn::chat(&server, "bea");
    let port = server.chat_port.unwrap().to_string();
    let mut client = e2e::spawn_client(&["--chat", "-s", "127.0.0.1", "-p", &port]);
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "bea").unwrap();
    writeln!(stdin, "ana").unwrap();
    bea.until("USER_LIST|bea,ana");
    writeln!(stdin, "hola a todos").unwrap();
    assert_eq!(bea.line(), "BROADCAST|ana|hola a todos");
    writeln!(stdin, "@bea en privado").unwrap();
    assert_eq!(bea.line(), "MESSAGE|ana|en privado");
    writeln!(stdin, "@zed nadie").unwrap();
    bea.send("MESSAGE|ana|respuesta");
    bea.send("BROADCAST|para todos");
    assert_eq!(bea.line(), "BROADCAST|bea|para todos");
    std::thread::sleep(Duration::from_millis(100));
    drop(stdin);
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "Conexión fallida");
    assert_eq!(lines[1], "Conectado exitosamente");
    for expected in [
        "Usuarios conectados: bea, ana",
        "Broadcast de ana: hola a todos",
        "Error 404: Usuario no encontrado",
        "Mensaje de bea: respuesta",
        "Broadcast de bea: para todos",
    ] {
        assert!(lines.contains(&expected), "{expected:?} in {lines:?}");
    }
    assert_eq!(lines.last(), Some(&"Desconectado del servidor"));
    assert_eq!(bea.line(), "USER_LIST|bea");
}

/// Our console client against a stand-in for the original server: it glues its replies
/// (`CONNECT_ACK|OKUSER_LIST|ana`), ignores `HELLO|lines` as it ignores every unknown command,
/// and reads one message per `recv`.
#[test]
fn the_console_chat_client_speaks_the_original_framing_to_an_original_server() {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    let original = std::thread::spawn(move || {
        let (mut reader, _) = socket.accept().unwrap();
        reader.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut stream = reader.try_clone().unwrap();
        let mut recv = || {
            let mut buf = [0u8; 1024];
            let n = reader.read(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        };
        let mut received = vec![recv()];
        stream.write_all(b"CONNECT_ACK|OKUSER_LIST|ana").unwrap();
        received.push(recv());
        stream
            .write_all(b"MESSAGE|bea|hola anaBROADCAST|bea|a todos")
            .unwrap();
        loop {
            let message = recv();
            if message.is_empty() {
                return received;
            }
            received.push(message);
        }
    });
    let mut client = e2e::spawn_client(&["--chat", "-s", "127.0.0.1", "-p", &port]);
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "ana\nhola\n@bea secreto").unwrap();
    drop(stdin);
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success());
    let received = original.join().unwrap();
    assert_eq!(
        received,
        [
            "CONNECT|ana",
            "HELLO|lines",
            "BROADCAST|hola",
            "MESSAGE|bea|secreto",
            "DISCONNECT"
        ],
        "one message per read, no delimiter"
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Conectado exitosamente\nUsuarios conectados: ana\nMensaje de bea: hola ana\nBroadcast de bea: a todos\nDesconectado del servidor\n"
    );
}

/// Silent connections cannot hold the connection slots every front-end shares: a connection
/// that starts no session within --idle-timeout-ms is closed; a session, once started, may be
/// idle as long as it likes.
#[test]
fn a_connection_that_never_logs_in_is_closed_and_a_session_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &["--idle-timeout-ms", "300"]);
    let mut ana = LineConn::chat(&server, "ana");
    let mut silent = Original::connect(&server);
    let mut rest = Vec::new();
    silent
        .stream
        .read_to_end(&mut rest)
        .expect("closed, not timed out");
    assert!(rest.is_empty());
    server.stderr.wait_until(
        |l| {
            l.iter()
                .any(|l| l.contains("no session started within the idle timeout"))
        },
        "the reason on stderr",
    );
    // ana has been idle longer than the timeout, and is still served.
    ana.send("BROADCAST|sigo aqui");
    ana.until("BROADCAST|ana|sigo aqui");
}
