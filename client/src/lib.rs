//! The messaging client: one library for the protocol, the listener thread and the commands
//! ([`session`]), and two front-ends over it, the console ([`console`]) and the FLTK window
//! ([`gui`]); plus the chat ([`chat`]) and the rooms ([`rooms`]), each a console client and a
//! window, and the canvas window ([`canvas`]).

pub mod canvas;
pub mod chat;
pub mod console;
pub mod formatting;
pub mod gui;
pub mod link;
pub mod listener;
pub mod protocol;
pub mod rooms;
pub mod secret;
pub mod session;
pub mod window_kit;

/// Where the client's servers are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub server: protocol::ServerLink,
    /// Base URL of the formatter web service, e.g. `http://127.0.0.1:8000`.
    pub formatter_url: String,
}
