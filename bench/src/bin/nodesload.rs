//! Storage engines and nodes: durable SEND through one node on SQLite (the reference of this
//! run), one node on PostgreSQL, and one, two and three nodes sharing one PostgreSQL database,
//! the clients spread evenly over the nodes. PostgreSQL is a throw-away cluster with `fsync`
//! on, started here from the Debian package; everything runs on this machine's cores.
//!
//! Then the time from a SEND to its arrival, through one node and across two: to a listener
//! (the accepting node pushes to it directly) and to a chat session on the other node (the
//! accepting node publishes "a message waits" with NOTIFY, and the session's node delivers).
//!
//! usage: nodesload SERVER_BINARY [--seconds S] [--quick]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bench::{
    closed_loop_spread, fields, listeners, percentile, request, start_server, Process, Run,
    RunLength,
};
use wire::Push;

struct Options {
    server: PathBuf,
    seconds: f64,
    quick: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(server) = args.first().map(PathBuf::from) else {
        bench::usage_exit("nodesload SERVER_BINARY [--seconds S] [--quick]")
    };
    let RunLength { seconds, quick } = RunLength::from_args(&args);
    Options {
        server,
        seconds,
        quick,
    }
}

/// How many senders: each has its own id counter, so their SENDs do not wait for one another's
/// row lock.
const SENDERS: usize = 64;

/// Starts `count` nodes on `db`, registers the senders and the offline recipient through the
/// first, and runs closed-loop durable SENDs from `clients` clients spread over the nodes.
fn run(opts: &Options, db: &std::ffi::OsStr, count: usize, clients: usize) -> Run {
    let nodes: Vec<Process> = (0..count)
        .map(|_| start_server(&opts.server, db, &["--durability", "full"]))
        .collect();
    let first = nodes[0].addr;
    for alias in (0..SENDERS)
        .map(|n| format!("snd{n}"))
        .chain(["sink".to_string()])
    {
        let answer = request(first, &fields(&[b"REGISTER", alias.as_bytes()])).unwrap();
        assert!(matches!(answer[..], [0] | [1]), "REGISTER {alias}");
    }
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let servers: Vec<&Process> = nodes.iter().collect();
    let make = Arc::new(|client: usize, seq: u64| {
        fields(&[
            b"SEND",
            format!("snd{}", client % SENDERS).as_bytes(),
            b"sink",
            format!("message {seq} of the nodes benchmark").as_bytes(),
        ])
    });
    let result = closed_loop_spread(
        &addrs,
        &servers,
        clients,
        Duration::from_secs_f64(opts.seconds),
        0,
        make,
    );
    for node in nodes {
        node.stop();
    }
    result
}

