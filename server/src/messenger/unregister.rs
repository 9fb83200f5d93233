//! `UNREGISTER alias`: removes the user and the messages waiting for them. Answers 0 ok, 1 no
//! such user, 2 error.

use wire::{code, validate_name};

use super::shown;
use crate::core::Core;
use crate::frontend::{Applied, Reply};

pub fn apply(fields: &[&[u8]], core: &mut Core) -> Applied {
    let [alias] = fields else {
        unreachable!("the framing passes UNREGISTER one field")
    };
    let fail = |code: u8, why: String| {
        Reply::code(code)
            .console(format!("UNREGISTER {} FAIL", shown(alias)))
            .diagnostic(why)
    };
    let alias = match validate_name(alias) {
        Ok(alias) => alias,
        Err(e) => return Applied::read_only(fail(code::TWO, format!("UNREGISTER rejected: {e}"))),
    };
    match core.unregister(alias) {
        Ok(true) => Applied::written(
            Reply::code(code::OK).console(format!("UNREGISTER {alias} OK")),
            fail(code::TWO, format!("UNREGISTER {alias}: not committed")),
        ),
        Ok(false) => {
            Applied::read_only(fail(code::ONE, format!("UNREGISTER {alias}: no such user")))
        }
        Err(e) => Applied::read_only(fail(code::TWO, format!("UNREGISTER {alias}: storage: {e}"))),
    }
}
