//! Accounts (docs/accounts.md): a name with a password belongs to whoever knows it, on every
//! front-end, against the real binary with raw bytes. One test per finding of the attacker's
//! try-out: another address took an offline user's name on the chat and read their mail,
//! locked the real user out meanwhile, and unregistered them; a chat session outlived its
//! user's UNREGISTER.

use std::net::Ipv4Addr;
use std::time::Duration;

use std::io::Write;

use e2e::{register, request_from, sent, ConsoleClient, Formatter, LineConn, Listener, Server};

const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const HOME: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// `AUTH alias password` before a messenger request.
fn with_auth<'a>(alias: &'a str, password: &'a str, request: &[&'a str]) -> Vec<&'a str> {
    let mut fields = vec!["AUTH", alias, password];
    fields.extend_from_slice(request);
    fields
}

/// Registers `alias` through the messenger with `password` (a claim in one step).
fn register_with_password(server: &Server, alias: &str, password: &str) {
    let fields = with_auth(alias, password, &["REGISTER", alias]);
    assert_eq!(
        server.call(&fields),
        [0],
        "REGISTER {alias} with a password"
    );
}

/// Waits until every chat or rooms session of `name` has ended on the server (its console
/// shows as many logouts as logins): a login right after a session closed its connection
/// would otherwise find the name still taken.
fn settled(server: &Server, name: &str) {
    let logins = [
        format!("s> CHAT LOGIN {name} OK"),
        format!("s> ROOMS JOIN {name} OK"),
    ];
    let logouts = [
        format!("s> CHAT LOGOUT {name}"),
        format!("s> ROOMS LOGOUT {name}"),
    ];
    server.stdout.wait_until(
        |lines| {
            let count = |of: &[String; 2]| lines.iter().filter(|l| of.contains(l)).count();
            count(&logins) == count(&logouts)
        },
        &format!("the sessions of {name} to end"),
    );
}

fn chat_attempt(server: &Server, connect: &str) -> Result<LineConn, String> {
    LineConn::chat_login(LineConn::connect(server.chat_addr()), connect)
}

fn rooms_attempt(server: &Server, join: &str) -> String {
    rooms_attempt_from(HOME, server, join)
}

/// An attacker's attempts come from elsewhere: failures are throttled by address, and the
/// real user's come from home.
fn chat_attempt_from(source: Ipv4Addr, server: &Server, connect: &str) -> Result<LineConn, String> {
    let stream = e2e::connect_from(source, server.chat_addr());
    LineConn::chat_login(LineConn::over(stream), connect)
}

fn rooms_attempt_from(source: Ipv4Addr, server: &Server, join: &str) -> String {
    let mut conn = LineConn::over(e2e::connect_from(source, server.rooms_addr()));
    conn.send(join);
    conn.line()
}

/// A messenger request from elsewhere.
fn call_from(source: Ipv4Addr, server: &Server, fields: &[&str]) -> Vec<u8> {
    let fields: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
    request_from(source, server.addr(), &fields)
}

/// Finding: with bob offline, `CONNECT|bob` from anywhere received every message waiting for
/// him. Now a protected name is refused on every front-end without its password, and what
/// waits stays for the real bob.
#[test]
fn a_protected_name_is_refused_everywhere_without_its_password_and_its_mail_waits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    register_with_password(&server, "bob", "s3creto largo");
    register(&server, "ana");
    assert_eq!(server.call(&["SEND", "ana", "bob", "para bob"]), sent(1));

    // The chat: the original client's failure exactly, and ours with the reason.
    let chat = |connect: &str| chat_attempt_from(ELSEWHERE, &server, connect).err();
    assert_eq!(chat("CONNECT|bob").as_deref(), Some("CONNECT_ACK|FAIL"));
    assert_eq!(
        chat("CONNECT|bob|adivino").as_deref(),
        Some("CONNECT_ACK|FAIL|Contraseña incorrecta")
    );
    // The rooms.
    let rooms = |join: &str| rooms_attempt_from(ELSEWHERE, &server, join);
    assert_eq!(rooms("JOIN bob"), "ERROR: Se necesita contraseña.");
    assert_eq!(rooms("JOIN bob adivino"), "ERROR: Contraseña incorrecta.");
    // The messenger: CONNECT (which would deliver), SEND, DISCONNECT, UNREGISTER as bob.
    // (Past five failures the attacker's address is throttled: the answers stay failures.)
    let listener = Listener::start_at([127, 0, 0, 2]);
    let port = listener.port_field();
    let call = |fields: &[&str]| call_from(ELSEWHERE, &server, fields);
    assert_eq!(call(&["CONNECT", "bob", &port]), [3]);
    assert_eq!(
        call(&with_auth("bob", "adivino", &["CONNECT", "bob", &port])),
        [3]
    );
    assert_eq!(call(&["SEND", "bob", "ana", "soy bob"]), [2]);
    assert_eq!(call(&["UNREGISTER", "bob"]), [2]);
    assert_eq!(call(&["DISCONNECT", "bob"]), [3]);
    // AUTH for another name than the one acted as proves nothing.
    register_with_password(&server, "eve", "de eve");
    assert_eq!(
        call(&with_auth("eve", "de eve", &["SEND", "bob", "ana", "x"])),
        [2]
    );
    listener.expect_none(Duration::from_millis(300));

    // The real bob, with his password, gets what waited for him, in the chat.
    let mut bob = chat_attempt(&server, "CONNECT|bob|s3creto largo").expect("bob's login");
    assert_eq!(bob.until_prefix("MESSAGE|"), "MESSAGE|ana|para bob");
    // Acting as himself in the messenger needs it each time (a verified one is remembered).
    assert_eq!(
        server.call(&with_auth(
            "bob",
            "s3creto largo",
            &["SEND", "bob", "ana", "hola"]
        )),
        sent(1)
    );
    assert_eq!(
        server.call(&with_auth(
            "bob",
            "s3creto largo",
            &["SEND", "bob", "ana", "otra"]
        )),
        sent(2)
    );
    assert!(server
        .stderr
        .snapshot()
        .iter()
        .any(|l| l.contains("wrong_password")));
}

