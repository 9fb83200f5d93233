//! Pieces of the benchmark: processes under test, a closed-loop load runner, latency summaries,
//! and CPU accounting for both sides.

pub mod chart;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use wire::{read_field, Push, PushKind};

/// A child process listening on 127.0.0.1, found by the port on its first stdout line; a
/// server's further `s> init NAME ip:port` lines name its other front-ends' ports.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub ports: Vec<(String, u16)>,
}

impl Process {
    pub fn spawn(mut command: Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(server_stderr())
            .spawn()
            .expect("spawn");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("first line");
        let port: u16 = line
            .trim()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .expect("port on the first line");
        let mut ports = Vec::new();
        if line.starts_with("s> init server ") {
            loop {
                line.clear();
                if stdout.read_line(&mut line).unwrap_or(0) == 0 || line.trim() == "s>" {
                    break;
                }
                let Some(rest) = line.trim().strip_prefix("s> init ") else {
                    continue;
                };
                // `rooms 127.0.0.1:5555`, or `tls rooms 127.0.0.1:5556`.
                if let Some((name, addr)) = rest.rsplit_once(' ') {
                    if let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse().ok()) {
                        ports.push((name.to_string(), port));
                    }
                }
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = [0u8; 8192];
            while stdout.read(&mut sink).is_ok_and(|n| n > 0) {}
        });
        Process {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ports,
        }
    }

    /// The address of the front-end named `name` in its `s> init` line.
    pub fn front_end(&self, name: &str) -> SocketAddr {
        let port = self
            .ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no {name} port"));
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Server-side CPU time so far, all threads: the scheduler's nanoseconds per thread
    /// (`/proc/PID/task/*/schedstat`), not `/proc/PID/stat`'s 10 ms ticks, which move a
    /// figure of a tenth of a second by tens of percent.
    pub fn cpu(&self) -> Duration {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()));
        let nanos: u64 = tasks
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Duration::from_nanos(nanos)
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Says how to start a benchmark started wrongly, and exits with 2.
pub fn usage_exit(usage: &str) -> ! {
    eprintln!("usage: {usage}");
    std::process::exit(2)
}

/// This process's CPU time (all threads).
pub fn own_cpu() -> Duration {
    // SAFETY: getrusage fills a local struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Where a started process's stderr goes: appended to the file `BENCH_SERVER_STDERR` names,
/// for looking into a run afterwards, else nowhere.
fn server_stderr() -> Stdio {
    let Some(path) = std::env::var_os("BENCH_SERVER_STDERR") else {
        return Stdio::null();
    };
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(file) => Stdio::from(file),
        Err(e) => panic!("BENCH_SERVER_STDERR {}: {e}", Path::new(&path).display()),
    }
}

/// One request on its own connection; returns the whole answer.
pub fn request(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.write_all(bytes)?;
    let mut answer = Vec::with_capacity(16);
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

/// A `GET path` to an admin port (`--admin-addr`): how long the whole answer took, and the
/// answer (status line, headers, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (Duration, String) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "GET {path}: {answer}");
    (start.elapsed(), answer)
}

/// The median time of 21 `GET path` to an admin port, in ms.
pub fn http_get_median_ms(addr: SocketAddr, path: &str) -> f64 {
    let mut times: Vec<Duration> = (0..21).map(|_| http_get(addr, path).0).collect();
    times.sort_unstable();
    times[10].as_secs_f64() * 1000.0
}

pub fn fields(parts: &[&[u8]]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|p| p.iter().copied().chain([0]))
        .collect()
}

/// The length of a benchmark run, from its arguments: `--seconds S` per closed-loop run
/// (2 if absent or not a number) and `--quick` for a shorter run.
pub struct RunLength {
    pub seconds: f64,
    pub quick: bool,
}

impl RunLength {
    pub fn from_args(args: &[String]) -> RunLength {
        let flag = |name: &str| args.iter().position(|a| a == name);
        RunLength {
            seconds: flag("--seconds")
                .and_then(|i| args.get(i + 1)?.parse().ok())
                .unwrap_or(2.0),
            quick: flag("--quick").is_some(),
        }
    }
}

