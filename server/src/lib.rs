//! The messaging server. `main` parses arguments and calls [`run`]; see ARCHITECTURE.md for the
//! bird's-eye view.

pub mod accounts;
mod admin;
mod beside;
mod bus;
pub mod canvas;
pub mod chat;
pub mod config;
mod console;
pub mod core;
mod deliverer;
mod flood;
pub mod frontend;
mod ids;
pub mod messenger;
mod metrics;
mod net;
mod proxy_header;
mod reactor;
pub mod rooms;
pub mod storage;
mod syncer;
mod tls;
mod watched;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

pub use config::{Config, Database, Durability};

use crate::beside::Beside;
use crate::bus::Bus;
use crate::core::Core;
use crate::deliverer::Pool;
use crate::messenger::push::ListenerPushes;
use crate::messenger::Messenger;
use crate::reactor::{Listening, Reactor, SyncGate};
use crate::storage::{PgBarrier, PgStore, SqliteStore, Storage};
use crate::syncer::{Barrier, Syncer};

/// Opens the database, binds, prints `s> init server ip:port` and serves until SIGINT/SIGTERM.
pub fn run(config: Config) -> Result<(), String> {
    console::init_logging(config.log_filter());
    net::raise_open_file_limit();
    let admin_token = admin::token(config.admin_addr, config.admin_token_file.as_deref())?;
    let certificates = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::Certificates::load(cert, key)?),
        _ => None,
    };
    // Bind before touching the database, so that a port in use leaves no file behind.
    let (listener, local) = bind(config.bind, config.port)?;
    let protocol_ports = [
        (Protocol::Chat, config.chat_port, false),
        (Protocol::Rooms, config.rooms_port, false),
        (Protocol::Canvas, config.canvas_port, false),
        (Protocol::Messenger, config.tls_port, true),
        (Protocol::Chat, config.chat_tls_port, true),
        (Protocol::Rooms, config.rooms_tls_port, true),
        (Protocol::Canvas, config.canvas_tls_port, true),
    ];
    let mut ports = Vec::new();
    for (protocol, port, tls) in protocol_ports {
        if let Some(port) = port {
            ports.push((protocol, tls, bind(config.bind, port)?));
        }
    }
    let admin = config
        .admin_addr
        .map(|addr| bind(addr.ip(), addr.port()).map_err(|e| format!("admin: {e}")))
        .transpose()?;
    let metrics = Arc::new(metrics::Metrics::default());
    let poller = reactor::Poller::new().map_err(|e| format!("cannot create the poller: {e}"))?;
    let wake: Arc<dyn Fn() + Send + Sync> = {
        let doorbell = poller.doorbell.clone();
        Arc::new(move || doorbell.ring())
    };
    let Opened {
        store,
        sync_gate,
        bus,
        beside,
    } = open_store(&config, wake.clone(), metrics.clone())?;
    let checker = accounts::Checker::start(
        config.password_workers.into(),
        config.max_password_checks as usize,
        wake.clone(),
    )?;
    let accounts = accounts::Accounts::new(config.policy(), checker, metrics.clone());
    let pool = Pool::start(
        config.deliverers.into(),
        (config.max_pushes as usize).max(config.deliverers.into()),
        config.push_timeout(),
        wake,
    )
    .map_err(|e| format!("cannot start deliverers: {e}"))?;
    let pushes = ListenerPushes::new(pool, config.push_style.into(), config.connect_window());
    let settings = core::Settings {
        history: config.history.into(),
        max_rooms: config.max_rooms as usize,
        max_pending_per_user: nonzero(config.max_pending_per_user).map(|n| n as usize),
        pending_ttl: nonzero(config.pending_ttl).map(std::time::Duration::from_secs),
        max_new_names_per_minute: nonzero(config.max_new_names_per_minute),
        room_history_kept: nonzero(config.room_history_kept).map(|n| n as usize),
    };
    let core = Core::new(
        store,
        Box::new(pushes),
        bus,
        beside,
        accounts,
        settings,
        metrics.clone(),
    )
    .map_err(|e| format!("reading pending deliveries from {}: {e}", config.db))?;
    let signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| format!("signal handlers: {e}"))?;
    let mut listening = vec![Listening {
        socket: mio::net::TcpListener::from_std(listener),
        frontend: Box::new(Messenger::new(config.register_form, config.grace())),
        flood: None,
        proxy_protocol: config.proxy_protocol,
        tls: false,
    }];
    let shown_ip = net::display_ip(local.ip());
    let mut init_lines = vec![format!("init server {shown_ip}:{}", local.port())];
    for (protocol, tls, (socket, local)) in ports {
        let (frontend, flood, name): (Box<dyn frontend::Frontend>, _, _) = match protocol {
            Protocol::Messenger => (
                Box::new(Messenger::new(config.register_form, config.grace())),
                None,
                "server",
            ),
            // Over TLS a read is no message: lines from the first byte.
            Protocol::Chat if tls => (
                Box::new(chat::Chat::with_lines()),
                config.session_flood(),
                "chat",
            ),
            Protocol::Chat => (
                Box::new(chat::Chat::default()),
                config.session_flood(),
                "chat",
            ),
            Protocol::Rooms => (
                Box::new(rooms::Rooms::default()),
                config.session_flood(),
                "rooms",
            ),
            Protocol::Canvas => (
                Box::new(canvas::Canvas::default()),
                config.canvas_flood(),
                "canvas",
            ),
        };
        listening.push(Listening {
            socket: mio::net::TcpListener::from_std(socket),
            frontend,
            flood,
            proxy_protocol: config.proxy_protocol,
            tls,
        });
        let tls = if tls { "tls " } else { "" };
        init_lines.push(format!("init {tls}{name} {shown_ip}:{}", local.port()));
    }

    if let Some((socket, bound)) = admin {
        listening.push(Listening {
            socket: mio::net::TcpListener::from_std(socket),
            frontend: Box::new(admin::Admin::start(
                config.db.clone(),
                metrics.clone(),
                admin_token.clone(),
            )?),
            flood: None,
            proxy_protocol: false,
            tls: false,
        });
        init_lines.push(format!(
            "init admin {}:{}",
            net::display_ip(bound.ip()),
            bound.port()
        ));
    }
    let mut reactor = Reactor::new(poller, listening, signals, core, config, sync_gate, metrics)
        .map_err(|e| format!("event loop: {e}"))?;
    if let Some(certificates) = certificates {
        reactor.use_certificates(certificates);
    }
    for line in &init_lines {
        reactor.console().line(line);
    }
    reactor.console().prompt();
    reactor.console().flush();
    let result = reactor
        .run()
        .map_err(|e: io::Error| format!("server stopped: {e}"));
    console::drain();
    result
}

