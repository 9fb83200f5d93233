//! The benchmark: drives the real server (and a stateless reference) over 127.0.0.1 and prints
//! one table. Run it through `scripts/bench`, which builds everything in release mode.
//!
//! usage: loadgen SERVER_BINARY REFSERVER_BINARY [--seconds S] [--quick] [--chart FILE.svg]
//!        [--only send|live|flush|restart]
//!
//! `--only` runs one part alone and prints no verdicts, for profiling the server meanwhile:
//! the durable SEND comparison, live delivery, or the offline flush.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench::{
    chart, closed_loop, fields, listeners, own_cpu, percentile, request, start_server, Process,
    Run, RunLength,
};
use wire::Push;

struct Options {
    server: PathBuf,
    reference: PathBuf,
    seconds: f64,
    quick: bool,
    chart: Option<PathBuf>,
    /// `--only`: the one part to run.
    only: Option<Part>,
}

#[derive(Clone, Copy, PartialEq)]
enum Part {
    Send,
    Live,
    Flush,
    Restart,
}

/// Medians of `(ops/s, server µs CPU per op)` of one level, ours and the reference's.
struct Compared {
    clients: usize,
    ours: (f64, f64),
    reference: (f64, f64),
}

fn cpu_per_op(run: &Run) -> f64 {
    if run.ops == 0 {
        return 0.0;
    }
    run.server_cpu.as_secs_f64() * 1e6 / run.ops as f64
}

/// Runs the same load against `ours` and the reference in turn, `rounds` times each, printing
/// every run; returns the medians.
fn alternate(
    (name, ours): (&str, &Process),
    reference: &Process,
    clients: usize,
    rounds: usize,
    duration: Duration,
    load: Arc<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>,
) -> Compared {
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (name, process, runs) in [
            (name, ours, &mut mine),
            ("reference", reference, &mut theirs),
        ] {
            let run = closed_loop(
                process.addr,
                Some(process),
                clients,
                duration,
                0,
                Arc::clone(&load),
            );
            row(&format!("{name}, round {round}"), clients, &run);
            runs.push((run.rate(), cpu_per_op(&run)));
        }
    }
    Compared {
        clients,
        ours: medians(&mine),
        reference: medians(&theirs),
    }
}

/// [`alternate`] at every level in `levels`, then a table of the medians; returns them.
fn compare_send(
    ours: &Process,
    reference: &Process,
    levels: &[usize],
    rounds: usize,
    duration: Duration,
    send: &Arc<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>,
) -> Vec<Compared> {
    let compared: Vec<Compared> = levels
        .iter()
        .map(|&clients| {
            alternate(
                ("ours", ours),
                reference,
                clients,
                rounds,
                duration,
                Arc::clone(send),
            )
        })
        .collect();
    println!("\n| clients | ours ops/s | reference ops/s | ratio | ours µs CPU/SEND | reference µs CPU/SEND | CPU ratio |");
    println!("|---|---|---|---|---|---|---|");
    for c in &compared {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} × | {:.1} | {:.1} | {:.2} × |",
            c.clients,
            c.ours.0,
            c.reference.0,
            c.ours.0 / c.reference.0,
            c.ours.1,
            c.reference.1,
            c.ours.1 / c.reference.1
        );
    }
    compared
}

/// Median of each figure separately.
fn medians(runs: &[(f64, f64)]) -> (f64, f64) {
    let pick = |figure: fn(&(f64, f64)) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    (pick(|r| r.0), pick(|r| r.1))
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name);
    let RunLength { seconds, quick } = RunLength::from_args(&args);
    let chart = flag("--chart")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with("--")
                && a.parse::<f64>().is_err()
                && *i != flag("--chart").map_or(usize::MAX, |c| c + 1)
                && *i != flag("--only").map_or(usize::MAX, |c| c + 1)
        })
        .map(|(_, a)| a)
        .collect();
    if positional.len() != 2 {
        bench::usage_exit(
            "loadgen SERVER_BINARY REFSERVER_BINARY [--seconds S] [--quick] [--chart FILE.svg] [--only send|live|flush|restart]",
        );
    }
    Options {
        server: positional[0].into(),
        reference: positional[1].into(),
        seconds,
        quick,
        chart,
        only: flag("--only").map(|i| match args.get(i + 1).map(String::as_str) {
            Some("send") => Part::Send,
            Some("live") => Part::Live,
            Some("flush") => Part::Flush,
            Some("restart") => Part::Restart,
            _ => bench::usage_exit("--only send|live|flush|restart"),
        }),
    }
}

