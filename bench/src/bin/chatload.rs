//! Load for the chat front-ends, run by `scripts/bench`: fan-out to a room of many members,
//! private messages between many connected sessions, and memory per idle session.
//!
//! One thread reads every session through a mio `Poll`; each message carries its send time, so
//! every delivery gives a latency. The fan-out runs against our server and against the seed's
//! design (`roomsref`). Usage: `chatload SERVER ROOMSREF [--quick]`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bench::{own_cpu, percentile, start_server, Process};
use mio::{Events, Interest, Poll, Token};

/// Every session of a run, read by one poll loop.
struct Sessions {
    poll: Poll,
    streams: Vec<mio::net::TcpStream>,
    partial: Vec<Vec<u8>>,
}

impl Sessions {
    /// Connects `count` sessions to `addr` and sends each its login lines.
    fn open(addr: SocketAddr, count: usize, login: impl Fn(usize) -> String) -> Sessions {
        let poll = Poll::new().unwrap();
        let mut streams = Vec::with_capacity(count);
        for n in 0..count {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.set_nodelay(true).unwrap();
            stream.write_all(login(n).as_bytes()).unwrap();
            stream.set_nonblocking(true).unwrap();
            let mut stream = mio::net::TcpStream::from_std(stream);
            poll.registry()
                .register(&mut stream, Token(n), Interest::READABLE)
                .unwrap();
            streams.push(stream);
        }
        Sessions {
            poll,
            partial: vec![Vec::new(); count],
            streams,
        }
    }

