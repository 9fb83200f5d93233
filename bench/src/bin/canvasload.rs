//! Load for the canvas, run by `scripts/bench`: painters and viewers against our server (whole
//! boards, then compact mode) and against the seed's design (`canvasref`: the whole board to
//! everyone after every paint), in one run. Usage: `canvasload SERVER CANVASREF [--quick]`.
//!
//! Every paint colours a pixel no other paint touches, so a client has seen it when that pixel
//! is no longer white. Compact clients are all checked; of whole-board clients every tenth
//! parses its boards (parsing all of them would cost the generator more than the server).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::{percentile, start_server, Process};
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

const SIDE: usize = 50;
const COLOURS: [&str; 7] = ["black", "red", "green", "yellow", "blue", "cyan", "magenta"];

fn frame(body: &str) -> Vec<u8> {
    let mut bytes = (body.len() as u64).to_le_bytes()[..5].to_vec();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// One client's connection and what it has seen.
struct Client {
    stream: mio::net::TcpStream,
    buf: Vec<u8>,
    /// Frames received so far.
    frames: usize,
    /// Checks the pixels it sees (a sample of the whole-board clients; every compact one).
    checked: bool,
    seen: Vec<bool>,
}

struct Outcome {
    paints: usize,
    paints_per_s: f64,
    bytes_per_paint: f64,
    p99_ms: f64,
    unseen: usize,
    server_cores: f64,
}

/// `painters` clients paint `rate` pixels a second each for `seconds`; `viewers` only watch.
fn run(
    addr: SocketAddr,
    server: &Process,
    compact: bool,
    painters: usize,
    viewers: usize,
    seconds: f64,
    rate: f64,
) -> Outcome {
    let per_painter = (rate * seconds) as usize;
    assert!(painters * per_painter <= SIDE * SIDE, "one pixel per paint");
    let poll = Poll::new().unwrap();
    let hello = if compact {
        r#"{"comando": "nuevo", "modo": "compacto"}"#
    } else {
        r#"{"comando": "nuevo"}"#
    };
    let mut writers = Vec::new();
    let mut clients: Vec<Client> = (0..painters + viewers)
        .map(|n| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.set_nodelay(true).unwrap();
            stream.write_all(&frame(hello)).unwrap();
            if n < painters {
                writers.push(stream.try_clone().unwrap());
            }
            stream.set_nonblocking(true).unwrap();
            let mut stream = mio::net::TcpStream::from_std(stream);
            poll.registry()
                .register(&mut stream, Token(n), Interest::READABLE)
                .unwrap();
            Client {
                stream,
                buf: Vec::new(),
                frames: 0,
                checked: compact || n % 10 == 0,
                seen: vec![false; SIDE * SIDE],
            }
        })
        .collect();
    let base = Instant::now();
    // When each pixel's paint was sent, in µs since `base` (0: not yet).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..SIDE * SIDE).map(|_| AtomicU64::new(0)).collect());
    // Every client has its first board before anybody paints.
    let mut first = Reader::new(poll);
    let mut ignored = Vec::new();
    let mut bytes_first = 0;
    while clients.iter().any(|c| c.frames == 0) {
        bytes_first += first.read(&mut clients, &sent, base, &mut ignored);
    }
    let poll = first.poll;
    let cpu0 = server.cpu();
    let start = Instant::now();
    let painting = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            let mut done = 0;
            for k in 0..per_painter {
                let due = Duration::from_secs_f64(k as f64 / rate);
                std::thread::sleep(due.saturating_sub(start.elapsed()));
                for (p, writer) in writers.iter_mut().enumerate() {
                    let pixel = p * per_painter + k;
                    let body = format!(
                        r#"{{"comando": "pintar", "x_pos": "{}", "y_pos": "{}", "nombre_color": "{}"}}"#,
                        pixel % SIDE,
                        pixel / SIDE,
                        COLOURS[pixel % COLOURS.len()]
                    );
                    sent[pixel].store(base.elapsed().as_micros() as u64 + 1, Ordering::Relaxed);
                    if writer.write_all(&frame(&body)).is_err() {
                        return done;
                    }
                    done += 1;
                }
            }
            done
        })
    };
    let total = painters * per_painter;
    let checked = clients.iter().filter(|c| c.checked).count();
    let mut latencies = Vec::with_capacity(total * checked);
    let mut bytes = 0usize;
    let deadline = start + Duration::from_secs_f64(seconds) + Duration::from_secs(10);
    let mut reader = Reader::new(poll);
    while latencies.len() < total * checked && Instant::now() < deadline {
        bytes += reader.read(&mut clients, &sent, base, &mut latencies);
    }
    let elapsed = start.elapsed();
    let paints = painting.join().unwrap();
    let cpu = server.cpu().saturating_sub(cpu0);
    latencies.sort_unstable();
    let unseen = total * checked - latencies.len();
    Outcome {
        paints,
        paints_per_s: paints as f64 / seconds,
        bytes_per_paint: (bytes + bytes_first) as f64 / paints.max(1) as f64,
        p99_ms: percentile(&latencies, 0.99) / 1000.0,
        unseen,
        server_cores: cpu.as_secs_f64() / elapsed.as_secs_f64(),
    }
}

