//! Encrypted connections (docs/tls.md): every front-end on a TLS port of its own, driven by
//! `openssl s_client` and by our clients; a client given the wrong CA refuses; handshakes that
//! stall and plaintext on a TLS port are closed at their deadline without holding anyone up;
//! SIGHUP loads the certificate again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use e2e::{
    encode, register, request_over_tls, self_signed, ConsoleClient, Formatter, LineConn, SClient,
    Server,
};

/// Our chat or rooms console client (`--chat`, `--rooms`) over TLS to `port`, trusting `ca`.
fn session_client_over_tls(which: &str, port: u16, ca: &str) -> std::process::Child {
    let port = port.to_string();
    e2e::spawn_client(&[which, "-s", "127.0.0.1", "-p", &port, "--tls", "--ca", ca])
}

/// The messenger console client over TLS to `port`, trusting `ca`.
fn console_over_tls(port: u16, formatter: &str, ca: &Path) -> ConsoleClient {
    let port = port.to_string();
    let ca = ca.to_str().unwrap();
    ConsoleClient::start_args(&[
        "--console",
        "-s",
        "127.0.0.1",
        "-p",
        &port,
        "--formatter",
        formatter,
        "--tls",
        "--ca",
        ca,
    ])
}

#[test]
fn every_front_end_speaks_tls_to_openssl_s_client() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server", false);
    let server = Server::start_all_tls(dir.path(), &cert, &key, &[]);

    // The messenger: one request per connection, the answer, then TLS's close.
    let register_ana = [&b"REGISTER"[..], b"ana"];
    assert_eq!(
        request_over_tls(server.tls_port("server"), &cert, &register_ana),
        [0]
    );
    register(&server, "bea");

    // The chat: lines from the first byte.
    let mut chat = SClient::start(server.tls_port("chat"), &cert);
    chat.send(b"CONNECT|ana\n");
    chat.wait_for(b"CONNECT_ACK|OK\nUSER_LIST|ana\n");
    chat.send(b"MESSAGE|bea|por tls\n");
    chat.send(b"BROADCAST|hola a todos\n");
    chat.wait_for(b"BROADCAST|ana|hola a todos\n");
    assert_eq!(server.db.int("SELECT count(*) FROM pending_messages"), 1);

    // The rooms.
    let mut rooms = SClient::start(server.tls_port("rooms"), &cert);
    rooms.send(b"JOIN cid\nROOM Sala1\nMESSAGE hola\n");
    rooms.wait_for(b"OK\nTe has unido a la sala Sala1.\n");
    let mut plain = LineConn::rooms(&server, "dan");
    plain.send("ROOM Sala1");
    plain.until_prefix("Te has unido");
    rooms.send(b"MESSAGE por tls\n");
    plain.until("cid: por tls");
    rooms.wait_for(b"dan se ha unido a la sala.\n");

    // The canvas: length-prefixed JSON frames, the whole board at once.
    let mut canvas = SClient::start(server.tls_port("canvas"), &cert);
    let body = br#"{"comando": "nuevo"}"#;
    let mut frame = (body.len() as u64).to_le_bytes()[..5].to_vec();
    frame.extend_from_slice(body);
    canvas.send(&frame);
    canvas.wait_for(br#""49": {"0": "white""#);
    drop((chat, rooms, canvas));
}

