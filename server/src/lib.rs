//! The messaging server. `main` parses arguments and calls [`run`]; see ARCHITECTURE.md for the
//! bird's-eye view.

pub mod commands;
pub mod config;
mod connection;
mod console;
pub mod deliverer;
pub mod messenger;
mod net;
mod reactor;
pub mod store;
mod syncer;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

pub use config::{Config, Durability};

use crate::deliverer::Pool;
use crate::messenger::{Messenger, Settings};
use crate::reactor::{Reactor, SyncGate};
use crate::store::Store;
use crate::syncer::Syncer;

/// Opens the database, binds, prints `s> init server ip:port` and serves until SIGINT/SIGTERM.
pub fn run(config: Config) -> Result<(), String> {
    net::raise_open_file_limit();
    let store = Store::open(&config.db, config.max_db_pages)
        .map_err(|e| format!("cannot open database {}: {e}", config.db.display()))?;
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    let listener = mio::net::TcpListener::from_std(listener);

    let poll = mio::Poll::new().map_err(|e| format!("cannot create the poller: {e}"))?;
    let waker = Arc::new(reactor::waker(poll.registry()).map_err(|e| format!("waker: {e}"))?);
    let (report_tx, report_rx) = crossbeam_channel::unbounded();
    let wake = Arc::new(move || {
        // A failed wake means the reactor is gone; nothing is left to tell.
        let _ = waker.wake();
    });
    let pool = Pool::start(
        config.deliverers.into(),
        config.push_timeout(),
        report_tx,
        wake.clone(),
    )
    .map_err(|e| format!("cannot start deliverers: {e}"))?;
    let sync_gate = match config.durability {
        Durability::Full => {
            let (synced_tx, synced_rx) = crossbeam_channel::unbounded();
            let wal = PathBuf::from(format!("{}-wal", config.db.display()));
            let syncer = Syncer::start(wal, synced_tx, wake)
                .map_err(|e| format!("cannot start the syncer: {e}"))?;
            Some(SyncGate::new(syncer, synced_rx))
        }
        Durability::Normal => None,
    };
    let settings = Settings {
        push_style: config.push_style.into(),
        connect_window: config.connect_window(),
    };
    let messenger = Messenger::new(store, pool, report_rx, settings).map_err(|e| {
        format!(
            "reading pending deliveries from {}: {e}",
            config.db.display()
        )
    })?;
    let signals = Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("signal handlers: {e}"))?;

    let mut reactor = Reactor::new(poll, listener, signals, messenger, config, sync_gate)
        .map_err(|e| format!("event loop: {e}"))?;
    let shown_ip = net::display_ip(local.ip());
    reactor
        .console()
        .line(&format!("init server {shown_ip}:{}", local.port()));
    reactor.console().prompt();
    reactor.console().flush();
    reactor
        .run()
        .map_err(|e: io::Error| format!("server stopped: {e}"))
}
