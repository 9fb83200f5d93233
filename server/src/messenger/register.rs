//! `REGISTER name` (later edition) or `REGISTER full-name alias DD/MM/YYYY` (2022-23): the alias
//! is the key. Answers 0 ok, 1 already registered, 2 error.

use wire::{code, looks_like_birth_date, validate_full_name, validate_name, Op};

use super::{failure, shown, Parsed};
use crate::core::{Finished, Work};
use crate::frontend::{Applied, Reply};
use crate::storage;

/// The storage work REGISTER asks for, or the answer to a request refused at once.
pub fn apply(fields: &[&[u8]], from: std::net::IpAddr) -> Parsed {
    let (alias, profile) = match fields {
        [alias] => (*alias, None),
        [full_name, alias, birth_date] => (*alias, Some((*full_name, *birth_date))),
        _ => unreachable!("the framing passes REGISTER one or three fields"),
    };
    let fail = |why: String| failure(Op::Register, &shown(alias), code::TWO, why);
    let alias_str = match validate_name(alias) {
        Ok(name) => name,
        Err(e) => return Applied::read_only(fail(format!("REGISTER rejected: {e}"))).into(),
    };
    let profile = match profile {
        None => None,
        Some((full_name, birth_date)) => {
            let full_name = match validate_full_name(full_name) {
                Ok(name) => name,
                Err(e) => {
                    return Applied::read_only(fail(format!(
                        "REGISTER {alias_str} rejected: full name: {e}"
                    )))
                    .into()
                }
            };
            if !looks_like_birth_date(birth_date) {
                return Applied::read_only(fail(format!(
                    "REGISTER {alias_str} rejected: birth date {:?} is not DD/MM/YYYY",
                    shown(birth_date)
                )))
                .into();
            }
            // A valid date is ASCII digits and slashes.
            Some((
                full_name,
                std::str::from_utf8(birth_date).expect("checked date"),
            ))
        }
    };
    let (full_name, birth_date) = profile.unzip();
    Parsed::Work(Work::Register {
        alias: alias_str.to_string(),
        full_name: full_name.map(str::to_string),
        birth_date: birth_date.map(str::to_string),
        from,
        proof: crate::accounts::Proof::None,
    })
}

/// The answer once the storage work of REGISTER `alias` is done.
pub fn answer(alias: &str, result: storage::Result<Finished>) -> Applied {
    let fail = |why: String| failure(Op::Register, alias, code::TWO, why);
    match result {
        Ok(Finished::Registered(true)) => Applied::written(
            Reply::code(code::OK).console(format!("REGISTER {alias} OK")),
            fail(format!("REGISTER {alias}: not committed")),
        ),
        Ok(Finished::Registered(false)) => Applied::read_only(failure(
            Op::Register,
            alias,
            code::ONE,
            format!("REGISTER {alias}: already registered"),
        )),
        Ok(Finished::TooManyNewNames) => Applied::read_only(fail(format!(
            "REGISTER {alias} refused: its address registered --max-new-names-per-minute \
             names in the last minute"
        ))),
        Ok(other) => Applied::read_only(fail(format!("REGISTER {alias}: {other:?}"))),
        Err(e) => Applied::read_only(fail(format!("REGISTER {alias}: storage: {e}"))),
    }
}
