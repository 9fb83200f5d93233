//! The listener thread a connected client runs: it receives the server's pushes (in either
//! op-name style) and serves `GET FILE` for the files this user sent as attachments.
//!
//! A client connected over TLS listens over TLS too (docs/tls.md): the listener makes a
//! self-signed certificate when it starts, the client announces its SHA-256 (the pin) with
//! CONNECTTLS over its TLS connection, and the server pushes over TLS to that certificate
//! only. A connection that does not open with a TLS handshake is served in plaintext (the
//! `GET FILE` of other clients).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wire::{read_field, Push, PushKind, GET_FILE, GET_FILE_UNDERSCORE, MAX_FIELD_LEN, MAX_OP_LEN};

/// How long a peer may take to send its push or request.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the accept loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Files this user offered as attachments: the only ones `GET FILE` will serve.
pub type SharedFiles = Arc<Mutex<HashSet<PathBuf>>>;

pub struct Listener {
    pub port: u16,
    /// The SHA-256 of its certificate (hex), when it listens over TLS.
    pub pin: Option<String>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Binds a free port on every interface and starts accepting; each push is handed to
    /// `on_push`, problems to `on_error`.
    pub fn start(
        shared: SharedFiles,
        tls: bool,
        on_push: impl Fn(Push) + Send + 'static,
        on_error: impl Fn(String) + Send + 'static,
    ) -> io::Result<Listener> {
        let identity = if tls { Some(Identity::make()?) } else { None };
        let pin = identity.as_ref().map(|i| i.pin.clone());
        let config = identity.map(|i| i.config);
        let socket = TcpListener::bind(("0.0.0.0", 0))?;
        socket.set_nonblocking(true)?;
        let port = socket.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("listener".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match socket.accept() {
                        Ok((stream, _)) => {
                            if let Err(e) = serve(stream, &shared, &config, &on_push) {
                                on_error(format!("listener: {e}"));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(STOP_POLL)
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            on_error(format!("listener: accept failed: {e}"));
                            std::thread::sleep(STOP_POLL);
                        }
                    }
                }
            })?;
        Ok(Listener {
            port,
            pin,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting and waits for the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A listener's TLS identity: a self-signed certificate made at start, and its pin.
struct Identity {
    config: Arc<rustls::ServerConfig>,
    pin: String,
}

impl Identity {
    fn make() -> io::Result<Identity> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .map_err(io::Error::other)?;
        let cert = made.cert.der().clone();
        let pin = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(&cert);
            digest.iter().map(|b| format!("{b:02x}")).collect()
        };
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(crate::link::provider())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(io::Error::other)?;
        Ok(Identity {
            config: Arc::new(config),
            pin,
        })
    }
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

fn serve(
    stream: TcpStream,
    shared: &SharedFiles,
    tls: &Option<Arc<rustls::ServerConfig>>,
    on_push: &impl Fn(Push),
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(PEER_TIMEOUT))?;
    stream.set_write_timeout(Some(PEER_TIMEOUT))?;
    let mut first = [0u8; 1];
    if let (Some(config), Ok(1)) = (tls, stream.peek(&mut first)) {
        if first[0] == TLS_HANDSHAKE {
            return serve_push_over_tls(stream, config.clone(), on_push);
        }
    }
    let mut reader = BufReader::new(stream);
    let op = read_field(&mut reader, MAX_OP_LEN)?;
    if let Some(kind) = PushKind::from_op_name(&op) {
        let push = Push::read_body(kind, &mut reader)?;
        on_push(push);
        return Ok(());
    }
    if op == GET_FILE.as_bytes() || op == GET_FILE_UNDERSCORE.as_bytes() {
        // Attachments are served on their own thread so a large file does not hold up pushes.
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            let _ = serve_file(reader, &shared);
        });
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unknown request {:?}", String::from_utf8_lossy(&op)),
    ))
}

/// A push over TLS: read, then TLS's goodbye and the close that tell the server it was read.
fn serve_push_over_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    on_push: &impl Fn(Push),
) -> io::Result<()> {
    let session = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(session, stream);
    let push = {
        let mut reader = BufReader::new(&mut tls);
        let op = read_field(&mut reader, MAX_OP_LEN)?;
        let kind = PushKind::from_op_name(&op).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("over TLS only pushes: {:?}", String::from_utf8_lossy(&op)),
            )
        })?;
        Push::read_body(kind, &mut reader)?
    };
    on_push(push);
    tls.conn.send_close_notify();
    tls.flush()
}

/// `GET FILE requester path`: answers the decimal length, NUL, then the bytes; `-1` if the file
/// was not offered or cannot be read.
fn serve_file(mut reader: BufReader<TcpStream>, shared: &SharedFiles) -> io::Result<()> {
    let _requester = read_field(&mut reader, MAX_FIELD_LEN)?;
    let path = PathBuf::from(
        String::from_utf8_lossy(&read_field(&mut reader, MAX_FIELD_LEN)?).into_owned(),
    );
    let mut stream = reader.into_inner();
    let offered = std::fs::canonicalize(&path).is_ok_and(|p| shared.lock().unwrap().contains(&p));
    let file = if offered {
        File::open(&path).ok()
    } else {
        None
    };
    let len = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map(|m| m.len());
    match (file, len) {
        (Some(file), Some(len)) => {
            stream.write_all(format!("{len}\0").as_bytes())?;
            io::copy(&mut file.take(len), &mut stream)?;
        }
        _ => stream.write_all(b"-1\0")?,
    }
    stream.shutdown(Shutdown::Write)
}

/// Fetches `remote` from the listener at `addr` into `local`. `Ok(false)` if the peer does not
/// offer that file; an error if the transfer failed or was cut short (`local` is then removed).
/// Copies the file (its `len` bytes) into `out`, telling `progress` of every chunk as
/// `(bytes so far, len)`; returns the bytes copied.
fn copy_with_progress(
    reader: &mut impl Read,
    out: &mut impl Write,
    len: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<u64> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut copied = 0;
    progress(0, len);
    while copied < len {
        let want = (len - copied).min(chunk.len() as u64) as usize;
        let n = match reader.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&chunk[..n])?;
        copied += n as u64;
        progress(copied, len);
    }
    Ok(copied)
}

pub fn fetch_file(
    addr: (&str, u16),
    requester: &str,
    remote: &str,
    local: &std::path::Path,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<bool> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&addr)?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for the sender"))?;
    let mut stream = TcpStream::connect_timeout(&addr, PEER_TIMEOUT)?;
    stream.set_read_timeout(Some(PEER_TIMEOUT))?;
    wire::write_fields(
        &mut stream,
        &[GET_FILE.as_bytes(), requester.as_bytes(), remote.as_bytes()],
    )?;
    let mut reader = BufReader::new(stream);
    let len = read_field(&mut reader, 32)?;
    let len = String::from_utf8_lossy(&len).into_owned();
    if len == "-1" {
        return Ok(false);
    }
    let len: u64 = len
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad length {len:?}")))?;
    let partial = PathBuf::from(format!("{}.part", local.display()));
    let result = (|| {
        let mut out = File::create(&partial)?;
        let copied = copy_with_progress(&mut reader, &mut out, len, progress)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("transfer cut short: {copied} of {len} bytes"),
            ));
        }
        out.sync_all()?;
        std::fs::rename(&partial, local)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result.map(|()| true)
}
