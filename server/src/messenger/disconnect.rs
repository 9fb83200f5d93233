//! `DISCONNECT alias`, accepted only from the IP the user connected from. Answers 0 ok, 1 no
//! such user, 2 not connected, 3 error (including "from another address").

use wire::{code, validate_name};

use super::shown;
use crate::core::{Core, DisconnectOutcome, Endpoint};
use crate::frontend::{Applied, Caller, Reply};

pub fn apply(fields: &[&[u8]], caller: &Caller, core: &mut Core) -> Applied {
    let [alias] = fields else {
        unreachable!("the framing passes DISCONNECT one field")
    };
    let fail = |code: u8, why: String| {
        Reply::code(code)
            .console(format!("DISCONNECT {} FAIL", shown(alias)))
            .diagnostic(why)
    };
    let alias = match validate_name(alias) {
        Ok(alias) => alias,
        Err(e) => {
            return Applied::read_only(fail(code::THREE, format!("DISCONNECT rejected: {e}")))
        }
    };
    // Seed 000 section 8.4: only from the address the user connected from.
    match core.presence(alias) {
        Ok(Some(Some(Endpoint::Listener(addr))))
            if addr.ip().to_canonical() != caller.peer.ip().to_canonical() =>
        {
            return Applied::read_only(fail(
                code::THREE,
                format!(
                    "DISCONNECT {alias} refused: {} is not the address it connected from",
                    caller.peer.ip()
                ),
            ))
        }
        Ok(_) => {}
        Err(e) => {
            return Applied::read_only(fail(
                code::THREE,
                format!("DISCONNECT {alias}: storage: {e}"),
            ))
        }
    }
    match core.disconnect(alias) {
        Ok(DisconnectOutcome::Disconnected) => Applied::written(
            Reply::code(code::OK).console(format!("DISCONNECT {alias} OK")),
            fail(code::THREE, format!("DISCONNECT {alias}: not committed")),
        ),
        Ok(DisconnectOutcome::NoSuchUser) => {
            Applied::read_only(fail(code::ONE, format!("DISCONNECT {alias}: no such user")))
        }
        Ok(DisconnectOutcome::NotConnected) => Applied::read_only(fail(
            code::TWO,
            format!("DISCONNECT {alias}: not connected"),
        )),
        Err(e) => Applied::read_only(fail(
            code::THREE,
            format!("DISCONNECT {alias}: storage: {e}"),
        )),
    }
}
