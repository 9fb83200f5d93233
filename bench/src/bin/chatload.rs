//! Load for the chat front-ends, run by `scripts/bench`: fan-out to a room of many members,
//! private messages between many connected sessions, memory per idle session, fresh logins
//! with thousands of sessions online (presence), and a room's latency under a flooder.
//!
//! One thread reads every session through a mio `Poll`; each message carries its send time, so
//! every delivery gives a latency. The fan-out runs against our server and against the seed's
//! design (`roomsref`). Usage: `chatload SERVER ROOMSREF [--quick] [--only fanout|crowd]
//! [--chart FILE.svg]`; `--only fanout` runs the fan-out alone (ours, over TLS, the seed's
//! design, InspIRCd), `--only crowd` the idle crowds and their private messages (ours, over
//! TLS, InspIRCd), each printing its rows, for profiling or comparing builds.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use std::sync::Arc;

use bench::{own_cpu, percentile, start_server, Process};
use mio::{Events, Interest, Poll, Token};

/// A session's connection: plain, or TLS (as our clients' `--tls`).
enum Conn {
    Plain(mio::net::TcpStream),
    Tls(mio::net::TcpStream, Box<rustls::ClientConnection>),
}

impl Conn {
    /// Connects to `addr`, over TLS if `tls` (the handshake done before this returns), and
    /// sends `login`.
    fn open(addr: SocketAddr, tls: &Option<Arc<rustls::ClientConfig>>, login: &str) -> Conn {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        let conn = match tls {
            None => {
                stream.write_all(login.as_bytes()).unwrap();
                None
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut tls = rustls::ClientConnection::new(config.clone(), name).unwrap();
                tls.set_buffer_limit(None);
                while tls.is_handshaking() {
                    tls.complete_io(&mut stream).expect("TLS handshake");
                }
                tls.writer().write_all(login.as_bytes()).unwrap();
                while tls.wants_write() {
                    tls.write_tls(&mut stream).unwrap();
                }
                Some(Box::new(tls))
            }
        };
        stream.set_nonblocking(true).unwrap();
        let stream = mio::net::TcpStream::from_std(stream);
        match conn {
            None => Conn::Plain(stream),
            Some(tls) => Conn::Tls(stream, tls),
        }
    }

    fn socket(&mut self) -> &mut mio::net::TcpStream {
        match self {
            Conn::Plain(s) | Conn::Tls(s, _) => s,
        }
    }

    /// Data segments received so far: the server's writes to this session.
    fn data_segments_received(&mut self) -> u64 {
        tcpinfo::data_segments_received(self.socket()).expect("TCP_INFO") as u64
    }

    /// Plaintext, `WouldBlock` when none is here.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (socket, tls) = match self {
            Conn::Plain(s) => return s.read(buf),
            Conn::Tls(s, tls) => (s, tls),
        };
        loop {
            match tls.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if tls.read_tls(socket)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    /// Writes all of `bytes` (spinning while the socket is full).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => {
                let mut bytes = bytes;
                while !bytes.is_empty() {
                    match s.write(bytes) {
                        Ok(len) => bytes = &bytes[len..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Conn::Tls(s, tls) => {
                tls.writer().write_all(bytes)?;
                while tls.wants_write() {
                    match tls.write_tls(s) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }
}

/// Every session of a run, read by one poll loop.
struct Sessions {
    poll: Poll,
    streams: Vec<Conn>,
    partial: Vec<Vec<u8>>,
}

impl Sessions {
    /// Data segments the sessions `which` have received so far: the server's writes to them.
    fn data_segments_received(&mut self, which: std::ops::RangeTo<usize>) -> u64 {
        self.streams[which]
            .iter_mut()
            .map(Conn::data_segments_received)
            .sum()
    }

    /// Connects `count` sessions to `addr` (over TLS if `tls`) and sends each its login lines.
    fn open(
        addr: SocketAddr,
        tls: &Option<Arc<rustls::ClientConfig>>,
        count: usize,
        login: impl Fn(usize) -> String,
    ) -> Sessions {
        let poll = Poll::new().unwrap();
        let mut streams = Vec::with_capacity(count);
        for n in 0..count {
            let mut stream = Conn::open(addr, tls, &login(n));
            poll.registry()
                .register(stream.socket(), Token(n), Interest::READABLE)
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
        if let Err(e) = self.streams[n].write_all(line.as_bytes()) {
            panic!("session {n}: {e}");
        }
    }
}

/// A development certificate for the server's TLS ports, and our clients' trust in it.
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    client: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// A self-signed certificate for localhost (Debian's `openssl`), ECDSA P-256.
    fn make(dir: &Path) -> Tls {
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(made.status.success(), "openssl req failed");
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap())
            .unwrap();
        #[allow(deprecated)] // ring, as the server and our clients use it.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Tls {
            cert,
            key,
            client: Arc::new(client),
        }
    }

    /// The server's flags for it and a TLS rooms port.
    fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
            "--rooms-tls-port".into(),
            "0".into(),
        ]
    }
}

/// Microseconds since `base`, carried in each message.
fn stamp(base: Instant) -> u128 {
    base.elapsed().as_micros()
}

/// The latency of a received `... <seq> <stamp>` line.
fn latency(base: Instant, line: &str) -> Option<Duration> {
    let sent: u64 = line
        .trim_end_matches('\r')
        .rsplit(' ')
        .next()?
        .parse()
        .ok()?;
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
    /// Deliveries per write of the server to the members, in the burst: counted where they
    /// arrive (the members' data segments, [`tcpinfo`]), so the same for every server
    /// whatever system call it writes with.
    deliveries_per_write: f64,
}

/// The protocol a fan-out speaks: the rooms' (ours and the seed's design), or IRC's (the
/// reference people would pick instead: InspIRCd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Wassop,
    Irc,
}

impl Room {
    /// Session `n`'s login, and the line that says it is done (an IRC server refuses a
    /// JOIN before registration ends).
    fn login(self, n: usize) -> String {
        match self {
            Room::Wassop => format!("JOIN f{n}\n"),
            Room::Irc => format!("NICK f{n}\r\nUSER f{n} 0 * :f{n}\r\n"),
        }
    }

