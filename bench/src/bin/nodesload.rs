//! Storage engines and nodes: durable SEND through one node on SQLite (the reference of this
//! run), one node on PostgreSQL, and one, two and three nodes sharing one PostgreSQL database,
//! the clients spread evenly over the nodes. PostgreSQL is a throw-away cluster with `fsync`
//! on, started here from the Debian package; everything runs on this machine's cores.
//!
//! usage: nodesload SERVER_BINARY [--seconds S] [--quick]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bench::{closed_loop_spread, fields, percentile, request, start_server, Process, Run};

struct Options {
    server: PathBuf,
    seconds: f64,
    quick: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: nodesload SERVER_BINARY [--seconds S] [--quick]";
    let server = args.first().map(PathBuf::from).expect(usage);
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .map(|i| args.get(i + 1).and_then(|s| s.parse().ok()).expect(usage))
        .unwrap_or(2.0);
    Options {
        server,
        seconds,
        quick: args.iter().any(|a| a == "--quick"),
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
    println!(
        "\nOn this machine every node, the PostgreSQL cluster and the load generator share two \
         cores, so more nodes show the cost of sharing, not scale. On paper each node's \
         reactor waits for its own round trips to PostgreSQL, so nodes on separate machines \
         add their rates until the primary's WAL flushes or CPU run out (docs/scaling.md)."
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
