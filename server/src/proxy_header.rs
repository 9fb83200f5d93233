//! The PROXY protocol header (HAProxy's versions 1 and 2) that a TCP load balancer writes at the
//! start of each connection it forwards: it names the client's real address, which the
//! messenger needs (pushes go to the client's IP, DISCONNECT is allowed only from it).
//!
//! With `--proxy-protocol`, every connection must begin with one; the front-end sees the bytes
//! after it, and the connection's peer becomes the address it names. A connection without a
//! valid header is closed: a server behind a balancer must not take a client's word, or the
//! balancer's own address, for who is asking.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's fixed first twelve bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's first bytes.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Version 1's longest line, `\r\n` included (the specification's figure).
const V1_MAX: usize = 107;
/// The longest header accepted, of either version: version 2's fixed part and its addresses
/// with room for the TLVs HAProxy adds. Longer ones are refused rather than buffered.
pub const MAX_HEADER: usize = 536;

/// What the first bytes of a connection amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// More bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes. `source` is the client's address, or None when the
    /// header names none (v1 `UNKNOWN`, v2 `LOCAL` such as the balancer's health checks, or an
    /// address family other than TCP over IPv4 or IPv6): the connection's own peer stands.
    Complete {
        len: usize,
        source: Option<SocketAddr>,
    },
    Invalid(String),
}

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Header {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Header::Incomplete
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return if n < V1_PREFIX.len() {
            Header::Incomplete
        } else {
            parse_v1(buf)
        };
    }
    Header::Invalid("the connection does not start with a PROXY protocol header".into())
}

/// `PROXY TCP4 SRC DST SPORT DPORT\r\n`, `PROXY TCP6 ...` or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(buf: &[u8]) -> Header {
    let Some(end) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Header::Invalid(format!("PROXY v1 line longer than {V1_MAX} bytes"))
        } else {
            Header::Incomplete
        };
    };
    let len = end + 1;
    let Some(line) = buf[..end].strip_suffix(b"\r") else {
        return Header::Invalid("PROXY v1 line does not end in \\r\\n".into());
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return Header::Invalid("PROXY v1 line is not text".into());
    };
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.get(1).copied() {
        Some("UNKNOWN") => Header::Complete { len, source: None },
        Some(family @ ("TCP4" | "TCP6")) => {
            let [_, _, source, destination, source_port, destination_port] = fields[..] else {
                return Header::Invalid(format!("PROXY v1 {family} line needs four fields"));
            };
            let ip = match (
                family,
                source.parse::<IpAddr>(),
                destination.parse::<IpAddr>(),
            ) {
                ("TCP4", Ok(ip @ IpAddr::V4(_)), Ok(IpAddr::V4(_)))
                | ("TCP6", Ok(ip @ IpAddr::V6(_)), Ok(IpAddr::V6(_))) => ip,
                _ => {
                    return Header::Invalid(format!("PROXY v1 {family} addresses are not {family}"))
                }
            };
            match (v1_port(source_port), v1_port(destination_port)) {
                (Some(port), Some(_)) => Header::Complete {
                    len,
                    source: Some(SocketAddr::new(ip, port)),
                },
                _ => Header::Invalid("PROXY v1 port is not a number from 0 to 65535".into()),
            }
        }
        _ => Header::Invalid("PROXY v1 line names no known protocol".into()),
    }
}