    fn logged_in(self) -> &'static str {
        match self {
            Room::Wassop => "OK",
            Room::Irc => ":bench.local 001 ",
        }
    }

    /// Entering the room.
    fn enter(self) -> &'static str {
        match self {
            Room::Wassop => "ROOM Fan\n",
            Room::Irc => "JOIN #fan\r\n",
        }
    }

    /// The line that ends a session's own entry.
    fn entered(self) -> &'static str {
        match self {
            Room::Wassop => "Te has unido a la sala Fan.",
            // RPL_ENDOFNAMES after the JOIN.
            Room::Irc => ":bench.local 366 ",
        }
    }

    /// A line telling of somebody's entry, and how many every session hears: each member of
    /// the rooms is told of each later one; on IRC of its own JOIN too.
    fn entry_notice(self, line: &str, sessions: usize) -> (bool, usize) {
        match self {
            Room::Wassop => (
                line.ends_with("se ha unido a la sala."),
                sessions * (sessions - 1) / 2,
            ),
            Room::Irc => (line.ends_with(" JOIN :#fan"), sessions * (sessions + 1) / 2),
        }
    }

    /// A line said in the room, carrying its send time.
    fn say(self, seq: usize, stamp: u128) -> String {
        match self {
            Room::Wassop => format!("MESSAGE {seq} {stamp}\n"),
            Room::Irc => format!("PRIVMSG #fan :{seq} {stamp}\r\n"),
        }
    }
}

/// The config of an InspIRCd for the fan-out: loopback only, flood limits off (no penalty,
/// no fakelag, queues larger than a burst), no DNS or ident look-ups, as many clients from
/// one address as the run opens.
fn inspircd_config(dir: &Path, port: u16) -> PathBuf {
    let config = dir.join("inspircd.conf");
    std::fs::write(
        &config,
        format!(
            r#"<server name="bench.local" description="bench" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect allow="*" timeout="60" threshold="1000000000" commandrate="1000000000" fakelag="no" pingfreq="600" hardsendq="67108864" softsendq="8388608" recvq="8388608" localmax="100000" globalmax="100000" maxchans="100" limit="100000" resolvehostnames="no" useident="no">
<pid file="{}">
<performance netbuffersize="10240" somaxconn="4096" softlimit="100000" clonesonconnect="no" quietbursts="yes">
<channels users="100" opers="100">
"#,
            dir.join("inspircd.pid").display()
        ),
    )
    .unwrap();
    config
}

/// InspIRCd (Debian's `inspircd` package, which `scripts/bench` installs; its service is
/// never started) on a free loopback port with [`inspircd_config`], once it takes clients.
fn start_inspircd(dir: &Path) -> Option<Process> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let config = inspircd_config(dir, port);
    let child = Command::new("/usr/sbin/inspircd")
        .args(["--nofork", "--runasroot", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Process {
        child,
        addr,
        ports: Vec::new(),
    })
}

