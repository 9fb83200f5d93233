//! Helpers for the end-to-end tests: start the real binaries on free ports with temporary
//! databases, speak raw bytes to them, and run listeners that record pushes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod db;
pub use db::{engine, Db, Engine};

/// How long a test waits for something that should happen at once; a failure, not a pace.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A workspace binary built next to the test executable (`scripts/test` builds them first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/test does)",
        path.display()
    );
    path
}

/// Lines a child printed, collected by a background thread that can be paused (to play a
/// reader that stopped reading).
#[derive(Clone, Default)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    paused: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Lines {
    fn collect(reader: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            // A small buffer, so that a pause leaves the pipe itself to fill up.
            let mut reader = BufReader::with_capacity(64, reader);
            loop {
                {
                    let (paused, resumed) = &*sink.paused;
                    let mut paused = paused.lock().unwrap();
                    while *paused {
                        paused = resumed.wait(paused).unwrap();
                    }
                }
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = line.strip_suffix('\n').unwrap_or(&line).to_string();
                        sink.lines.lock().unwrap().push(line);
                    }
                }
            }
        });
        lines
    }

    /// Stops reading after the current line: the child's pipe fills up.
    pub fn pause(&self) {
        *self.paused.0.lock().unwrap() = true;
    }

    pub fn resume(&self) {
        *self.paused.0.lock().unwrap() = false;
        self.paused.1.notify_all();
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line equal to `expected` has been printed.
    pub fn wait_for(&self, expected: &str) {
        self.wait_until(
            |lines| lines.iter().any(|l| l == expected),
            &format!("a line {expected:?}"),
        );
    }

    /// Waits until `ready` holds for the lines printed so far.
    pub fn wait_until(&self, ready: impl Fn(&[String]) -> bool, what: &str) {
        let start = Instant::now();
        while !ready(&self.snapshot()) {
            assert!(
                start.elapsed() < PATIENCE,
                "waited for {what}; got {:#?}",
                self.snapshot()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A child process that is killed if the test drops it.
pub struct Running {
    child: Child,
    name: &'static str,
}

impl Running {
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the process to exit and returns its exit code (None if killed by a signal).
    pub fn wait(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(start.elapsed() < PATIENCE, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `server` on 127.0.0.1 with its own database.
pub struct Server {
    process: Running,
    pub port: u16,
    pub chat_port: Option<u16>,
    pub rooms_port: Option<u16>,
    pub canvas_port: Option<u16>,
    pub admin_port: Option<u16>,
    pub db: Db,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Server {
    /// Starts a server on a fresh database (in `dir` if it is a file) of the engine under test.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        Server::start_on(&Db::fresh(dir), args)
    }

    /// Starts a server on the database `db` (which may already exist).
    pub fn start_on(db: &Db, args: &[&str]) -> Server {
        Server::start_with(db, args, |_| {})
    }

    /// Starts a server on `db` after `configure` has adjusted its command (environment,
    /// resource limits).
    pub fn start_with(db: &Db, args: &[&str], configure: impl FnOnce(&mut Command)) -> Server {
        let mut command = Command::new(bin("server"));
        command
            .args(["-p", "0", "--bind", "127.0.0.1", "--db"])
            .arg(db.arg())
            .args(args)
            // Every test's clients come from 127.0.0.1, and many register more names a
            // minute than one address may by default; tests of that limit name it.
            .args(
                (!args.contains(&"--max-new-names-per-minute"))
                    .then_some(["--max-new-names-per-minute", "0"])
                    .into_iter()
                    .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("spawn server");
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let start = Instant::now();
        // The prompt line comes after every `init` line.
        let lines = loop {
            let lines = stdout.snapshot();
            if lines.iter().any(|l| l == "s>") {
                break lines;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited with {status}: {:?}", stderr.snapshot());
            }
            assert!(start.elapsed() < PATIENCE, "server printed no init line");
            std::thread::sleep(Duration::from_millis(5));
        };
        let port_of = |what: &str| {
            let prefix = format!("s> init {what} ");
            lines.iter().find_map(|l| {
                l.strip_prefix(&prefix)
                    .map(|addr| addr.rsplit(':').next().unwrap().parse().expect("port"))
            })
        };
        Server {
            process: Running {
                child,
                name: "server",
            },
            port: port_of("server").expect("init server line"),
            chat_port: port_of("chat"),
            rooms_port: port_of("rooms"),
            canvas_port: port_of("canvas"),
            admin_port: port_of("admin"),
            db: db.clone(),
            stdout,
            stderr,
        }
    }

    /// Stops the server with SIGTERM (it must exit cleanly) and starts it again on the same
    /// database with `args`.
    pub fn restart(self, args: &[&str]) -> Server {
        let db = self.db.clone();
        self.signal(libc::SIGTERM);
        assert_eq!(self.wait(), Some(0), "a clean stop");
        Server::start_on(&db, args)
    }

    /// A server with every front-end on free ports.
    pub fn start_all(dir: &Path, args: &[&str]) -> Server {
        let mut all = vec![
            "--chat-port",
            "0",
            "--rooms-port",
            "0",
            "--canvas-port",
            "0",
        ];
        all.extend_from_slice(args);
        Server::start(dir, &all)
    }

    /// [`Server::start_all`] with every front-end's TLS port too, serving `cert` and `key`.
    pub fn start_all_tls(dir: &Path, cert: &Path, key: &Path, extra: &[&str]) -> Server {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let mut args = vec![
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-port",
            "0",
            "--chat-tls-port",
            "0",
            "--rooms-tls-port",
            "0",
            "--canvas-tls-port",
            "0",
        ];
        args.extend_from_slice(extra);
        Server::start_all(dir, &args)
    }

    /// The TLS port of `what` (`server`, `chat`, `rooms`, `canvas`), from its init line.
    pub fn tls_port(&self, what: &str) -> u16 {
        let prefix = format!("s> init tls {what} ");
        self.stdout
            .snapshot()
            .iter()
            .find_map(|l| {
                l.strip_prefix(&prefix)
                    .map(|addr| addr.rsplit(':').next().unwrap().parse().expect("port"))
            })
            .unwrap_or_else(|| panic!("no TLS port for {what}"))
    }

    pub fn chat_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.chat_port.expect("--chat-port")))
    }

    pub fn canvas_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.canvas_port.expect("--canvas-port")))
    }

    pub fn rooms_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.rooms_port.expect("--rooms-port")))
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Sends `fields` (each NUL-terminated) as one request and returns every byte of the answer.
    pub fn request(&self, fields: &[&[u8]]) -> Vec<u8> {
        request(self.addr(), fields)
    }

    /// Shorthand for a request of text fields.
    pub fn call(&self, fields: &[&str]) -> Vec<u8> {
        let bytes: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
        self.request(&bytes)
    }

    /// The server's threads, as /proc counts them.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.process.child.id()))
            .expect("the server's /proc entry")
            .count()
    }

    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// Waits for the process to exit and returns its exit code (None if killed by a signal).
    pub fn wait(mut self) -> Option<i32> {
        self.process.wait()
    }

    /// Like [`Server::wait`], keeping the server's output readable afterwards.
    pub fn wait_in_place(&mut self) -> Option<i32> {
        self.process.wait()
    }

    /// kill -9, as a crash would.
    pub fn kill9(self) {
        self.signal(libc::SIGKILL);
        self.wait();
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.process.alive()
    }
}

