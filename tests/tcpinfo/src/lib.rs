//! What the kernel counts for a TCP connection, read from the client's side with
//! `getsockopt(TCP_INFO)`: how many writes a server needed to send something, seen where it
//! arrives. Over loopback a server's write of up to 64 KiB arrives as one data segment
//! (nothing is lost, nothing is coalesced), whichever system call made it: `write`,
//! `writev`, `send` or `sendmsg`, TLS or not; `/proc/PID/io`'s `syscw` counts only the first
//! two.

use std::io;
use std::os::fd::AsRawFd;

/// `tcpi_data_segs_in`'s offset in the kernel's `struct tcp_info` (Linux 4.6 and later;
/// the `libc` crate's struct stops before it).
const DATA_SEGS_IN: usize = 152;

/// Segments with data that `socket` has received since it was connected.
pub fn data_segments_received(socket: &impl AsRawFd) -> io::Result<u32> {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info` and sets `len` to how many.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let field = info
        .get(DATA_SEGS_IN..DATA_SEGS_IN + 4)
        .filter(|_| len as usize >= DATA_SEGS_IN + 4)
        .ok_or_else(|| io::Error::other("the kernel's TCP_INFO has no tcpi_data_segs_in"))?;
    Ok(u32::from_ne_bytes(field.try_into().expect("four bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn each_write_over_loopback_arrives_as_one_data_segment() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.set_nodelay(true).unwrap();
        let before = data_segments_received(&client).unwrap();
        let mut got = [0u8; 5];
        for _ in 0..3 {
            server.write_all(b"hello").unwrap();
            // Read before the next write, so that no two writes can travel together.
            client.read_exact(&mut got).unwrap();
        }
        assert_eq!(data_segments_received(&client).unwrap() - before, 3);
        assert_eq!(data_segments_received(&server).unwrap(), 0);
    }
}