/// `members` sessions in one room of the server at `addr` (whose process is `server`),
/// speaking `room`'s protocol; one more sends. First a burst (saturation), then a paced run
/// below it.
fn fan_out(
    server: &Process,
    (addr, tls): (SocketAddr, &Option<Arc<rustls::ClientConfig>>),
    room: Room,
    members: usize,
    burst: usize,
) -> FanOut {
    let mut sessions = Sessions::open(addr, tls, members + 1, |n| room.login(n));
    sessions.await_each(room.logged_in(), Duration::from_secs(60));
    for n in 0..=members {
        sessions.write(n, room.enter());
    }
    sessions.await_each(room.entered(), Duration::from_secs(60));
    // Let the entry notices drain.
    let (_, expected_notices) = room.entry_notice("", members + 1);
    let mut notices = 0;
    sessions.read_until(Duration::from_secs(60), |_, line| {
        notices += usize::from(room.entry_notice(line, members + 1).0);
        notices >= expected_notices
    });
    let base = Instant::now();
    let measure = |sessions: &mut Sessions, count: usize, pause: Duration| {
        let cpu0 = server.cpu();
        let writes0 = sessions.data_segments_received(..members);
        let start = Instant::now();
        let total = count * members;
        let mut latencies = Vec::with_capacity(total);
        let mut sent = 0;
        let mut next_send = Instant::now();
        while latencies.len() < total {
            // Interleave sending (paced or not) with reading, from this one thread.
            while sent < count && Instant::now() >= next_send {
                let line = room.say(sent, stamp(base));
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
        let writes = sessions
            .data_segments_received(..members)
            .saturating_sub(writes0)
            .max(1);
        (
            total as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.99) / 1000.0,
            cpu.as_secs_f64() * 1e6 / total as f64,
            total as f64 / writes as f64,
        )
    };
    let (deliveries_per_s, burst_p99_ms, cpu_us, deliveries_per_write) =
        measure(&mut sessions, burst, Duration::ZERO);
    // Paced at a quarter of what the burst reached.
    let per_message = Duration::from_secs_f64(4.0 * members as f64 / deliveries_per_s);
    let paced = (2.0 / per_message.as_secs_f64()).clamp(10.0, 2000.0) as usize;
    let (paced_rate, paced_p99_ms, _, _) = measure(&mut sessions, paced, per_message);
    FanOut {
        deliveries_per_s,
        burst_p99_ms,
        paced_rate,
        paced_p99_ms,
        server_cpu_per_delivery_us: cpu_us,
        deliveries_per_write,
    }
}

struct Crowd {
    sessions: usize,
    rss_mib: f64,
    kib_per_session: f64,
    /// The rounds of private messages, in the order run.
    rounds: Vec<Traffic>,
    /// The medians of a scrape of `/metrics` and of the status page with the crowd online,
    /// in ms (ours only).
    scrape_ms: Option<(f64, f64)>,
}

/// Senders of private messages in a crowd run.
const SENDERS: usize = 16;

/// Rounds of private messages on each crowd, ours and InspIRCd's taking turns. This machine is
/// shared: with one round each, the ratio followed whatever else ran meanwhile (1.06 to 2.0
/// × from run to run); the medians of rounds taken alternately are what compare. Three rounds
/// each still left a round's ratio anywhere from 0.74 to 1.45 × (2026-12-07: where the
/// scheduler put the server and the generator's reader, one CPU or two, moved either server's
/// cost per message by a third), and a median of three followed it; seven rounds cost 16 s
/// more (a round is 2 s, the crowds stay online).
const PRIVATE_ROUNDS: usize = 7;

/// A crowd online on a server (ours, or InspIRCd): idle sessions and 16 senders, ready for
/// rounds of private messages.
struct Online {
    server: Process,
    sessions: Sessions,
    senders: Vec<TcpStream>,
    /// A private message to session `to`: `line(to, seq, stamp)`.
    line: fn(usize, usize, u128) -> String,
    rss_before_kib: u64,
    rss_after_kib: u64,
    scrape_ms: Option<(f64, f64)>,
    rounds: Vec<Traffic>,
}

impl Online {
    /// `count` idle rooms sessions on our server (memory), then each in a room of its own;
    /// the senders are chat sessions. With `tls`, the receivers are over TLS (the rooms'
    /// TLS port).
    fn ours(binary: &Path, dir: &Path, count: usize, tls: &Option<Tls>) -> Online {
        let limit = (count + 1000).to_string();
        let mut args = vec![
            "--max-connections",
            &limit,
            "--max-rooms",
            &limit,
            "--admin-addr",
            "127.0.0.1:0",
        ];
        let tls_args = tls.as_ref().map(Tls::server_args);
        args.extend(tls_args.iter().flatten().map(String::as_str));
        let name = if tls.is_some() { "crowd-tls" } else { "crowd" };
        let server = server(binary, dir, name, &args);
        let (rooms, config) = match tls {
            Some(tls) => (server.front_end("tls rooms"), Some(tls.client.clone())),
            None => (server.front_end("rooms"), None),
        };
        std::thread::sleep(Duration::from_millis(200));
        let rss_before_kib = server.rss_kib();
        let mut sessions = Sessions::open(rooms, &config, count, |n| format!("JOIN i{n}\n"));
        sessions.await_each("OK", Duration::from_secs(120));
        let rss_after_kib = server.rss_kib();
        for n in 0..count {
            sessions.write(n, &format!("ROOM r{n}\n"));
        }
        sessions.await_each("Te has unido a la sala", Duration::from_secs(120));
        let scrape_ms = Some(scrape(&server));
        // The senders: chat sessions with line framing, logged in last so that the crowd's
        // logins sent them no user lists.
        let chat = server.front_end("chat");
        let senders: Vec<TcpStream> = (0..SENDERS)
            .map(|s| chat_login(chat, &format!("c{s}")).0)
            .collect();
        drain_senders(&senders);
        Online {
            server,
            sessions,
            senders,
            line: |to, seq, stamp| format!("MESSAGE|i{to}|{seq} {stamp}\n"),
            rss_before_kib,
            rss_after_kib,
            scrape_ms,
            rounds: Vec::new(),
        }
    }

    /// The same crowd on InspIRCd: `count` idle clients and 16 more that send `PRIVMSG`;
    /// None if it is not installed or does not start.
    fn inspircd(dir: &Path, count: usize) -> Option<Online> {
        let server = start_inspircd(dir)?;
        std::thread::sleep(Duration::from_millis(200));
        let rss_before_kib = server.rss_kib();
        let irc_login = |name: String| format!("NICK {name}\r\nUSER {name} 0 * :{name}\r\n");
        let mut sessions =
            Sessions::open(server.addr, &None, count, |n| irc_login(format!("i{n}")));
        sessions.await_each(Room::Irc.logged_in(), Duration::from_secs(120));
        let rss_after_kib = server.rss_kib();
        let senders: Vec<TcpStream> = (0..SENDERS)
            .map(|s| {
                let mut stream = TcpStream::connect(server.addr).unwrap();
                stream.set_nodelay(true).unwrap();
                stream
                    .write_all(irc_login(format!("c{s}")).as_bytes())
                    .unwrap();
                let mut reader = io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while !line.starts_with(Room::Irc.logged_in()) {
                    line.clear();
                    assert!(
                        io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0,
                        "InspIRCd closed sender c{s}"
                    );
                }
                stream
            })
            .collect();
        drain_senders(&senders);
        Some(Online {
            server,
            sessions,
            senders,
            line: |to, seq, stamp| format!("PRIVMSG i{to} :{seq} {stamp}\r\n"),
            rss_before_kib,
            rss_after_kib,
            scrape_ms: None,
            rounds: Vec::new(),
        })
    }

    /// One round of private messages at `rate` per second.
    fn round(&mut self, rate: f64) {
        let traffic = private_messages(
            &self.server,
            &mut self.sessions,
            &mut self.senders,
            rate,
            self.line,
        );
        self.rounds.push(traffic);
    }

    /// Stops the server; what its crowd and rounds measured.
    fn finish(self) -> Crowd {
        self.server.stop();
        let sessions = self.sessions.streams.len();
        Crowd {
            sessions,
            rss_mib: self.rss_after_kib as f64 / 1024.0,
            kib_per_session: self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64
                / sessions as f64,
            rounds: self.rounds,
            scrape_ms: self.scrape_ms,
        }
    }
}

impl Crowd {
    /// For each of `PRIVATE_ROUNDS`, one round on a crowd `ours` starts for it, in turn with
    /// one on a crowd `other` starts ([`in_turn`]): for when both crowds cannot be online at
    /// once. Each server's figures, with every round.
    fn round_by_round(
        ours: impl Fn() -> Online,
        other: impl Fn() -> Option<Online>,
        rate: f64,
    ) -> (Crowd, Option<Crowd>) {
        // A round on a crowd of its own, added to those of its server's earlier crowds.
        let add = |crowd: &mut Option<Crowd>, mut online: Online| {
            online.round(rate);
            let round = online.finish();
            match crowd {
                Some(crowd) => crowd.rounds.extend(round.rounds),
                None => *crowd = Some(round),
            }
        };
        let (mut first, mut first_other) = (None, None);
        for round in 0..PRIVATE_ROUNDS {
            in_turn(
                round,
                || add(&mut first, ours()),
                || {
                    if let Some(online) = other() {
                        add(&mut first_other, online);
                    }
                },
            );
        }
        (first.expect("our rounds ran"), first_other)
    }

    /// The median of a figure of the rounds.
    fn median(&self, figure: fn(&Traffic) -> f64) -> f64 {
        let mut values: Vec<f64> = self.rounds.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    /// Server CPU per private message while they flow, in µs: the rounds' median.
    fn private_cpu_us(&self) -> f64 {
        self.median(|t| t.cpu_us)
    }

    fn private_rate(&self) -> f64 {
        self.median(|t| t.rate)
    }

    /// The median round's p99: one round's p99 is its 200th slowest message of 20,000, which
    /// one stall of this shared machine sets for either server (each round's is printed).
    fn private_p99_ms(&self) -> f64 {
        self.median(|t| t.p99_ms)
    }

    fn private_target_rate(&self) -> f64 {
        self.rounds[0].target_rate
    }

    /// Each round's CPU per private message, in µs.
    fn rounds(&self) -> String {
        self.each_round(|t| t.cpu_us)
    }

    /// Each round's p99, in ms.
    fn rounds_p99(&self) -> String {
        self.each_round(|t| t.p99_ms)
    }

    fn each_round(&self, figure: fn(&Traffic) -> f64) -> String {
        let rounds: Vec<String> = self
            .rounds
            .iter()
            .map(|t| format!("{:.1}", figure(t)))
            .collect();
        rounds.join(", ")
    }
}

/// Round `round` of ours and of the other server's: each goes first in every other round, so
/// whatever the machine does to the first of a pair (or the second) falls on both alike.
fn in_turn(round: usize, mut ours: impl FnMut(), mut other: impl FnMut()) {
    if round.is_multiple_of(2) {
        ours();
        other();
    } else {
        other();
        ours();
    }
}

/// The medians of `GET /metrics` and `GET /` on `server`'s admin port, in ms.
fn scrape(server: &Process) -> (f64, f64) {
    let admin = server.front_end("admin");
    (
        bench::http_get_median_ms(admin, "/metrics"),
        bench::http_get_median_ms(admin, "/"),
    )
}

/// Nothing is sent to the senders while they send; their receive sides are drained anyway.
fn drain_senders(senders: &[TcpStream]) {
    for sender in senders {
        let mut reader = sender.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut sink = [0u8; 4096];
            while reader.read(&mut sink).is_ok_and(|n| n > 0) {}
        });
    }
}