fn main() {
    let opts = options();
    let cluster = pgcluster::Cluster::start(pgcluster::Durability::Fsync);
    let dir = std::env::temp_dir().join(format!("nodesload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let levels: &[usize] = if opts.quick { &[16] } else { &[4, 16, 64] };
    println!(
        "\n## Storage engines and nodes ({} cores, {} s per run, PostgreSQL 15 with fsync on, \
         everything on the same cores)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        opts.seconds
    );
    println!("Durable SEND to an offline user; clients spread evenly over the nodes.\n");
    println!("| storage | nodes | clients | SEND/s | × SQLite | p50 µs | p99 µs | servers' µs CPU/SEND | errors |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &clients in levels {
        let sqlite = dir.join(format!("sqlite-{clients}.db"));
        let reference = run(&opts, sqlite.as_os_str(), 1, clients);
        print_row("SQLite", 1, clients, &reference, reference.rate());
        for nodes in 1..=3 {
            let url = cluster.new_database();
            let result = run(&opts, url.as_ref(), nodes, clients);
            print_row("PostgreSQL", nodes, clients, &result, reference.rate());
        }
    }
    cross_node_latency(&opts, &cluster);
    println!(
        "\nOn this machine every node, the PostgreSQL cluster and the load generator share two \
         cores, so more nodes show the cost of sharing, not scale. On paper nodes on separate \
         machines add their rates until the primary's WAL flushes or CPU run out \
         (docs/scaling.md)."
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn print_row(storage: &str, nodes: usize, clients: usize, run: &Run, reference: f64) {
    let cpu = if run.ops == 0 {
        0.0
    } else {
        run.server_cpu.as_secs_f64() * 1e6 / run.ops as f64
    };
    println!(
        "| {storage} | {nodes} | {clients} | {:.0} | {:.2} | {:.0} | {:.0} | {cpu:.1} | {} |",
        run.rate(),
        run.rate() / reference,
        percentile(&run.latencies, 0.50),
        percentile(&run.latencies, 0.99),
        run.errors
    );
}

/// A chat session with line framing: `CONNECT|name`, then `HELLO|lines` once the login is
/// answered; what it reads before the framing is answered is dropped.
fn chat_session(addr: SocketAddr, name: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(format!("CONNECT|{name}").as_bytes())
        .unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    let mut hello_sent = false;
    while !seen.ends_with(b"HELLO|lines\n") {
        stream
            .read_exact(&mut byte)
            .expect("the chat login answered");
        seen.push(byte[0]);
        if !hello_sent && seen.windows(14).any(|w| w == b"CONNECT_ACK|OK") {
            stream.write_all(b"HELLO|lines").unwrap();
            hello_sent = true;
        }
    }
    BufReader::new(stream)
}

/// Milliseconds from each SEND's start to its arrival, `count` SENDs one after another.
fn latencies(
    count: usize,
    send_to: SocketAddr,
    arrived: impl Fn(usize) -> Instant,
) -> Vec<Duration> {
    let mut out: Vec<Duration> = (0..count)
        .map(|n| {
            let start = Instant::now();
            let answer = request(
                send_to,
                &fields(&[b"SEND", b"snd", b"rcv", n.to_string().as_bytes()]),
            )
            .unwrap();
            assert_eq!(answer.first(), Some(&0), "SEND {n}");
            arrived(n).saturating_duration_since(start)
        })
        .collect();
    out.sort_unstable();
    out
}

fn cross_node_latency(opts: &Options, cluster: &pgcluster::Cluster) {
    let count = if opts.quick { 50 } else { 300 };
    let url = cluster.new_database();
    let args = ["--durability", "full", "--chat-port", "0"];
    let n1 = start_server(&opts.server, &url, &args);
    let n2 = start_server(&opts.server, &url, &args);
    for alias in ["snd", "rcv"] {
        request(n1.addr, &fields(&[b"REGISTER", alias.as_bytes()])).unwrap();
    }
    let (ports, pushes) = listeners(&["rcv".to_string()]);
    let port = ports[0].to_string();
    let answer = request(n2.addr, &fields(&[b"CONNECT", b"rcv", port.as_bytes()])).unwrap();
    assert_eq!(answer, [0], "CONNECT rcv through node 2");
    let pushed = |n: usize| loop {
        let (_, push, at) = pushes
            .recv_timeout(Duration::from_secs(10))
            .expect("a push within 10 s");
        if matches!(&push, Push::Message { text, .. } if *text == n.to_string().as_bytes()) {
            return at;
        }
    };
    println!(
        "\nFrom a SEND's start to its arrival, {count} SENDs one after another, two nodes on \
         one PostgreSQL database:\n"
    );
    println!("| path | p50 ms | p99 ms |");
    println!("|---|---|---|");
    let show = |path: &str, times: &[Duration]| {
        println!(
            "| {path} | {:.2} | {:.2} |",
            percentile(times, 0.50) / 1000.0,
            percentile(times, 0.99) / 1000.0
        );
    };
    show(
        "to a listener, SEND through its node",
        &latencies(count, n2.addr, pushed),
    );
    show(
        "to a listener, SEND through the other node (direct push)",
        &latencies(count, n1.addr, pushed),
    );
    request(n2.addr, &fields(&[b"DISCONNECT", b"rcv"])).unwrap();
    let session = chat_session(n2.front_end("chat"), "rcv");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in session.lines() {
            let Ok(line) = line else { return };
            if tx.send((line, Instant::now())).is_err() {
                return;
            }
        }
    });
    let delivered = |n: usize| loop {
        let (line, at) = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a chat message within 10 s");
        if line == format!("MESSAGE|snd|{n}") {
            return at;
        }
    };
    // Once node 1 has heard of the session (a SEND before that waits for node 2's look at
    // its sessions' mailboxes, within a second).
    latencies(1, n1.addr, delivered);
    show(
        "to a chat session on the other node (NOTIFY, then its node delivers)",
        &latencies(count, n1.addr, delivered),
    );
    n1.stop();
    n2.stop();
}