#[test]
fn our_clients_speak_tls_and_refuse_a_certificate_they_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server", true);
    let (other, _) = self_signed(dir.path(), "other", true);
    let server = Server::start_all_tls(dir.path(), &cert, &key, &[]);
    let formatter = Formatter::start();
    let ca = cert.to_str().unwrap();

    // The messenger console, over TLS to the messenger's TLS port.
    let tls_port = server.tls_port("server");
    let mut ana = console_over_tls(tls_port, &formatter.url(), &cert);
    ana.run("REGISTER ana", "REGISTER OK");
    register(&server, "bea");
    let bea = e2e::connect(&server, "bea");
    ana.run("CONNECT ana", "CONNECT OK");
    // Its listener speaks TLS, pinned through the CONNECTTLS it made over TLS.
    let pin = server
        .db
        .text("SELECT listener_pin FROM users WHERE alias = 'ana'");
    assert_eq!(pin.len(), 64);
    assert_eq!(
        server.call(&["SEND", "bea", "ana", "hola ana"]),
        e2e::sent(1)
    );
    ana.wait_for("MESSAGE 1 FROM bea\nhola ana\nEND\n");
    assert_eq!(
        bea.next(),
        encode(&[b"SEND MESS ACK", b"1"]),
        "read, over TLS"
    );
    ana.run("SEND bea cifrado", "SEND OK - MESSAGE 1");
    assert_eq!(
        bea.next(),
        encode(&[b"SEND MESSAGE", b"ana", b"1", b"cifrado"])
    );
    ana.run("DISCONNECT ana", "DISCONNECT OK");
    assert_eq!(ana.finish(), Some(0));

    // The chat console.
    let mut watcher = LineConn::chat(&server, "watcher");
    let mut chat = session_client_over_tls("--chat", server.tls_port("chat"), ca);
    writeln!(chat.stdin.take().unwrap(), "cid\nhola por tls").unwrap();
    assert_eq!(
        watcher.until_prefix("BROADCAST|"),
        "BROADCAST|cid|hola por tls"
    );
    let out = chat.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Conectado exitosamente\n"));

    // The rooms console.
    let mut rooms = session_client_over_tls("--rooms", server.tls_port("rooms"), ca);
    writeln!(rooms.stdin.take().unwrap(), "dan\nQUIT").unwrap();
    let out = rooms.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Te has unido como dan."));

    // Another certificate as the CA: refused, and stderr says why.
    let other_ca = other.to_str().unwrap();
    let mut wrong = session_client_over_tls("--chat", server.tls_port("chat"), other_ca);
    drop(wrong.stdin.take());
    let out = wrong.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not verify"), "{stderr}");
    // The messenger console says so on stderr, and FAIL on stdout.
    let mut refused = console_over_tls(tls_port, &formatter.url(), &other);
    refused.run("REGISTER eve", "REGISTER FAIL");
    refused.stderr.wait_until(
        |lines| lines.iter().any(|l| l.contains("does not verify")),
        "a line saying the certificate does not verify",
    );
}

/// 300 connections that stall in their handshake (or send plaintext to a TLS port) hold
/// nobody up, and each is closed at its deadline.
#[test]
fn stalled_handshakes_and_plaintext_are_closed_at_their_deadline_delaying_nobody() {
    e2e::raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server", true);
    let server = Server::start_all_tls(dir.path(), &cert, &key, &["--idle-timeout-ms", "1500"]);
    let chat_tls = server.tls_port("chat");
    let mut stalled = Vec::new();
    for n in 0..300 {
        let mut stream = TcpStream::connect(("127.0.0.1", chat_tls)).unwrap();
        if n % 3 == 0 {
            // Half a ClientHello: a record header promising more.
            stream
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .unwrap();
        } else if n % 3 == 1 {
            // Plaintext, as an original client would send to the wrong port.
            stream.write_all(b"CONNECT|ana").unwrap();
        }
        stalled.push(stream);
    }
    // Meanwhile TLS and plaintext clients are served as usual.
    let mut chat = SClient::start(chat_tls, &cert);
    chat.send(b"CONNECT|zoe\n");
    chat.wait_for(b"CONNECT_ACK|OK\n");
    drop(LineConn::chat(&server, "yan"));
    // Every stalled connection ends: closed, with at most a TLS alert first.
    for mut stream in stalled {
        stream.set_read_timeout(Some(e2e::PATIENCE)).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            rest.len() < 64,
            "{} bytes to a stalled handshake",
            rest.len()
        );
    }
    // The TLS client still works after them.
    chat.send(b"BROADCAST|sigo\n");
    chat.wait_for(b"BROADCAST|zoe|sigo\n");
}

