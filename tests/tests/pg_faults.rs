//! Nodes that outlive their PostgreSQL's restarts, outages, killed backends and locks (always
//! PostgreSQL, on a throw-away cluster of each test's own, which the test stops and starts
//! again): one regression test per finding of the operator's try-out. Nothing acknowledged is
//! lost, no node dies, and every node serves again afterwards without a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{register, try_request, Db, LineConn, Server, PATIENCE};
use pgcluster::{Cluster, Durability, Shutdown};

/// A cluster of the test's own and a database on it.
fn private_cluster() -> (Cluster, Db) {
    let cluster = Cluster::start(Durability::NoFsync);
    let db = Db::Postgres(cluster.new_database());
    (cluster, db)
}

/// `count` nodes on `db`, started together.
fn nodes(db: &Db, count: usize) -> Vec<Server> {
    let starts: Vec<_> = (0..count)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                Server::start_on(&db, &["--chat-port", "0", "--rooms-port", "0"])
            })
        })
        .collect();
    starts.into_iter().map(|s| s.join().unwrap()).collect()
}

/// SENDs from ana to bea (offline) through the nodes in turn until `stop`: the text of each
/// one answered 0.
fn send_traffic(
    addrs: Vec<std::net::SocketAddr>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        let mut k = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let text = format!("m{k}");
            let addr = addrs[k % addrs.len()];
            k += 1;
            if let Ok(answer) = try_request(addr, &[b"SEND", b"ana", b"bea", text.as_bytes()]) {
                if answer.first() == Some(&0) {
                    acknowledged.push(text);
                }
            }
        }
        acknowledged
    })
}

/// Stops `traffic`, then checks that no node died and that nothing it had acknowledged is
/// lost; what it had acknowledged.
fn end_traffic(
    stop: &AtomicBool,
    traffic: std::thread::JoinHandle<Vec<String>>,
    nodes: &mut [Server],
    db: &Db,
) -> Vec<String> {
    stop.store(true, Ordering::Relaxed);
    let acknowledged = traffic.join().unwrap();
    no_node_died(nodes);
    nothing_acknowledged_lost(db, &acknowledged);
    acknowledged
}

/// Every acknowledged text is waiting for bea.
fn nothing_acknowledged_lost(db: &Db, acknowledged: &[String]) {
    let stored: std::collections::HashSet<String> = db
        .rows("SELECT text FROM pending_messages WHERE recipient = 'bea'")
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|t| !stored.contains(*t))
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
}

