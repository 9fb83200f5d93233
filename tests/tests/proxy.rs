//! `--proxy-protocol`: behind a TCP load balancer, the client's address comes from the PROXY
//! header (HAProxy's v1 and v2) that opens each connection. Every test connects from
//! 127.0.0.1 and names another loopback address in the header, as a balancer would; the
//! server must push to, and check DISCONNECT against, the named one.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use e2e::{decode_push, encode, read_to_close, sent, LineConn, Listener, Server};

fn v1(client: [u8; 4], client_port: u16) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} 127.0.0.1 {client_port} 7000\r\n",
        Ipv4Addr::from(client)
    )
    .into_bytes()
}

fn v2(client: [u8; 4], client_port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&client);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&client_port.to_be_bytes());
    header.extend_from_slice(&7000u16.to_be_bytes());
    header
}

/// One request behind `header`, as a balancer forwards it: header and request in one write.
fn through_balancer(to: SocketAddr, header: &[u8], fields: &[&str]) -> Vec<u8> {
    let fields: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
    let mut stream = TcpStream::connect(to).unwrap();
    stream
        .write_all(&[header, &encode(&fields)].concat())
        .unwrap();
    read_to_close(&mut stream)
}

#[test]
fn pushes_go_to_the_address_the_header_names_and_disconnect_is_checked_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--proxy-protocol"]);
    let to = server.addr();
    for alias in ["ana", "bea"] {
        assert_eq!(
            through_balancer(to, &v1([127, 0, 0, 9], 50000), &["REGISTER", alias]),
            [0]
        );
    }
    // Ana's client is "at" 127.0.0.2 (v1), Bea's at 127.0.0.3 (v2); both listen there only.
    let ana = Listener::start_at([127, 0, 0, 2]);
    let bea = Listener::start_at([127, 0, 0, 3]);
    let ana_port = ana.port_field();
    let bea_port = bea.port_field();
    assert_eq!(
        through_balancer(
            to,
            &v1([127, 0, 0, 2], 41000),
            &["CONNECT", "ana", &ana_port]
        ),
        [0]
    );
    assert_eq!(
        through_balancer(
            to,
            &v2([127, 0, 0, 3], 42000),
            &["CONNECT", "bea", &bea_port]
        ),
        [0]
    );
    assert_eq!(
        through_balancer(
            to,
            &v2([127, 0, 0, 3], 42001),
            &["SEND", "bea", "ana", "hola"]
        ),
        sent(1)
    );
    let push = decode_push(&ana.next());
    assert!(
        matches!(&push, wire::Push::Message { sender, text, .. } if sender == "bea" && text == b"hola"),
        "{push:?}"
    );
    assert!(
        matches!(decode_push(&bea.next()), wire::Push::Ack { id: 1, .. }),
        "the ack goes to Bea's named address"
    );
    // The balancer's own address (127.0.0.1) and another client's are not Ana's.
    assert_eq!(
        through_balancer(to, &v1([127, 0, 0, 3], 43000), &["DISCONNECT", "ana"]),
        [3]
    );
    assert_eq!(
        through_balancer(to, &v1([127, 0, 0, 2], 43001), &["DISCONNECT", "ana"]),
        [0]
    );
    let rows = server
        .db
        .rows("SELECT alias, ip FROM users WHERE connected ORDER BY alias");
    assert_eq!(rows, [[Some("bea".into()), Some("127.0.0.3".into())]]);
}

#[test]
fn a_connection_without_a_valid_header_is_closed_unanswered_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--proxy-protocol"]);
    let to = server.addr();
    // A client that speaks to the node directly, bypassing the balancer.
    assert_eq!(e2e::request(to, &[b"REGISTER", b"ana"]), b"");
    server.stderr.wait_until(
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("does not start with a PROXY protocol header"))
        },
        "the refusal on stderr",
    );
    for bad in [
        &b"PROXY TCP4 127.0.0.2 127.0.0.1 99999 7000\r\n"[..],
        b"PROXY TCP4 127.0.0.2 127.0.0.1 1 7000\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
    ] {
        let mut stream = TcpStream::connect(to).unwrap();
        stream
            .write_all(&[bad, &encode(&[b"REGISTER", b"ana"])].concat())
            .unwrap();
        assert_eq!(
            read_to_close(&mut stream),
            b"",
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // A header cut short by the client's close, and one split over several writes.
    let mut stream = TcpStream::connect(to).unwrap();
    stream.write_all(b"PROXY TCP4 127.0").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut stream), b"");
    let mut stream = TcpStream::connect(to).unwrap();
    stream.set_nodelay(true).unwrap();
    let whole = [v2([127, 0, 0, 2], 1), encode(&[b"REGISTER", b"ana"])].concat();
    for piece in whole.chunks(5) {
        stream.write_all(piece).unwrap();
    }
    assert_eq!(read_to_close(&mut stream), [0]);
    // A LOCAL header (the balancer's health check) leaves the connection's own address.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    assert_eq!(through_balancer(to, local, &["REGISTER", "bea"]), [0]);
    server.stdout.wait_for("s> REGISTER bea OK");
}

#[test]
fn persistent_front_ends_take_the_header_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &["--proxy-protocol"]);
    let mut rooms = LineConn::connect(server.rooms_addr());
    rooms.stream.write_all(&v1([127, 0, 0, 2], 1234)).unwrap();
    rooms.send("JOIN ana");
    assert_eq!(rooms.line(), "OK");
    let mut direct = LineConn::connect(server.rooms_addr());
    direct.send("JOIN bea");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut direct.stream, &mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}