#[test]
fn sighup_loads_the_certificate_again_and_a_bad_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (first, first_key) = self_signed(dir.path(), "first", true);
    let (second, second_key) = self_signed(dir.path(), "second", false);
    let cert = dir.path().join("in-use.pem");
    let key = dir.path().join("in-use.key");
    std::fs::copy(&first, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let server = Server::start_all_tls(dir.path(), &cert, &key, &[]);
    let port = server.tls_port("server");
    let register_over_tls =
        |name: &str, ca: &Path| request_over_tls(port, ca, &[b"REGISTER", name.as_bytes()]);
    assert_eq!(register_over_tls("ana", &first), [0]);
    // An established session goes on across the reload.
    let mut session = SClient::start(server.tls_port("chat"), &first);
    session.send(b"CONNECT|zoe\n");
    session.wait_for(b"CONNECT_ACK|OK\n");

    std::fs::copy(&second, &cert).unwrap();
    std::fs::copy(&second_key, &key).unwrap();
    server.signal(libc::SIGHUP);
    server.stderr.wait_until(
        |lines| {
            lines
                .iter()
                .any(|l| l.ends_with("SIGHUP: TLS certificate and key loaded again"))
        },
        "the reload",
    );
    assert_eq!(
        register_over_tls("bea", &second),
        [0],
        "the new certificate"
    );
    assert_eq!(
        register_over_tls("cid", &first),
        Vec::<u8>::new(),
        "not the old one"
    );
    session.send(b"BROADCAST|sigo\n");
    session.wait_for(b"BROADCAST|zoe|sigo\n");

    // A file that does not load: the pair in use stays, and stderr names the file.
    std::fs::write(&cert, b"not a certificate").unwrap();
    server.signal(libc::SIGHUP);
    server.stderr.wait_until(
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("kept the TLS certificate in use") && l.contains("in-use.pem"))
        },
        "the reload's failure, naming the file",
    );
    assert_eq!(register_over_tls("dan", &second), [0], "still the second");
}

/// What a TCP stream received, as it came off the wire.
struct Recorded {
    stream: TcpStream,
    wire: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Read for Recorded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.wire.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Recorded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// A TLS server configuration for `cert` (one certificate) and `key`.
fn server_config(cert: &Path, key: &Path) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_file(cert).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(client::link::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    std::sync::Arc::new(config)
}

/// What a recording listener saw: the bytes off the wire, and the plaintext.
type Seen = std::thread::JoinHandle<(Vec<u8>, Vec<u8>)>;

/// A listener over TLS with `cert`/`key`, as our client runs when it connects over TLS:
/// returns its port, and a thread that gives back what it saw.
fn recording_tls_listener(cert: &Path, key: &Path) -> (u16, Seen) {
    let config = server_config(cert, key);
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let (stream, _) = socket.accept().unwrap();
        stream.set_read_timeout(Some(e2e::PATIENCE)).unwrap();
        let wire = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = Recorded {
            stream,
            wire: wire.clone(),
        };
        let session = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(session, recorded);
        let mut plaintext = Vec::new();
        // Until the server's close_notify.
        let _ = tls.read_to_end(&mut plaintext);
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let wire = wire.lock().unwrap().clone();
        (wire, plaintext)
    });
    (port, thread)
}

/// The messenger's pushes to a client connected over TLS go over TLS, to the certificate its
/// CONNECTTLS pinned: what crosses the wire carries no message text.
#[test]
fn pushes_to_a_listener_pinned_over_tls_carry_no_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server", true);
    let (listener_cert, listener_key) = self_signed(dir.path(), "listener", true);
    let server = Server::start_all_tls(dir.path(), &cert, &key, &[]);
    register(&server, "ana");
    register(&server, "bea");
    let pin: String = {
        use rustls::pki_types::pem::PemObject;
        use sha2::Digest;
        let der = rustls::pki_types::CertificateDer::from_pem_file(&listener_cert).unwrap();
        sha2::Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let (port, listener) = recording_tls_listener(&listener_cert, &listener_key);
    let port = port.to_string();
    let connect = [&b"CONNECTTLS"[..], b"ana", port.as_bytes(), pin.as_bytes()];
    // Announced in clear, a pin could be anybody's.
    assert_eq!(server.request(&connect), [3]);
    let messenger = server.tls_port("server");
    assert_eq!(request_over_tls(messenger, &cert, &connect), [0]);
    assert_eq!(
        server.call(&["SEND", "bea", "ana", "secreto 4242 solo para ana"]),
        e2e::sent(1)
    );
    let (wire, plaintext) = listener.join().unwrap();
    assert_eq!(
        plaintext,
        encode(&[b"SEND MESSAGE", b"bea", b"1", b"secreto 4242 solo para ana"])
    );
    let needle = b"secreto 4242";
    assert!(
        !wire.windows(needle.len()).any(|w| w == needle),
        "clear text on the wire"
    );
    assert!(
        wire.len() > plaintext.len(),
        "{} bytes on the wire",
        wire.len()
    );
    server.stdout.wait_for("s> SEND MESSAGE 1 FROM bea TO ana");

    // A listener with another certificate than the pin is not pushed to.
    let (other_port, other) = recording_tls_listener(&cert, &key);
    let other_port = other_port.to_string();
    let disconnect = [&b"DISCONNECT"[..], b"ana"];
    assert_eq!(request_over_tls(messenger, &cert, &disconnect), [0]);
    let connect = [
        &b"CONNECTTLS"[..],
        b"ana",
        other_port.as_bytes(),
        pin.as_bytes(),
    ];
    assert_eq!(request_over_tls(messenger, &cert, &connect), [0]);
    assert_eq!(
        server.call(&["SEND", "bea", "ana", "no para otro"]),
        e2e::sent(2)
    );
    let (_, plaintext) = other.join().unwrap();
    assert!(
        plaintext.is_empty(),
        "pushed to a certificate it did not pin"
    );
    assert_eq!(
        server.db.int("SELECT count(*) FROM pending_messages"),
        1,
        "it waits"
    );
}