/// What a round of private messages measured.
struct Traffic {
    rate: f64,
    target_rate: f64,
    p99_ms: f64,
    cpu_us: f64,
}

/// Private messages from `senders` (round robin) to random members of `sessions` at `rate`
/// per second for two seconds, each line made by `line(to, seq, stamp)`; every one must
/// arrive.
fn private_messages(
    server: &Process,
    sessions: &mut Sessions,
    senders: &mut [TcpStream],
    rate: f64,
    line: fn(usize, usize, u128) -> String,
) -> Traffic {
    let count = sessions.streams.len();
    let base = Instant::now();
    let duration = Duration::from_secs(2);
    let total = (rate * duration.as_secs_f64()) as usize;
    let cpu0 = server.cpu();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            // Open loop: every millisecond, the messages due by then.
            let start = Instant::now();
            let mut sent = 0usize;
            let mut seed = 0x2545_F491_4F6C_DD1Du64;
            let senders_count = senders.len();
            while sent < total {
                let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(total);
                while sent < due {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let to = (seed % count as u64) as usize;
                    let bytes = line(to, sent, stamp(base));
                    senders[sent % senders_count]
                        .write_all(bytes.as_bytes())
                        .unwrap();
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            start.elapsed()
        });
        let mut latencies = Vec::with_capacity(total);
        sessions.read_until(duration + Duration::from_secs(30), |_, line| {
            if line.contains(" (privado): ") || line.contains(" PRIVMSG ") {
                if let Some(l) = latency(base, line) {
                    latencies.push(l);
                }
            }
            latencies.len() >= total
        });
        let cpu = server.cpu().saturating_sub(cpu0);
        let sending = writer.join().unwrap();
        assert_eq!(latencies.len(), total, "private messages lost");
        latencies.sort_unstable();
        Traffic {
            rate: total as f64 / sending.as_secs_f64(),
            target_rate: rate,
            p99_ms: percentile(&latencies, 0.99) / 1000.0,
            cpu_us: cpu.as_secs_f64() * 1e6 / total as f64,
        }
    })
}

/// A chat session with line framing, logged in as `name`; how long its `CONNECT_ACK|OK`
/// took.
fn chat_login(addr: SocketAddr, name: &str) -> (TcpStream, Duration) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(format!("CONNECT|{name}").as_bytes())
        .unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.starts_with(b"CONNECT_ACK|OK") {
        stream.read_exact(&mut byte).unwrap();
        seen.push(byte[0]);
        assert!(
            !seen.starts_with(b"CONNECT_ACK|FAIL"),
            "login of {name} refused"
        );
    }
    let took = start.elapsed();
    stream.write_all(b"HELLO|lines\n").unwrap();
    while !seen.ends_with(b"HELLO|lines\n") {
        stream.read_exact(&mut byte).unwrap();
        seen.push(byte[0]);
    }
    (stream, took)
}