fn row(name: &str, clients: usize, run: &Run) {
    let per_op = cpu_per_op(run);
    println!(
        "| {name:<22} | {clients:>3} | {:>9.0} | {:>8.0} | {:>8.0} | {:>8.0} | {:>8.1} | {:>5.0}% | {:>6} |",
        run.rate(),
        percentile(&run.latencies, 0.50),
        percentile(&run.latencies, 0.99),
        percentile(&run.latencies, 0.999),
        per_op,
        run.generator_cpu.as_secs_f64() / run.elapsed.as_secs_f64() * 100.0,
        run.errors
    );
}

fn header(title: &str) {
    println!("\n### {title}\n");
    println!("| scenario               | cli |     ops/s |  p50 µs  |  p99 µs  | p999 µs  | srv µs/op | gen CPU | errors |");
    println!("|------------------------|-----|-----------|----------|----------|----------|----------|--------|--------|");
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn main() {
    let opts = options();
    let dir = std::env::temp_dir().join(format!("loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let duration = Duration::from_secs_f64(opts.seconds);
    let levels: &[usize] = if opts.quick { &[1, 16] } else { &[1, 16, 64] };
    println!(
        "# Benchmark ({} cores, {} s per run, generator on the same cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        opts.seconds
    );

    match opts.only {
        Some(Part::Live) => {
            print_live_header();
            let messages = if opts.quick { 4_800 } else { 19_200 };
            live_delivery(&opts, &dir, messages, 16, Duration::ZERO);
            live_delivery(&opts, &dir, messages / 4, 4, Duration::from_millis(1));
            return;
        }
        Some(Part::Flush) => {
            offline_flush(&opts, &dir, if opts.quick { 5_000 } else { 20_000 });
            return;
        }
        Some(Part::Restart) => {
            restart(
                &opts,
                &dir,
                if opts.quick { 100_000 } else { 1_000_000 },
                if opts.quick { 10_000 } else { 100_000 },
            );
            return;
        }
        Some(Part::Send) | None => {}
    }
    let server = start_server(&opts.server, dir.join("ops.db"), &[]);
    let addr = server.addr;
    for alias in ["sink", "req"] {
        request(addr, &fields(&[b"REGISTER", alias.as_bytes()])).unwrap();
    }
    // A few connected users for USERS to list; their listeners are never pushed to.
    let parked = TcpListener::bind("127.0.0.1:0").unwrap();
    let parked_port = parked.local_addr().unwrap().port().to_string();
    for n in 0..10 {
        let alias = format!("on{n}");
        request(addr, &fields(&[b"REGISTER", alias.as_bytes()])).unwrap();
        request(
            addr,
            &fields(&[b"CONNECT", alias.as_bytes(), parked_port.as_bytes()]),
        )
        .unwrap();
    }
    request(addr, &fields(&[b"CONNECT", b"req", parked_port.as_bytes()])).unwrap();
    for client in 0..64 {
        request(
            addr,
            &fields(&[b"REGISTER", format!("snd{client}").as_bytes()]),
        )
        .unwrap();
    }

    header("Operations (durable: each answer waits for the WAL fsync that covers it)");
    type Make = Arc<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>;
    let send_durable: Make = Arc::new(|c, s| {
        fields(&[
            b"SEND",
            format!("snd{c}").as_bytes(),
            b"sink",
            format!("message {s} of a durable benchmark").as_bytes(),
        ])
    });
    type Scenario<'a> = (&'a str, Box<dyn Fn(usize) -> Make + 'a>);
    let scenarios: Vec<Scenario> = vec![
        (
            "REGISTER",
            Box::new(|level| {
                Arc::new(move |c, s| fields(&[b"REGISTER", format!("c{level}u{c}_{s}").as_bytes()]))
            }),
        ),
        ("SEND to offline", Box::new(|_| Arc::clone(&send_durable))),
        (
            "USERS (11 online)",
            Box::new(|_| Arc::new(|_, _| fields(&[b"USERS", b"req"]))),
        ),
        (
            "mix 10/70/20 R/S/U",
            Box::new(|level| {
                Arc::new(move |c, s| match s % 10 {
                    0 => fields(&[b"REGISTER", format!("m{level}u{c}_{s}").as_bytes()]),
                    1 | 2 => fields(&[b"USERS", b"req"]),
                    _ => fields(&[
                        b"SEND",
                        format!("snd{c}").as_bytes(),
                        b"sink",
                        b"mixed load",
                    ]),
                })
            }),
        ),
    ];
    for (name, make) in scenarios.iter().filter(|_| opts.only.is_none()) {
        for &clients in levels {
            let run = closed_loop(addr, Some(&server), clients, duration, 0, make(clients));
            row(name, clients, &run);
        }
    }

    // The same SEND load against the stateless reference, alternating, at every level.
    let reference = Process::spawn(Command::new(&opts.reference));
    header("Durable SEND: ours against the stateless reference, alternating (medians below)");
    let rounds = if opts.quick { 1 } else { 3 };
    let compare = |reference: &Process| {
        compare_send(&server, reference, levels, rounds, duration, &send_durable)
    };
    let compared = compare(&reference);
    // The limit for a server that answers once the request is on disk, with no database.
    let mut durable = Command::new(&opts.reference);
    durable
        .arg("--durable")
        .arg(dir.join("durable-reference.log"));
    let durable_reference = Process::spawn(durable);
    header("Durable SEND: ours against the durable reference (`refserver --durable`: appends each request to a file, answers after a group fdatasync, no database), alternating (medians below)");
    let against_durable = compare(&durable_reference);
    durable_reference.stop();
    if let Some(path) = &opts.chart {
        let series = |name, runs: &[Compared], pick: fn(&Compared) -> f64| chart::Series {
            name,
            points: runs.iter().map(|c| (c.clients as f64, pick(c))).collect(),
        };
        let drawn = chart::throughput(
            path,
            "Durable SEND, one connection per request",
            &[
                series("ours (answer after fsync)", &compared, |c| c.ours.0),
                series("stateless reference (stores nothing)", &compared, |c| {
                    c.reference.0
                }),
                series(
                    "durable reference (file, group fdatasync)",
                    &against_durable,
                    |c| c.reference.0,
                ),
            ],
        );
        match drawn {
            Ok(()) => println!("\nChart: {}", path.display()),
            Err(e) => println!("\nNo chart: {e}"),
        }
    }
    server.stop();
    if opts.only == Some(Part::Send) {
        reference.stop();
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    // What the fsync wait costs: the same load with answers that do not wait for it.
    let normal = start_server(
        &opts.server,
        dir.join("normal.db"),
        &["--durability", "normal"],
    );
    for alias in std::iter::once("sink".to_string()).chain((0..64).map(|c| format!("snd{c}"))) {
        request(normal.addr, &fields(&[b"REGISTER", alias.as_bytes()])).unwrap();
    }
    header("SEND with --durability normal (answers do not wait for the fsync), against the reference, 16 clients");
    let normal_vs = alternate(
        ("ours, normal", &normal),
        &reference,
        16,
        rounds,
        duration,
        Arc::clone(&send_durable),
    );
    let (fast, theirs) = (normal_vs.ours, normal_vs.reference);
    println!(
        "\nMedians: {:.0} against {:.0} ops/s, {:.2} ×; {:.1} against {:.1} µs CPU per SEND, {:.2} ×.",
        fast.0,
        theirs.0,
        fast.0 / theirs.0,
        fast.1,
        theirs.1,
        fast.1 / theirs.1
    );
    normal.stop();
    reference.stop();
    let at = |clients| compared.iter().find(|c| c.clients == clients);
    let ref16 = at(16).map_or(0.0, |c| c.reference.0);

    print_live_header();
    let messages = if opts.quick { 4_800 } else { 19_200 };
    let live = live_delivery(&opts, &dir, messages, 16, Duration::ZERO);
    let light = live_delivery(&opts, &dir, messages / 4, 4, Duration::from_millis(1));
    let flush = offline_flush(&opts, &dir, if opts.quick { 5_000 } else { 20_000 });
    let restart = restart(
        &opts,
        &dir,
        if opts.quick { 100_000 } else { 1_000_000 },
        if opts.quick { 10_000 } else { 100_000 },
    );

    println!("\n### Targets\n");
    println!("| target | measured | |");
    println!("|---|---|---|");
    for (clients, goal) in [(16, 0.8), (64, 0.9)] {
        if let Some(c) = at(clients) {
            let ratio = c.ours.0 / c.reference.0;
            println!(
                "| durable SEND at {clients} clients ≥ {goal} × reference | {ratio:.2} × ({:.0} against {:.0} ops/s) | {} |",
                c.ours.0,
                c.reference.0,
                verdict(ratio >= goal)
            );
        }
    }
    if let Some(c) = at(16) {
        let ratio = c.ours.1 / c.reference.1;
        println!(
            "| server CPU per SEND ≤ 2 × reference's (16 clients) | {ratio:.2} × ({:.1} against {:.1} µs) | {} |",
            c.ours.1,
            c.reference.1,
            verdict(ratio <= 2.0)
        );
    }
    for c in &against_durable {
        println!(
            "| not a target: durable SEND at {} client{} against the durable reference | {:.2} × the ops/s, {:.2} × the CPU per SEND ({:.0} against {:.0} ops/s) | |",
            c.clients,
            if c.clients == 1 { "" } else { "s" },
            c.ours.0 / c.reference.0,
            c.ours.1 / c.reference.1,
            c.ours.0,
            c.reference.0
        );
    }
    let live_goal = 0.8 * ref16 / 3.0;
    println!(
        "| live delivery ≥ 0.8 × (reference ops/s ÷ 3) = {live_goal:.0} msg/s, no loss/dup/reorder | {:.0} msg/s, {} | {} |",
        live.rate,
        live.status,
        verdict(live.rate >= live_goal && live.status == "all checks passed")
    );
    println!(
        "| live delivery p99 SEND answer → push ≤ 5 ms below saturation (4 senders, 1 ms pauses) | {:.2} ms | {} |",
        light.p99_ms,
        verdict(light.p99_ms <= 5.0 && light.status == "all checks passed")
    );
    println!(
        "| offline flush ≥ 20,000 msg/s | {:.0} msg/s, {} | {} |",
        flush.0,
        flush.1,
        verdict(flush.0 >= 20_000.0 && flush.1 == "in order")
    );
    println!(
        "| start-up with {} pending ≤ 0.5 s | {:.3} s | {} |",
        restart.2,
        restart.0,
        verdict(restart.0 <= 0.5)
    );
    println!(
        "| RSS with {} pending ≤ 64 MiB | {:.1} MiB | {} |",
        restart.2,
        restart.1,
        verdict(restart.1 <= 64.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn print_live_header() {
    println!("\n### Live delivery: 32 connected users, messages between random pairs\n");
    println!("Latency: from the SEND's answer reaching its sender to the push reaching the recipient (a push may even come first: it starts at the commit, the answer waits for the fsync).\n");
    println!("| senders | pause after each SEND | messages | messages/s | answer → push p50 µs | p99 µs | srv µs/msg | gen CPU | checks |");
    println!("|---|---|---|---|---|---|---|---|---|");
}

/// N connected users, M messages between random pairs from 16 sender threads.
/// What a live-delivery run measured.
struct Live {
    rate: f64,
    status: String,
    p99_ms: f64,
}

/// `senders` threads each send `messages / senders` SENDs, pausing `pause` after each, to
/// random connected users.
fn live_delivery(
    opts: &Options,
    dir: &std::path::Path,
    messages: usize,
    senders: usize,
    pause: Duration,
) -> Live {
    let _ = std::fs::remove_file(dir.join("live.db"));
    let server = start_server(&opts.server, dir.join("live.db"), &[]);
    let users: Vec<String> = (0..32).map(|n| format!("live{n}")).collect();
    let (ports, pushes) = listeners(&users);
    for (user, port) in users.iter().zip(&ports) {
        request(server.addr, &fields(&[b"REGISTER", user.as_bytes()])).unwrap();
        request(
            server.addr,
            &fields(&[b"CONNECT", user.as_bytes(), port.to_string().as_bytes()]),
        )
        .unwrap();
    }
    // (sender, id) -> (recipient, when the SEND's answer arrived)
    type Sent = HashMap<(String, u32), (String, Instant)>;
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let (cpu0, own0) = (server.cpu(), own_cpu());
    let start = Instant::now();
    let threads: Vec<_> = (0..senders)
        .map(|t| {
            let (addr, users, sent) = (server.addr, users.clone(), Arc::clone(&sent));
            std::thread::spawn(move || {
                let mut state = 0x2545F4914F6CDD1Du64 ^ (t as u64 + 1);
                for k in 0..messages / senders {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Sender t owns users t and t+16, so its ids rise in the order it sends.
                    let sender = &users[t + 16 * (k % 2)];
                    let recipient = &users[(state % 32) as usize];
                    let answer = request(
                        addr,
                        &fields(&[b"SEND", sender.as_bytes(), recipient.as_bytes(), b"live"]),
                    )
                    .unwrap();
                    let id: u32 = std::str::from_utf8(&answer[1..answer.len() - 1])
                        .unwrap()
                        .parse()
                        .unwrap();
                    let answered = Instant::now();
                    sent.lock()
                        .unwrap()
                        .insert((sender.clone(), id), (recipient.clone(), answered));
                    std::thread::sleep(pause);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let total = sent.lock().unwrap().len();
    let (mut delivered, mut acks) = (HashMap::new(), HashSet::new());
    let mut order_ok = true;
    let mut last_id: HashMap<(String, String), u32> = HashMap::new();
    let mut latencies = Vec::new();
    let mut duplicates = 0;
    let mut last_push = start;
    while delivered.len() < total || acks.len() < total {
        let Ok((user, push, at)) = pushes.recv_timeout(Duration::from_secs(10)) else {
            break;
        };
        last_push = at;
        match push {
            Push::Message { sender, id, .. } => {
                let previous = last_id
                    .insert((sender.clone(), user.clone()), id)
                    .unwrap_or(0);
                order_ok &= id > previous;
                if let Some((recipient, issued)) = sent.lock().unwrap().get(&(sender.clone(), id)) {
                    order_ok &= *recipient == user;
                    latencies.push(at.saturating_duration_since(*issued));
                }
                if delivered.insert((sender, id), user).is_some() {
                    duplicates += 1;
                }
            }
            Push::Ack { id, .. } => {
                if !acks.insert((user, id)) {
                    duplicates += 1;
                }
            }
        }
    }
    let elapsed = last_push.duration_since(start);
    latencies.sort_unstable();
    let rate = total as f64 / elapsed.as_secs_f64();
    let status = if delivered.len() == total && acks.len() == total && duplicates == 0 && order_ok {
        "all checks passed".to_string()
    } else {
        format!(
            "delivered {}/{total}, acks {}/{total}, {duplicates} duplicates, order {}",
            delivered.len(),
            acks.len(),
            if order_ok { "ok" } else { "BROKEN" }
        )
    };
    let p99_ms = percentile(&latencies, 0.99) / 1000.0;
    println!(
        "| {senders} | {} ms | {total} | {rate:.0} | {:.0} | {:.0} | {:.1} | {:.0}% | {status} |",
        pause.as_millis(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        server.cpu().saturating_sub(cpu0).as_secs_f64() * 1e6 / total as f64,
        own_cpu().saturating_sub(own0).as_secs_f64() / elapsed.as_secs_f64() * 100.0
    );
    server.stop();
    Live {
        rate,
        status,
        p99_ms,
    }
}

/// Messages queued for an offline user, then flushed when it connects.
fn offline_flush(opts: &Options, dir: &std::path::Path, messages: usize) -> (f64, String) {
    let server = start_server(&opts.server, dir.join("flush.db"), &[]);
    let addr = server.addr;
    for alias in ["away", "s0", "s1", "s2", "s3"] {
        request(addr, &fields(&[b"REGISTER", alias.as_bytes()])).unwrap();
    }
    let queue: Vec<_> = (0..4)
        .map(|s| {
            std::thread::spawn(move || {
                let mut refused = 0;
                for k in 0..messages / 4 {
                    let sender = format!("s{s}");
                    let answer = request(
                        addr,
                        &fields(&[
                            b"SEND",
                            sender.as_bytes(),
                            b"away",
                            format!("queued {k}").as_bytes(),
                        ]),
                    )
                    .unwrap();
                    if answer.first() != Some(&0) {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    // Only the messages the server took are expected; a refusal is reported with the checks.
    let refused: usize = queue.into_iter().map(|q| q.join().unwrap()).sum();
    let stored = messages - refused;
    let (ports, pushes) = listeners(&["away".to_string()]);
    let cpu0 = server.cpu();
    let start = Instant::now();
    request(
        addr,
        &fields(&[b"CONNECT", b"away", ports[0].to_string().as_bytes()]),
    )
    .unwrap();
    let mut last: HashMap<String, u32> = HashMap::new();
    let (mut received, mut in_order, mut end) = (0, true, start);
    while received < stored {
        let Ok((_, Push::Message { sender, id, .. }, at)) =
            pushes.recv_timeout(Duration::from_secs(10))
        else {
            break;
        };
        in_order &= last.insert(sender, id).unwrap_or(0) + 1 == id;
        received += 1;
        end = at;
    }
    let elapsed = end.duration_since(start);
    let rate = received as f64 / elapsed.as_secs_f64();
    let cpu_per_message =
        server.cpu().saturating_sub(cpu0).as_secs_f64() * 1e6 / received.max(1) as f64;
    server.stop();
    let status = match (received == stored, in_order, refused) {
        (true, true, 0) => "in order".to_string(),
        _ => {
            let (waiting, connected) = pending_for_away(&dir.join("flush.db"));
            format!(
                "received {received} of {stored} stored ({refused} SENDs refused, {waiting} still in the mailbox, user {}), order {}",
                if connected { "connected" } else { "disconnected" },
                if in_order { "ok" } else { "BROKEN" }
            )
        }
    };
    println!("\n### Offline flush: {messages} messages queued for one user, then CONNECT\n");
    println!("| messages/s | time to flush | srv µs/msg | checks |");
    println!("|---|---|---|---|");
    println!(
        "| {rate:.0} | {:.3} s | {cpu_per_message:.1} | {status} |",
        elapsed.as_secs_f64(),
    );
    (rate, status)
}

/// After a flush that came up short, from the stopped server's database: the messages still
/// waiting for `away`, and whether the server had `away` as connected.
fn pending_for_away(db: &std::path::Path) -> (i64, bool) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let pending = conn
        .query_row(
            "SELECT count(*) FROM pending_messages WHERE recipient = 'away'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let connected = conn
        .query_row(
            "SELECT connected FROM users WHERE alias = 'away'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    (pending, connected)
}

/// What looking at the server costs with `pending` messages stored: how long the status
/// page's first snapshot of the database takes to come (read beside the reactor), then the
/// time of a `GET /metrics`, a `GET /` and a `GET /status.json`, and a messenger request's
/// meanwhile.
fn scrapes(server: &Process, pending: usize) {
    let admin = server.front_end("admin");
    let get = |path: &str| bench::http_get(admin, path);
    let start = Instant::now();
    let shown = format!("messenger_pending_messages {}", pending + 1);
    while !get("/metrics").1.contains(&shown) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no snapshot in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let snapshot = start.elapsed();
    let median = |path: &str| bench::http_get_median_ms(admin, path);
    let (metrics, page, json) = (median("/metrics"), median("/"), median("/status.json"));
    // A cheap request (a REGISTER of a name taken: one look-up), alone, then with a page
    // read every tenth.
    let probe = |reading: bool| {
        let mut times: Vec<Duration> = (0..200)
            .map(|n| {
                if reading && n % 10 == 0 {
                    get("/");
                }
                let start = Instant::now();
                request(server.addr, &fields(&[b"REGISTER", b"user0"])).unwrap();
                start.elapsed()
            })
            .collect();
        times.sort_unstable();
        percentile(&times, 0.99) / 1000.0
    };
    let (alone, reading) = (probe(false), probe(true));
    println!("\n| with {pending} pending | first snapshot of the database | `GET /metrics` p50 | `GET /` p50 | `GET /status.json` p50 | a messenger request's p99, alone / while the page is read |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| scrape | {:.0} ms | {metrics:.2} ms | {page:.2} ms | {json:.2} ms | {alone:.2} ms / {reading:.2} ms |",
        snapshot.as_secs_f64() * 1000.0,
    );
}

/// Start-up time and memory with a large database, seeded directly through SQLite.
fn restart(
    opts: &Options,
    dir: &std::path::Path,
    pending: usize,
    users: usize,
) -> (f64, f64, usize) {
    let db = dir.join("big.db");
    // Let the server create the schema, then fill it.
    start_server(&opts.server, &db, &[]).stop();
    let seeding = Instant::now();
    {
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut user = tx
                .prepare("INSERT INTO users (alias, last_id, registered_at) VALUES (?1, ?2, 0)")
                .unwrap();
            for n in 0..users {
                user.execute(rusqlite::params![
                    format!("user{n}"),
                    (pending / users) as i64
                ])
                .unwrap();
            }
            let mut message = tx
                .prepare("INSERT INTO pending_messages (recipient, sender, id, text, accepted_at) VALUES (?1, ?2, ?3, ?4, 0)")
                .unwrap();
            for n in 0..pending {
                let text = format!("pending message number {n}, waiting on disk for its recipient");
                message
                    .execute(rusqlite::params![
                        format!("user{}", n % users),
                        format!("user{}", (n + 1) % users),
                        (n / users + 1) as i64,
                        text
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let seeded = seeding.elapsed();
    let size = std::fs::metadata(&db).map_or(0, |m| m.len());
    let start = Instant::now();
    let server = start_server(&opts.server, &db, &["--admin-addr", "127.0.0.1:0"]);
    // Ready means: answers a request.
    while request(server.addr, &fields(&[b"REGISTER", b"user0"])).map_or(true, |a| a != [1]) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let startup = start.elapsed().as_secs_f64();
    let rss_idle = server.rss_kib() as f64 / 1024.0;
    // Touch the big tables: a SEND, a USERS, a flush of one user's queue.
    request(server.addr, &fields(&[b"SEND", b"user1", b"user2", b"x"])).unwrap();
    let rss = (server.rss_kib() as f64 / 1024.0).max(rss_idle);
    println!("\n### Restart: {users} users and {pending} pending messages ({:.0} MiB file, seeded in {:.1} s)\n", size as f64 / 1048576.0, seeded.as_secs_f64());
    println!("| start-up (spawn → first answer) | RSS after start | RSS after traffic |");
    println!("|---|---|---|");
    println!("| {startup:.3} s | {rss_idle:.1} MiB | {rss:.1} MiB |");
    scrapes(&server, pending);
    server.stop();
    (startup, rss, pending)
}