/// The protocols a port may serve.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Messenger,
    Chat,
    Rooms,
    Canvas,
}

/// Opens the configured database, and with `--durability full` the syncer that makes its
/// commits durable (the reactor's own commits never wait for the disk).
/// The database, as the server uses it.
struct Opened {
    store: Box<dyn Storage>,
    /// `--durability full`: the syncer and the answers that wait for it.
    sync_gate: Option<SyncGate>,
    /// A shared database: the other nodes' session events.
    bus: Option<Bus>,
    /// A database across the network: storage workers that run SENDs beside the reactor.
    beside: Option<Beside>,
}

fn open_store(
    config: &Config,
    wake: Arc<dyn Fn() + Send + Sync>,
    metrics: Arc<metrics::Metrics>,
) -> Result<Opened, String> {
    let full = config.durability == Durability::Full;
    match &config.db {
        Database::Sqlite(path) => {
            let store =
                SqliteStore::open(path, nonzero(config.max_db_pages), config.checkpoint_pages)
                    .map_err(|e| {
                        format!(
                            "cannot open database {}: {}",
                            path.display(),
                            why_unopenable(path).unwrap_or_else(|| e.to_string())
                        )
                    })?;
            let sync_gate = if full {
                let wal = PathBuf::from(format!("{}-wal", path.display()));
                let barrier = Barrier::SqliteWal {
                    path: wal,
                    file: None,
                };
                let syncer = Syncer::start(barrier, wake, metrics)
                    .map_err(|e| format!("cannot start the syncer: {e}"))?;
                Some(SyncGate::new(syncer))
            } else {
                None
            };
            Ok(Opened {
                store: Box::new(store),
                sync_gate,
                bus: None,
                beside: None,
            })
        }
        Database::Postgres(url) => {
            let cannot = |e: storage::Error| format!("cannot open database {}: {e}", config.db);
            let store = PgStore::open(url)
                .map_err(cannot)?
                .counted_in(metrics.clone());
            // Listening before the core says hello, so that no answer is missed.
            let bus = Bus::start(url, wake.clone())
                .map_err(|e| format!("cannot listen on {}: {e}", config.db))?;
            let sync_gate = if full {
                let barrier = Barrier::Postgres(Box::new(PgBarrier::open(url).map_err(cannot)?));
                let syncer = Syncer::start(barrier, wake.clone(), metrics.clone())
                    .map_err(|e| format!("cannot start the syncer: {e}"))?;
                Some(SyncGate::new(syncer))
            } else {
                None
            };
            let beside = Beside::start(
                url,
                config.db_workers.into(),
                config.policy(),
                wake.clone(),
                metrics.clone(),
            )?;
            Ok(Opened {
                store: Box::new(store),
                sync_gate,
                bus: Some(bus),
                beside: Some(beside),
            })
        }
    }
}

/// A non-blocking listening socket on `ip:port`, and the address it got.
fn bind(ip: std::net::IpAddr, port: u16) -> Result<(TcpListener, SocketAddr), String> {
    let addr = SocketAddr::new(ip, port);
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listener {addr}: {e}"))?;
    Ok((listener, local))
}

/// What the operating system says about opening `db` for writing, when SQLite only says it
/// could not: a missing directory, or permissions.
fn why_unopenable(db: &std::path::Path) -> Option<String> {
    let dir = match db.parent() {
        Some(dir) if dir.as_os_str().is_empty() => std::path::Path::new("."),
        Some(dir) => dir,
        None => return None,
    };
    if !dir.is_dir() {
        return Some(format!("the directory {} does not exist", dir.display()));
    }
    let probe = if db.exists() {
        std::fs::OpenOptions::new().read(true).write(true).open(db)
    } else {
        // Creating a file is what SQLite would do first; undo it.
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(db);
        if created.is_ok() {
            let _ = std::fs::remove_file(db);
        }
        created
    };
    match probe {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Some(format!(
            "permission denied: this user may not {} it",
            if db.exists() { "write" } else { "create" }
        )),
        Err(e) => Some(e.to_string()),
        Ok(_) => None,
    }
}

/// Reports a failure to start or to stop cleanly on stderr, after everything else printed.
pub fn report_exit_error(error: &str) {
    log::error!("server: {error}");
    console::drain();
}

/// A limit flag's value, where 0 means no limit.
fn nonzero<T: PartialEq + Default>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}