/// Reads and drops everything `streams` receive on a thread of its own until `stop`; the
/// thread's result is the bytes read.
fn drain(
    streams: Vec<TcpStream>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut poll = Poll::new().unwrap();
        let mut streams: Vec<mio::net::TcpStream> = streams
            .into_iter()
            .enumerate()
            .map(|(n, stream)| {
                stream.set_nonblocking(true).unwrap();
                let mut stream = mio::net::TcpStream::from_std(stream);
                poll.registry()
                    .register(&mut stream, Token(n), Interest::READABLE)
                    .unwrap();
                stream
            })
            .collect();
        let mut events = Events::with_capacity(1024);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(20))) {
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
                continue;
            }
            for event in events.iter() {
                let stream = &mut streams[event.token().0];
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    bytes += n as u64;
                }
            }
        }
        bytes
    })
}

/// Messenger REGISTERs of fresh names, one connection each, every 5 ms on a thread of its
/// own until `stop`: the latencies, sorted.
fn messenger_prober(
    addr: SocketAddr,
    prefix: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut latencies = Vec::new();
        let mut k = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let name = format!("{prefix}{k}");
            k += 1;
            let start = Instant::now();
            let answer = bench::request(addr, &bench::fields(&[b"REGISTER", name.as_bytes()]));
            latencies.push(start.elapsed());
            assert_eq!(answer.ok().as_deref(), Some(&[0u8][..]), "REGISTER {name}");
            std::thread::sleep(Duration::from_millis(5));
        }
        latencies.sort_unstable();
        latencies
    })
}

struct Presence {
    each: usize,
    login_p50_ms: f64,
    login_p99_ms: f64,
    messenger_p99_ms: f64,
    messenger_max_ms: f64,
    user_list_mib: f64,
}

/// `each` sessions on each of the chat (line framing, read all the time), the rooms and the
/// canvas; then fresh chat logins one after another, each staying online, while messenger
/// requests go on: how long a login and a messenger request wait, and the bytes of user
/// lists the sessions received meanwhile.
fn presence(binary: &Path, dir: &Path, each: usize, logins: usize) -> Presence {
    let limit = (3 * each + 1000).to_string();
    let server = server(
        binary,
        dir,
        "presence",
        &["--canvas-port", "0", "--max-connections", &limit],
    );
    let mut rooms = Sessions::open(server.front_end("rooms"), &None, each, |n| {
        format!("JOIN r{n}\n")
    });
    rooms.await_each("OK", Duration::from_secs(120));
    let nuevo = {
        let body = br#"{"comando": "nuevo"}"#;
        let mut frame = (body.len() as u64).to_le_bytes()[..5].to_vec();
        frame.extend_from_slice(body);
        frame
    };
    let canvas: Vec<TcpStream> = (0..each)
        .map(|_| {
            let mut stream = TcpStream::connect(server.front_end("canvas")).unwrap();
            stream.write_all(&nuevo).unwrap();
            stream
        })
        .collect();
    let chat = server.front_end("chat");
    let sessions: Vec<TcpStream> = (0..each)
        .map(|n| chat_login(chat, &format!("c{n}")).0)
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drained = drain(sessions, stop.clone());
    let canvas_drained = drain(canvas, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let prober = messenger_prober(server.addr, "m", stop.clone());
    let mut late = Vec::with_capacity(logins);
    let mut took = Vec::with_capacity(logins);
    for n in 0..logins {
        let (stream, login) = chat_login(chat, &format!("late{n}"));
        took.push(login);
        late.push(stream);
        std::thread::sleep(Duration::from_millis(20));
    }
    let late_drained = drain(late, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let messenger = prober.join().unwrap();
    let bytes = drained.join().unwrap();
    canvas_drained.join().unwrap();
    late_drained.join().unwrap();
    server.stop();
    took.sort_unstable();
    Presence {
        each,
        login_p50_ms: percentile(&took, 0.5) / 1000.0,
        login_p99_ms: percentile(&took, 0.99) / 1000.0,
        messenger_p99_ms: percentile(&messenger, 0.99) / 1000.0,
        messenger_max_ms: messenger.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        user_list_mib: bytes as f64 / (1 << 20) as f64,
    }
}

struct Flood {
    members: usize,
    quiet_p99_ms: f64,
    flooded_p99_ms: f64,
    messenger_quiet_p99_ms: f64,
    messenger_flooded_p99_ms: f64,
    flooder_lines_written: usize,
    flooder_lines_heard: usize,
}

/// A room of `members` on a server with the default flood limits: one member says a stamped
/// line every 100 ms for 3 s, first alone, then while another floods the room as fast as it
/// can write; the other members' latency of the speaker's lines and a messenger request's.
fn flood(binary: &Path, dir: &Path, members: usize) -> Flood {
    let server = server(
        binary,
        dir,
        "flood",
        &["--flood-rate", "10", "--canvas-flood-rate", "200"],
    );
    let rooms = server.front_end("rooms");
    let mut sessions = Sessions::open(rooms, &None, members, |n| {
        format!("JOIN v{n}\nROOM Flood\n")
    });
    sessions.await_each("Te has unido a la sala Flood.", Duration::from_secs(60));
    let expected_notices = members * (members - 1) / 2;
    let mut notices = 0;
    sessions.read_until(Duration::from_secs(60), |_, line| {
        notices += usize::from(line.ends_with("se ha unido a la sala."));
        notices >= expected_notices
    });
    let base = Instant::now();
    let run = |sessions: &mut Sessions, flooding: bool| {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flooder = flooding.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(rooms).unwrap();
                stream.write_all(b"JOIN flooder\nROOM Flood\n").unwrap();
                let mut reader = stream.try_clone().unwrap();
                std::thread::spawn(move || {
                    let mut sink = [0u8; 4096];
                    while reader.read(&mut sink).is_ok_and(|n| n > 0) {}
                });
                stream
                    .set_write_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let lines = b"MESSAGE y\n".repeat(100);
                let mut written = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match stream.write(&lines) {
                        Ok(n) => written += n / 10,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
                written
            })
        });
        let prober = messenger_prober(
            server.addr,
            if flooding { "mf" } else { "mq" },
            stop.clone(),
        );
        let count = 30;
        let mut latencies = Vec::new();
        let mut heard = 0;
        let mut next = Instant::now();
        for seq in 0..count {
            sessions.write(0, &format!("MESSAGE {seq} {}\n", stamp(base)));
            next += Duration::from_millis(100);
            sessions.read_until(next.saturating_duration_since(Instant::now()), |_, line| {
                if line.starts_with("flooder: ") {
                    heard += 1;
                } else if line.starts_with("v0: ") {
                    if let Some(l) = latency(base, line) {
                        latencies.push(l);
                    }
                }
                false
            });
        }
        let total = count * (members - 1);
        sessions.read_until(Duration::from_secs(30), |_, line| {
            if line.starts_with("flooder: ") {
                heard += 1;
            } else if line.starts_with("v0: ") {
                if let Some(l) = latency(base, line) {
                    latencies.push(l);
                }
            }
            latencies.len() >= total
        });
        assert_eq!(latencies.len(), total, "the speaker's lines all arrived");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = flooder.map_or(0, |f| f.join().unwrap());
        let messenger = prober.join().unwrap();
        latencies.sort_unstable();
        (
            percentile(&latencies, 0.99) / 1000.0,
            percentile(&messenger, 0.99) / 1000.0,
            written,
            heard / (members - 1).max(1),
        )
    };
    let (quiet_p99_ms, messenger_quiet_p99_ms, _, _) = run(&mut sessions, false);
    let (flooded_p99_ms, messenger_flooded_p99_ms, flooder_lines_written, flooder_lines_heard) =
        run(&mut sessions, true);
    server.stop();
    Flood {
        members,
        quiet_p99_ms,
        flooded_p99_ms,
        messenger_quiet_p99_ms,
        messenger_flooded_p99_ms,
        flooder_lines_written,
        flooder_lines_heard,
    }
}