/// A login that brings a password for a name never seen before claims it; the database holds
/// an argon2id hash of it and never the password itself.
#[test]
fn a_new_name_is_claimed_by_its_first_password_which_is_stored_only_as_a_hash() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let password = "contraseña-única-7f3a";
    let chat = chat_attempt(&server, &format!("CONNECT|neo|{password}")).expect("claim");
    drop(chat);
    settled(&server, "neo");
    assert_eq!(
        rooms_attempt(&server, &format!("JOIN trin {password}x")),
        "OK"
    );
    // The claimed names now need their passwords.
    assert_eq!(
        rooms_attempt(&server, "JOIN neo"),
        "ERROR: Se necesita contraseña."
    );
    assert!(chat_attempt(&server, "CONNECT|trin").is_err());
    let stored = format!(
        "{:?}",
        server.db.rows("SELECT alias, password_hash FROM users")
    );
    assert!(
        stored.contains("$argon2id$v=19$m=19456,t=2,p=1$"),
        "hashes are stored"
    );
    assert!(!stored.contains("contraseña-única"), "no password in clear");
    if let Some(bytes) = server.db.file_bytes() {
        let needle = password.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the database file holds the password in clear"
        );
    }
}

/// A password given for a name that exists without one claims nothing (whoever uses the
/// name may be its user); its user claims it from inside their own session.
#[test]
fn an_existing_name_is_claimed_only_by_its_user_present() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    register(&server, "bob");
    drop(chat_attempt(&server, "CONNECT|bob|mía").expect("an open name logs in"));
    settled(&server, "bob");
    // Not claimed: the name still logs in without a password, and the attacker's claim
    // through the messenger fails while bob is not there to make it.
    let mut bob = chat_attempt(&server, "CONNECT|bob").expect("still open");
    let attack = request_from(
        ELSEWHERE,
        server.addr(),
        &[b"SETPASSWORD", b"bob", b"tomada"],
    );
    assert_eq!(attack, [2]);
    // Bob claims it from his session; the chat answers in our extension's words.
    bob.send("PASSWORD|de bob");
    assert_eq!(bob.until_prefix("PASSWORD_ACK|"), "PASSWORD_ACK|OK");
    drop(bob);
    settled(&server, "bob");
    assert!(chat_attempt(&server, "CONNECT|bob").is_err());
    let mut bob = chat_attempt(&server, "CONNECT|bob|de bob").expect("with it");
    // And may remove it again.
    bob.send("PASSWORD|");
    assert_eq!(bob.until_prefix("PASSWORD_ACK|"), "PASSWORD_ACK|OK");
    drop(bob);
    settled(&server, "bob");
    drop(chat_attempt(&server, "CONNECT|bob").expect("open again"));

    // A messenger user connected from an address claims the name from that address.
    register(&server, "ana");
    let listener = Listener::start();
    assert_eq!(
        server.call(&["CONNECT", "ana", &listener.port_field()]),
        [0]
    );
    assert_eq!(server.call(&["SETPASSWORD", "ana", "de ana"]), [0]);
    assert_eq!(
        server.call(&["DISCONNECT", "ana"]),
        [3],
        "now it takes the password"
    );
    assert_eq!(
        server.call(&with_auth("ana", "de ana", &["DISCONNECT", "ana"])),
        [0]
    );
    // Changing it takes the current one.
    assert_eq!(server.call(&["SETPASSWORD", "ana", "otra"]), [2]);
    assert_eq!(
        server.call(&with_auth("ana", "de ana", &["SETPASSWORD", "ana", "otra"])),
        [0]
    );
    assert_eq!(rooms_attempt(&server, "JOIN ana otra"), "OK");
}

