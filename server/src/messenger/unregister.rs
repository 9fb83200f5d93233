//! `UNREGISTER alias`: removes the user and the messages waiting for them. Answers 0 ok, 1 no
//! such user, 2 error.

use wire::{code, validate_name};

use wire::Op;

use super::{failure, shown, Parsed};
use crate::accounts::Proof;
use crate::core::{Finished, Work};
use crate::frontend::{Applied, Reply};
use crate::storage;

/// The storage work UNREGISTER asks for, or the answer to a request refused at once.
pub fn apply(fields: &[&[u8]], from: std::net::IpAddr) -> Parsed {
    let [alias] = fields else {
        unreachable!("the framing passes UNREGISTER one field")
    };
    match validate_name(alias) {
        Ok(alias) => Parsed::Work(Work::Unregister {
            alias: alias.to_string(),
            from,
            proof: Proof::None,
        }),
        Err(e) => Applied::read_only(fail(
            &shown(alias),
            code::TWO,
            format!("UNREGISTER rejected: {e}"),
        ))
        .into(),
    }
}

/// A failure answer about `alias`.
fn fail(alias: &str, code: u8, why: String) -> Reply {
    failure(Op::Unregister, alias, code, why)
}

/// The answer once the storage work of UNREGISTER `alias` is done.
pub fn answer(alias: &str, result: storage::Result<Finished>) -> Applied {
    match result {
        Ok(Finished::Unregistered(true)) => Applied::written(
            Reply::code(code::OK).console(format!("UNREGISTER {alias} OK")),
            fail(
                alias,
                code::TWO,
                format!("UNREGISTER {alias}: not committed"),
            ),
        ),
        Ok(Finished::Unregistered(false)) => Applied::read_only(fail(
            alias,
            code::ONE,
            format!("UNREGISTER {alias}: no such user"),
        )),
        Ok(other) => Applied::read_only(fail(
            alias,
            code::TWO,
            format!("UNREGISTER {alias}: {other:?}"),
        )),
        Err(e) => Applied::read_only(fail(
            alias,
            code::TWO,
            format!("UNREGISTER {alias}: storage: {e}"),
        )),
    }
}
