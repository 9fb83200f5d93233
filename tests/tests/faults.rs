//! Fault tests with real processes: crashes mid-storm, listeners that misbehave, idle hordes,
//! a full database, and garbage on the wire.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::decode_push as decode;
use e2e::{connected, encode, pending_count, register, sent, try_request, Db, Server, PATIENCE};
use wire::Push;

#[test]
fn kill9_during_a_storm_of_sends_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let senders: Vec<String> = (0..8).map(|n| format!("s{n}")).collect();
    let recipients: Vec<String> = (0..4).map(|n| format!("r{n}")).collect();
    for user in senders.iter().chain(&recipients) {
        register(&server, user);
    }
    let acked = Arc::new(Mutex::new(Vec::<(String, u32, String)>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let addr = server.addr();
    let storm: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(n, sender)| {
            let (sender, recipient, acked, count) = (
                sender.clone(),
                recipients[n % 4].clone(),
                Arc::clone(&acked),
                Arc::clone(&count),
            );
            std::thread::spawn(move || {
                for k in 0..5000 {
                    let text = format!("{sender}-{k}");
                    let fields: [&[u8]; 4] = [
                        b"SEND",
                        sender.as_bytes(),
                        recipient.as_bytes(),
                        text.as_bytes(),
                    ];
                    match try_request(addr, &fields) {
                        Ok(answer) if answer.first() == Some(&0) => {
                            let id = std::str::from_utf8(&answer[1..answer.len() - 1])
                                .unwrap()
                                .parse()
                                .unwrap();
                            acked.lock().unwrap().push((sender.clone(), id, text));
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        // The answer lost with the crash: the message may or may not be stored.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    while count.load(Ordering::Relaxed) < 400 {
        assert!(start.elapsed() < PATIENCE, "the storm did not get going");
        std::thread::sleep(Duration::from_millis(1));
    }
    let db = server.db.clone();
    server.kill9();
    for thread in storm {
        thread.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let server = Server::start_on(&db, &[]);
    let stored = pending_count(&server.db) as usize;
    assert!(
        stored >= acked.len(),
        "{stored} stored < {} acknowledged",
        acked.len()
    );
    // Ids continue after the last one handed out.
    let mut last_acked: HashMap<&str, u32> = HashMap::new();
    for (sender, id, _) in &acked {
        let last = last_acked.entry(sender).or_default();
        *last = (*last).max(*id);
    }
    let mut extra = 0;
    for sender in &senders {
        let answer = server.call(&["SEND", sender, "r0", "after"]);
        let id: u32 = std::str::from_utf8(&answer[1..answer.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            id > last_acked.get(sender.as_str()).copied().unwrap_or(0),
            "{sender}'s ids continue"
        );
        extra += 1;
    }
    // Every stored message arrives exactly once, in order per sender.
    let waiting: HashMap<String, usize> = db
        .rows("SELECT recipient, count(*) FROM pending_messages GROUP BY recipient")
        .into_iter()
        .map(|row| {
            let [recipient, count] = [&row[0], &row[1]].map(|c| c.clone().unwrap());
            (recipient, count.parse().unwrap())
        })
        .collect();
    let mut delivered = HashSet::new();
    let mut received = 0;
    for recipient in &recipients {
        let listener = e2e::connect(&server, recipient);
        let mut last_id: HashMap<String, u32> = HashMap::new();
        for _ in 0..waiting.get(recipient).copied().unwrap_or(0) {
            let Push::Message {
                sender, id, text, ..
            } = decode(&listener.next())
            else {
                panic!("not a message")
            };
            received += 1;
            let previous = last_id.insert(sender.clone(), id).unwrap_or(0);
            assert!(id > previous, "{sender}: id {id} after {previous}");
            assert!(
                delivered.insert((sender, id, String::from_utf8(text).unwrap())),
                "duplicate"
            );
        }
        listener.expect_none(Duration::from_millis(200));
    }
    assert_eq!(received, stored + extra);
    for message in &acked {
        assert!(
            delivered.contains(message),
            "acknowledged {message:?} was lost"
        );
    }
}

/// A listener that accepts and then behaves badly.
fn misbehaving_listener(behaviour: &'static str) -> u16 {
    if behaviour == "never reads" {
        return e2e::HoldingListener::start().port;
    }
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    match behaviour {
        "gone" => drop(socket),
        "never accepts" => {
            // Listening, so the kernel completes handshakes, but nobody ever accepts.
            std::mem::forget(socket);
        }
        "reset" => {
            std::thread::spawn(move || {
                for stream in socket.incoming() {
                    let stream = stream.unwrap();
                    e2e::reset_on_drop(&stream);
                    drop(stream);
                }
            });
        }
        _ => unreachable!(),
    }
    port
}

#[test]
fn misbehaving_listeners_keep_their_messages_and_delay_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    // A long push timeout: the healthy delivery must not wait for the stuck ones to give up.
    let server = Server::start(
        dir.path(),
        &["--push-timeout-ms", "3000", "--connect-window-ms", "0"],
    );
    register(&server, "ana");
    let bad = ["reset", "never reads", "gone", "never accepts"];
    for (n, behaviour) in bad.iter().enumerate() {
        let alias = format!("bad{n}");
        register(&server, &alias);
        let port = misbehaving_listener(behaviour);
        assert_eq!(
            server.call(&["CONNECT", &alias, &port.to_string()]),
            [0],
            "{behaviour}"
        );
        assert_eq!(
            server.call(&["SEND", "ana", &alias, behaviour]),
            sent(n as u32 + 1)
        );
    }
    register(&server, "good");
    let good = e2e::connect(&server, "good");
    assert_eq!(server.call(&["SEND", "ana", "good", "hola"]), sent(5));
    assert_eq!(
        good.next(),
        encode(&[b"SEND MESSAGE", b"ana", b"5", b"hola"])
    );
    assert!(
        connected(&server, "bad1") && connected(&server, "bad3"),
        "the healthy push arrived while the stuck ones were still waiting"
    );
    let start = Instant::now();
    while (0..4).any(|n| connected(&server, &format!("bad{n}"))) {
        assert!(
            start.elapsed() < PATIENCE,
            "every bad recipient ends up disconnected"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kept: Vec<String> = server
        .db
        .rows("SELECT text FROM pending_messages ORDER BY seq")
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect();
    assert_eq!(kept, bad, "each undelivered message stays pending");
}

#[test]
fn a_thousand_idle_connections_do_not_stop_others_being_served() {
    e2e::raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    register(&server, "ana");
    register(&server, "bea");
    let bea = e2e::connect(&server, "bea");
    assert_eq!(
        server.call(&["SEND", "ana", "bea", "entre la multitud"]),
        sent(1)
    );
    assert_eq!(
        bea.next(),
        encode(&[b"SEND MESSAGE", b"ana", b"1", b"entre la multitud"])
    );
    assert_eq!(server.call(&["USERS", "bea"])[0], 0);
    drop(idle);
}

#[test]
fn a_full_database_answers_2_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // SQLite's page limit stands in for a full disk.
    let server = Server::start_on(
        &Db::sqlite_in(dir.path()),
        &["--max-db-pages", "16", "--admin-addr", "127.0.0.1:0"],
    );
    register(&server, "ana");
    register(&server, "bea");
    let text = "x".repeat(255);
    let mut acked = 0u32;
    loop {
        let answer = server.call(&["SEND", "ana", "bea", &text]);
        if answer == [2] {
            break;
        }
        acked += 1;
        assert_eq!(answer, sent(acked));
        assert!(acked < 10_000, "the database never filled up");
    }
    assert!(acked > 0);
    assert_eq!(
        server.call(&["SEND", "ana", "bea", &text]),
        [2],
        "still full"
    );
    server.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("full")),
        "a diagnostic naming the cause",
    );
    // And counted (issue 28).
    let metrics = e2e::http(server.admin_port.unwrap(), "GET", "/metrics", None, b"").text();
    let full: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"messenger_refusals_total{reason="database_full"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(full >= 2.0, "{metrics}");
    assert_eq!(
        pending_count(&server.db),
        i64::from(acked),
        "nothing acknowledged is lost"
    );
    // Delivering frees space; then SEND works again and ids continue.
    let bea = e2e::connect(&server, "bea");
    for id in 1..=acked {
        assert_eq!(
            decode(&bea.next()),
            Push::Message {
                sender: "ana".into(),
                id,
                text: text.clone().into_bytes(),
                attachment: None
            }
        );
    }
    let start = Instant::now();
    while pending_count(&server.db) > 0 {
        assert!(start.elapsed() < PATIENCE);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        server.call(&["SEND", "ana", "bea", "de nuevo"]),
        sent(acked + 1)
    );
    assert_eq!(
        bea.next(),
        encode(&[
            b"SEND MESSAGE",
            b"ana",
            (acked + 1).to_string().as_bytes(),
            b"de nuevo"
        ])
    );
}

#[test]
fn garbage_on_the_wire_changes_nothing_and_the_server_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--idle-timeout-ms", "200"]);
    register(&server, "ana");
    // A fixed-seed xorshift: the same garbage every run.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let prefixes: [&[u8]; 9] = [
        b"",
        b"REGISTER\0",
        b"SEND\0",
        b"SENDATTACH\0",
        b"CONNECT\0",
        b"USERS\0",
        b"DISCONNECT\0",
        b"UNREGISTER\0",
        b"CONNECTEDUSERS\0",
    ];
    for _ in 0..300 {
        let mut bytes = prefixes[(next() % prefixes.len() as u64) as usize].to_vec();
        let len = next() % 700;
        // Mostly printable with some NULs and high bytes, so fields both form and overflow.
        bytes.extend((0..len).map(|_| match next() % 10 {
            0 => 0,
            1 => (next() % 256) as u8,
            _ => b'a' + (next() % 26) as u8,
        }));
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
        assert!(answer.len() <= 64, "answers stay small");
    }
    assert!(server.alive());
    assert_eq!(
        server.call(&["REGISTER", "ana"]),
        [1],
        "ana is still registered"
    );
    assert_eq!(server.call(&["UNREGISTER", "ana"]), [0]);
}
