use clap::Parser;
use client::{protocol::ServerLink, Endpoints};

/// Messaging client: the desktop window of seed 000; with --console the console client of seed
/// 003; with --chat the chat client of seed 001; with --rooms the rooms client of seed 004 (each
/// a console client, or a window with --window); with --canvas the canvas window of seed 002.
#[derive(Parser)]
#[command(name = "client", version)]
struct Args {
    /// Server host name or IP address.
    #[arg(short = 's', long = "server")]
    server: String,
    /// Server port.
    #[arg(short = 'p', long = "port")]
    port: u16,
    /// Console client instead of the desktop window.
    #[arg(long, conflicts_with_all = ["chat", "rooms", "canvas"])]
    console: bool,
    /// Chat client of seed 001 (myChatProtocol) for the server's chat port.
    #[arg(long, conflicts_with_all = ["rooms", "canvas"])]
    chat: bool,
    /// Rooms client of seed 004 (Wassop) for the server's rooms port.
    #[arg(long, conflicts_with = "canvas")]
    rooms: bool,
    /// The chat or the rooms in a desktop window instead of the console.
    #[arg(long)]
    window: bool,
    /// Log the window in as NAME at once, with no dialog (the password, if any, from
    /// MESSENGER_PASSWORD).
    #[arg(long, value_name = "NAME", requires = "window", value_parser = user_name)]
    user: Option<String>,
    /// The canvas window of seed 002 (DrawColorCanvas) for the server's canvas port.
    #[arg(long)]
    canvas: bool,
    /// Formatter web service every message goes through before it is sent (`https://`
    /// too).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    formatter: String,
    /// Speak TLS to the server (its TLS port): docs/tls.md.
    #[arg(long)]
    tls: bool,
    /// Trust the certificates of this PEM file (the server's own self-signed one, or the CA
    /// that signed it) instead of the system's roots, for the server and an https
    /// formatter.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
}

/// A user name as the servers take it (docs/text.md): no spaces or separators, which would
/// make the rest of the name a password.
fn user_name(name: &str) -> Result<String, String> {
    wire::validate_name(name.as_bytes())
        .map(str::to_string)
        .map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let tls = match (args.tls, &args.ca) {
        (false, None) => None,
        (false, Some(_)) => {
            eprintln!("client: --ca goes with --tls");
            return std::process::ExitCode::FAILURE;
        }
        (true, ca) => match client::link::client_config(ca.as_deref()) {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("client: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let endpoints = Endpoints {
        server: ServerLink {
            host: args.server,
            port: args.port,
            password: client::secret::from_env(),
            tls,
        },
        formatter_url: args.formatter,
    };
    if args.window && !(args.chat || args.rooms) {
        eprintln!("client: --window goes with --chat or --rooms");
        return std::process::ExitCode::FAILURE;
    }
    let result = if args.chat && args.window {
        client::chat::window::run(&endpoints.server, args.user)
    } else if args.rooms && args.window {
        client::rooms::window::run(&endpoints.server, args.user)
    } else if args.chat {
        client::chat::run(&endpoints.server).map_err(|e| format!("chat: {e}"))
    } else if args.rooms {
        client::rooms::run(&endpoints.server).map_err(|e| format!("rooms: {e}"))
    } else if args.canvas {
        client::canvas::run(
            &endpoints.server.host,
            endpoints.server.port,
            &endpoints.server.tls,
        )
    } else if args.console {
        client::console::run(endpoints).map_err(|e| format!("console: {e}"))
    } else {
        client::gui::run(endpoints)
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
