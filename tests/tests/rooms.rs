//! The rooms of seed 004 on the real server: every row of the protocol, several lines in one
//! read, private messages only inside a room, history across restarts, bad input, and the
//! console client through stdin.

use std::io::{Read, Write};
use std::time::Duration;

use e2e::{register, sent, LineConn, Server};

#[test]
fn join_rooms_talk_list_exit_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = LineConn::rooms(&server, "ana");
    let mut other = LineConn::connect(server.rooms_addr());
    other.send("JOIN ana");
    assert_eq!(other.line(), "ERROR: Username ya en uso.");
    other.send("JOIN bea");
    assert_eq!(other.line(), "OK");
    let mut bea = other;
    ana.send("ROOM Sala1");
    assert_eq!(ana.line(), "Te has unido a la sala Sala1.");
    bea.send("ROOM Sala1");
    assert_eq!(bea.line(), "Te has unido a la sala Sala1.");
    assert_eq!(ana.line(), "bea se ha unido a la sala.");
    bea.send("MESSAGE hola a todos");
    assert_eq!(ana.line(), "bea: hola a todos");
    // Nothing goes back to the sender; an empty message is ignored.
    bea.send("MESSAGE    ");
    bea.send("LIST_ROOMS");
    assert_eq!(bea.line(), "Salas disponibles:");
    assert_eq!(bea.line(), "Sala1 (2)");
    // Moving to a new room creates it and leaves the old one.
    bea.send("ROOM Cocina");
    assert_eq!(bea.line(), "Te has unido a la sala Cocina.");
    assert_eq!(ana.line(), "bea ha salido de la sala.");
    ana.send("LIST_ROOMS");
    assert_eq!(ana.line(), "Salas disponibles:");
    assert_eq!(ana.line(), "Sala1 (1)");
    assert_eq!(ana.line(), "Cocina (1)");
    bea.send("EXIT Cocina");
    assert_eq!(bea.line(), "Has salido de la sala Cocina.");
    bea.send("MESSAGE ¿hay alguien?");
    assert_eq!(bea.line(), "ERROR: No estás en ninguna sala.");
    bea.send("ROOM Sala1");
    assert_eq!(bea.line(), "Te has unido a la sala Sala1.");
    assert_eq!(bea.line(), "bea: hola a todos", "the room's history");
    assert_eq!(ana.line(), "bea se ha unido a la sala.");
    drop(bea);
    assert_eq!(ana.line(), "bea ha salido del chat.");
    server.stdout.wait_for("s> ROOMS LOGOUT bea");
    let lines = server.stdout.snapshot();
    for expected in [
        "s> ROOMS JOIN ana OK",
        "s> ROOMS JOIN ana FAIL",
        "s> ROOMS ana ENTERS Sala1",
        "s> ROOMS bea LEAVES Sala1 ENTERS Cocina",
        "s> ROOMS bea LEAVES Cocina",
    ] {
        assert!(
            lines.contains(&expected.to_string()),
            "{expected} in {lines:?}"
        );
    }
}

#[test]
fn several_lines_in_one_read_are_all_handled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = LineConn::rooms(&server, "ana");
    ana.send("ROOM Sala1");
    ana.line();
    let mut bea = LineConn::connect(server.rooms_addr());
    bea.stream
        .write_all(b"JOIN bea\r\nROOM Sala1\nMESSAGE uno\nMESSAGE dos\r\nMESSAGE tres\n")
        .unwrap();
    assert_eq!(bea.line(), "OK");
    assert_eq!(bea.line(), "Te has unido a la sala Sala1.");
    assert_eq!(ana.line(), "bea se ha unido a la sala.");
    for text in ["uno", "dos", "tres"] {
        assert_eq!(ana.line(), format!("bea: {text}"));
    }
}

#[test]
fn bad_input_gets_an_error_line_and_a_10_kb_line_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut conn = LineConn::connect(server.rooms_addr());
    conn.send("LIST_ROOMS");
    assert_eq!(conn.line(), "ERROR: Primero JOIN <nombre>.");
    conn.send("JOIN a::b");
    assert_eq!(conn.line(), "ERROR: Nombre de usuario no válido.");
    conn.send("BAILAR");
    assert_eq!(conn.line(), "ERROR: Comando desconocido.");
    conn.stream.write_all(b"JOIN \xff\xfe\n").unwrap();
    assert_eq!(conn.line(), "ERROR: La línea no es UTF-8.");
    conn.send("JOIN ana");
    assert_eq!(conn.line(), "OK");
    conn.send("JOIN otra");
    assert_eq!(conn.line(), "ERROR: Ya te uniste como ana.");
    conn.send("MESSAGE fuera de sala");
    assert_eq!(conn.line(), "ERROR: No estás en ninguna sala.");
    conn.send("EXIT");
    assert_eq!(conn.line(), "ERROR: No estás en ninguna sala.");
    conn.send(&format!("ROOM {}", "x".repeat(65)));
    assert_eq!(conn.line(), "ERROR: Nombre de sala no válido.");
    // A 10 KB line: refused without buffering it, then the connection is closed.
    let long = vec![b'y'; 10 * 1024];
    let _ = conn.stream.write_all(&long);
    assert_eq!(conn.line(), "ERROR: Línea demasiado larga.");
    assert!(conn.closed());
    server.stderr.wait_until(
        |l| l.iter().any(|l| l.contains("over 1024 bytes")),
        "a stderr line",
    );
    // The server is fine and the name is free again.
    let _ana = LineConn::rooms(&server, "ana");
}