/// Behind HAProxy in TCP mode (`send-proxy`), the PROXY header comes in clear before the
/// handshake: the server takes the client's address from it, then speaks TLS.
#[test]
fn a_proxy_header_before_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server", true);
    let server = Server::start_all_tls(
        dir.path(),
        &cert,
        &key,
        &["--proxy-protocol", "--max-new-names-per-minute", "1"],
    );
    // Our clients' configuration, trusting the certificate.
    let config = client::link::client_config(Some(&cert)).unwrap();
    let register_from = |client: &str, name: &str| {
        let mut stream = TcpStream::connect(("127.0.0.1", server.tls_port("server"))).unwrap();
        stream.set_read_timeout(Some(e2e::PATIENCE)).unwrap();
        let header = format!("PROXY TCP4 {client} 127.0.0.1 40000 8889\r\n");
        stream.write_all(header.as_bytes()).unwrap();
        let host = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let session = rustls::ClientConnection::new(config.clone(), host).unwrap();
        let mut tls = rustls::StreamOwned::new(session, stream);
        tls.write_all(&encode(&[b"REGISTER", name.as_bytes()]))
            .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer);
        answer
    };
    // One new name a minute per client address: the addresses are the headers'.
    assert_eq!(register_from("203.0.113.7", "ana"), [0]);
    assert_eq!(register_from("198.51.100.1", "bea"), [0]);
    assert_eq!(register_from("203.0.113.7", "cid"), [2]);
}

/// The messenger clients reach an `https://` formatter too, verified against `--ca`.
#[test]
fn the_console_client_calls_an_https_formatter() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server", true);
    let server = Server::start_all_tls(dir.path(), &cert, &key, &[]);
    // A formatter behind TLS, as a proxy would serve it: it answers one request.
    let config = server_config(&cert, &key);
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let https = format!("https://127.0.0.1:{}", socket.local_addr().unwrap().port());
    let formatter = std::thread::spawn(move || {
        let (stream, _) = socket.accept().unwrap();
        stream.set_read_timeout(Some(e2e::PATIENCE)).unwrap();
        let session = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(session, stream);
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.ends_with(b"hola   mundo") {
            let n = tls.read(&mut chunk).unwrap();
            assert!(n > 0, "the request ended early");
            request.extend_from_slice(&chunk[..n]);
        }
        let body = "hola mundo (https)";
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(answer.as_bytes()).unwrap();
        tls.conn.send_close_notify();
        let _ = tls.flush();
        String::from_utf8_lossy(&request).into_owned()
    });
    register(&server, "bea");
    let bea = e2e::connect(&server, "bea");
    let mut ana = console_over_tls(server.tls_port("server"), &https, &cert);
    ana.run("REGISTER ana", "REGISTER OK");
    ana.run("CONNECT ana", "CONNECT OK");
    ana.run("SEND bea hola   mundo", "SEND OK - MESSAGE 1");
    assert!(formatter
        .join()
        .unwrap()
        .starts_with("POST /normalize HTTP/1.1\r\n"));
    assert_eq!(
        bea.next(),
        encode(&[b"SEND MESSAGE", b"ana", b"1", b"hola mundo (https)"])
    );
}