/// A v1 port: decimal digits, no sign, no leading zero.
fn v1_port(text: &str) -> Option<u16> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// The signature, a version-and-command byte, a family byte, a big-endian length, then that
/// many bytes of addresses and TLVs.
fn parse_v2(buf: &[u8]) -> Header {
    if buf.len() < 16 {
        return Header::Incomplete;
    }
    let (version_command, family) = (buf[12], buf[13]);
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if version_command >> 4 != 2 {
        return Header::Invalid(format!(
            "PROXY v2 header of version {}",
            version_command >> 4
        ));
    }
    if len > MAX_HEADER {
        return Header::Invalid(format!(
            "PROXY v2 header of {len} bytes (at most {MAX_HEADER} are accepted)"
        ));
    }
    if buf.len() < len {
        return Header::Incomplete;
    }
    let body = &buf[16..len];
    match version_command & 0x0f {
        // LOCAL: the balancer's own connection (a health check); no client behind it.
        0 => Header::Complete { len, source: None },
        1 => {
            let source = match family {
                // TCP over IPv4: source, destination, source port, destination port.
                0x11 if body.len() >= 12 => Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&body[..4]).expect("4"))),
                    u16::from_be_bytes([body[8], body[9]]),
                )),
                0x21 if body.len() >= 36 => Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(
                        <[u8; 16]>::try_from(&body[..16]).expect("16"),
                    )),
                    u16::from_be_bytes([body[32], body[33]]),
                )),
                0x11 | 0x21 => {
                    return Header::Invalid("PROXY v2 addresses shorter than their family".into())
                }
                // UNSPEC, UDP, unix sockets: nothing a push could reach.
                _ => None,
            };
            Header::Complete { len, source }
        }
        command => Header::Invalid(format!("PROXY v2 command {command}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(family);
        header.extend_from_slice(&(body.len() as u16).to_be_bytes());
        header.extend_from_slice(body);
        header
    }

    #[test]
    fn version_1_names_the_client_of_tcp4_and_tcp6_and_waits_for_its_line_end() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 8080\r\nREGISTER\0";
        for cut in 0..42 {
            assert_eq!(parse(&line[..cut]), Header::Incomplete, "cut at {cut}");
        }
        assert_eq!(
            parse(line),
            Header::Complete {
                len: 42,
                source: Some("192.0.2.7:40000".parse().unwrap())
            }
        );
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 5 80\r\n";
        assert_eq!(
            parse(line),
            Header::Complete {
                len: line.len(),
                source: Some("[2001:db8::7]:5".parse().unwrap())
            }
        );
        let line = b"PROXY UNKNOWN whatever\r\n";
        assert_eq!(
            parse(line),
            Header::Complete {
                len: line.len(),
                source: None
            }
        );
    }

    #[test]
    fn version_1_refuses_what_is_not_exactly_its_format() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 8080\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 040 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +4 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 4\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 4 2\r\n",
            b"REGISTER\0ana\0",
            b"\0",
        ] {
            assert!(
                matches!(parse(bad), Header::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert!(matches!(parse(&endless), Header::Invalid(_)));
    }

    #[test]
    fn version_2_names_the_client_of_tcp_over_ipv4_and_ipv6_and_skips_tlvs() {
        let mut body = vec![192, 0, 2, 7, 10, 0, 0, 1];
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&8080u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0, 2, b'n', b'o']); // a TLV
        let header = v2(1, 0x11, &body);
        for cut in 0..header.len() {
            assert_eq!(parse(&header[..cut]), Header::Incomplete, "cut at {cut}");
        }
        let with_request = [header.as_slice(), b"REGISTER\0"].concat();
        assert_eq!(
            parse(&with_request),
            Header::Complete {
                len: header.len(),
                source: Some("192.0.2.7:40000".parse().unwrap())
            }
        );
        let mut body = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&[0, 5, 0, 80]);
        assert_eq!(
            parse(&v2(1, 0x21, &body)),
            Header::Complete {
                len: 16 + 36,
                source: Some("[2001:db8::7]:5".parse().unwrap())
            }
        );
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Header::Complete {
                len: 16,
                source: None
            }
        );
    }

    #[test]
    fn version_2_refuses_other_versions_commands_short_addresses_and_huge_headers() {
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(parse(&wrong_version), Header::Invalid(_)));
        assert!(matches!(parse(&v2(2, 0x11, &[0; 12])), Header::Invalid(_)));
        assert!(matches!(parse(&v2(1, 0x11, &[0; 11])), Header::Invalid(_)));
        // Refused from its fixed part alone: its body is never waited for.
        let huge = v2(1, 0x11, &[0; MAX_HEADER]);
        assert!(matches!(parse(&huge[..16]), Header::Invalid(_)));
    }
}
