//! How our clients reach a server: plain TCP, or TLS (`--tls`), which verifies the server's
//! certificate against `--ca FILE` (a self-signed end-entity certificate, or the CA that
//! signed the server's) or else the system's roots (docs/tls.md).
//!
//! A TLS connection is handed to the client code as a local socket ([`Stream::Bridged`]): a
//! thread of its own moves bytes between it and TLS over the real socket, so the code above
//! reads, writes, clones the stream for a reader thread and shuts it down exactly as with
//! TCP, and never knows which it has.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// TLS settings of a client: None connects in plaintext.
pub type Tls = Option<Arc<ClientConfig>>;

/// The TLS configuration of our clients: the certificates of `ca` (PEM) as the only roots,
/// or the system's.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--ca {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("--ca {}: no certificate in it", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A root the system has but rustls cannot use is skipped.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("the system has no root certificates; give --ca FILE".into());
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// ring's cryptography, as the server uses it (it builds with a C compiler alone; rustls
/// deprecates it for lacking post-quantum key exchange).
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A connection to a server, as the client code uses it.
pub enum Stream {
    Tcp(TcpStream),
    /// TLS, bridged by a thread to this local socket; the flag says when the bridge is done.
    Bridged(UnixStream, Arc<Done>),
}

/// Set once a bridge has moved everything both ways and closed.
#[derive(Default)]
pub struct Done {
    done: Mutex<bool>,
    changed: Condvar,
}

impl Done {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(done, timeout, |done| !*done);
    }
}

/// How long ending a TLS connection waits for what was written to reach the server.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Bridged(s, done) => Stream::Bridged(s.try_clone()?, done.clone()),
        })
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Bridged(s, _) => s.shutdown(how),
        }
    }

    /// Ends the connection once what was written has reached the server (a TLS bridge
    /// is waited for, a little while at most: the process may exit right after).
    pub fn close(&self) {
        match self {
            Stream::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Stream::Bridged(s, done) => {
                let _ = s.shutdown(Shutdown::Write);
                done.wait(CLOSE_WAIT);
                let _ = s.shutdown(Shutdown::Read);
            }
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Bridged(s, _) => s.set_read_timeout(timeout),
        }
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Bridged(s, _) => s.set_write_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Bridged(s, _) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Bridged(s, _) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Bridged(s, _) => s.flush(),
        }
    }
}

/// Connects to `host:port` within `timeout` (each address in turn), with TLS if `tls` says
/// so: the handshake is done (and the certificate verified) before this returns.
pub fn connect(host: &str, port: u16, tls: &Tls, timeout: Duration) -> io::Result<Stream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(socket) => {
                let _ = socket.set_nodelay(true);
                return match tls {
                    None => Ok(Stream::Tcp(socket)),
                    Some(config) => secure(socket, host, config.clone(), timeout),
                };
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// TLS over `socket` to `host`: the handshake, then the bridge.
fn secure(
    mut socket: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> io::Result<Stream> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    let mut tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut socket).map_err(|e| {
            let verify = e
                .get_ref()
                .is_some_and(|inner| inner.to_string().contains("certificate"));
            if verify {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS: the server's certificate does not verify: {e}"),
                )
            } else {
                io::Error::new(e.kind(), format!("TLS handshake: {e}"))
            }
        })?;
    }
    socket.set_read_timeout(None)?;
    socket.set_write_timeout(None)?;
    let (ours, theirs) = UnixStream::pair()?;
    let done = Arc::new(Done::default());
    let finished = done.clone();
    std::thread::Builder::new()
        .name("tls-bridge".into())
        .spawn(move || {
            bridge(socket, tls, theirs);
            finished.set();
        })?;
    Ok(Stream::Bridged(ours, done))
}

/// Moves bytes both ways until both sides are done: what the client code writes to its end
/// is encrypted to the server; what the server sends is decrypted to the client code's end.
fn bridge(mut socket: TcpStream, mut tls: ClientConnection, mut local: UnixStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let (mut server_done, mut local_done) = (false, false);
    // The client code stopped reading (shut its end down): what the server sends is
    // dropped, and what the client code wrote still goes out.
    let mut local_deaf = false;
    while !(server_done && local_done) {
        if write_records(&mut tls, &mut socket).is_err() {
            return;
        }
        let mut fds = [
            libc::pollfd {
                fd: socket.as_raw_fd(),
                events: if server_done { 0 } else { libc::POLLIN },
                revents: 0,
            },
            libc::pollfd {
                fd: local.as_raw_fd(),
                events: if local_done { 0 } else { libc::POLLIN },
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfd entries, owned by this frame, for descriptors we own.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[0].revents != 0 && !server_done {
            match tls.read_tls(&mut socket) {
                Ok(0) | Err(_) => server_done = true,
                Ok(_) => {
                    if tls.process_new_packets().is_err() {
                        let _ = write_records(&mut tls, &mut socket);
                        return;
                    }
                }
            }
            loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) => {
                        server_done = true;
                        break;
                    }
                    Ok(n) => {
                        if !local_deaf && local.write_all(&buf[..n]).is_err() {
                            local_deaf = true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        server_done = true;
                        break;
                    }
                }
            }
            if server_done {
                let _ = local.shutdown(Shutdown::Write);
            }
        }
        if fds[1].revents != 0 && !local_done {
            match local.read(&mut buf) {
                Ok(0) | Err(_) => {
                    local_done = true;
                    tls.send_close_notify();
                    let _ = write_records(&mut tls, &mut socket);
                    let _ = socket.shutdown(Shutdown::Write);
                }
                Ok(n) => {
                    if tls.writer().write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn write_records(tls: &mut ClientConnection, socket: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(socket)?;
    }
    Ok(())
}
