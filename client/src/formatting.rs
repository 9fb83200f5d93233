//! The call to the formatter web service before every SEND: a plain HTTP/1.1 POST of
//! `text/plain` to `/normalize`, spoken by hand so the client needs no HTTP stack.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Normalises `text` through the service at `base_url` (`http://host:port`).
pub fn normalize(base_url: &str, text: &str) -> io::Result<String> {
    let invalid =
        |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{base_url}: {why}"));
    let authority = base_url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs are supported"))?;
    let authority = authority.trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()
        .or_else(|_| (authority, 80).to_socket_addrs())?
        .next()
        .ok_or_else(|| invalid("no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let request = format!(
        "POST /normalize HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(1 << 20).read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("malformed HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(io::Error::other(format!(
            "{base_url} answered HTTP {status}"
        )));
    }
    String::from_utf8(raw[split + 4..].to_vec()).map_err(|_| invalid("answer is not UTF-8"))
}
