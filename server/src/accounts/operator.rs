//! `server account ...`: the operator manages passwords without a client, on a stopped or a
//! running server (the running one sees the change at its next look at the name: SQLite
//! tells it that another connection committed, PostgreSQL is read afresh).

use std::io::BufRead;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::password::{self, Secret};
use crate::config::Database;
use crate::storage::{PgStore, SqliteStore, Storage};

/// How long the command waits for the running server's write transaction to end.
const WAIT_FOR_SERVER: Duration = Duration::from_secs(10);

/// Manages accounts in the server's database.
#[derive(Debug, Parser)]
#[command(name = "server account")]
pub struct AccountCommand {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Sets NAME's password, read as one line from stdin (without echo on a terminal). A
    /// name not yet registered is registered with it.
    SetPassword {
        name: String,
        /// The server's database: a SQLite file or a PostgreSQL URL.
        #[arg(long, default_value = "messages.db", value_parser = crate::config::parse_database)]
        db: Database,
    },
    /// Removes NAME's password: anybody may use the name again (unless the server runs with
    /// --require-passwords).
    RemovePassword {
        name: String,
        #[arg(long, default_value = "messages.db", value_parser = crate::config::parse_database)]
        db: Database,
    },
}

/// Runs `server account ARGS...`; what it did, for stdout.
pub fn run(args: impl IntoIterator<Item = String>) -> Result<String, String> {
    let command = AccountCommand::try_parse_from(args).map_err(|e| e.to_string())?;
    let (name, db, new) = match command.action {
        Action::SetPassword { name, db } => {
            let secret = read_password(&name)?;
            password::acceptable(secret.expose())?;
            (name, db, Some(password::hash(&secret)?))
        }
        Action::RemovePassword { name, db } => (name, db, None),
    };
    wire::validate_name(name.as_bytes()).map_err(|e| format!("{name:?}: {e}"))?;
    let store = open(&db)?;
    let fail = |e: crate::storage::Error| format!("{db}: {e}");
    let mut registered = false;
    if store.user(&name).map_err(fail)?.is_none() {
        if new.is_none() {
            return Err(format!("{name}: no such user in {db}"));
        }
        registered = store.insert_user(&name, None, None).map_err(fail)?;
    }
    store.set_password(&name, new.as_deref()).map_err(fail)?;
    store.commit().map_err(|e| format!("{db}: {e}"))?;
    Ok(match (new, registered) {
        (Some(_), true) => format!("{name}: registered, with the password given"),
        (Some(_), false) => format!("{name}: password set"),
        (None, _) => format!("{name}: password removed"),
    })
}

fn open(db: &Database) -> Result<Box<dyn Storage>, String> {
    let cannot = |e: crate::storage::Error| format!("cannot open {db}: {e}");
    Ok(match db {
        Database::Sqlite(path) => {
            if !path.exists() {
                return Err(format!("{}: no such database", path.display()));
            }
            let store = SqliteStore::open(path, None, u32::MAX).map_err(cannot)?;
            store.wait_for_locks(WAIT_FOR_SERVER).map_err(cannot)?;
            Box::new(store)
        }
        Database::Postgres(url) => Box::new(PgStore::open(url).map_err(cannot)?),
    })
}

/// One line from stdin: asked for without echo when stdin is a terminal.
fn read_password(name: &str) -> Result<Secret, String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("Password for {name}: "))
            .map(Secret::new)
            .map_err(|e| format!("reading the password: {e}"));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    Ok(Secret::new(line.to_string()))
}
