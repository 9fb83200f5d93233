//! `CONNECT alias port`: the user listens at the caller's IP and that port. Answers 0 ok, 1 no
//! such user, 2 already connected, 3 error. Pending messages follow the commit.

use wire::{code, validate_name};

use wire::Op;

use super::{failure, shown, Parsed};
use crate::core::{ConnectOutcome, Finished, Work};
use crate::frontend::{Applied, Caller, Reply};
use crate::storage;

/// The storage work CONNECT (or CONNECTTLS, whose third field is the pin of the listener's
/// certificate) asks for, or the answer to a request refused at once.
pub fn apply(fields: &[&[u8]], caller: &Caller) -> Parsed {
    let (alias, port, pin) = match fields {
        [alias, port] => (*alias, *port, None),
        [alias, port, pin] => (*alias, *port, Some(*pin)),
        _ => unreachable!("the framing passes CONNECT two fields, CONNECTTLS three"),
    };
    let alias = match validate_name(alias) {
        Ok(alias) => alias,
        Err(e) => {
            let why = format!("CONNECT rejected: {e}");
            return Applied::read_only(fail(&shown(alias), code::THREE, why)).into();
        }
    };
    let pin = match pin {
        None => None,
        // Announced in clear, the pin could be anybody's: only over TLS.
        Some(_) if !caller.tls => {
            let why = format!("CONNECTTLS {alias} rejected: only over a TLS connection");
            return Applied::read_only(fail(alias, code::THREE, why)).into();
        }
        Some(pin) => match std::str::from_utf8(pin) {
            Ok(pin) if pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(pin.to_ascii_lowercase())
            }
            _ => {
                let why = format!("CONNECTTLS {alias} rejected: the pin is not 64 hex digits");
                return Applied::read_only(fail(alias, code::THREE, why)).into();
            }
        },
    };
    match std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    {
        Some(port) if port != 0 => Parsed::Work(Work::Connect {
            alias: alias.to_string(),
            ip: caller.peer.ip(),
            port,
            proof: crate::accounts::Proof::None,
            pin,
        }),
        _ => {
            let why = format!(
                "CONNECT {alias} rejected: port {:?} is not a number from 1 to 65535",
                shown(port)
            );
            Applied::read_only(fail(alias, code::THREE, why)).into()
        }
    }
}

/// A failure answer about `alias`.
fn fail(alias: &str, code: u8, why: String) -> Reply {
    failure(Op::Connect, alias, code, why)
}

/// The answer once the storage work of CONNECT `alias` is done.
pub fn answer(alias: &str, result: storage::Result<Finished>) -> Applied {
    match result {
        Ok(Finished::Connected(ConnectOutcome::Connected)) => Applied::written(
            Reply::code(code::OK).console(format!("CONNECT {alias} OK")),
            fail(
                alias,
                code::THREE,
                format!("CONNECT {alias}: not committed"),
            ),
        ),
        Ok(Finished::Connected(ConnectOutcome::NoSuchUser)) => Applied::read_only(fail(
            alias,
            code::ONE,
            format!("CONNECT {alias}: no such user"),
        )),
        Ok(Finished::Connected(ConnectOutcome::AlreadyConnected)) => Applied::read_only(fail(
            alias,
            code::TWO,
            format!("CONNECT {alias}: already connected"),
        )),
        Ok(other) => Applied::read_only(fail(
            alias,
            code::THREE,
            format!("CONNECT {alias}: {other:?}"),
        )),
        Err(e) => Applied::read_only(fail(
            alias,
            code::THREE,
            format!("CONNECT {alias}: storage: {e}"),
        )),
    }
}
