//! Several server nodes on one PostgreSQL database (always PostgreSQL, whatever engine the
//! rest of the suite runs on): users, presence and mailboxes are shared; exactly one node
//! delivers to a recipient at a time; a node killed with -9 loses nothing acknowledged and
//! the others take its recipients over while the recipients stay connected.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use e2e::{
    closed_port, connect, decode_push, register, sent, try_decode_push, try_request, Db, Listener,
    Server, PATIENCE,
};
use wire::Push;

fn three_nodes() -> (Db, [Server; 3]) {
    three_nodes_with(&[])
}

fn three_nodes_with(args: &'static [&'static str]) -> (Db, [Server; 3]) {
    let db = Db::postgres();
    // Started together: the migrations must be applied once, whoever comes first.
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || Server::start_on(&db, args))
        })
        .collect();
    let nodes: Vec<Server> = starts.into_iter().map(|s| s.join().unwrap()).collect();
    let nodes: [Server; 3] = nodes.try_into().unwrap_or_else(|_| unreachable!());
    (db, nodes)
}

/// The next push to `listener`, decoded as a message: `(sender, id, text)`.
fn next_message(listener: &Listener) -> (String, u32, String) {
    match decode_push(&listener.next()) {
        Push::Message {
            sender, id, text, ..
        } => (sender, id, String::from_utf8(text).unwrap()),
        other => panic!("not a message push: {other:?}"),
    }
}

#[test]
fn users_presence_and_messages_are_shared_across_nodes() {
    let (db, [n1, n2, n3]) = three_nodes();
    assert_eq!(
        db.int("SELECT count(*) FROM schema_migrations"),
        db.int("SELECT max(version) FROM schema_migrations"),
        "each step applied once"
    );
    register(&n1, "ana");
    assert_eq!(
        n2.call(&["REGISTER", "ana"]),
        [1],
        "taken, through another node"
    );
    register(&n2, "bea");
    register(&n3, "carla");
    let bea = connect(&n2, "bea");
    let carla = connect(&n3, "carla");
    assert_eq!(
        n2.call(&["CONNECT", "carla", "4000"]),
        [2],
        "already connected, through another node"
    );

    // Presence: every node lists the users connected through any node.
    let expected = b"\x002\0bea\0carla\0".to_vec();
    for node in [&n1, &n2, &n3] {
        assert_eq!(node.call(&["CONNECTEDUSERS", "bea"]), expected);
    }

    // A message sent through node 1 reaches bea, connected through node 2.
    assert_eq!(n1.call(&["SEND", "ana", "bea", "hola"]), sent(1));
    assert_eq!(next_message(&bea), ("ana".into(), 1, "hola".into()));
    // Ids are the sender's, whichever node takes the SEND.
    assert_eq!(n3.call(&["SEND", "ana", "carla", "otra"]), sent(2));
    assert_eq!(next_message(&carla), ("ana".into(), 2, "otra".into()));

    // Offline messages wait, and the node the recipient comes back through delivers them.
    assert_eq!(n2.call(&["DISCONNECT", "bea"]), [0]);
    for n in 3..=5u32 {
        let node = [&n1, &n2, &n3][n as usize % 3];
        assert_eq!(
            node.call(&["SEND", "ana", "bea", &format!("m{n}")]),
            sent(n)
        );
    }
    let bea = connect(&n3, "bea");
    for n in 3..=5u32 {
        assert_eq!(next_message(&bea), ("ana".into(), n, format!("m{n}")));
    }
}