/// Encodes fields as the protocol does: each followed by NUL.
/// Makes `command`'s process start with at most `descriptors` open files.
pub fn limit_descriptors(command: &mut Command, descriptors: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only setrlimit, which is async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: descriptors,
                rlim_max: descriptors,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs the server with `args` (and whatever `configure` sets) to its exit, which it is
/// expected to reach by itself; returns its exit code and stderr.
pub fn run_server_to_exit(
    args: &[&str],
    configure: impl FnOnce(&mut Command),
) -> (Option<i32>, String) {
    let mut command = Command::new(bin("server"));
    command.args(args).stdin(Stdio::null());
    configure(&mut command);
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn encode(fields: &[&[u8]]) -> Vec<u8> {
    fields
        .iter()
        .flat_map(|f| f.iter().copied().chain([0]))
        .collect()
}

/// One request on its own connection: write the fields, read until the server closes.
pub fn request(addr: SocketAddr, fields: &[&[u8]]) -> Vec<u8> {
    try_request(addr, fields).expect("request answered")
}

/// One request from the local address `source` (any of 127.0.0.0/8).
pub fn request_from(source: std::net::Ipv4Addr, addr: SocketAddr, fields: &[&[u8]]) -> Vec<u8> {
    let mut stream = connect_from(source, addr);
    stream.write_all(&encode(fields)).unwrap();
    read_to_close(&mut stream)
}

/// Like [`request`], but returns I/O errors (a refused or reset connection) instead of failing.
pub fn try_request(addr: SocketAddr, fields: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(&encode(fields))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

/// Reads until the peer closes, failing the test if that takes longer than [`PATIENCE`].
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("read answer until close");
    answer
}

/// The answer bytes of a successful SEND with message id `id`.
pub fn sent(id: u32) -> Vec<u8> {
    let mut answer = vec![0];
    answer.extend_from_slice(id.to_string().as_bytes());
    answer.push(0);
    answer
}

/// A client listener that records every push it receives (all bytes up to the server's close).
pub struct Listener {
    pub port: u16,
    pushes: Receiver<Vec<u8>>,
    /// True while paused: pushes wait in the kernel's accept queue.
    paused: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Listener {
    pub fn start() -> Listener {
        Listener::start_on(0)
    }

    /// A listener that takes no push until [`Listener::resume`]: they wait, connected and
    /// unread, as with a busy client.
    pub fn paused() -> Listener {
        Listener::start_gated([127, 0, 0, 1], 0, true)
    }

    /// A listener on a chosen port (0: any free one).
    pub fn start_on(port: u16) -> Listener {
        Listener::start_gated([127, 0, 0, 1], port, false)
    }

    /// A listener on another loopback address, such as 127.0.0.2.
    pub fn start_at(ip: [u8; 4]) -> Listener {
        Listener::start_gated(ip, 0, false)
    }

    fn start_gated(ip: [u8; 4], port: u16, paused: bool) -> Listener {
        let socket =
            TcpListener::bind((std::net::Ipv4Addr::from(ip), port)).expect("bind listener");
        let port = socket.local_addr().unwrap().port();
        let (tx, pushes) = mpsc::channel();
        let paused = Arc::new((Mutex::new(paused), std::sync::Condvar::new()));
        let gate = paused.clone();
        std::thread::spawn(move || loop {
            {
                let (lock, resumed) = &*gate;
                let mut paused = lock.lock().unwrap();
                while *paused {
                    paused = resumed.wait(paused).unwrap();
                }
            }
            let Ok((mut stream, _)) = socket.accept() else {
                return;
            };
            let push = read_to_close(&mut stream);
            if tx.send(push).is_err() {
                return;
            }
        });
        Listener {
            port,
            pushes,
            paused,
        }
    }

    pub fn resume(&self) {
        *self.paused.0.lock().unwrap() = false;
        self.paused.1.notify_all();
    }

    /// The next push, failing the test if none comes within [`PATIENCE`].
    pub fn next(&self) -> Vec<u8> {
        self.pushes
            .recv_timeout(PATIENCE)
            .expect("a push within the patience period")
    }

    /// Asserts that no push arrives within `quiet`.
    pub fn expect_none(&self, quiet: Duration) {
        if let Ok(push) = self.pushes.recv_timeout(quiet) {
            panic!("unexpected push {:?}", String::from_utf8_lossy(&push));
        }
    }

    pub fn port_field(&self) -> String {
        self.port.to_string()
    }
}

/// Registers `alias` (one-field form) and checks the answer.
/// Reads byte by byte onto `seen` until `done` says so: for the chat's original framing,
/// whose messages have no delimiter (one write is one message).
pub fn read_until(reader: &mut impl Read, seen: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    while !done(seen) {
        let mut byte = [0u8; 1];
        reader
            .read_exact(&mut byte)
            .unwrap_or_else(|e| panic!("after {:?}: {e}", String::from_utf8_lossy(seen)));
        seen.push(byte[0]);
    }
}

/// A TCP connection to `to` from the local address `source` (any of 127/8 is this machine):
/// a client from another address, as the server sees it.
pub fn connect_from(source: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("an IPv4 server address")
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected with correctly sized addresses; the
    // descriptor is handed to a TcpStream that owns it from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let from = sockaddr(source, 0);
        assert_eq!(
            libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len),
            0,
            "bind {source}: {}",
            std::io::Error::last_os_error()
        );
        let dest = sockaddr(*to.ip(), to.port());
        assert_eq!(
            libc::connect(fd, (&dest as *const libc::sockaddr_in).cast(), len),
            0,
            "connect to {to}: {}",
            std::io::Error::last_os_error()
        );
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
    }
}

/// A port nobody listens on (bound, noted, closed): connecting to it is refused.
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn register(server: &Server, alias: &str) {
    assert_eq!(server.call(&["REGISTER", alias]), [0], "REGISTER {alias}");
}

/// Connects `alias` with a fresh listener and returns it.
pub fn connect(server: &Server, alias: &str) -> Listener {
    let listener = Listener::start();
    assert_eq!(
        server.call(&["CONNECT", alias, &listener.port_field()]),
        [0],
        "CONNECT {alias}"
    );
    listener
}

/// A running `formatter` on 127.0.0.1.
pub struct Formatter {
    process: Running,
    pub port: u16,
    pub stderr: Lines,
}

impl Formatter {
    pub fn start() -> Formatter {
        let mut child = Command::new(bin("formatter"))
            .args(["-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn formatter");
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        stdout.wait_until(|l| !l.is_empty(), "the formatter's listening line");
        let line = stdout.snapshot()[0].clone();
        let port = line
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .expect("port");
        Formatter {
            process: Running {
                child,
                name: "formatter",
            },
            port,
            stderr,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's threads, as /proc counts them.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.process.child.id()))
            .expect("the server's /proc entry")
            .count()
    }

    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    pub fn wait(mut self) -> Option<i32> {
        self.process.wait()
    }
}

/// An HTTP answer: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection, spoken by hand.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> HttpAnswer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(ct) = content_type {
        head += &format!("Content-Type: {ct}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) before reading all of a large body and close.
    let _ = stream.write_all(body);
    let raw = read_to_close(&mut stream);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// The Python interpreter of the test virtualenv (with zeep), made by `scripts/test`.
pub fn python_with_zeep() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/pyenv/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: scripts/test creates it (python3 -m venv + pip install zeep)",
        python.display()
    );
    python
}

/// A running `client --console`, fed line by line; everything it prints is collected.
pub struct ConsoleClient {
    process: Running,
    stdin: Option<std::process::ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    pub stderr: Lines,
}

impl ConsoleClient {
    pub fn start(server_port: u16, formatter_url: &str) -> ConsoleClient {
        ConsoleClient::start_with(server_port, formatter_url, &[])
    }

    /// [`ConsoleClient::start`] with environment variables (`MESSENGER_PASSWORD`).
    pub fn start_with(
        server_port: u16,
        formatter_url: &str,
        env: &[(&str, &str)],
    ) -> ConsoleClient {
        let port = server_port.to_string();
        let args = [
            "--console",
            "-s",
            "127.0.0.1",
            "-p",
            &port,
            "--formatter",
            formatter_url,
        ];
        ConsoleClient::spawn(&args, env)
    }

    /// A console client started with `args` (`--console` among them).
    pub fn start_args(args: &[&str]) -> ConsoleClient {
        ConsoleClient::spawn(args, &[])
    }

    fn spawn(args: &[&str], env: &[(&str, &str)]) -> ConsoleClient {
        let mut child = Command::new(bin("client"))
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        let stdout = collect_output(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        ConsoleClient {
            process: Running {
                child,
                name: "client",
            },
            stdin,
            stdout,
            stderr,
        }
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Types `line` and waits until the output has grown by `expected` (then a new prompt).
    pub fn run(&mut self, line: &str, expected: &str) {
        let before = self.output().len();
        self.type_line(line);
        self.wait_for_after(before, &format!("{expected}\nc> "));
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to client");
        stdin.flush().unwrap();
    }

    /// Waits until `text` appears in the output after byte `from`.
    pub fn wait_for_after(&self, from: usize, text: &str) {
        let start = Instant::now();
        loop {
            let out = self.output();
            if out.get(from..).is_some_and(|o| o.contains(text)) {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "waited for {text:?}; output after byte {from}: {:?}\nstderr: {:?}",
                out.get(from..),
                self.stderr.snapshot()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `text` appears anywhere in the output.
    pub fn wait_for(&self, text: &str) {
        self.wait_for_after(0, text);
    }

    /// Closes stdin and waits for the exit code.
    pub fn finish(mut self) -> Option<i32> {
        drop(self.stdin.take());
        self.process.wait()
    }
}

/// Caps the kernel's receive buffer of `stream` (which also stops its autotuning).
pub fn set_receive_buffer(stream: &TcpStream, bytes: i32) {
    set_int_option(stream, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
}

/// Corks `stream` (TCP_CORK): what is written waits until the cork is taken out or the
/// writing side is shut, and then goes in as few segments as fit; a last line and the FIN
/// after it, in one.
pub fn set_cork(stream: &TcpStream, on: bool) {
    set_int_option(stream, libc::IPPROTO_TCP, libc::TCP_CORK, i32::from(on));
}

/// Sets an int-valued socket option of `stream`; it must take.
fn set_int_option(stream: &TcpStream, level: i32, name: i32, value: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a descriptor we own, with a correctly sized int value.
    let done = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    assert_eq!(
        done,
        0,
        "setsockopt {level}/{name}: {}",
        std::io::Error::last_os_error()
    );
}

/// Makes dropping `stream` send a reset instead of a FIN (SO_LINGER with a zero timeout).
pub fn reset_on_drop(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor we own, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

/// The fault-injection library `tests/fault/fsync_shim.c`, compiled once per test run with the
/// machine's C compiler; load it into a server with [`with_fsync_shim`].
pub fn fsync_shim() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fault/fsync_shim.c");
            let dir = bin("server").parent().unwrap().to_path_buf();
            let built = dir.join("libfsync_shim.so");
            let partial = dir.join(format!("libfsync_shim.so.{}", std::process::id()));
            let status = Command::new("cc")
                .args(["-shared", "-fPIC", "-O1", "-o"])
                .arg(&partial)
                .arg(&source)
                .arg("-ldl")
                .status()
                .expect("run cc");
            assert!(status.success(), "compiling {}", source.display());
            std::fs::rename(&partial, &built).unwrap();
            built
        })
        .clone()
}

/// Configures a server command to run with the fsync shim, controlled through files in
/// `control` (`fail`, `hang`; the shim creates `entered`).
pub fn with_fsync_shim(control: &Path) -> impl FnOnce(&mut Command) + '_ {
    move |command: &mut Command| {
        command
            .env("LD_PRELOAD", fsync_shim())
            .env("FSYNC_SHIM_DIR", control);
    }
}

/// Waits until `path` exists.
pub fn wait_for_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < PATIENCE,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A persistent connection that speaks lines (the rooms, or the chat after `HELLO|lines`).
pub struct LineConn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// Messages that came before line framing, served first by [`LineConn::line`].
    backlog: std::collections::VecDeque<String>,
}

impl LineConn {
    pub fn connect(addr: SocketAddr) -> LineConn {
        LineConn::over(TcpStream::connect(addr).expect("connect"))
    }

    /// A line connection over `stream` (one made with [`connect_from`], for instance).
    pub fn over(stream: TcpStream) -> LineConn {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        LineConn {
            stream,
            reader,
            backlog: Default::default(),
        }
    }

    /// A chat session logged in as `name` with line framing.
    pub fn chat(server: &Server, name: &str) -> LineConn {
        LineConn::try_chat(server, name).unwrap_or_else(|| panic!("login of {name} refused"))
    }

    /// A chat session logged in as `name` with line framing, or None if the login was
    /// refused (`CONNECT_ACK|FAIL`).
    pub fn try_chat(server: &Server, name: &str) -> Option<LineConn> {
        LineConn::chat_login(
            LineConn::connect(server.chat_addr()),
            &format!("CONNECT|{name}"),
        )
        .ok()
    }

    /// Sends `connect` (a chat `CONNECT|...`) on `conn`: the session with line framing, or
    /// the failure the server answered (`CONNECT_ACK|FAIL`, and a reason if it gave one).
    pub fn chat_login(mut conn: LineConn, connect: &str) -> Result<LineConn, String> {
        conn.stream.write_all(connect.as_bytes()).unwrap();
        // HELLO only after the ack, or it would reach the server glued to the CONNECT.
        let mut seen = Vec::new();
        read_until(&mut conn.reader, &mut seen, |seen| {
            seen.starts_with(b"CONNECT_ACK|") && seen.len() >= b"CONNECT_ACK|OK".len()
        });
        // (`CONNECT_ACK|FA`: as long as the OK, the rest of FAIL may follow: the server
        // writes a message in one write, so it is all there a moment later.)
        if seen.starts_with(b"CONNECT_ACK|F") {
            conn.stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut rest = [0u8; 1024];
            if let Ok(n) = conn.reader.read(&mut rest) {
                seen.extend_from_slice(&rest[..n]);
            }
            return Err(String::from_utf8_lossy(&seen).into_owned());
        }
        conn.send("HELLO|lines");
        // Unframed until the HELLO answer: the ack, the user list, the history.
        read_until(&mut conn.reader, &mut seen, |seen| {
            seen.ends_with(b"HELLO|lines\n")
        });
        let seen = String::from_utf8(seen).unwrap();
        let unframed = seen.strip_suffix("HELLO|lines\n").unwrap();
        let mut messages = client::chat::split_glued(unframed).into_iter();
        assert_eq!(messages.next(), Some("CONNECT_ACK|OK"), "{connect}");
        conn.backlog.extend(messages.map(str::to_string));
        Ok(conn)
    }

    /// A rooms session joined as `name`.
    pub fn rooms(server: &Server, name: &str) -> LineConn {
        let mut conn = LineConn::connect(server.rooms_addr());
        conn.send(&format!("JOIN {name}"));
        assert_eq!(conn.line(), "OK", "JOIN {name}");
        conn
    }

    /// Sends `line` and its `\n`.
    pub fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// The next line, without its `\n`.
    pub fn line(&mut self) -> String {
        if let Some(line) = self.backlog.pop_front() {
            return line;
        }
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("a line within PATIENCE");
        assert!(n > 0, "connection closed while waiting for a line");
        line.trim_end_matches('\n').to_string()
    }

    /// The next line if one comes within `wait`.
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        if let Some(line) = self.backlog.pop_front() {
            return Some(line);
        }
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        let read = self.reader.read_line(&mut line);
        self.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        match read {
            Ok(0) => panic!("connection closed while waiting for a line"),
            Ok(_) => Some(line.trim_end_matches('\n').to_string()),
            Err(_) => None,
        }
    }

    /// Reads lines until one starts with `prefix`, and returns it.
    pub fn until_prefix(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Reads lines until one equals `expected`; returns those before it.
    pub fn until(&mut self, expected: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let line = self.line();
            if line == expected {
                return before;
            }
            before.push(line);
        }
    }

    /// Asserts that nothing arrives within `quiet`.
    pub fn expect_quiet(&mut self, quiet: Duration) {
        self.stream.set_read_timeout(Some(quiet)).unwrap();
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("connection closed"),
            Ok(_) => panic!("unexpected line {line:?}"),
            Err(_) => {}
        }
        self.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    }

    /// True once the server has closed the connection (reading what is left).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok()
    }
}

/// Raises this process's soft limit on open descriptors (tests that open a thousand
/// connections need more than the default 1024).
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(8192);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// A `client` process with `args` and piped stdio, for the console clients.
pub fn spawn_client(args: &[&str]) -> Child {
    spawn_client_with(args, &[])
}

/// [`spawn_client`] with environment variables (`MESSENGER_PASSWORD`).
pub fn spawn_client_with(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(bin("client"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client")
}

/// Runs `xdotool` with `args` (on the display of scripts/test) and returns what it printed.
pub fn xdotool(args: &[&str]) -> String {
    let out = Command::new("xdotool").args(args).output().unwrap();
    assert!(out.status.success(), "xdotool {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The id of the first shown window whose title matches `pattern`, once `client` shows it;
/// if it does not within [`PATIENCE`], says why (the client may have died, or be stuck before
/// showing it).
pub fn visible_window(pattern: &str, client: &mut Child) -> String {
    let start = Instant::now();
    loop {
        let found = Command::new("xdotool")
            .args(["search", "--onlyvisible", "--name", pattern])
            .output()
            .unwrap();
        if let Some(id) = String::from_utf8_lossy(&found.stdout).lines().next() {
            return id.to_string();
        }
        if start.elapsed() >= PATIENCE {
            let _ = client.kill();
            let mut stderr = String::new();
            if let Some(mut err) = client.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            panic!(
                "no window {pattern:?} within {PATIENCE:?}; the client ended with {:?}, \
                 stderr: {stderr}",
                client.wait()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A listener that accepts every push and then holds the connection: it never reads and never
/// closes until told to. Its thread lives as long as the test process.
pub struct HoldingListener {
    pub port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl HoldingListener {
    pub fn start() -> HoldingListener {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (sink, count) = (held.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in socket.incoming() {
                let Ok(stream) = stream else { return };
                sink.lock().unwrap().push(stream);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        HoldingListener {
            port,
            held,
            accepted,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `count` pushes have been accepted.
    pub fn wait_accepted(&self, count: usize) {
        let start = Instant::now();
        while self.accepted() < count {
            assert!(
                start.elapsed() < PATIENCE,
                "{} of {count} pushes arrived",
                self.accepted()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Closes every connection held so far.
    pub fn release_all(&self) {
        self.held.lock().unwrap().clear();
    }
}

/// A canvas connection: frames of a 5-byte little-endian length and JSON.
pub struct CanvasConn {
    pub stream: TcpStream,
}

impl CanvasConn {
    pub fn connect(server: &Server) -> CanvasConn {
        let stream = TcpStream::connect(server.canvas_addr()).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        CanvasConn { stream }
    }

    /// Sends one frame with `body`, in one write as the original client does.
    pub fn send(&mut self, body: &str) {
        let mut bytes = (body.len() as u64).to_le_bytes()[..5].to_vec();
        bytes.extend_from_slice(body.as_bytes());
        self.stream.write_all(&bytes).unwrap();
    }

    /// The next frame's JSON.
    pub fn recv(&mut self) -> serde_json::Value {
        let mut header = [0u8; 8];
        self.stream
            .read_exact(&mut header[..5])
            .expect("a frame within PATIENCE");
        let mut body = vec![0u8; u64::from_le_bytes(header) as usize];
        self.stream.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).expect("JSON")
    }
}

/// A push as a listener received it (op name, then its fields).
pub fn decode_push(push: &[u8]) -> wire::Push {
    try_decode_push(push)
        .unwrap_or_else(|| panic!("not a whole push: {:?}", String::from_utf8_lossy(push)))
}

/// A push, or None if the bytes are not a whole one (a server killed while writing it).
pub fn try_decode_push(push: &[u8]) -> Option<wire::Push> {
    let mut reader = push;
    let op = wire::read_field(&mut reader, 32).ok()?;
    wire::Push::read_body(wire::PushKind::from_op_name(&op)?, &mut reader).ok()
}

/// Messages waiting in the database `db`.
pub fn pending_count(db: &Db) -> i64 {
    db.int("SELECT count(*) FROM pending_messages")
}

/// Whether the database says `alias` is connected through the messenger.
pub fn connected(server: &Server, alias: &str) -> bool {
    server.db.int(&format!(
        "SELECT count(*) FROM users WHERE alias = '{alias}' AND connected"
    )) == 1
}

/// Everything `out` yields, gathered by a thread of its own as it comes.
fn collect_output(mut out: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let output = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&output);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = out.read(&mut chunk) {
            if n == 0 {
                return;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    output
}

/// A self-signed end-entity certificate for `localhost` and 127.0.0.1 (`CA:FALSE`, as
/// `openssl req -x509 ... -addext basicConstraints=critical,CA:FALSE` makes) and its key, in
/// `dir` as `{name}.pem` and `{name}.key`; `ec`: an ECDSA P-256 key, else RSA 2048.
pub fn self_signed(dir: &Path, name: &str, ec: bool) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let mut command = Command::new("openssl");
    command.args([
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
    ]);
    if ec {
        command.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    } else {
        command.args(["-newkey", "rsa:2048"]);
    }
    let out = command
        .args([
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian's package)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// One messenger request over TLS (through `openssl s_client`, trusting `ca`) to `port`:
/// the answer, up to the server's close.
pub fn request_over_tls(port: u16, ca: &Path, fields: &[&[u8]]) -> Vec<u8> {
    let mut client = SClient::start(port, ca);
    client.send(&encode(fields));
    client.finish()
}

/// `openssl s_client` to 127.0.0.1:`port`, trusting `ca`: what it prints is collected, what
/// is written to its stdin goes over TLS.
pub struct SClient {
    process: Running,
    pub stdin: Option<std::process::ChildStdin>,
    pub stdout: Arc<Mutex<Vec<u8>>>,
}

impl SClient {
    pub fn start(port: u16, ca: &Path) -> SClient {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-CAfile")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client");
        let stdout = collect_output(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        SClient {
            process: Running {
                child,
                name: "openssl s_client",
            },
            stdin,
            stdout,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until what it printed holds `expected`; returns all it printed.
    pub fn wait_for(&self, expected: &[u8]) -> Vec<u8> {
        let start = Instant::now();
        loop {
            let seen = self.stdout.lock().unwrap().clone();
            if seen.windows(expected.len()).any(|w| w == expected) {
                return seen;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "s_client printed {:?}, not {:?}",
                String::from_utf8_lossy(&seen),
                String::from_utf8_lossy(expected)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for s_client to exit (the server closed) and returns what it printed.
    pub fn finish(mut self) -> Vec<u8> {
        drop(self.stdin.take());
        self.process.wait();
        // The reader thread drains the pipe to its end once the process is gone.
        let start = Instant::now();
        while Arc::strong_count(&self.stdout) > 1 && start.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stdout.lock().unwrap().clone()
    }
}
