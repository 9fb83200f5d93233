//! `REGISTER name` (later edition) or `REGISTER full-name alias DD/MM/YYYY` (2022-23): the alias
//! is the key. Answers 0 ok, 1 already registered, 2 error.

use wire::{code, looks_like_birth_date, validate_full_name, validate_name};

use super::shown;
use crate::core::Core;
use crate::frontend::{Applied, Reply};

pub fn apply(fields: &[&[u8]], core: &mut Core) -> Applied {
    let (alias, profile) = match fields {
        [alias] => (*alias, None),
        [full_name, alias, birth_date] => (*alias, Some((*full_name, *birth_date))),
        _ => unreachable!("the framing passes REGISTER one or three fields"),
    };
    let fail = |why: String| {
        Reply::code(code::TWO)
            .console(format!("REGISTER {} FAIL", shown(alias)))
            .diagnostic(why)
    };
    let alias_str = match validate_name(alias) {
        Ok(name) => name,
        Err(e) => return Applied::read_only(fail(format!("REGISTER rejected: {e}"))),
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
                }
            };
            if !looks_like_birth_date(birth_date) {
                return Applied::read_only(fail(format!(
                    "REGISTER {alias_str} rejected: birth date {:?} is not DD/MM/YYYY",
                    shown(birth_date)
                )));
            }
            // A valid date is ASCII digits and slashes.
            Some((
                full_name,
                std::str::from_utf8(birth_date).expect("checked date"),
            ))
        }
    };
    let (full_name, birth_date) = profile.unzip();
    match core.register(alias_str, full_name, birth_date) {
        Ok(true) => Applied::written(
            Reply::code(code::OK).console(format!("REGISTER {alias_str} OK")),
            fail(format!("REGISTER {alias_str}: not committed")),
        ),
        Ok(false) => Applied::read_only(
            Reply::code(code::ONE)
                .console(format!("REGISTER {alias_str} FAIL"))
                .diagnostic(format!("REGISTER {alias_str}: already registered")),
        ),
        Err(e) => Applied::read_only(fail(format!("REGISTER {alias_str}: storage: {e}"))),
    }
}
