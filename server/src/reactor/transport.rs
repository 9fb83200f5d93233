//! What carries a connection's bytes: the socket itself, or TLS over it (rustls, driven as
//! non-blocking steps, as in rustls' `tlsserver-mio`). The connection above reads and writes
//! plaintext and never knows which; a front-end never does either.
//!
//! TLS keeps two buffers of its own, both bounded: plaintext decrypted but not read yet
//! (rustls refuses to read more records past its limit), and records encrypted but not
//! written yet (at most [`SEND_BUFFER`] of plaintext is taken before they drain). "Is the
//! socket blocked" counts the latter ([`Transport::waiting`]).

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

/// Plaintext a TLS connection takes before its records must drain to the socket.
pub const SEND_BUFFER: usize = 64 * 1024;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<Tls>),
}

pub struct Tls {
    socket: TcpStream,
    session: ServerConnection,
    /// The client's bytes are taken as they come, without TLS, until the PROXY header that
    /// precedes the handshake has been read (`--proxy-protocol`).
    raw: bool,
    /// The finished handshake was counted.
    counted: bool,
}

impl Transport {
    /// TLS over `socket` with `config`; `raw_first`: a PROXY header comes before the
    /// handshake.
    pub fn tls(
        socket: TcpStream,
        config: Arc<ServerConfig>,
        raw_first: bool,
    ) -> io::Result<Transport> {
        let mut session = ServerConnection::new(config).map_err(io::Error::other)?;
        session.set_buffer_limit(Some(SEND_BUFFER));
        Ok(Transport::Tls(Box::new(Tls {
            socket,
            session,
            raw: raw_first,
            counted: false,
        })))
    }

    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => &tls.socket,
        }
    }

    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => &mut tls.socket,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Plaintext from the client: `Ok(0)` at its end, `WouldBlock` when none is here yet.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(buf),
            Transport::Tls(tls) if tls.raw => tls.socket.read(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }

    /// Takes plaintext to send; `WouldBlock` while earlier records still wait for the socket.
    pub fn write_vectored(&mut self, bufs: &[IoSlice]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => send_vectored(socket, bufs),
            Transport::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    /// Writes what TLS has encrypted and not written yet; true once nothing waits.
    pub fn flush_waiting(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(tls) => tls.write_records(),
        }
    }

    /// True while encrypted bytes wait for the socket.
    pub fn waiting(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.session.wants_write(),
        }
    }

    /// The PROXY header is read: TLS starts, with `rest` (what came after the header) as
    /// its first bytes.
    pub fn end_raw(&mut self, rest: &[u8]) -> io::Result<()> {
        let Transport::Tls(tls) = self else {
            return Ok(());
        };
        tls.raw = false;
        let mut rest = rest;
        while !rest.is_empty() {
            tls.session.read_tls(&mut rest)?;
            tls.process()?;
        }
        Ok(())
    }

    /// Best effort before the socket closes: TLS says goodbye (close_notify), so the client
    /// can tell the end from a cut.
    pub fn close_notify(&mut self) {
        if let Transport::Tls(tls) = self {
            tls.session.send_close_notify();
            let _ = tls.write_records();
        }
    }

    /// True once, when the TLS handshake has just finished (for the metrics).
    pub fn handshake_just_finished(&mut self) -> bool {
        match self {
            Transport::Tls(tls) if !tls.counted && !tls.session.is_handshaking() => {
                tls.counted = true;
                true
            }
            _ => false,
        }
    }

    /// True for a TLS connection whose handshake never finished (closed during it).
    pub fn handshake_unfinished(&self) -> bool {
        matches!(self, Transport::Tls(tls) if tls.session.is_handshaking())
    }
}

impl Tls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.reader().read(buf) {
                Ok(n) => return Ok(n),
                // The peer closed without close_notify: for our purposes, an end like any.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.session.read_tls(&mut self.socket) {
                // End of the socket: what is decrypted is read first, then the end.
                Ok(0) => {
                    return match self.session.reader().read(buf) {
                        Ok(n) => Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                        Err(e) => Err(e),
                    };
                }
                Ok(_) => self.process()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Processes the records read; the handshake's answers go out now if the socket takes
    /// them (else when it is writable).
    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.session.process_new_packets() {
            // The alert that says why, if the socket takes it.
            let _ = self.write_records();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        self.write_records().map(|_| ())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice]) -> io::Result<usize> {
        if !self.write_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = self.session.writer().write_vectored(bufs)?;
        self.write_records()?;
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    /// Writes encrypted records until none wait (true) or the socket is full (false).
    fn write_records(&mut self) -> io::Result<bool> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Writes `bufs` to `socket` with the socket's own calls, `send(2)` for one slice and
/// `sendmsg(2)` for more, not `writev(2)`: that one goes through the file layer first (the
/// descriptor's position lock, the permission and change-notification hooks), 4 % of the
/// server's CPU for a private message (`perf`, 2026-12-07). `MSG_NOSIGNAL`: a peer gone is
/// an error here, never a SIGPIPE.
fn send_vectored(socket: &TcpStream, bufs: &[IoSlice]) -> io::Result<usize> {
    let fd = socket.as_raw_fd();
    let sent = match bufs {
        [] => return Ok(0),
        // SAFETY: the slice's pointer and length describe memory borrowed for the call.
        [one] => unsafe { libc::send(fd, one.as_ptr().cast(), one.len(), libc::MSG_NOSIGNAL) },
        _ => {
            // SAFETY: an all-zero msghdr is valid (no address, no control data).
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            // IoSlice is ABI-compatible with iovec on Unix (its documentation says so);
            // sendmsg only reads through the pointer.
            header.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            // Past the kernel's limit sendmsg fails; like `writev` in std, write fewer.
            header.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
            // SAFETY: the header points at `bufs`, borrowed for the call.
            unsafe { libc::sendmsg(fd, &header, libc::MSG_NOSIGNAL) }
        }
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}
