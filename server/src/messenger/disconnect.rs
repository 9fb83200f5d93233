//! `DISCONNECT alias`, accepted only from the IP the user connected from. Answers 0 ok, 1 no
//! such user, 2 not connected, 3 error (including "from another address").

use std::net::IpAddr;

use wire::{code, validate_name};

use wire::Op;

use super::{failure, shown, Parsed};
use crate::core::{DisconnectOutcome, Finished, Work};
use crate::frontend::{Applied, Caller, Reply};
use crate::storage;

/// The storage work DISCONNECT asks for, or the answer to a request refused at once.
pub fn apply(fields: &[&[u8]], caller: &Caller) -> Parsed {
    let [alias] = fields else {
        unreachable!("the framing passes DISCONNECT one field")
    };
    match validate_name(alias) {
        // Seed 000 section 8.4: only from the address the user connected from.
        Ok(alias) => Parsed::Work(Work::Disconnect {
            alias: alias.to_string(),
            from: caller.peer.ip(),
            proof: crate::accounts::Proof::None,
        }),
        Err(e) => Applied::read_only(fail(
            &shown(alias),
            code::THREE,
            format!("DISCONNECT rejected: {e}"),
        ))
        .into(),
    }
}

/// A failure answer about `alias`.
fn fail(alias: &str, code: u8, why: String) -> Reply {
    failure(Op::Disconnect, alias, code, why)
}

/// The answer once the storage work of DISCONNECT `alias` asked from `from` is done.
pub fn answer(alias: &str, from: IpAddr, result: storage::Result<Finished>) -> Applied {
    match result {
        Ok(Finished::Disconnected(DisconnectOutcome::Disconnected)) => Applied::written(
            Reply::code(code::OK).console(format!("DISCONNECT {alias} OK")),
            fail(
                alias,
                code::THREE,
                format!("DISCONNECT {alias}: not committed"),
            ),
        ),
        Ok(Finished::Disconnected(DisconnectOutcome::NoSuchUser)) => Applied::read_only(fail(
            alias,
            code::ONE,
            format!("DISCONNECT {alias}: no such user"),
        )),
        Ok(Finished::Disconnected(DisconnectOutcome::NotConnected)) => Applied::read_only(fail(
            alias,
            code::TWO,
            format!("DISCONNECT {alias}: not connected"),
        )),
        Ok(Finished::Disconnected(DisconnectOutcome::NotFromThere)) => Applied::read_only(fail(
            alias,
            code::THREE,
            format!("DISCONNECT {alias} refused: {from} is not the address it connected from"),
        )),
        Ok(other) => Applied::read_only(fail(
            alias,
            code::THREE,
            format!("DISCONNECT {alias}: {other:?}"),
        )),
        Err(e) => Applied::read_only(fail(
            alias,
            code::THREE,
            format!("DISCONNECT {alias}: storage: {e}"),
        )),
    }
}