/// Reads what the clients received; returns the bytes read.
struct Reader {
    poll: Poll,
    events: Events,
    chunk: Vec<u8>,
}

impl Reader {
    fn new(poll: Poll) -> Reader {
        Reader {
            poll,
            events: Events::with_capacity(1024),
            chunk: vec![0u8; 256 * 1024],
        }
    }

    fn read(
        &mut self,
        clients: &mut [Client],
        sent: &[AtomicU64],
        base: Instant,
        latencies: &mut Vec<Duration>,
    ) -> usize {
        let mut bytes = 0;
        if let Err(e) = self
            .poll
            .poll(&mut self.events, Some(Duration::from_millis(100)))
        {
            assert_eq!(e.kind(), io::ErrorKind::Interrupted);
            return 0;
        }
        for event in self.events.iter() {
            let client = &mut clients[event.token().0];
            loop {
                match client.stream.read(&mut self.chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        bytes += n;
                        client.buf.extend_from_slice(&self.chunk[..n]);
                        take_frames(client, sent, base, latencies);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("canvas client: {e}"),
                }
            }
        }
        bytes
    }
}

/// Takes the whole frames in `client.buf`; a checked client records each newly coloured
/// pixel's latency.
fn take_frames(
    client: &mut Client,
    sent: &[AtomicU64],
    base: Instant,
    latencies: &mut Vec<Duration>,
) {
    loop {
        let Some(header) = client.buf.get(..5) else {
            return;
        };
        let mut length = [0u8; 8];
        length[..5].copy_from_slice(header);
        let end = 5 + u64::from_le_bytes(length) as usize;
        if client.buf.len() < end {
            return;
        }
        client.frames += 1;
        if !client.checked {
            client.buf.drain(..end);
            continue;
        }
        let value: Value = serde_json::from_slice(&client.buf[5..end]).expect("JSON");
        client.buf.drain(..end);
        let now = base.elapsed();
        let mut saw = |pixel: usize| {
            let at = sent[pixel].load(Ordering::Relaxed);
            if at > 0 && !client.seen[pixel] {
                client.seen[pixel] = true;
                latencies.push(now.saturating_sub(Duration::from_micros(at - 1)));
            }
        };
        if let Some(changes) = value.get("pixeles").and_then(Value::as_array) {
            for change in changes {
                let (x, y) = (change[0].as_u64().unwrap(), change[1].as_u64().unwrap());
                saw(y as usize * SIDE + x as usize);
            }
            continue;
        }
        let board = value.get("tablero").unwrap_or(&value);
        for y in 0..SIDE {
            let row = &board[y.to_string()];
            for x in 0..SIDE {
                if row[x.to_string()] != "white" {
                    saw(y * SIDE + x);
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(server_binary), Some(reference_binary)) = (args.get(1), args.get(2)) else {
        bench::usage_exit("canvasload SERVER CANVASREF [--quick]")
    };
    let (server_binary, reference_binary) = (
        PathBuf::from(server_binary),
        PathBuf::from(reference_binary),
    );
    let quick = args.iter().any(|a| a == "--quick");
    let (painters, viewers, seconds) = if quick {
        (20, 20, 2.0)
    } else {
        (100, 100, 2.0)
    };
    let rate = 10.0;
    let dir = std::env::temp_dir().join(format!("canvasload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ours = |name: &str| -> Process {
        start_server(
            &server_binary,
            dir.join(format!("{name}.db")),
            &["--canvas-port", "0"],
        )
    };
    let mut rows = Vec::new();
    for (name, compact) in [("ours, whole boards", false), ("ours, compact", true)] {
        let server = ours(if compact { "compact" } else { "whole" });
        let outcome = run(
            server.front_end("canvas"),
            &server,
            compact,
            painters,
            viewers,
            seconds,
            rate,
        );
        server.stop();
        rows.push((name, outcome));
    }
    let reference = Process::spawn(Command::new(Path::new(&reference_binary)));
    let outcome = run(
        reference.addr,
        &reference,
        false,
        painters,
        viewers,
        seconds,
        rate,
    );
    reference.stop();
    rows.push(("seed's design (canvasref)", outcome));
    let _ = std::fs::remove_dir_all(&dir);

    println!("\n## Canvas: {painters} painters at {rate:.0} pixels/s each and {viewers} viewers, {seconds} s\n");
    println!("| server | paints | paints/s | bytes sent per paint | paint → every client p99 | not seen in 10 s | server CPU |");
    println!("|---|---|---|---|---|---|---|");
    for (name, o) in &rows {
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.1} ms | {} | {:.2} cores |",
            o.paints, o.paints_per_s, o.bytes_per_paint, o.p99_ms, o.unseen, o.server_cores
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    println!("\n### Canvas targets\n");
    println!("| target | measured | |");
    println!("|---|---|---|");
    for (name, o) in &rows[..2] {
        println!(
            "| {name}: every client sees every paint within 100 ms p99 | {:.1} ms, {} unseen | {} |",
            o.p99_ms,
            o.unseen,
            verdict(o.p99_ms <= 100.0 && o.unseen == 0)
        );
        println!(
            "| {name}: server under half a core | {:.2} cores | {} |",
            o.server_cores,
            verdict(o.server_cores < 0.5)
        );
    }
}