/// `--require-passwords`: no name without a password logs in or registers; the original
/// clients get their usual failures; a name claimed with a password works.
#[test]
fn required_passwords_refuse_every_name_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &["--require-passwords"]);
    assert_eq!(server.call(&["REGISTER", "ana"]), [2]);
    assert_eq!(
        chat_attempt(&server, "CONNECT|ana").err().as_deref(),
        Some("CONNECT_ACK|FAIL")
    );
    assert_eq!(
        rooms_attempt(&server, "JOIN ana"),
        "ERROR: Se necesita contraseña."
    );
    register_with_password(&server, "bea", "de bea");
    assert_eq!(rooms_attempt(&server, "JOIN bea de bea"), "OK");
    assert_eq!(
        rooms_attempt(&server, "JOIN cid de cid"),
        "OK",
        "a claim in one step"
    );
    let listener = Listener::start();
    let port = listener.port_field();
    settled(&server, "bea");
    assert_eq!(
        server.call(&with_auth("bea", "de bea", &["CONNECT", "bea", &port])),
        [0]
    );
}

/// Guessing: after five failures in a row for a name from one address, that address waits
/// (refused at once, whatever it sends), while the owner from elsewhere and everybody else
/// log in as usual.
#[test]
fn guessing_is_throttled_per_address_without_slowing_anyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    register_with_password(&server, "bob", "la buena");
    let guess = |password: &str| {
        let stream = e2e::connect_from(ELSEWHERE, server.chat_addr());
        LineConn::chat_login(LineConn::over(stream), &format!("CONNECT|bob|{password}"))
    };
    for n in 0..5 {
        let refused = guess(&format!("mala{n}")).err().expect("a wrong password");
        assert_eq!(refused, "CONNECT_ACK|FAIL|Contraseña incorrecta");
    }
    // Even the right password waits now, from there.
    assert_eq!(
        guess("la buena").err().as_deref(),
        Some("CONNECT_ACK|FAIL|Demasiados intentos fallidos; espera")
    );
    // The owner from home, and others anywhere, are not held up.
    let home = e2e::connect_from(HOME, server.chat_addr());
    drop(LineConn::chat_login(LineConn::over(home), "CONNECT|bob|la buena").expect("owner"));
    drop(chat_attempt(&server, "CONNECT|zoe").expect("another user"));
    settled(&server, "bob");
    // The wait passes (a second after the fifth failure).
    let mut tries = 0;
    loop {
        match guess("la buena") {
            Ok(_) => break,
            Err(e) if e.contains("espera") && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("still refused: {e}"),
        }
    }
    let metrics = server.stderr.snapshot().join("\n");
    assert!(
        metrics.contains("(5 in a row)"),
        "failures are logged with their count"
    );
}

/// Finding: `UNREGISTER bob` from an address bob never used deleted him; a chat session
/// whose user was unregistered stayed open as a ghost that could still broadcast.
#[test]
fn unregister_and_disconnect_of_a_present_user_only_from_its_address_ending_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    // A messenger user connected from 127.0.0.1.
    register(&server, "ana");
    let listener = Listener::start();
    assert_eq!(
        server.call(&["CONNECT", "ana", &listener.port_field()]),
        [0]
    );
    assert_eq!(
        request_from(ELSEWHERE, server.addr(), &[b"UNREGISTER", b"ana"]),
        [2]
    );
    assert_eq!(
        request_from(ELSEWHERE, server.addr(), &[b"DISCONNECT", b"ana"]),
        [3]
    );
    // A chat user, and a rooms user in a room.
    let mut bob = chat_attempt(&server, "CONNECT|bob").unwrap();
    let mut cid = LineConn::rooms(&server, "cid");
    cid.send("ROOM Sala1");
    cid.until_prefix("Te has unido");
    assert_eq!(
        request_from(ELSEWHERE, server.addr(), &[b"UNREGISTER", b"bob"]),
        [2]
    );
    assert_eq!(
        request_from(ELSEWHERE, server.addr(), &[b"DISCONNECT", b"cid"]),
        [3]
    );
    bob.send("BROADCAST|sigo aquí");
    assert_eq!(bob.until_prefix("BROADCAST|"), "BROADCAST|bob|sigo aquí");
    // From their own address: done, and the sessions end with a word on why.
    assert_eq!(server.call(&["UNREGISTER", "bob"]), [0]);
    assert_eq!(bob.until_prefix("ERROR|"), "ERROR|410|Usuario dado de baja");
    assert!(bob.closed());
    assert_eq!(server.call(&["DISCONNECT", "cid"]), [0]);
    assert_eq!(
        cid.until_prefix("ERROR"),
        "ERROR: Desconectado desde el messenger."
    );
    assert!(cid.closed());
    assert_eq!(server.call(&["UNREGISTER", "ana"]), [0]);
    // A protected user in a session: with the password only.
    drop(chat_attempt(&server, "CONNECT|dan|de dan").unwrap());
    settled(&server, "dan");
    let mut dan = chat_attempt(&server, "CONNECT|dan|de dan").unwrap();
    assert_eq!(server.call(&["UNREGISTER", "dan"]), [2]);
    assert_eq!(
        server.call(&with_auth("dan", "de dan", &["UNREGISTER", "dan"])),
        [0]
    );
    assert_eq!(dan.until_prefix("ERROR|"), "ERROR|410|Usuario dado de baja");
}

