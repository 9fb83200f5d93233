//! The user's password (docs/accounts.md): from `MESSENGER_PASSWORD`, or asked for without
//! echo on the terminal when the server says the name needs one. Never printed.

use std::io::IsTerminal;

/// The environment variable every client takes the password from.
pub const VARIABLE: &str = "MESSENGER_PASSWORD";

/// `MESSENGER_PASSWORD`, if set and not empty.
pub fn from_env() -> Option<String> {
    std::env::var(VARIABLE).ok().filter(|p| !p.is_empty())
}

/// Asks for the password on the terminal without echo, if there is one (stdin and the
/// controlling terminal); None without a terminal, or if the user enters nothing.
pub fn ask(prompt: &str) -> Option<String> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    rpassword::prompt_password(prompt)
        .ok()
        .filter(|p| !p.is_empty())
}