#[test]
fn private_messages_reach_a_rooms_user_only_inside_a_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    register(&server, "mara");
    let mut cid = LineConn::rooms(&server, "cid");
    assert_eq!(server.call(&["SEND", "mara", "cid", "primero"]), sent(1));
    // Outside a room the answers must stay alone in their reads: the message waits.
    cid.send("LIST_ROOMS");
    assert_eq!(cid.line(), "Salas disponibles:");
    assert_eq!(cid.line(), "Sala1 (0)");
    cid.expect_quiet(Duration::from_millis(200));
    cid.send("ROOM Sala1");
    assert_eq!(cid.line(), "Te has unido a la sala Sala1.");
    assert_eq!(cid.line(), "mara (privado): primero");
    assert_eq!(server.call(&["SEND", "mara", "cid", "segundo"]), sent(2));
    assert_eq!(cid.line(), "mara (privado): segundo");
    cid.send("EXIT");
    assert_eq!(cid.line(), "Has salido de la sala Sala1.");
    assert_eq!(server.call(&["SEND", "mara", "cid", "tercero"]), sent(3));
    cid.expect_quiet(Duration::from_millis(200));
    // A chat user's private message, too.
    let mut dan = LineConn::chat(&server, "dan");
    dan.send("MESSAGE|cid|desde el chat");
    cid.send("ROOM Sala1");
    assert_eq!(cid.line(), "Te has unido a la sala Sala1.");
    assert_eq!(cid.line(), "mara (privado): tercero");
    assert_eq!(cid.line(), "dan (privado): desde el chat");
    // One presence: cid is online in the rooms, so the chat refuses the name.
    let mut again = LineConn::connect(server.chat_addr());
    again.stream.write_all(b"CONNECT|cid").unwrap();
    let mut answer = [0u8; 64];
    let n = again.stream.read(&mut answer).unwrap();
    assert_eq!(&answer[..n], b"CONNECT_ACK|FAIL");
}

#[test]
fn rooms_and_their_history_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &["--history", "3"]);
    let mut ana = LineConn::rooms(&server, "ana");
    ana.send("ROOM Patio");
    ana.line();
    for n in 1..=5 {
        ana.send(&format!("MESSAGE m{n}"));
    }
    // A round trip, so the messages above are in.
    ana.send("LIST_ROOMS");
    ana.until("Patio (1)");
    drop(ana);
    let server = server.restart(&["--chat-port", "0", "--rooms-port", "0", "--history", "3"]);
    let mut bea = LineConn::rooms(&server, "bea");
    bea.send("LIST_ROOMS");
    assert_eq!(bea.line(), "Salas disponibles:");
    assert_eq!(bea.line(), "Sala1 (0)");
    assert_eq!(bea.line(), "Patio (0)");
    bea.send("ROOM Patio");
    assert_eq!(bea.line(), "Te has unido a la sala Patio.");
    for n in 3..=5 {
        assert_eq!(bea.line(), format!("ana: m{n}"));
    }
    bea.expect_quiet(Duration::from_millis(100));
}

#[test]
fn the_console_rooms_client_through_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut bea = LineConn::rooms(&server, "bea");
    bea.send("ROOM Sala1");
    bea.line();
    let port = server.rooms_port.unwrap().to_string();
    let mut client = e2e::spawn_client(&["--rooms", "-s", "127.0.0.1", "-p", &port]);
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "bea\nana\nSala1").unwrap();
    assert_eq!(bea.line(), "ana se ha unido a la sala.");
    writeln!(stdin, "hola bea\nLOVE\nLIKE\nDISLIKE").unwrap();
    assert_eq!(bea.line(), "ana: hola bea");
    assert_eq!(bea.line(), "ana: ❤️❤️❤️");
    assert_eq!(bea.line(), "ana: 👍");
    assert_eq!(bea.line(), "ana: 👎");
    bea.send("MESSAGE hola ana");
    // Right after EXIT the menu lists the rooms: the answer to LIST_ROOMS must not be lost
    // to the room's reader (the original client's race).
    std::thread::sleep(Duration::from_millis(100));
    writeln!(stdin, "EXIT\nREFR").unwrap();
    assert_eq!(bea.line(), "ana ha salido de la sala.");
    drop(stdin);
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let expected_start = "*******************************************\nWassop by Juan Miguel\n*******************************************\nIngresa tu nombre de usuario: ERROR: Username ya en uso.\nIngresa tu nombre de usuario: Te has unido como ana.\n\n---- Menú Principal ----\n¡Únete a una sala!\nPara unirte a una sala, solo escribe su nombre: <nombre_sala>\nSalas disponibles:\nSala1 (1)\n* Actualizar salas disponibles: REFR\n* Salir de la aplicación: QUIT\n\nIngresa el nombre de la sala o un comando: Te has unido a la sala Sala1.\n\nHas entrado a la sala Sala1. Escribe mensajes o usa EXIT para regresar al menú principal.\n";
    assert!(
        stdout.starts_with(expected_start),
        "{stdout}\n---- expected to start with ----\n{expected_start}"
    );
    assert!(stdout.contains("bea: hola ana\n"), "{stdout}");
    // One's own lines as the original shows them: `Tú: <text>` once sent, no prompt before.
    for own in ["hola bea", "❤️❤️❤️", "👍", "👎"] {
        assert!(
            stdout.contains(&format!("\nTú: {own}\n")),
            "{own} in {stdout}"
        );
    }
    assert!(
        !stdout.contains("Tú: \n") && !stdout.contains("Tú: Tú:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Has salido de la sala Sala1.\n"),
        "{stdout}"
    );
    // Twice the menu after EXIT (the menu, then REFR), each with its room list.
    assert_eq!(
        stdout.matches("Salas disponibles:\nSala1 (").count(),
        3,
        "{stdout}"
    );
    assert!(
        stdout.ends_with("Ingresa el nombre de la sala o un comando: \n"),
        "{stdout}"
    );
}
