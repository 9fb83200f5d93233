//! The call to the formatter web service before every SEND: an HTTP/1.1 POST of `text/plain`
//! to `/normalize` (over TLS for an `https://` URL), spoken by hand so the client needs no
//! HTTP stack.

use std::io::{self, Read, Write};
use std::time::Duration;

use crate::link;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Normalises `text` through the service at `base_url` (`http://host:port` or
/// `https://host:port`; an https one is verified as `tls` says, or against the system's roots).
pub fn normalize(base_url: &str, text: &str, tls: &link::Tls) -> io::Result<String> {
    let invalid =
        |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{base_url}: {why}"));
    let (authority, tls, default_port) = match base_url.split_once("://") {
        Some(("http", rest)) => (rest, None, 80),
        Some(("https", rest)) => {
            let config = match tls {
                Some(config) => config.clone(),
                None => link::client_config(None).map_err(|e| invalid(&e))?,
            };
            (rest, Some(config), 443)
        }
        _ => return Err(invalid("only http:// and https:// URLs are supported")),
    };
    let authority = authority.trim_end_matches('/');
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| invalid("bad port"))?),
        None => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut stream = link::connect(host, port, &tls, TIMEOUT)?;
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
