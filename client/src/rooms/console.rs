//! The console client of seed 004 (Wassop): the original's banner, menus, prompts and lines.
//!
//! One reader thread owns the socket's reading side for the whole session. Outside a room it
//! hands each read to the main thread, which reads command answers with one read each, as the
//! original does (nothing unasked reaches a session outside a room). Inside a room it prints
//! what arrives, and it tells the main thread when the answer to EXIT has come, so the menu
//! never starts while the room's reader still runs (the original's race after EXIT).

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use crate::link::{self, Stream};

use super::{emoji, JOINED_ROOM, LEFT_ROOM, PASSWORD_NEEDED};

const BANNER: &str = "*******************************************\nWassop by Juan Miguel\n*******************************************";

/// What the reader thread passes on.
enum Heard {
    /// One read's worth, outside a room: a command's answer.
    Answer(String),
    /// The answer to EXIT arrived (and was printed).
    LeftRoom,
    Closed,
}

fn print(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn read_server(mut stream: Stream, heard: mpsc::Sender<Heard>) {
    let mut in_room = false;
    let mut pending = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => {
                let _ = heard.send(Heard::Closed);
                return;
            }
            Ok(n) => n,
        };
        if !in_room {
            let answer = String::from_utf8_lossy(&chunk[..n]).into_owned();
            // The reader switches itself, so a room message right behind the answer is shown.
            in_room = answer.starts_with(JOINED_ROOM);
            let _ = heard.send(Heard::Answer(answer));
            continue;
        }
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            print(&line);
            if line.starts_with(LEFT_ROOM) {
                in_room = false;
                let _ = heard.send(Heard::LeftRoom);
            }
        }
    }
}

/// Reads a line from stdin after printing `prompt`; None at end of input.
fn ask(prompt: &str) -> io::Result<Option<String>> {
    print(prompt);
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line)? == 0 {
        print("\n");
        return Ok(None);
    }
    Ok(Some(line.trim().to_string()))
}

struct Client {
    stream: Stream,
    heard: mpsc::Receiver<Heard>,
}

impl Client {
    fn send(&mut self, line: &str) -> io::Result<()> {
        self.stream.write_all(format!("{line}\n").as_bytes())
    }

    /// The answer to a command sent outside a room; None if the server went away.
    fn answer(&self) -> Option<String> {
        match self.heard.recv() {
            Ok(Heard::Answer(answer)) => Some(answer),
            _ => None,
        }
    }

    /// `JOIN name` (with the password, if any) and its answer; None if the server went away.
    fn join(&mut self, name: &str, password: Option<&str>) -> io::Result<Option<String>> {
        match password {
            Some(password) => self.send(&format!("JOIN {name} {password}"))?,
            None => self.send(&format!("JOIN {name}"))?,
        }
        Ok(self.answer())
    }

    fn quit(self) {
        self.stream.close();
    }
}

/// Runs the rooms client against `server` until QUIT or the end of input. A password comes
/// from `MESSENGER_PASSWORD` (`JOIN name password`, docs/accounts.md), or is asked for on the
/// terminal when the server says the name needs one.
pub fn run(server: &crate::protocol::ServerLink) -> io::Result<()> {
    let stream = link::connect(
        &server.host,
        server.port,
        &server.tls,
        Duration::from_secs(5),
    )?;
    let (heard_tx, heard) = mpsc::channel();
    let reader = stream.try_clone()?;
    std::thread::spawn(move || read_server(reader, heard_tx));
    let mut client = Client { stream, heard };
    print(&format!("{BANNER}\n"));
    let name = loop {
        let Some(name) = ask("Ingresa tu nombre de usuario: ")? else {
            client.quit();
            return Ok(());
        };
        let password = server.password.clone();
        let Some(mut answer) = client.join(&name, password.as_deref())? else {
            return Ok(());
        };
        if answer.trim_end() == PASSWORD_NEEDED && password.is_none() {
            if let Some(password) = crate::secret::ask(&format!("Contraseña de {name}: ")) {
                let Some(again) = client.join(&name, Some(&password))? else {
                    return Ok(());
                };
                answer = again;
            }
        }
        if answer.trim_end() == "OK" {
            break name;
        }
        print(&answer);
    };
    print(&format!("Te has unido como {name}.\n"));
    loop {
        print("\n---- Menú Principal ----\n¡Únete a una sala!\nPara unirte a una sala, solo escribe su nombre: <nombre_sala>\n");
        client.send("LIST_ROOMS")?;
        let Some(rooms) = client.answer() else {
            return Ok(());
        };
        print(&rooms);
        print("* Actualizar salas disponibles: REFR\n* Salir de la aplicación: QUIT\n");
        let Some(choice) = ask("\nIngresa el nombre de la sala o un comando: ")? else {
            client.quit();
            return Ok(());
        };
        match choice.as_str() {
            "" | "REFR" => continue,
            "QUIT" => {
                client.quit();
                return Ok(());
            }
            room => {
                client.send(&format!("ROOM {room}"))?;
                let Some(answer) = client.answer() else {
                    return Ok(());
                };
                print(&answer);
                if !answer.starts_with(JOINED_ROOM) {
                    continue;
                }
                print(&format!(
                    "\nHas entrado a la sala {room}. Escribe mensajes o usa EXIT para regresar al menú principal.\n"
                ));
                if !in_room(&mut client, room)? {
                    client.quit();
                    return Ok(());
                }
            }
        }
    }
}

/// The room's loop: each line typed is sent, then shown as `Tú: <text>` as the original
/// shows one's own messages (no prompt before it); false when the user quits or input ends.
fn in_room(client: &mut Client, room: &str) -> io::Result<bool> {
    loop {
        let Some(text) = ask("")? else {
            return Ok(false);
        };
        let message = match text.as_str() {
            "" => continue,
            "QUIT" => return Ok(false),
            "EXIT" => {
                client.send(&format!("EXIT {room}"))?;
                // Back to the menu only once the room's reader has seen the answer.
                return Ok(matches!(client.heard.recv(), Ok(Heard::LeftRoom)));
            }
            text => emoji(text).unwrap_or(text),
        };
        client.send(&format!("MESSAGE {message}"))?;
        print(&format!("Tú: {message}\n"));
    }
}
