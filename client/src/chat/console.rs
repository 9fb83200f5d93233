//! The console client of seed 001 (myChatProtocol): the user name from stdin, then `@user text`
//! sends a private message, `/logout` leaves, any other line is broadcast. It prints the
//! original client's lines.
//!
//! A password (docs/accounts.md) comes from `MESSENGER_PASSWORD`; without one, after a failed
//! login the client asks for one on the terminal (the original server's failure cannot say
//! why). `/password` sets or removes the password of the name logged in.

use std::io::{self, BufRead, Write};
use std::time::Duration;

use super::{shown, FromServer, Incoming, Link, Login};

fn print(line: &str) {
    let mut out = io::stdout().lock();
    // A closed stdout only means nobody reads us any more.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Prints what the original client prints for each message (before the login hears of it:
/// at the end of input the client exits at once).
fn printed(from: FromServer) {
    if let FromServer::Message(message) = from {
        if let Some(Incoming::Refused(reason)) = Incoming::parse(message) {
            eprintln!("chat: {reason}");
        }
        if let Some(line) = shown(message) {
            print(&line);
        }
    }
}

/// The console waits for a login's answer as long as it takes.
const FOREVER: Duration = Duration::from_secs(3600);

/// Runs the chat client against `server` until `/logout` or the end of input.
pub fn run(server: &crate::protocol::ServerLink) -> io::Result<()> {
    let mut link = Link::open(server, printed)?;
    let stdin = io::stdin();
    let mut input = String::new();
    // The user name, until the server accepts one.
    let mut password = server.password.clone();
    let mut asked = false;
    loop {
        input.clear();
        if stdin.lock().read_line(&mut input)? == 0 {
            return Ok(());
        }
        let name = input.trim().to_string();
        if name.is_empty() {
            continue;
        }
        let mut login = link.login(&name, password.as_deref(), FOREVER, || true)?;
        // Refused without a password: perhaps the name has one (the terminal says).
        if login == Login::Refused && password.is_none() && !asked {
            asked = true;
            password = crate::secret::ask(&format!("Contraseña de {name} (Intro si no tiene): "));
            if password.is_some() {
                login = link.login(&name, password.as_deref(), FOREVER, || true)?;
            }
        }
        match login {
            Login::Accepted => break,
            Login::Refused => continue,
            Login::Closed | Login::GaveUp => {
                print("Desconectado del servidor");
                return Ok(());
            }
        }
    }
    // Without TLS, line framing is offered (docs/chat.md).
    if !link.agree_framing()? {
        print("Desconectado del servidor");
        return Ok(());
    }
    loop {
        input.clear();
        let done = stdin.lock().read_line(&mut input)? == 0;
        let line = input.trim_end_matches(['\n', '\r']);
        if done || line == "/logout" {
            link.disconnect();
            print("Desconectado del servidor");
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        if line == "/password" {
            let new = crate::secret::ask("Nueva contraseña (Intro para quitarla): ");
            link.send(&format!("PASSWORD|{}", new.unwrap_or_default()))?;
            continue;
        }
        let message = match line.strip_prefix('@').and_then(|rest| rest.split_once(' ')) {
            Some((to, text)) => format!("MESSAGE|{to}|{text}"),
            None => format!("BROADCAST|{line}"),
        };
        if link.send(&message).is_err() || link.closed() {
            print("Desconectado del servidor");
            return Ok(());
        }
    }
}
