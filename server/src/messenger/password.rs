//! `SETPASSWORD alias new` (ours, docs/accounts.md): sets the user's password, or with an
//! empty `new` removes it. A name with a password needs it (`AUTH alias current` first); a
//! name without one needs its user connected from the caller's address, so nobody claims a
//! name from under the user who has it. Answers 0 ok, 1 no such user, 2 error or refused.

use wire::{code, validate_name, Op};

use super::{failure, shown, Parsed};
use crate::accounts::{NewSecret, Proof};
use crate::core::{Finished, Work};
use crate::frontend::{Applied, Reply};
use crate::storage;

/// The storage work SETPASSWORD asks for, or the answer to a request refused at once.
pub fn apply(fields: &[&[u8]], from: std::net::IpAddr) -> Parsed {
    let [alias, new] = fields else {
        unreachable!("the framing passes SETPASSWORD two fields")
    };
    let fail =
        |why: String| Applied::read_only(failure(Op::SetPassword, &shown(alias), code::TWO, why));
    let alias = match validate_name(alias) {
        Ok(alias) => alias,
        Err(e) => return fail(format!("SETPASSWORD rejected: {e}")).into(),
    };
    let new = match std::str::from_utf8(new).map(NewSecret::given) {
        Ok(Ok(new)) => new,
        Ok(Err(why)) => return fail(format!("SETPASSWORD {alias} rejected: {why}")).into(),
        Err(_) => return fail(format!("SETPASSWORD {alias} rejected: not UTF-8")).into(),
    };
    Parsed::Work(Work::SetPassword {
        alias: alias.to_string(),
        from,
        proof: Proof::None,
        new,
    })
}

/// The answer once the storage work of SETPASSWORD `alias` is done.
pub fn answer(alias: &str, result: storage::Result<Finished>) -> Applied {
    let fail = |code: u8, why: String| failure(Op::SetPassword, alias, code, why);
    match result {
        Ok(Finished::PasswordSet(true)) => Applied::written(
            Reply::code(code::OK).console(format!("SETPASSWORD {alias} OK")),
            fail(code::TWO, format!("SETPASSWORD {alias}: not committed")),
        ),
        Ok(Finished::PasswordSet(false)) => Applied::read_only(fail(
            code::ONE,
            format!("SETPASSWORD {alias}: no such user"),
        )),
        Ok(other) => Applied::read_only(fail(code::TWO, format!("SETPASSWORD {alias}: {other:?}"))),
        Err(e) => Applied::read_only(fail(
            code::TWO,
            format!("SETPASSWORD {alias}: storage: {e}"),
        )),
    }
}