/// Rooms with a key (as IRC's `+k`): its creator sets it; entering needs it; the list marks
/// it; room names keep their spaces.
#[test]
fn a_room_with_a_key_admits_only_who_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = LineConn::rooms(&server, "ana");
    ana.send("ROOM Sala Secreta");
    assert_eq!(ana.line(), "Te has unido a la sala Sala Secreta.");
    ana.send("KEY con espacios no");
    assert_eq!(ana.line(), "ERROR: La clave no puede tener espacios.");
    ana.send("KEY llave-7");
    assert_eq!(ana.line(), "La sala Sala Secreta tiene clave.");
    ana.send("LIST_ROOMS");
    assert_eq!(ana.line(), "Salas disponibles:");
    assert_eq!(ana.line(), "Sala1 (0)");
    assert_eq!(ana.line(), "Sala Secreta (1) [clave]");

    let mut bea = LineConn::rooms(&server, "bea");
    bea.send("ROOM Sala Secreta");
    assert_eq!(bea.line(), "ERROR: La sala tiene clave.");
    bea.send("ROOM_KEY otra Sala Secreta");
    assert_eq!(bea.line(), "ERROR: Clave incorrecta.");
    bea.send("ROOM_KEY llave-7 Sala Secreta");
    assert_eq!(bea.line(), "Te has unido a la sala Sala Secreta.");
    assert_eq!(ana.line(), "bea se ha unido a la sala.");
    // Only the creator sets or removes it.
    bea.send("KEY");
    assert_eq!(
        bea.line(),
        "ERROR: Solo quien creó la sala puede ponerle clave."
    );
    ana.send("KEY");
    assert_eq!(ana.line(), "La sala Sala Secreta ya no tiene clave.");
    let mut cid = LineConn::rooms(&server, "cid");
    cid.send("ROOM Sala Secreta");
    assert_eq!(cid.line(), "Te has unido a la sala Sala Secreta.");
}

/// The operator sets and removes a password without a client, on a running server (and on a
/// stopped one: the command opens the database itself).
#[test]
fn the_operator_sets_and_removes_passwords_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    register(&server, "bob");
    drop(chat_attempt(&server, "CONNECT|bob").expect("open"));
    settled(&server, "bob");
    let account = |args: &[&str], stdin: &str| {
        let mut command = std::process::Command::new(e2e::bin("server"));
        command
            .arg("account")
            .args(args)
            .arg("--db")
            .arg(server.db.arg());
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(
        account(&["set-password", "bob"], "del operador\n"),
        (true, "bob: password set\n".into())
    );
    assert!(chat_attempt(&server, "CONNECT|bob").is_err());
    drop(chat_attempt(&server, "CONNECT|bob|del operador").expect("with it"));
    settled(&server, "bob");
    assert_eq!(
        account(&["remove-password", "bob"], ""),
        (true, "bob: password removed\n".into())
    );
    drop(chat_attempt(&server, "CONNECT|bob").expect("open again"));
    assert!(!account(&["remove-password", "nadie"], "").0);
    assert_eq!(
        account(&["set-password", "nuevo"], "suya\n"),
        (true, "nuevo: registered, with the password given\n".into())
    );
    assert_eq!(rooms_attempt(&server, "JOIN nuevo suya"), "OK");
}