#[test]
fn messages_to_one_recipient_keep_each_senders_order_across_nodes() {
    let (_db, nodes) = three_nodes();
    let nodes = Arc::new(nodes);
    let senders = ["s0", "s1", "s2", "s3"];
    for sender in senders {
        register(&nodes[0], sender);
    }
    register(&nodes[1], "bea");
    let bea = connect(&nodes[2], "bea");
    const PER_SENDER: u32 = 40;
    let threads: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(k, sender)| {
            let (nodes, sender) = (nodes.clone(), sender.to_string());
            std::thread::spawn(move || {
                for n in 1..=PER_SENDER {
                    // Each message through the next node.
                    let node = &nodes[(k + n as usize) % 3];
                    assert_eq!(
                        node.call(&["SEND", &sender, "bea", &format!("{n}")]),
                        sent(n)
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let mut last: HashMap<String, u32> = HashMap::new();
    for _ in 0..PER_SENDER as usize * senders.len() {
        let (sender, id, text) = next_message(&bea);
        assert_eq!(text, id.to_string());
        let previous = last.insert(sender.clone(), id).unwrap_or(0);
        assert_eq!(id, previous + 1, "{sender}'s messages in order, none twice");
    }
    bea.expect_none(std::time::Duration::from_millis(300));
}

#[test]
fn a_node_killed_mid_storm_loses_nothing_acknowledged_and_the_others_take_over() {
    // Pushes wait as long as the test needs.
    let (_db, [n1, n2, n3]) = three_nodes_with(&["--push-timeout-ms", "60000"]);
    let senders = ["s0", "s1", "s2"];
    for sender in senders {
        register(&n2, sender);
    }
    register(&n2, "bea");
    // bea connects through the node that will die; its listener stays up throughout. It is
    // busy at first: node 1 takes bea's deliveries with the first message and its push waits,
    // so the messages the storm brings to the other nodes are left to node 1.
    let bea = Listener::paused();
    assert_eq!(n1.call(&["CONNECT", "bea", &bea.port_field()]), [0]);
    assert_eq!(n1.call(&["SEND", "s0", "bea", "first"]), sent(1));
    let addrs = [n1.addr(), n2.addr(), n3.addr()];
    let acked: Arc<Mutex<Vec<(String, u32)>>> = Arc::new(Mutex::new(vec![("s0".into(), 1)]));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let storm: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(k, sender)| {
            let (acked, count, stop) = (acked.clone(), count.clone(), stop.clone());
            let sender = sender.to_string();
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let addr = addrs[(k + n) % 3];
                    let text = format!("{sender}-{n}");
                    let fields: [&[u8]; 4] = [b"SEND", sender.as_bytes(), b"bea", text.as_bytes()];
                    match try_request(addr, &fields) {
                        Ok(answer) if answer.first() == Some(&0) => {
                            let id = std::str::from_utf8(&answer[1..answer.len() - 1])
                                .unwrap()
                                .parse()
                                .unwrap();
                            acked.lock().unwrap().push((sender.clone(), id));
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        // The dead node refuses, or died before answering: not acknowledged.
                        _ => {}
                    }
                }
            })
        })
        .collect();
    let wait_for = |target: usize| {
        let start = Instant::now();
        while count.load(Ordering::Relaxed) < target {
            assert!(start.elapsed() < PATIENCE, "the storm stalled at {target}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    // The storm ends before node 1 dies, so no SEND through a live node comes to claim bea's
    // deliveries afterwards: if node 1 held them, the survivors must find them by themselves.
    wait_for(300);
    stop.store(true, Ordering::Relaxed);
    for thread in storm {
        thread.join().unwrap();
    }
    n1.kill9();
    bea.resume();
    let acked = acked.lock().unwrap().clone();

    // Every acknowledged message arrives at the listener bea gave the dead node, with no new
    // CONNECT; a message the dead node pushed but had not yet recorded may come twice.
    let mut seen: HashMap<String, std::collections::BTreeSet<u32>> = HashMap::new();
    let mut missing: Vec<(String, u32)> = acked.clone();
    let start = Instant::now();
    while !missing.is_empty() {
        assert!(
            start.elapsed() < PATIENCE,
            "{} acknowledged messages never arrived, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        // A push the dead node was writing may be cut short: not a delivery.
        let Some(Push::Message { sender, id, .. }) = try_decode_push(&bea.next()) else {
            continue;
        };
        let ids = seen.entry(sender.clone()).or_default();
        // A repeat is allowed; a message seen for the first time comes after all of its
        // sender's earlier ones.
        if !ids.contains(&id) {
            let last = ids.last().copied().unwrap_or(0);
            assert!(id > last, "{sender}: {id} first seen after {last}");
            ids.insert(id);
        }
        missing.retain(|(s, i)| !(*s == sender && *i == id));
    }
    assert!(acked.len() >= 300, "{} acknowledged in all", acked.len());
}

/// Reads `conn`'s lines until one equals `expected`, skipping others (user lists on their way
/// to the expected one).
fn wait_for_line(conn: &mut e2e::LineConn, expected: &str) {
    wait_for_line_where(conn, |line| line == expected, expected);
}

/// Reads `conn`'s lines until a user list names exactly `names`, in any order: users on other
/// nodes join the list in the order their events arrive.
fn wait_for_user_list(conn: &mut e2e::LineConn, names: &[&str]) {
    let mut expected = names.to_vec();
    expected.sort_unstable();
    wait_for_line_where(
        conn,
        |line| {
            let mut listed: Vec<&str> = line
                .strip_prefix("USER_LIST|")
                .map_or(vec![], |list| list.split(',').collect());
            listed.sort_unstable();
            listed == expected
        },
        &format!("a user list of {names:?}"),
    );
}

fn wait_for_line_where(conn: &mut e2e::LineConn, wanted: impl Fn(&str) -> bool, what: &str) {
    let start = Instant::now();
    loop {
        let line = conn.line();
        if wanted(&line) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "no {what}; last {line:?}");
    }
}

#[test]
fn rooms_chat_and_presence_span_nodes_and_a_dead_nodes_sessions_are_forgotten() {
    let db = Db::postgres();
    let all = ["--chat-port", "0", "--rooms-port", "0"];
    let n1 = Server::start_on(&db, &all);
    let n2 = Server::start_on(&db, &all);
    let n3 = Server::start_on(&db, &all);
    let mut ana = e2e::LineConn::rooms(&n1, "ana");
    let mut bea = e2e::LineConn::rooms(&n2, "bea");
    // Carla's user list shows when node 3 has heard of both.
    let mut carla = e2e::LineConn::chat(&n3, "carla");
    wait_for_user_list(&mut carla, &["ana", "bea", "carla"]);

    // A room spanning nodes: joins, lines and leaves reach the members on other nodes.
    ana.send("ROOM Sala1");
    assert_eq!(ana.line(), "Te has unido a la sala Sala1.");
    bea.send("ROOM Sala1");
    assert_eq!(bea.line(), "Te has unido a la sala Sala1.");
    assert_eq!(ana.line(), "bea se ha unido a la sala.");
    bea.send("MESSAGE hola desde el nodo 2");
    assert_eq!(ana.line(), "bea: hola desde el nodo 2");
    ana.send("MESSAGE y yo desde el 1");
    assert_eq!(bea.line(), "ana: y yo desde el 1");
    // Quotes and backslashes cross the bus as they are.
    ana.send(r"MESSAGE it's C:\tmp'; --");
    assert_eq!(bea.line(), r"ana: it's C:\tmp'; --");
    // Members on every node count, once node 3 has heard of both joins.
    let mut dani = e2e::LineConn::rooms(&n3, "dani");
    let start = Instant::now();
    loop {
        dani.send("LIST_ROOMS");
        assert_eq!(dani.line(), "Salas disponibles:");
        let count = dani.line();
        if count == "Sala1 (2)" {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "LIST_ROOMS on node 3: {count}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    // A name in a session on one node is taken on the others, through every front-end.
    let mut again = e2e::LineConn::connect(n3.rooms_addr());
    again.send("JOIN ana");
    assert_eq!(again.line(), "ERROR: Username ya en uso.");
    assert_eq!(n3.call(&["CONNECT", "ana", "4000"]), [2]);

    // Broadcasts reach chat sessions on every node; a private message reaches a session on
    // another node than the SEND's (at once if that node has heard of the session, else
    // within a second, when the session's node looks at its sessions' mailboxes).
    let mut eva = e2e::LineConn::chat(&n1, "eva");
    wait_for_user_list(&mut carla, &["ana", "bea", "carla", "dani", "eva"]);
    carla.send("BROADCAST|hola a todos");
    wait_for_line(&mut eva, "BROADCAST|carla|hola a todos");
    register(&n2, "fede");
    assert_eq!(n2.call(&["SEND", "fede", "carla", "en privado"]), sent(1));
    wait_for_line(&mut carla, "MESSAGE|fede|en privado");

    // Node 2 dies: its sessions leave the others' rooms and lists within about a second.
    n2.kill9();
    assert_eq!(ana.line(), "bea ha salido del chat.");
    wait_for_user_list(&mut carla, &["ana", "carla", "dani", "eva"]);

    // A node started now learns who is where from the others (in no particular order).
    let n4 = Server::start_on(&db, &all);
    let mut hugo = e2e::LineConn::chat(&n4, "hugo");
    wait_for_user_list(&mut hugo, &["ana", "carla", "dani", "eva", "hugo"]);
    let mut gil = e2e::LineConn::rooms(&n4, "gil");
    gil.send("LIST_ROOMS");
    assert_eq!(gil.line(), "Salas disponibles:");
    assert_eq!(gil.line(), "Sala1 (1)");
    let mut again = e2e::LineConn::connect(n4.rooms_addr());
    again.send("JOIN ana");
    assert_eq!(again.line(), "ERROR: Username ya en uso.");
}

/// A canvas viewer of the original kind: `nuevo`, then a whole board after each change.
fn canvas_viewer(server: &Server) -> e2e::CanvasConn {
    let mut conn = e2e::CanvasConn::connect(server);
    conn.send(r#"{"comando": "nuevo"}"#);
    conn.recv();
    conn
}

fn paint(conn: &mut e2e::CanvasConn, x: usize, y: usize, colour: &str) {
    conn.send(&format!(
        r#"{{"comando": "pintar", "x_pos": "{x}", "y_pos": "{y}", "nombre_color": "{colour}"}}"#
    ));
}

/// Reads boards until pixel (`x`, `y`) is `colour`; returns that board.
fn board_with(conn: &mut e2e::CanvasConn, x: usize, y: usize, colour: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let board = conn.recv();
        if board[y.to_string()][x.to_string()] == colour {
            return board;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "({x}, {y}) never became {colour}"
        );
    }
}

#[test]
fn canvas_paints_reach_every_nodes_viewers_and_every_board_ends_as_the_stored_one() {
    const COLOURS: [&str; 8] = [
        "white", "black", "red", "green", "yellow", "blue", "cyan", "magenta",
    ];
    let db = Db::postgres();
    let n1 = Server::start_on(&db, &["--canvas-port", "0"]);
    let n2 = Server::start_on(&db, &["--canvas-port", "0"]);
    let mut watch1 = canvas_viewer(&n1);
    let mut watch2 = canvas_viewer(&n2);
    let mut painter1 = canvas_viewer(&n1);
    let mut painter2 = canvas_viewer(&n2);
    paint(&mut painter1, 1, 1, "red");
    board_with(&mut watch2, 1, 1, "red");
    paint(&mut painter2, 2, 2, "blue");
    board_with(&mut watch1, 2, 2, "blue");

    // Both nodes paint one pixel at once, many times.
    let storm = |mut painter: e2e::CanvasConn, offset: usize| {
        std::thread::spawn(move || {
            for n in 0..200 {
                paint(&mut painter, 5, 5, COLOURS[(n + offset) % 8]);
            }
            painter
        })
    };
    let (storm1, storm2) = (storm(painter1, 0), storm(painter2, 3));
    let (mut painter1, mut painter2) = (storm1.join().unwrap(), storm2.join().unwrap());
    // A last paint through each node in turn: once both viewers show the second, each node
    // has applied everything committed before it.
    paint(&mut painter1, 9, 9, "green");
    board_with(&mut watch2, 9, 9, "green");
    paint(&mut painter2, 9, 9, "cyan");
    let board1 = board_with(&mut watch1, 9, 9, "cyan");
    let board2 = board_with(&mut watch2, 9, 9, "cyan");
    let stored = db.rows("SELECT pixels FROM canvas WHERE id = 1");
    let stored = stored[0][0].clone().unwrap();
    let stored_colour = COLOURS[usize::from(stored.as_bytes()[5 * 50 + 5])];
    assert_eq!(board1["5"]["5"], stored_colour, "node 1's board");
    assert_eq!(board2["5"]["5"], stored_colour, "node 2's board");
    // Neither node's writes undid the other's pixels.
    assert_eq!(COLOURS[usize::from(stored.as_bytes()[50 + 1])], "red");
    assert_eq!(COLOURS[usize::from(stored.as_bytes()[2 * 50 + 2])], "blue");
    assert_eq!(COLOURS[usize::from(stored.as_bytes()[9 * 50 + 9])], "cyan");
}

#[test]
fn a_node_whose_database_connection_drops_connects_again_and_keeps_its_sessions_known() {
    let db = Db::postgres();
    let n1 = Server::start_on(&db, &["--rooms-port", "0"]);
    let n2 = Server::start_on(&db, &["--rooms-port", "0"]);
    let mut ana = e2e::LineConn::rooms(&n1, "ana");
    let mut bea = e2e::LineConn::rooms(&n2, "bea");
    ana.send("ROOM Sala1");
    assert_eq!(ana.line(), "Te has unido a la sala Sala1.");
    bea.send("ROOM Sala1");
    assert_eq!(bea.line(), "Te has unido a la sala Sala1.");
    assert_eq!(ana.line(), "bea se ha unido a la sala.");
    register(&n1, "x");
    register(&n1, "y");
    let y = connect(&n1, "y");

    // Node 1's storage connection is the older of the two nodes'.
    db.execute(
        "SELECT pg_terminate_backend((SELECT pid FROM pg_stat_activity
           WHERE datname = current_database() AND application_name = 'messenger'
           ORDER BY backend_start LIMIT 1))",
    );
    // The request that finds the connection gone fails; a later one works.
    let start = Instant::now();
    while n1.call(&["REGISTER", "carla"]) != [0] {
        assert!(start.elapsed() < PATIENCE, "node 1 never connected again");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    n1.stderr.wait_until(
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("connected to the database again"))
        },
        "the reconnection on stderr",
    );
    assert_eq!(n1.call(&["SEND", "x", "y", "otra vez"]), sent(1));
    assert_eq!(next_message(&y), ("x".into(), 1, "otra vez".into()));

    // Node 2 looks for dead nodes once a second and forgets one gone at two looks in a row:
    // past those, node 1's sessions must still be known there, said again under its new name.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let start = Instant::now();
    loop {
        bea.send("LIST_ROOMS");
        // Had node 2 looked twice before node 1 said its sessions again, Bea heard that Ana
        // left, and Ana is back, silently, once it has.
        wait_for_line(&mut bea, "Salas disponibles:");
        let count = bea.line();
        if count == "Sala1 (2)" {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "LIST_ROOMS on node 2: {count}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut again = e2e::LineConn::connect(n2.rooms_addr());
    again.send("JOIN ana");
    assert_eq!(again.line(), "ERROR: Username ya en uso.");
    // Lines still cross, and node 1 does not take its own events, under its new name, for
    // another node's: Ana hears Bea, not herself.
    ana.send("MESSAGE sigo aquí");
    assert_eq!(bea.line(), "ana: sigo aquí");
    bea.send("MESSAGE y yo");
    assert_eq!(ana.line(), "bea: y yo");
}

/// Another client of the database, holding a lock in a transaction until released.
struct HeldLock(postgres::Client);

impl HeldLock {
    /// `table` against writes (reads go on).
    fn table(db: &Db, table: &str) -> HeldLock {
        HeldLock::take(db, &format!("LOCK TABLE {table} IN EXCLUSIVE MODE"))
    }

    /// User `alias`'s row against updates (reads, and rows that refer to it, go on).
    fn user(db: &Db, alias: &str) -> HeldLock {
        HeldLock::take(
            db,
            &format!("SELECT 1 FROM users WHERE alias = '{alias}' FOR NO KEY UPDATE"),
        )
    }

    /// Room `name`'s row against updates and the locks its lines' inserts take (reads go
    /// on).
    fn room(db: &Db, name: &str) -> HeldLock {
        HeldLock::take(
            db,
            &format!("SELECT 1 FROM rooms WHERE name = '{name}' FOR UPDATE"),
        )
    }

    fn take(db: &Db, lock: &str) -> HeldLock {
        let Db::Postgres(url) = db else {
            unreachable!("Db::postgres")
        };
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        client.batch_execute(&format!("BEGIN; {lock}")).unwrap();
        HeldLock(client)
    }

    fn release(mut self) {
        self.0.batch_execute("COMMIT").unwrap();
    }
}

/// Waits until `count` storage workers of this test's database (the cluster is shared with
/// the tests running alongside) wait for a lock.
fn wait_for_workers_waiting_on_a_lock(db: &Db, count: i64) {
    let start = Instant::now();
    while db.int(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'messenger worker'
           AND wait_event_type = 'Lock' AND datname = current_database()",
    ) < count
    {
        assert!(
            start.elapsed() < PATIENCE,
            "{count} storage workers never waited for the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn requests_waiting_for_the_database_do_not_hold_up_the_node() {
    let db = Db::postgres();
    let node = Server::start_on(&db, &[]);
    register(&node, "ana");
    register(&node, "bea");
    // Another client of the database holds the mailbox table: the SEND's insert must wait.
    let lock = HeldLock::table(&db, "pending_messages");
    let addr = node.addr();
    let sending = std::thread::spawn(move || {
        try_request(addr, &[b"SEND", b"ana", b"bea", b"espera"]).unwrap()
    });
    wait_for_workers_waiting_on_a_lock(&db, 1);
    // The node's event loop is not waiting with it.
    assert_eq!(node.call(&["REGISTER", "carla"]), [0]);
    assert_eq!(node.call(&["CONNECTEDUSERS", "nobody"])[0], 2);
    assert!(
        !sending.is_finished(),
        "SEND answered while its insert waits"
    );
    lock.release();
    assert_eq!(sending.join().unwrap(), sent(1));
    assert_eq!(db.int("SELECT count(*) FROM pending_messages"), 1);

    // The same for REGISTER and CONNECT, waiting for the users table, while reads go on.
    let lock = HeldLock::table(&db, "users");
    let waiting: Vec<_> = [vec!["REGISTER", "dani"], vec!["CONNECT", "bea", "4000"]]
        .into_iter()
        .map(|fields| {
            std::thread::spawn(move || {
                let fields: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
                try_request(addr, &fields).unwrap()
            })
        })
        .collect();
    wait_for_workers_waiting_on_a_lock(&db, 2);
    assert_eq!(node.call(&["CONNECTEDUSERS", "nobody"])[0], 2);
    assert!(waiting.iter().all(|w| !w.is_finished()));
    lock.release();
    let answers: Vec<Vec<u8>> = waiting.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(answers, [vec![0], vec![0]]);
}

#[test]
fn deliveries_waiting_for_the_database_do_not_hold_up_the_node() {
    let db = Db::postgres();
    let node = Server::start_on(&db, &[]);
    register(&node, "ana");
    register(&node, "bea");
    assert_eq!(node.call(&["SEND", "ana", "bea", "hola"]), sent(1));
    // Another client of the database holds the mailbox table against writes (reads go on):
    // the delivered message's removal must wait.
    let lock = HeldLock::table(&db, "pending_messages");
    let bea = connect(&node, "bea");
    assert_eq!(next_message(&bea), ("ana".into(), 1, "hola".into()));
    wait_for_workers_waiting_on_a_lock(&db, 1);
    // The claim on Bea's deliveries is a storage worker's, not the event loop's.
    assert_eq!(
        db.int(
            "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid)
              WHERE locktype = 'advisory' AND application_name = 'messenger worker'
                AND datname = current_database()"
        ),
        1
    );
    // The node's event loop does not wait with the removal.
    assert_eq!(node.call(&["REGISTER", "carla"]), [0]);
    assert_eq!(node.call(&["CONNECTEDUSERS", "nobody"])[0], 2);
    let delivered = "s> SEND MESSAGE 1 FROM ana TO bea";
    assert!(
        !node.stdout.snapshot().iter().any(|l| l == delivered),
        "reported delivered before its removal committed"
    );
    lock.release();
    node.stdout.wait_for(delivered);
    assert_eq!(
        db.int("SELECT count(*) FROM pending_messages WHERE recipient = 'bea'"),
        0
    );
    // Delivered once: the next message to Bea is the next push.
    assert_eq!(node.call(&["SEND", "ana", "bea", "adiós"]), sent(2));
    assert_eq!(next_message(&bea), ("ana".into(), 2, "adiós".into()));
}

#[test]
fn a_failed_push_is_reported_once_its_user_is_marked_disconnected() {
    let db = Db::postgres();
    let node = Server::start_on(&db, &["--connect-window-ms", "0"]);
    register(&node, "ana");
    register(&node, "bea");
    assert_eq!(
        node.call(&["CONNECT", "bea", &closed_port().to_string()]),
        [0]
    );
    // Another client holds Bea's row: the SEND goes through, marking her disconnected waits.
    let lock = HeldLock::user(&db, "bea");
    assert_eq!(node.call(&["SEND", "ana", "bea", "perdido"]), sent(1));
    wait_for_workers_waiting_on_a_lock(&db, 1);
    let failed = |lines: &[String]| lines.iter().any(|l| l.contains("push to bea failed"));
    assert!(
        !failed(&node.stderr.snapshot()),
        "the failure was reported while Bea still counted as connected"
    );
    lock.release();
    node.stderr.wait_until(failed, "a push failure line");
    // Whoever reads the line and asks finds her disconnected.
    assert_eq!(node.call(&["DISCONNECT", "bea"]), [2]);
}

#[test]
fn a_chat_sessions_private_messages_are_stored_beside_the_node_in_order() {
    let db = Db::postgres();
    let node = Server::start_on(&db, &["--chat-port", "0"]);
    let mut ana = e2e::LineConn::chat(&node, "ana");
    let mut bea = e2e::LineConn::chat(&node, "bea");
    // Another client of the database holds the mailbox table: the first message's insert
    // waits on a storage worker, and the session's next ones wait behind it.
    let lock = HeldLock::table(&db, "pending_messages");
    let texts: Vec<String> = (1..=5).map(|n| format!("m{n}")).collect();
    for text in &texts {
        ana.send(&format!("MESSAGE|bea|{text}"));
    }
    wait_for_workers_waiting_on_a_lock(&db, 1);
    // The node's event loop is not waiting with them: the messenger and the sessions go on.
    assert_eq!(node.call(&["REGISTER", "dani"]), [0]);
    let mut carla = e2e::LineConn::chat(&node, "carla");
    carla.send("BROADCAST|sigo aquí");
    wait_for_line(&mut bea, "BROADCAST|carla|sigo aquí");
    lock.release();
    // Each stored once, in the order sent.
    let mut arrived = Vec::new();
    while arrived.len() < texts.len() {
        if let Some(text) = bea.line().strip_prefix("MESSAGE|ana|") {
            arrived.push(text.to_string());
        }
    }
    assert_eq!(arrived, texts);
    // Removed once delivered: the removal commits on a worker after the session's write.
    wait_for_count(
        &db,
        "SELECT count(*) FROM pending_messages WHERE recipient = 'bea'",
        0,
    );
}

#[test]
fn logins_waiting_for_the_database_do_not_hold_up_the_node() {
    let db = Db::postgres();
    let node = Server::start_on(&db, &["--chat-port", "0", "--rooms-port", "0"]);
    let mut ana = e2e::LineConn::rooms(&node, "ana");
    let mut carla = e2e::LineConn::chat(&node, "carla");
    // Another client holds the users table against writes: registering a new name waits on a
    // storage worker, and the session's next line waits behind its login.
    let lock = HeldLock::table(&db, "users");
    let mut zoe = e2e::LineConn::connect(node.rooms_addr());
    zoe.send("JOIN zoe");
    zoe.send("LIST_ROOMS");
    // The chat's original framing: one write is one message, answers have no line end.
    let mut yan = std::net::TcpStream::connect(node.chat_addr()).unwrap();
    yan.set_read_timeout(Some(PATIENCE)).unwrap();
    yan.write_all(b"CONNECT|yan").unwrap();
    wait_for_workers_waiting_on_a_lock(&db, 2);
    // The node's event loop is not waiting with them: sessions and the messenger go on, and
    // the names are taken meanwhile.
    ana.send("LIST_ROOMS");
    assert_eq!(ana.line(), "Salas disponibles:");
    assert_eq!(node.call(&["CONNECTEDUSERS", "nadie"])[0], 2);
    let mut again = e2e::LineConn::connect(node.rooms_addr());
    again.send("JOIN zoe");
    assert_eq!(again.line(), "ERROR: Username ya en uso.");
    carla.send("BROADCAST|mientras tanto");
    wait_for_line(&mut carla, "BROADCAST|carla|mientras tanto");
    lock.release();
    assert_eq!(zoe.line(), "OK");
    assert_eq!(zoe.line(), "Salas disponibles:");
    // Yan hears the broadcast made while his login waited once, with the history.
    let mut seen = Vec::new();
    e2e::read_until(&mut yan, &mut seen, |seen| {
        seen.starts_with(b"CONNECT_ACK|OK")
    });
    yan.write_all(b"HELLO|lines").unwrap();
    e2e::read_until(&mut yan, &mut seen, |seen| seen.ends_with(b"HELLO|lines\n"));
    let seen = String::from_utf8(seen).unwrap();
    assert_eq!(
        seen.matches("BROADCAST|carla|mientras tanto").count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        db.int("SELECT count(*) FROM users WHERE alias IN ('zoe', 'yan')"),
        2
    );
}

#[test]
fn a_session_whose_login_ran_on_a_worker_outlives_the_login_deadline() {
    let db = Db::postgres();
    let node = Server::start_on(&db, &["--rooms-port", "0", "--idle-timeout-ms", "300"]);
    let mut ana = e2e::LineConn::rooms(&node, "ana");
    // Past the deadline a connection that never logged in is closed; a session is not.
    ana.expect_quiet(std::time::Duration::from_millis(900));
    ana.send("LIST_ROOMS");
    assert_eq!(ana.line(), "Salas disponibles:");
}

#[test]
fn broadcasts_waiting_for_the_database_do_not_hold_up_the_node_and_reach_everyone_in_one_order() {
    let db = Db::postgres();
    let chat = ["--chat-port", "0"];
    let n1 = Server::start_on(&db, &chat);
    let n2 = Server::start_on(&db, &chat);
    let mut ana = e2e::LineConn::chat(&n1, "ana");
    let mut bea = e2e::LineConn::chat(&n1, "bea");
    let mut cid = e2e::LineConn::chat(&n2, "cid");
    wait_for_user_list(&mut cid, &["ana", "bea", "cid"]);
    // Another client holds the broadcasts' table: the first broadcast's insert waits on a
    // storage worker, the others behind it.
    let lock = HeldLock::table(&db, "chat_broadcasts");
    ana.send("BROADCAST|uno");
    ana.send("BROADCAST|dos");
    bea.send("BROADCAST|tres");
    wait_for_workers_waiting_on_a_lock(&db, 1);
    // The node's event loop is not waiting with it.
    let mut dani = e2e::LineConn::chat(&n1, "dani");
    assert_eq!(n1.call(&["CONNECTEDUSERS", "nadie"])[0], 2);
    lock.release();
    // Every session, on both nodes, hears each once, all in the same order, Ana's in hers.
    let mut heard = Vec::new();
    for conn in [&mut ana, &mut bea, &mut cid, &mut dani] {
        let mut broadcasts = Vec::new();
        while broadcasts.len() < 3 {
            let line = conn.line();
            if line.starts_with("BROADCAST|") {
                broadcasts.push(line);
            }
        }
        heard.push(broadcasts);
    }
    assert!(heard.iter().all(|h| *h == heard[0]), "{heard:#?}");
    let mut sorted = heard[0].clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "BROADCAST|ana|dos",
            "BROADCAST|ana|uno",
            "BROADCAST|bea|tres"
        ]
    );
    let position = |text: &str| heard[0].iter().position(|l| l == text);
    assert!(position("BROADCAST|ana|uno") < position("BROADCAST|ana|dos"));
    assert_eq!(db.int("SELECT count(*) FROM chat_broadcasts"), 3);
}

/// Polls the database until `sql` counts `count`: stored beside the node, out of the
/// client's sight.
fn wait_for_count(db: &Db, sql: &str, count: i64) {
    let start = Instant::now();
    while db.int(sql) != count {
        assert!(start.elapsed() < PATIENCE, "{sql} never counted {count}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn room_joins_and_lines_waiting_for_the_database_do_not_hold_up_the_node_and_each_line_is_heard_once(
) {
    let db = Db::postgres();
    let n1 = Server::start_on(&db, &["--rooms-port", "0"]);
    let n2 = Server::start_on(&db, &["--rooms-port", "0"]);
    let mut bea = e2e::LineConn::rooms(&n2, "bea");
    bea.send("ROOM Sala1");
    assert_eq!(bea.line(), "Te has unido a la sala Sala1.");
    bea.send("MESSAGE antes");
    wait_for_count(
        &db,
        "SELECT count(*) FROM room_messages WHERE text = 'antes'",
        1,
    );
    let mut ana = e2e::LineConn::rooms(&n1, "ana");
    // Another client holds the room's row: Ana's join (reading the room's history) waits on
    // a storage worker of node 1, her next line behind it, and Bea's line on one of node 2.
    let lock = HeldLock::room(&db, "Sala1");
    ana.send("ROOM Sala1");
    ana.send("MESSAGE hola");
    bea.send("MESSAGE durante");
    wait_for_workers_waiting_on_a_lock(&db, 2);
    // Node 1's event loop is not waiting with them: sessions, logins, another room's join
    // (on another storage worker than the waiting room's) and the messenger go on.
    let mut carla = e2e::LineConn::rooms(&n1, "carla");
    carla.send("ROOM Sala2");
    assert_eq!(carla.line(), "Te has unido a la sala Sala2.");
    carla.send("LIST_ROOMS");
    assert_eq!(carla.line(), "Salas disponibles:");
    assert_eq!(carla.line(), "Sala1 (1)");
    assert_eq!(carla.line(), "Sala2 (1)");
    assert_eq!(n1.call(&["REGISTER", "dani"]), [0]);
    lock.release();
    assert_eq!(ana.line(), "Te has unido a la sala Sala1.");
    wait_for_line(&mut bea, "ana: hola");
    bea.send("MESSAGE después");
    // Each of Bea's lines once, in order: in Ana's history or after her answer, whichever
    // of her join and Bea's second line got the room first.
    let mut heard = Vec::new();
    while heard.last().map(String::as_str) != Some("bea: después") {
        heard.push(ana.line());
    }
    assert_eq!(heard, ["bea: antes", "bea: durante", "bea: después"]);
}

#[test]
fn canvas_paints_waiting_for_the_database_do_not_hold_up_the_node() {
    let db = Db::postgres();
    let n1 = Server::start_on(&db, &["--canvas-port", "0"]);
    let n2 = Server::start_on(&db, &["--canvas-port", "0"]);
    let mut watch1 = canvas_viewer(&n1);
    let mut watch2 = canvas_viewer(&n2);
    let red_at_3_4 = "SELECT count(*) FROM canvas WHERE get_byte(pixels, 4 * 50 + 3) = 2";
    // Another client holds the board: storing the paint waits on a storage worker.
    let lock = HeldLock::table(&db, "canvas");
    paint(&mut watch1, 3, 4, "red");
    wait_for_workers_waiting_on_a_lock(&db, 1);
    // Node 1's event loop is not waiting with it: its viewers see the paint at the next tick,
    // and the messenger is served.
    board_with(&mut watch1, 3, 4, "red");
    assert_eq!(n1.call(&["REGISTER", "dani"]), [0]);
    assert_eq!(db.int(red_at_3_4), 0, "stored while the board was held");
    lock.release();
    // Stored, and told to the other node with it.
    board_with(&mut watch2, 3, 4, "red");
    wait_for_count(&db, red_at_3_4, 1);
}

/// The `postgres` crate panics when it cannot build a connection's runtime for lack of file
/// descriptors: it killed the server at start-up (and would kill a thread that connects
/// again). It is an error like any failed connection.
#[test]
fn a_node_without_descriptors_for_its_database_connections_says_so_and_exits() {
    let Db::Postgres(url) = Db::postgres() else {
        unreachable!("Db::postgres")
    };
    let args = ["-p", "0", "--bind", "127.0.0.1", "--db", &url];
    let (code, stderr) =
        e2e::run_server_to_exit(&args, |command| e2e::limit_descriptors(command, 16));
    assert_eq!(code, Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot connect") && last.contains("Too many open files"),
        "{stderr}"
    );
}

#[test]
fn a_login_whose_connection_the_node_closes_while_it_waits_leaves_the_name_free() {
    let db = Db::postgres();
    // Long enough for the second login below to be answered on a busy machine.
    let node = Server::start_on(&db, &["--rooms-port", "0", "--idle-timeout-ms", "3000"]);
    // Another client holds the users table: registering Zoe waits on a storage worker, past
    // the login deadline, and the node closes her connection meanwhile.
    let lock = HeldLock::table(&db, "users");
    let mut zoe = e2e::LineConn::connect(node.rooms_addr());
    zoe.send("JOIN zoe");
    wait_for_workers_waiting_on_a_lock(&db, 1);
    assert!(zoe.closed());
    // The name is free again at once: a second login of it waits for the table too...
    let mut again = e2e::LineConn::connect(node.rooms_addr());
    again.send("JOIN zoe");
    wait_for_workers_waiting_on_a_lock(&db, 2);
    lock.release();
    // ...and gets it once the first one's registration is done (nobody hears its answer).
    assert_eq!(again.line(), "OK");
    assert_eq!(db.int("SELECT count(*) FROM users WHERE alias = 'zoe'"), 1);
}

/// Accounts are shared: a password set through one node holds on the others at once, a key
/// set on a room through one node guards it on the others, and a DISCONNECT through a node
/// that cannot see the session's address is refused.
#[test]
fn passwords_and_room_keys_hold_on_every_node() {
    let db = Db::postgres();
    let all = ["--chat-port", "0", "--rooms-port", "0"];
    let n1 = Server::start_on(&db, &all);
    let n2 = Server::start_on(&db, &all);
    let mut watcher = e2e::LineConn::chat(&n2, "watcher");
    let mut bob = e2e::LineConn::chat(&n1, "bob");
    bob.send("PASSWORD|de bob");
    assert_eq!(bob.until_prefix("PASSWORD_ACK|"), "PASSWORD_ACK|OK");
    watcher.until("USER_LIST|watcher,bob");
    assert_eq!(
        n2.call(&["DISCONNECT", "bob"]),
        [3],
        "in a session on another node"
    );
    drop(bob);
    // Node 2 hears that bob left before he logs in there.
    watcher.until("USER_LIST|watcher");
    let login = |node: &Server, connect: &str| {
        e2e::LineConn::chat_login(e2e::LineConn::connect(node.chat_addr()), connect)
    };
    assert!(login(&n2, "CONNECT|bob").is_err());
    drop(login(&n2, "CONNECT|bob|de bob").expect("the password, through the other node"));

    let mut ana = e2e::LineConn::rooms(&n1, "ana");
    ana.send("ROOM cerrada");
    ana.until_prefix("Te has unido");
    ana.send("KEY llave");
    assert_eq!(ana.line(), "La sala cerrada tiene clave.");
    let mut cid = e2e::LineConn::rooms(&n2, "cid");
    cid.send("ROOM cerrada");
    assert_eq!(cid.line(), "ERROR: La sala tiene clave.");
    cid.send("ROOM_KEY llave cerrada");
    assert_eq!(cid.line(), "Te has unido a la sala cerrada.");
}

/// Issue 28: each node's status page lists the nodes and says on which one each person
/// online is, their own or another.
#[test]
fn the_status_page_names_the_nodes_and_where_each_person_is() {
    let (_db, nodes) = three_nodes_with(&["--chat-port", "0", "--admin-addr", "127.0.0.1:0"]);
    let _ana = e2e::LineConn::chat(&nodes[0], "ana");
    let _bea = e2e::LineConn::chat(&nodes[1], "bea");
    let status = |node: &Server| -> serde_json::Value {
        let text = e2e::http(node.admin_port.unwrap(), "GET", "/status.json", None, b"").text();
        serde_json::from_str(&text).unwrap()
    };
    // Node 0 hears of bea through the bus.
    let start = Instant::now();
    let seen = loop {
        let seen = status(&nodes[0]);
        if seen["people_online"] == 2 && seen["nodes"].as_array().is_some_and(|n| n.len() == 3) {
            break seen;
        }
        assert!(start.elapsed() < PATIENCE, "{seen}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let node_ids: Vec<i64> = seen["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    let people = seen["people"].as_array().unwrap();
    let (ana, bea) = (&people[0], &people[1]);
    assert_eq!(
        (ana["name"].as_str(), bea["name"].as_str()),
        (Some("ana"), Some("bea"))
    );
    assert_eq!(ana["frontend"], "chat");
    assert_eq!(bea["frontend"], "another node");
    let (on_0, on_1) = (ana["node"].as_i64().unwrap(), bea["node"].as_i64().unwrap());
    assert_ne!(on_0, on_1, "{seen}");
    assert!(
        node_ids.contains(&on_0) && node_ids.contains(&on_1),
        "{seen}"
    );
    // Node 1 says the same the other way round.
    let there = status(&nodes[1]);
    let bea_there = there["people"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bea")
        .unwrap()
        .clone();
    assert_eq!(bea_there["frontend"], "chat");
    assert_eq!(bea_there["node"].as_i64(), Some(on_1));
}