    /// Reads lines until `on_line` returns true or `within` passes; false on time-out.
    fn read_until(
        &mut self,
        within: Duration,
        mut on_line: impl FnMut(usize, &str) -> bool,
    ) -> bool {
        let deadline = Instant::now() + within;
        let mut events = Events::with_capacity(1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(left)) {
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
                continue;
            }
            for event in events.iter() {
                let n = event.token().0;
                loop {
                    match self.streams[n].read(&mut chunk) {
                        Ok(0) => panic!("session {n} was closed by the server"),
                        Ok(len) => {
                            let partial = &mut self.partial[n];
                            partial.extend_from_slice(&chunk[..len]);
                            let mut start = 0;
                            let mut done = false;
                            while let Some(end) = partial[start..].iter().position(|&b| b == b'\n')
                            {
                                let line = String::from_utf8_lossy(&partial[start..start + end]);
                                done |= on_line(n, &line);
                                start += end + 1;
                            }
                            partial.drain(..start);
                            if done {
                                return true;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => panic!("session {n}: {e}"),
                    }
                }
            }
        }
    }

    /// Reads until `count` sessions have seen a line starting with `prefix`.
    fn await_each(&mut self, prefix: &str, within: Duration) {
        let mut seen = vec![false; self.streams.len()];
        let mut left = self.streams.len();
        let ok = self.read_until(within, |n, line| {
            if !seen[n] && line.starts_with(prefix) {
                seen[n] = true;
                left -= 1;
            }
            left == 0
        });
        assert!(ok, "{left} sessions never saw {prefix:?}");
    }

    fn write(&mut self, n: usize, line: &str) {
        let mut bytes = line.as_bytes();
        while !bytes.is_empty() {
            match self.streams[n].write(bytes) {
                Ok(len) => bytes = &bytes[len..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("session {n}: {e}"),
            }
        }
    }
}

/// Microseconds since `base`, carried in each message.
fn stamp(base: Instant) -> u128 {
    base.elapsed().as_micros()
}

/// The latency of a received `... <seq> <stamp>` line.
fn latency(base: Instant, line: &str) -> Option<Duration> {
    let sent: u64 = line.rsplit(' ').next()?.parse().ok()?;
    Some(base.elapsed().saturating_sub(Duration::from_micros(sent)))
}

fn server(binary: &Path, dir: &Path, name: &str, extra: &[&str]) -> Process {
    let mut args = vec!["--chat-port", "0", "--rooms-port", "0"];
    args.extend_from_slice(extra);
    start_server(binary, dir.join(format!("{name}.db")), &args)
}

struct FanOut {
    deliveries_per_s: f64,
    burst_p99_ms: f64,
    paced_rate: f64,
    paced_p99_ms: f64,
    server_cpu_per_delivery_us: f64,
}

/// `members` rooms sessions in one room of the rooms server at `rooms` (whose process is
/// `server`); one more sends. First a burst (saturation), then a paced run below it.
fn fan_out(server: &Process, rooms: SocketAddr, members: usize, burst: usize) -> FanOut {
    let mut sessions = Sessions::open(rooms, members + 1, |n| format!("JOIN f{n}\nROOM Fan\n"));
    sessions.await_each("Te has unido a la sala Fan.", Duration::from_secs(60));
    // Let the join notices drain: every member is told of each later one.
    let expected_notices = members * (members + 1) / 2;
    let mut notices = 0;
    sessions.read_until(Duration::from_secs(60), |_, line| {
        notices += usize::from(line.ends_with("se ha unido a la sala."));
        notices >= expected_notices
    });
    let base = Instant::now();
    let measure = |sessions: &mut Sessions, count: usize, pause: Duration| {
        let cpu0 = server.cpu();
        let start = Instant::now();
        let total = count * members;
        let mut latencies = Vec::with_capacity(total);
        let mut sent = 0;
        let mut next_send = Instant::now();
        while latencies.len() < total {
            // Interleave sending (paced or not) with reading, from this one thread.
            while sent < count && Instant::now() >= next_send {
                let line = format!("MESSAGE {sent} {}\n", stamp(base));
                sessions.write(members, &line);
                sent += 1;
                next_send += pause;
            }
            let wait = if sent < count {
                next_send.saturating_duration_since(Instant::now())
            } else {
                Duration::from_secs(30)
            };
            let got_all = sessions.read_until(wait.max(Duration::from_micros(100)), |_, line| {
                if let Some(l) = latency(base, line) {
                    latencies.push(l);
                }
                latencies.len() >= total
            });
            assert!(got_all || sent < count, "fan-out lost deliveries");
        }
        let elapsed = start.elapsed();
        latencies.sort_unstable();
        let cpu = server.cpu().saturating_sub(cpu0);
        (
            total as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.99) / 1000.0,
            cpu.as_secs_f64() * 1e6 / total as f64,
        )
    };
    let (deliveries_per_s, burst_p99_ms, cpu_us) = measure(&mut sessions, burst, Duration::ZERO);
    // Paced at a quarter of what the burst reached.
    let per_message = Duration::from_secs_f64(4.0 * members as f64 / deliveries_per_s);
    let paced = (2.0 / per_message.as_secs_f64()).clamp(10.0, 2000.0) as usize;
    let (paced_rate, paced_p99_ms, _) = measure(&mut sessions, paced, per_message);
    FanOut {
        deliveries_per_s,
        burst_p99_ms,
        paced_rate,
        paced_p99_ms,
        server_cpu_per_delivery_us: cpu_us,
    }
}

struct Crowd {
    sessions: usize,
    rss_mib: f64,
    kib_per_session: f64,
    private_rate: f64,
    private_p99_ms: f64,
    private_target_rate: f64,
}

/// `count` idle rooms sessions (memory), then each in a room of its own, receiving private
/// messages from 16 chat senders at `rate` per second for two seconds.
fn crowd(binary: &Path, dir: &Path, count: usize, rate: f64) -> Crowd {
    let limit = (count + 1000).to_string();
    let server = server(
        binary,
        dir,
        "crowd",
        &["--max-connections", &limit, "--max-rooms", &limit],
    );
    let rooms = server.front_end("rooms");
    std::thread::sleep(Duration::from_millis(200));
    let before = server.rss_kib();
    let mut sessions = Sessions::open(rooms, count, |n| format!("JOIN i{n}\n"));
    sessions.await_each("OK", Duration::from_secs(120));
    let after = server.rss_kib();
    let kib_per_session = (after.saturating_sub(before)) as f64 / count as f64;
    for n in 0..count {
        sessions.write(n, &format!("ROOM r{n}\n"));
    }
    sessions.await_each("Te has unido a la sala", Duration::from_secs(120));

    // The senders: chat sessions with line framing, logged in last so that the crowd's
    // logins sent them no user lists.
    const SENDERS: usize = 16;
    let chat = server.front_end("chat");
    let mut senders: Vec<TcpStream> = (0..SENDERS)
        .map(|s| {
            let mut stream = TcpStream::connect(chat).unwrap();
            stream.set_nodelay(true).unwrap();
            stream
                .write_all(format!("CONNECT|c{s}").as_bytes())
                .unwrap();
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while !seen.starts_with(b"CONNECT_ACK|OK") {
                stream.read_exact(&mut byte).unwrap();
                seen.push(byte[0]);
            }
            stream.write_all(b"HELLO|lines\n").unwrap();
            while !seen.ends_with(b"HELLO|lines\n") {
                stream.read_exact(&mut byte).unwrap();
                seen.push(byte[0]);
            }
            stream
        })
        .collect();
    // Nothing more is sent to the senders; keep their receive side drained anyway.
    for sender in &senders {
        let mut reader = sender.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut sink = [0u8; 4096];
            while reader.read(&mut sink).is_ok_and(|n| n > 0) {}
        });
    }
    let base = Instant::now();
    let duration = Duration::from_secs(2);
    let total = (rate * duration.as_secs_f64()) as usize;
    let writer = std::thread::spawn(move || {
        // Open loop: every millisecond, the messages due by then.
        let start = Instant::now();
        let mut sent = 0usize;
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        while sent < total {
            let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(total);
            while sent < due {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let to = (seed % count as u64) as usize;
                let line = format!("MESSAGE|i{to}|{sent} {}\n", stamp(base));
                senders[sent % SENDERS].write_all(line.as_bytes()).unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        start.elapsed()
    });
    let mut latencies = Vec::with_capacity(total);
    sessions.read_until(duration + Duration::from_secs(30), |_, line| {
        if line.contains(" (privado): ") {
            if let Some(l) = latency(base, line) {
                latencies.push(l);
            }
        }
        latencies.len() >= total
    });
    let sending = writer.join().unwrap();
    assert_eq!(latencies.len(), total, "private messages lost");
    latencies.sort_unstable();
    server.stop();
    Crowd {
        sessions: count,
        rss_mib: after as f64 / 1024.0,
        kib_per_session,
        private_rate: total as f64 / sending.as_secs_f64(),
        private_p99_ms: percentile(&latencies, 0.99) / 1000.0,
        private_target_rate: rate,
    }
}

fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(binary), Some(reference_binary)) = (args.get(1), args.get(2)) else {
        bench::usage_exit("chatload SERVER ROOMSREF [--quick]")
    };
    let (binary, reference_binary) = (PathBuf::from(binary), PathBuf::from(reference_binary));
    let quick = args.iter().any(|a| a == "--quick");
    raise_open_file_limit();
    let dir = std::env::temp_dir().join(format!("chatload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cpu0 = own_cpu();
    let (members, burst) = if quick { (200, 50) } else { (1000, 200) };
    let ours = server(&binary, &dir, "fanout", &[]);
    let fan = fan_out(&ours, ours.front_end("rooms"), members, burst);
    ours.stop();
    let reference = Process::spawn(Command::new(&reference_binary));
    let fan_reference = fan_out(&reference, reference.addr, members, burst);
    reference.stop();
    let (count, rate) = if quick {
        (2000, 2000.0)
    } else {
        (10_000, 10_000.0)
    };
    let crowd = crowd(&binary, &dir, count, rate);
    let _ = std::fs::remove_dir_all(&dir);

    println!("\n## Chat front-ends (rooms and chat sessions on one reactor)\n");
    println!("| scenario | figure |");
    println!("|---|---|");
    println!(
        "| fan-out to a room of {members}, burst of {burst} messages | {:.0} deliveries/s, p99 {:.1} ms, server {:.2} µs CPU per delivery |",
        fan.deliveries_per_s, fan.burst_p99_ms, fan.server_cpu_per_delivery_us
    );
    println!(
        "| fan-out paced at a quarter of that | {:.0} deliveries/s, p99 {:.1} ms |",
        fan.paced_rate, fan.paced_p99_ms
    );
    println!(
        "| the same fan-out, seed's design (`roomsref`: a thread per client, blocking writes) | {:.0} deliveries/s, p99 {:.1} ms, server {:.2} µs CPU per delivery |",
        fan_reference.deliveries_per_s,
        fan_reference.burst_p99_ms,
        fan_reference.server_cpu_per_delivery_us
    );
    println!(
        "| its paced run | {:.0} deliveries/s, p99 {:.1} ms |",
        fan_reference.paced_rate, fan_reference.paced_p99_ms
    );
    println!(
        "| fan-out, ours against the seed's design | {:.2} × the deliveries/s, {:.2} × the CPU per delivery |",
        fan.deliveries_per_s / fan_reference.deliveries_per_s,
        fan.server_cpu_per_delivery_us / fan_reference.server_cpu_per_delivery_us
    );
    println!(
        "| {} idle sessions | RSS {:.1} MiB, {:.1} KiB per session |",
        crowd.sessions, crowd.rss_mib, crowd.kib_per_session
    );
    println!(
        "| private messages among {} sessions at {:.0}/s | {:.0} msgs/s, p99 {:.1} ms |",
        crowd.sessions, crowd.private_target_rate, crowd.private_rate, crowd.private_p99_ms
    );
    println!(
        "\n(generator CPU for these runs: {:.1} s)",
        own_cpu().saturating_sub(cpu0).as_secs_f64()
    );
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    println!("\n### Chat targets\n");
    println!("| target | measured | |");
    println!("|---|---|---|");
    println!(
        "| fan-out ≥ 100,000 deliveries/s | {:.0} | {} |",
        fan.deliveries_per_s,
        verdict(fan.deliveries_per_s >= 100_000.0)
    );
    println!(
        "| {} idle sessions ≤ 64 MiB RSS | {:.1} MiB | {} |",
        crowd.sessions,
        crowd.rss_mib,
        verdict(crowd.rss_mib <= 64.0)
    );
    println!(
        "| private p99 ≤ 5 ms at {:.0} msgs/s | {:.1} ms at {:.0} msgs/s | {} |",
        crowd.private_target_rate,
        crowd.private_p99_ms,
        crowd.private_rate,
        verdict(
            crowd.private_p99_ms <= 5.0 && crowd.private_rate >= 0.95 * crowd.private_target_rate
        )
    );
}