/// Our clients take the password from `MESSENGER_PASSWORD`: a new name is claimed with it in
/// one step, and it proves the name afterwards; a wrong one gets the protocol's failure.
#[test]
fn our_clients_log_in_with_messenger_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let formatter = Formatter::start();
    let right = [("MESSENGER_PASSWORD", "la de ana")];
    let wrong = [("MESSENGER_PASSWORD", "otra")];

    // The messenger console: REGISTER claims, CONNECT and SEND prove it.
    let mut ana = ConsoleClient::start_with(server.port, &formatter.url(), &right);
    ana.run("REGISTER ana", "REGISTER OK");
    register(&server, "bea");
    ana.run("CONNECT ana", "CONNECT OK");
    ana.run("SEND bea hola", "SEND OK - MESSAGE 1");
    assert_eq!(
        server.call(&["SEND", "ana", "bea", "soy ana"]),
        [2],
        "not without it"
    );
    ana.run("DISCONNECT ana", "DISCONNECT OK");
    assert_eq!(ana.finish(), Some(0));
    let mut impostor = ConsoleClient::start_with(server.port, &formatter.url(), &wrong);
    impostor.run("CONNECT ana", "CONNECT FAIL");
    assert_eq!(impostor.finish(), Some(0));

    // The chat console claims cid, and logs in as cid again.
    let port = server.chat_port.unwrap().to_string();
    let chat_args = ["--chat", "-s", "127.0.0.1", "-p", &port];
    for _ in 0..2 {
        settled(&server, "cid");
        let mut chat = e2e::spawn_client_with(&chat_args, &[("MESSENGER_PASSWORD", "la de cid")]);
        writeln!(chat.stdin.take().unwrap(), "cid").unwrap();
        let out = chat.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("Conectado exitosamente\n"), "{stdout}");
    }
    settled(&server, "cid");
    assert_eq!(
        chat_attempt(&server, "CONNECT|cid").err().as_deref(),
        Some("CONNECT_ACK|FAIL")
    );
    let mut chat = e2e::spawn_client_with(&chat_args, &[("MESSENGER_PASSWORD", "otra")]);
    writeln!(chat.stdin.take().unwrap(), "cid").unwrap();
    let out = chat.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Conexión fallida\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Contraseña incorrecta"));

    // The rooms console claims dan.
    let port = server.rooms_port.unwrap().to_string();
    let rooms_args = ["--rooms", "-s", "127.0.0.1", "-p", &port];
    let mut rooms = e2e::spawn_client_with(&rooms_args, &[("MESSENGER_PASSWORD", "la de dan")]);
    writeln!(rooms.stdin.take().unwrap(), "dan\nQUIT").unwrap();
    let out = rooms.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Te has unido como dan."));
    settled(&server, "dan");
    assert_eq!(
        rooms_attempt(&server, "JOIN dan"),
        "ERROR: Se necesita contraseña."
    );
    assert_eq!(rooms_attempt(&server, "JOIN dan la de dan"), "OK");
}

/// Passwords are hashed off the event loop: while a flood of logins that claim new names
/// with passwords keeps the checker busy, a login under a name without a password is
/// answered at once (its answer comes while most of the flood's are still to come).
#[test]
fn a_flood_of_password_logins_delays_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut flood = Vec::new();
    for n in 0..10u8 {
        for m in 0..4 {
            let stream = e2e::connect_from(Ipv4Addr::new(127, 0, 1, n), server.chat_addr());
            let mut conn = LineConn::over(stream);
            let connect = format!("CONNECT|flood{n}x{m}|clave de {n} {m}");
            conn.stream.write_all(connect.as_bytes()).unwrap();
            flood.push(conn);
        }
    }
    let open = chat_attempt(&server, "CONNECT|zoe");
    assert!(open.is_ok(), "a login without a password is served");
    // Each flood connection has its answer or not yet: a look that neither waits nor
    // consumes.
    let answered = flood
        .iter_mut()
        .filter(|conn| {
            conn.stream.set_nonblocking(true).unwrap();
            matches!(conn.stream.peek(&mut [0u8; 1]), Ok(1))
        })
        .count();
    assert!(
        answered < flood.len(),
        "every one of the {} password hashes was done before a login that needs none",
        flood.len()
    );
    // They all get their answer in the end: their names, or a busy checker's refusal.
    for conn in &mut flood {
        conn.stream.set_nonblocking(false).unwrap();
    }
    for conn in flood {
        if let Err(refused) = LineConn::chat_login(conn, "") {
            assert_eq!(
                refused,
                "CONNECT_ACK|FAIL|Servidor ocupado; inténtalo de nuevo"
            );
        }
    }
}