/// Waits until `node` answers a SEND with 0 again.
fn serves_again(node: &Server, text: &str) {
    let start = Instant::now();
    while node.call(&["SEND", "ana", "bea", text]).first() != Some(&0) {
        assert!(
            start.elapsed() < 2 * PATIENCE,
            "{} never served a SEND again",
            node.port
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private message and a broadcast from a chat session on one node reach a session on
/// another (through the mailbox, the bus and presence made again after the outage): tried
/// until they do, within a few seconds.
fn cross_node_chat(from: &Server, to: &Server, tag: &str) {
    let mut dani = login_again(to, &format!("dani{tag}"));
    let mut carla = login_again(from, &format!("carla{tag}"));
    let heard = |dani: &mut LineConn, expected: &str| {
        while let Some(line) = dani.line_within(Duration::from_secs(1)) {
            if line == expected {
                return true;
            }
        }
        false
    };
    let start = Instant::now();
    for (request, expected) in [
        (
            format!("MESSAGE|dani{tag}|hola"),
            format!("MESSAGE|carla{tag}|hola"),
        ),
        (
            "BROADCAST|a todos".to_string(),
            format!("BROADCAST|carla{tag}|a todos"),
        ),
    ] {
        loop {
            carla.send(&request);
            if heard(&mut dani, &expected) {
                break;
            }
            assert!(
                start.elapsed() < 2 * PATIENCE,
                "{request} never reached the other node: {:?}",
                from.stderr.snapshot()
            );
        }
    }
}

/// A chat login, tried until the node's storage workers have connected again.
fn login_again(node: &Server, name: &str) -> LineConn {
    let start = Instant::now();
    loop {
        if let Some(conn) = LineConn::try_chat(node, name) {
            return conn;
        }
        assert!(
            start.elapsed() < 2 * PATIENCE,
            "{name} could never log in again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn no_node_died(nodes: &mut [Server]) {
    for node in nodes.iter_mut() {
        assert!(
            node.alive(),
            "node {} died: {:?}",
            node.port,
            node.stderr.snapshot()
        );
        let stderr = node.stderr.snapshot();
        assert!(!stderr.iter().any(|l| l.contains("fatal")), "{stderr:?}");
    }
}

/// Finding: a fast shutdown of PostgreSQL and a start 2 s later, under SEND and chat traffic,
/// killed every node that carried writes (`fatal: the PostgreSQL durability barrier ...
/// failed`): the barrier's connection was opened once, and any error on it was taken for a
/// failed fsync.
#[test]
fn a_postgresql_restart_under_traffic_kills_no_node_and_loses_nothing_acknowledged() {
    let (cluster, db) = private_cluster();
    let mut nodes = nodes(&db, 3);
    register(&nodes[0], "ana");
    register(&nodes[0], "bea");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = send_traffic(nodes.iter().map(Server::addr).collect(), stop.clone());
    // Traffic before, during and after.
    std::thread::sleep(Duration::from_millis(500));
    cluster.shut_down(Shutdown::Fast);
    std::thread::sleep(Duration::from_secs(2));
    cluster.start_again();
    for (n, node) in nodes.iter().enumerate() {
        serves_again(node, &format!("after{n}"));
    }
    let acknowledged = end_traffic(&stop, traffic, &mut nodes, &db);
    assert!(!acknowledged.is_empty());
    cross_node_chat(&nodes[0], &nodes[1], "1");
    cross_node_chat(&nodes[2], &nodes[0], "2");
    // Pushes work again: bea connects through one node and gets every message, in order.
    let bea = e2e::connect(&nodes[1], "bea");
    let mut waiting: std::collections::HashSet<&String> = acknowledged.iter().collect();
    let mut last_id = 0;
    while !waiting.is_empty() {
        let wire::Push::Message { id, text, .. } = e2e::decode_push(&bea.next()) else {
            panic!("not a message push");
        };
        assert!(id > last_id, "message {id} after {last_id}");
        last_id = id;
        waiting.remove(&String::from_utf8(text).unwrap());
    }
}

/// The same after a crash (an immediate shutdown, recovery on start): what was acknowledged
/// before it was made durable by a barrier of the server's life it was committed in.
#[test]
fn a_postgresql_crash_loses_nothing_acknowledged() {
    let (cluster, db) = private_cluster();
    let mut nodes = nodes(&db, 2);
    register(&nodes[0], "ana");
    register(&nodes[0], "bea");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = send_traffic(nodes.iter().map(Server::addr).collect(), stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    cluster.shut_down(Shutdown::Immediate);
    cluster.start_again();
    for (n, node) in nodes.iter().enumerate() {
        serves_again(node, &format!("after{n}"));
    }
    end_traffic(&stop, traffic, &mut nodes, &db);
}

/// Finding: with PostgreSQL stopped for 15 s, requests failed fast, but the nodes died on the
/// first SEND after it returned, and the bus never came back. Now sessions stay open and get
/// their errors meanwhile, and everything works again afterwards.
#[test]
fn a_15_second_outage_is_survived_and_everything_works_again() {
    let (cluster, db) = private_cluster();
    let mut nodes = nodes(&db, 2);
    register(&nodes[0], "ana");
    register(&nodes[0], "bea");
    let mut session = LineConn::chat(&nodes[0], "eva");
    cluster.shut_down(Shutdown::Fast);
    let outage = Instant::now();
    let mut answered = 0;
    while outage.elapsed() < Duration::from_secs(15) {
        for node in &nodes {
            assert_eq!(node.call(&["SEND", "ana", "bea", "en el apagón"]), [2]);
            answered += 1;
        }
        // A broadcast that cannot be stored is answered with an error; the session stays.
        session.send("BROADCAST|nadie me oye");
        assert!(session.until_prefix("ERROR|").starts_with("ERROR|500|"));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(answered > 0);
    cluster.start_again();
    for (n, node) in nodes.iter().enumerate() {
        serves_again(node, &format!("after{n}"));
    }
    no_node_died(&mut nodes);
    // The session lived through it: its broadcasts are stored and heard again once the
    // storage worker that runs them has connected again (within its backoff).
    let start = Instant::now();
    loop {
        session.send("BROADCAST|de vuelta");
        if session.until_prefix("") != "ERROR|500|No se pudo difundir" {
            break;
        }
        assert!(
            start.elapsed() < 2 * PATIENCE,
            "broadcasts never worked again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cross_node_chat(&nodes[0], &nodes[1], "1");
    cross_node_chat(&nodes[1], &nodes[0], "2");
}

/// Finding: `pg_terminate_backend` of a node's backends made the node exit.
#[test]
fn a_nodes_backends_terminated_it_connects_again_and_serves() {
    let (_cluster, db) = private_cluster();
    let mut nodes = vec![Server::start_on(
        &db,
        &[
            "--chat-port",
            "0",
            "--rooms-port",
            "0",
            "--admin-addr",
            "127.0.0.1:0",
        ],
    )];
    register(&nodes[0], "ana");
    register(&nodes[0], "bea");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = send_traffic(vec![nodes[0].addr()], stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let terminated = db.int(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
         AND application_name LIKE 'messenger%'",
    );
    assert!(terminated >= 3, "the node's connections: {terminated}");
    serves_again(&nodes[0], "after");
    end_traffic(&stop, traffic, &mut nodes, &db);
    // Counted (issue 28): the storage workers that served the SENDs again (the reactor's
    // own connection is made again when it next needs it).
    let metrics = e2e::http(nodes[0].admin_port.unwrap(), "GET", "/metrics", None, b"").text();
    let reconnected: f64 = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("messenger_database_reconnections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(reconnected >= 1.0, "{metrics}");
}

/// Finding: `LOCK TABLE pending_messages` held for 8 s made 51 of 64 REGISTER and USERS
/// probes wait over a second, though neither touches that table: the once-a-second sweep
/// went to the request workers with no key, a new one every second while the last still
/// waited, and with the waiting SENDs they held every request worker. Now the sweep runs on
/// an ordered worker, one at a time, giving up quickly on the lock; SENDs wait for it on the
/// mailbox writers' request workers; and the probes are all answered while the lock is
/// still held.
#[test]
fn a_locked_table_delays_only_the_requests_that_need_it() {
    let (_cluster, db) = private_cluster();
    let nodes = nodes(&db, 1);
    let node = &nodes[0];
    register(node, "ana");
    register(node, "bea");
    // bea is connected through the messenger, so the sweep looks at her mailbox.
    let _bea = e2e::connect(node, "bea");
    let Db::Postgres(url) = &db else {
        unreachable!()
    };
    let mut locker = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut lock = locker.transaction().unwrap();
    lock.batch_execute("LOCK TABLE pending_messages").unwrap();
    let held = Instant::now();
    // SENDs that need the table, on threads, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..8)
        .map(|_| send_traffic(vec![node.addr()], stop.clone()))
        .collect();
    // The sweeps waiting on the lock, as PostgreSQL sees them, for three sweep periods.
    let watcher = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut watcher = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut most = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let row = watcher
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'
                         AND query LIKE 'SELECT alias FROM users WHERE connected%'",
                        &[],
                    )
                    .unwrap();
                most = most.max(row.get(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        })
    };
    // Probes that do not need the table: answered while it is locked (a probe that waited
    // for the lock would never finish while the test holds it).
    let mut answers = Vec::new();
    for k in 0..64 {
        let name = format!("probe{k}");
        let answer = if k % 2 == 0 {
            node.call(&["REGISTER", &name])
        } else {
            node.call(&["USERS", "bea"])
        };
        answers.push(answer[0]);
    }
    assert!(
        answers.iter().all(|&code| code == 0),
        "every probe answered 0 while the table was locked: {answers:?}"
    );
    while held.elapsed() < Duration::from_millis(3500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let most = watcher.join().unwrap();
    assert!(most <= 1, "{most} sweeps waited on the lock at once");
    lock.rollback().unwrap();
    for sender in senders {
        sender.join().unwrap();
    }
    serves_again(node, "after");
}

/// Finding: migrations ran under `lock_timeout = 250ms`, so a node whose start overlapped
/// another's migration exited (`canceling statement due to lock timeout`).
#[test]
fn a_node_started_while_a_migration_lock_is_held_waits_for_it() {
    let (_cluster, db) = private_cluster();
    let Db::Postgres(url) = &db else {
        unreachable!()
    };
    let mut holder = postgres::Client::connect(url, postgres::NoTls).unwrap();
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&0x6d73_6772_i64])
        .unwrap();
    let starting = {
        let db = db.clone();
        std::thread::spawn(move || Server::start_on(&db, &[]))
    };
    // The node waits for the lock: its backend shows as waiting for it.
    let start = Instant::now();
    let mut watcher = postgres::Client::connect(url, postgres::NoTls).unwrap();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the node never waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Longer than the old lock timeout.
    std::thread::sleep(Duration::from_millis(500));
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&0x6d73_6772_i64])
        .unwrap();
    let node = starting
        .join()
        .expect("the node started once the lock was free");
    register(&node, "ana");
}