/// Results of a closed-loop run.
pub struct Run {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub server_cpu: Duration,
    pub generator_cpu: Duration,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// Percentile of sorted latencies, in microseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e6
}

/// Runs `clients` threads for `duration`, each issuing `make(client, seq)` requests back to back
/// and checking each answer's first byte against `expect`. `server` is measured for CPU time.
pub fn closed_loop(
    addr: SocketAddr,
    server: Option<&Process>,
    clients: usize,
    duration: Duration,
    expect: u8,
    make: Arc<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>,
) -> Run {
    let servers: Vec<&Process> = server.into_iter().collect();
    closed_loop_spread(&[addr], &servers, clients, duration, expect, make)
}

/// [`closed_loop`] over several servers: client `k` talks to `addrs[k % addrs.len()]`, and
/// the CPU time of all `servers` is added up.
pub fn closed_loop_spread(
    addrs: &[SocketAddr],
    servers: &[&Process],
    clients: usize,
    duration: Duration,
    expect: u8,
    make: Arc<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>,
) -> Run {
    assert!(!addrs.is_empty(), "at least one server to load");
    let servers_cpu = || servers.iter().map(|s| s.cpu()).sum::<Duration>();
    let errors = Arc::new(AtomicU64::new(0));
    let (cpu0, own0) = (servers_cpu(), own_cpu());
    let start = Instant::now();
    let deadline = start + duration;
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (make, errors) = (Arc::clone(&make), Arc::clone(&errors));
            let addr = addrs[client % addrs.len()];
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut seq = 0;
                while Instant::now() < deadline {
                    let bytes = make(client, seq);
                    seq += 1;
                    let sent = Instant::now();
                    match request(addr, &bytes) {
                        Ok(answer) if answer.first() == Some(&expect) => {
                            latencies.push(sent.elapsed())
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Run {
        ops: latencies.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latencies,
        server_cpu: servers_cpu().saturating_sub(cpu0),
        generator_cpu: own_cpu().saturating_sub(own0),
    }
}

/// The server's per-client limits, lifted (unless `extra` sets one): one generator plays
/// thousands of clients from one address, each as fast as it can, and the benchmark measures
/// throughput, not the limits.
pub const LIMITS_LIFTED: [(&str, &str); 5] = [
    ("--flood-rate", "0"),
    ("--canvas-flood-rate", "0"),
    ("--max-new-names-per-minute", "0"),
    ("--max-pending-per-user", "0"),
    ("--max-db-pages", "0"),
];

/// Starts the messaging server on `db`: a SQLite file or a PostgreSQL URL.
pub fn start_server(binary: &Path, db: impl AsRef<std::ffi::OsStr>, extra: &[&str]) -> Process {
    let mut command = Command::new(binary);
    command
        .args([
            "-p",
            "0",
            "--bind",
            "127.0.0.1",
            "--register-form",
            "one",
            "--db",
        ])
        .arg(db)
        .args(
            LIMITS_LIFTED
                .iter()
                .filter(|(flag, _)| !extra.contains(flag))
                .flat_map(|(flag, value)| [flag, value]),
        )
        .args(extra);
    Process::spawn(command)
}

/// Listeners for `users`, on threads; every push lands in the returned channel with its time.
pub fn listeners(users: &[String]) -> (Vec<u16>, mpsc::Receiver<(String, Push, Instant)>) {
    let (tx, rx) = mpsc::channel();
    let ports = users
        .iter()
        .map(|user| {
            let socket = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = socket.local_addr().unwrap().port();
            let (tx, user) = (tx.clone(), user.clone());
            std::thread::spawn(move || {
                for stream in socket.incoming() {
                    let Ok(stream) = stream else { continue };
                    let mut reader = BufReader::new(stream);
                    let Ok(op) = read_field(&mut reader, 32) else {
                        continue;
                    };
                    let Some(kind) = PushKind::from_op_name(&op) else {
                        continue;
                    };
                    let Ok(push) = Push::read_body(kind, &mut reader) else {
                        continue;
                    };
                    drop(reader);
                    if tx.send((user.clone(), push, Instant::now())).is_err() {
                        return;
                    }
                }
            });
            port
        })
        .collect();
    (ports, rx)
}