/// Raises this process's limit on open descriptors (the servers it starts inherit it): to
/// [`WANTED_FILES`] if it may (root may raise the hard limit), else to the hard limit.
fn raise_open_file_limit() {
    let mut limit = open_files();
    // SAFETY: setrlimit on a local struct.
    unsafe {
        let hard = limit.rlim_max;
        limit.rlim_max = hard.max(WANTED_FILES);
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            limit.rlim_max = hard;
            limit.rlim_cur = hard;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Descriptors for two crowds online at once, with room to spare.
const WANTED_FILES: libc::rlim_t = 65_536;

/// This process's limits (soft and hard) on open descriptors.
fn open_files() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit on a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit
}

/// The fan-outs of a run: ours in plaintext and over TLS, the seed's design, InspIRCd.
struct FanOuts {
    plain: FanOut,
    tls: FanOut,
    reference: FanOut,
    irc: Option<FanOut>,
}

fn fan_outs(
    binary: &Path,
    reference_binary: &Path,
    dir: &Path,
    members: usize,
    burst: usize,
    tls: &Tls,
) -> FanOuts {
    let tls_args = tls.server_args();
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let ours = server(binary, dir, "fanout", &tls_args);
    let plain = (ours.front_end("rooms"), &None);
    let fan = fan_out(&ours, plain, Room::Wassop, members, burst);
    let over_tls = (ours.front_end("tls rooms"), &Some(tls.client.clone()));
    let fan_tls = fan_out(&ours, over_tls, Room::Wassop, members, burst);
    ours.stop();
    let reference = Process::spawn(Command::new(reference_binary));
    let to_reference = (reference.addr, &None);
    let fan_reference = fan_out(&reference, to_reference, Room::Wassop, members, burst);
    reference.stop();
    let irc = start_inspircd(dir).map(|inspircd| {
        let fan = fan_out(&inspircd, (inspircd.addr, &None), Room::Irc, members, burst);
        inspircd.stop();
        fan
    });
    FanOuts {
        plain: fan,
        tls: fan_tls,
        reference: fan_reference,
        irc,
    }
}

/// The crowds of a run: ours with plaintext and with TLS receivers, InspIRCd.
struct Crowds {
    plain: Crowd,
    tls: Crowd,
    irc: Option<Crowd>,
}

fn crowds(binary: &Path, dir: &Path, count: usize, rate: f64, tls: Tls) -> Crowds {
    let mut crowd_tls = Online::ours(binary, dir, count, &Some(tls));
    crowd_tls.round(rate);
    let tls = crowd_tls.finish();
    // Both crowds online at once, their rounds alternating, if descriptors allow; else each
    // round on crowds started for it.
    let together = open_files().rlim_cur > 2 * (count as u64 + 2 * SENDERS as u64) + 1000;
    let (plain, irc) = if together {
        let mut ours = Online::ours(binary, dir, count, &None);
        let mut irc = Online::inspircd(dir, count);
        for round in 0..PRIVATE_ROUNDS {
            in_turn(
                round,
                || ours.round(rate),
                || {
                    if let Some(irc) = irc.as_mut() {
                        irc.round(rate);
                    }
                },
            );
        }
        (ours.finish(), irc.map(Online::finish))
    } else {
        Crowd::round_by_round(
            || Online::ours(binary, dir, count, &None),
            || Online::inspircd(dir, count),
            rate,
        )
    };
    Crowds { plain, tls, irc }
}

fn print_table_head() {
    println!("\n## Chat front-ends (rooms and chat sessions on one reactor)\n");
    println!("| scenario | figure |");
    println!("|---|---|");
}

/// The crowd's rows: idle sessions and private messages, ours and InspIRCd's.
fn print_crowds(crowds: &Crowds) {
    let Crowds {
        plain: crowd,
        tls: crowd_tls,
        irc: crowd_irc,
    } = crowds;
    println!(
        "| {} idle sessions | RSS {:.1} MiB, {:.2} KiB per session |",
        crowd.sessions, crowd.rss_mib, crowd.kib_per_session
    );
    if let Some((metrics, page)) = crowd.scrape_ms {
        println!(
            "| with them online: `GET /metrics`, `GET /` (the status page) | p50 {metrics:.2} ms, {page:.2} ms |"
        );
    }
    println!(
        "| private messages among {} sessions at {:.0}/s ({} rounds, medians) | {:.0} msgs/s, p99 {:.1} ms (rounds: {}), server {:.1} µs CPU per message (rounds: {}) |",
        crowd.sessions,
        crowd.private_target_rate(),
        crowd.rounds.len(),
        crowd.private_rate(),
        crowd.private_p99_ms(),
        crowd.rounds_p99(),
        crowd.private_cpu_us(),
        crowd.rounds()
    );
    println!(
        "| the same, the receivers over TLS | {:.0} msgs/s, p99 {:.1} ms, server {:.1} µs CPU per message; {:.1} KiB per idle TLS session |",
        crowd_tls.private_rate(),
        crowd_tls.private_p99_ms(),
        crowd_tls.private_cpu_us(),
        crowd_tls.kib_per_session
    );
    match crowd_irc {
        Some(irc) => {
            println!(
                "| the same crowd on InspIRCd: idle sessions; private messages (`PRIVMSG`) | {:.2} KiB per session; {:.0} msgs/s, p99 {:.1} ms (rounds: {}), server {:.1} µs CPU per message (rounds: {}) |",
                irc.kib_per_session,
                irc.private_rate(),
                irc.private_p99_ms(),
                irc.rounds_p99(),
                irc.private_cpu_us(),
                irc.rounds()
            );
            let by_round: Vec<String> = crowd
                .rounds
                .iter()
                .zip(&irc.rounds)
                .map(|(ours, theirs)| format!("{:.2}", ours.cpu_us / theirs.cpu_us))
                .collect();
            println!(
                "| private messages, ours against InspIRCd (rounds taken in turn) | {:.2} × the CPU per message (the medians'; round by round {} ×) |",
                crowd.private_cpu_us() / irc.private_cpu_us(),
                by_round.join(", ")
            );
        }
        None => println!(
            "| the same crowd on InspIRCd | not run: /usr/sbin/inspircd missing or not starting |"
        ),
    }
}

/// The fan-out's rows: ours in plaintext and over TLS, the seed's design, InspIRCd.
fn print_fan_out(members: usize, burst: usize, fan_outs: &FanOuts) {
    let FanOuts {
        plain: fan,
        tls: fan_tls,
        reference: fan_reference,
        irc: fan_irc,
    } = fan_outs;
    println!(
        "| fan-out to a room of {members}, burst of {burst} messages | {:.0} deliveries/s, p99 {:.1} ms, server {:.2} µs CPU per delivery, {:.1} deliveries per write |",
        fan.deliveries_per_s, fan.burst_p99_ms, fan.server_cpu_per_delivery_us, fan.deliveries_per_write
    );
    println!(
        "| fan-out paced at a quarter of that | {:.0} deliveries/s, p99 {:.1} ms |",
        fan.paced_rate, fan.paced_p99_ms
    );
    println!(
        "| the same fan-out over TLS (the rooms' TLS port, TLS 1.3, ECDSA P-256) | {:.0} deliveries/s, p99 {:.1} ms, server {:.2} µs CPU per delivery ({:.2} × plaintext's) |",
        fan_tls.deliveries_per_s,
        fan_tls.burst_p99_ms,
        fan_tls.server_cpu_per_delivery_us,
        fan_tls.server_cpu_per_delivery_us / fan.server_cpu_per_delivery_us
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
    match fan_irc {
        Some(irc) => {
            println!(
                "| the same fan-out, InspIRCd 3.15 (Debian's package, flood limits off) | {:.0} deliveries/s, p99 {:.1} ms, server {:.2} µs CPU per delivery, {:.1} deliveries per write |",
                irc.deliveries_per_s, irc.burst_p99_ms, irc.server_cpu_per_delivery_us, irc.deliveries_per_write
            );
            println!(
                "| its paced run | {:.0} deliveries/s, p99 {:.1} ms |",
                irc.paced_rate, irc.paced_p99_ms
            );
            println!(
                "| fan-out, ours against InspIRCd | {:.2} × the deliveries/s, {:.2} × the CPU per delivery, {:.2} × the burst p99 |",
                fan.deliveries_per_s / irc.deliveries_per_s,
                fan.server_cpu_per_delivery_us / irc.server_cpu_per_delivery_us,
                fan.burst_p99_ms / irc.burst_p99_ms
            );
        }
        None => println!(
            "| the same fan-out, InspIRCd | not run: /usr/sbin/inspircd missing or not starting (`apt-get install inspircd`) |"
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(binary), Some(reference_binary)) = (args.get(1), args.get(2)) else {
        bench::usage_exit(
            "chatload SERVER ROOMSREF [--quick] [--only fanout|crowd] [--chart FILE.svg]",
        )
    };
    let (binary, reference_binary) = (PathBuf::from(binary), PathBuf::from(reference_binary));
    let quick = args.iter().any(|a| a == "--quick");
    let flag = |name: &str| {
        args.windows(2)
            .find(|w| w[0] == name)
            .map(|w| w[1].as_str())
    };
    let only = flag("--only");
    let chart = flag("--chart").map(PathBuf::from);
    raise_open_file_limit();
    let dir = std::env::temp_dir().join(format!("chatload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cpu0 = own_cpu();
    let (members, burst) = if quick { (200, 50) } else { (1000, 200) };
    let tls = Tls::make(&dir);
    let (count, rate) = if quick {
        (2000, 2000.0)
    } else {
        (10_000, 10_000.0)
    };
    if only == Some("crowd") {
        let crowds = crowds(&binary, &dir, count, rate, tls);
        let _ = std::fs::remove_dir_all(&dir);
        print_table_head();
        print_crowds(&crowds);
        return;
    }
    let fan_outs = fan_outs(&binary, &reference_binary, &dir, members, burst, &tls);
    if only == Some("fanout") {
        let _ = std::fs::remove_dir_all(&dir);
        print_table_head();
        print_fan_out(members, burst, &fan_outs);
        return;
    }
    let crowds = crowds(&binary, &dir, count, rate, tls);
    let (each, logins) = if quick { (1000, 20) } else { (3000, 50) };
    let presence = presence(&binary, &dir, each, logins);
    let flood = flood(&binary, &dir, if quick { 50 } else { 200 });
    let _ = std::fs::remove_dir_all(&dir);

    print_table_head();
    print_fan_out(members, burst, &fan_outs);
    print_crowds(&crowds);
    println!(
        "| {} fresh chat logins with {} sessions on each of chat, rooms and canvas | login p50 {:.1} ms, p99 {:.1} ms; messenger p99 {:.1} ms (max {:.1} ms); {:.0} MiB of user lists to the chat sessions |",
        logins,
        presence.each,
        presence.login_p50_ms,
        presence.login_p99_ms,
        presence.messenger_p99_ms,
        presence.messenger_max_ms,
        presence.user_list_mib
    );
    println!(
        "| a room of {}: one member speaks 10 lines/s, alone / while another floods (default flood limits) | members' p99 {:.1} ms / {:.1} ms; messenger p99 {:.1} ms / {:.1} ms; the flooder wrote {} lines, the room heard {} |",
        flood.members,
        flood.quiet_p99_ms,
        flood.flooded_p99_ms,
        flood.messenger_quiet_p99_ms,
        flood.messenger_flooded_p99_ms,
        flood.flooder_lines_written,
        flood.flooder_lines_heard
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
        fan_outs.plain.deliveries_per_s,
        verdict(fan_outs.plain.deliveries_per_s >= 100_000.0)
    );
    let (fan, crowd) = (&fan_outs.plain, &crowds.plain);
    if let Some(irc) = &fan_outs.irc {
        println!(
            "| fan-out ≥ InspIRCd's deliveries/s, ≤ its CPU per delivery, ≤ its burst p99 | {:.2} ×, {:.2} ×, {:.2} × | {} |",
            fan.deliveries_per_s / irc.deliveries_per_s,
            fan.server_cpu_per_delivery_us / irc.server_cpu_per_delivery_us,
            fan.burst_p99_ms / irc.burst_p99_ms,
            verdict(
                fan.deliveries_per_s >= irc.deliveries_per_s
                    && fan.server_cpu_per_delivery_us <= irc.server_cpu_per_delivery_us
                    && fan.burst_p99_ms <= irc.burst_p99_ms
            )
        );
    }
    println!(
        "| {} idle sessions ≤ 64 MiB RSS | {:.1} MiB | {} |",
        crowd.sessions,
        crowd.rss_mib,
        verdict(crowd.rss_mib <= 64.0)
    );
    println!(
        "| with {} sessions on each front-end, a fresh login ≤ 100 ms and no messenger request over 100 ms | login p99 {:.1} ms, messenger max {:.1} ms | {} |",
        presence.each,
        presence.login_p99_ms,
        presence.messenger_max_ms,
        verdict(presence.login_p99_ms <= 100.0 && presence.messenger_max_ms <= 100.0)
    );
    println!(
        "| a flooder changes nobody's p99 by more than 2 × (or 5 ms) | members {:.1} → {:.1} ms, messenger {:.1} → {:.1} ms | {} |",
        flood.quiet_p99_ms,
        flood.flooded_p99_ms,
        flood.messenger_quiet_p99_ms,
        flood.messenger_flooded_p99_ms,
        verdict(
            flood.flooded_p99_ms <= (2.0 * flood.quiet_p99_ms).max(flood.quiet_p99_ms + 5.0)
                && flood.messenger_flooded_p99_ms
                    <= (2.0 * flood.messenger_quiet_p99_ms).max(flood.messenger_quiet_p99_ms + 5.0)
        )
    );
    println!(
        "| private p99 ≤ 5 ms at {:.0} msgs/s (the median round's) | {:.1} ms at {:.0} msgs/s (rounds: {}) | {} |",
        crowd.private_target_rate(),
        crowd.private_p99_ms(),
        crowd.private_rate(),
        crowd.rounds_p99(),
        verdict(
            crowd.private_p99_ms() <= 5.0
                && crowd.private_rate() >= 0.95 * crowd.private_target_rate()
        )
    );
    println!(
        "| idle sessions ≤ 1.5 KiB each | {:.2} KiB | {} |",
        crowd.kib_per_session,
        verdict(crowd.kib_per_session <= 1.5)
    );
    if let Some(irc) = &crowds.irc {
        println!(
            "| private messages: ≤ InspIRCd's CPU per message | {:.2} × | {} |",
            crowd.private_cpu_us() / irc.private_cpu_us(),
            verdict(crowd.private_cpu_us() <= irc.private_cpu_us())
        );
    }
    if let (Some(path), Some(fan_irc), Some(crowd_irc)) = (&chart, &fan_outs.irc, &crowds.irc) {
        let (fan, crowd) = (&fan_outs.plain, &crowds.plain);
        let ratio = |name, ours_over_reference| bench::chart::Ratio {
            name,
            ours_over_reference,
        };
        let drawn = bench::chart::ratios(
            path,
            "Chat front-ends against InspIRCd, same run",
            "InspIRCd",
            &[
                ratio(
                    "fan-out: time per delivery",
                    fan_irc.deliveries_per_s / fan.deliveries_per_s,
                ),
                ratio(
                    "fan-out: CPU per delivery",
                    fan.server_cpu_per_delivery_us / fan_irc.server_cpu_per_delivery_us,
                ),
                ratio(
                    "fan-out: burst p99",
                    fan.burst_p99_ms / fan_irc.burst_p99_ms,
                ),
                ratio(
                    "private: CPU per message",
                    crowd.private_cpu_us() / crowd_irc.private_cpu_us(),
                ),
                ratio(
                    "idle session: memory",
                    crowd.kib_per_session / crowd_irc.kib_per_session,
                ),
            ],
        );
        match drawn {
            Ok(()) => println!("\nChart: {}", path.display()),
            Err(e) => println!("\nNo chart: {e}"),
        }
    }
}
