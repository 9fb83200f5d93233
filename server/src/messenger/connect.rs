//! `CONNECT alias port`: the user listens at the caller's IP and that port. Answers 0 ok, 1 no
//! such user, 2 already connected, 3 error. Pending messages follow the commit.

use std::time::Instant;

use wire::{code, validate_name};

use super::shown;
use crate::core::{ConnectOutcome, Core};
use crate::frontend::{Applied, Caller, Reply};

pub fn apply(fields: &[&[u8]], caller: &Caller, core: &mut Core, now: Instant) -> Applied {
    let [alias, port] = fields else {
        unreachable!("the framing passes CONNECT two fields")
    };
    let fail = |code: u8, why: String| {
        Reply::code(code)
            .console(format!("CONNECT {} FAIL", shown(alias)))
            .diagnostic(why)
    };
    let alias = match validate_name(alias) {
        Ok(alias) => alias,
        Err(e) => return Applied::read_only(fail(code::THREE, format!("CONNECT rejected: {e}"))),
    };
    let port = match std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    {
        Some(port) if port != 0 => port,
        _ => {
            let why = format!(
                "CONNECT {alias} rejected: port {:?} is not a number from 1 to 65535",
                shown(port)
            );
            return Applied::read_only(fail(code::THREE, why));
        }
    };
    match core.connect(alias, caller.peer.ip(), port, now) {
        Ok(ConnectOutcome::Connected) => Applied::written(
            Reply::code(code::OK).console(format!("CONNECT {alias} OK")),
            fail(code::THREE, format!("CONNECT {alias}: not committed")),
        ),
        Ok(ConnectOutcome::NoSuchUser) => {
            Applied::read_only(fail(code::ONE, format!("CONNECT {alias}: no such user")))
        }
        Ok(ConnectOutcome::AlreadyConnected) => Applied::read_only(fail(
            code::TWO,
            format!("CONNECT {alias}: already connected"),
        )),
        Err(e) => Applied::read_only(fail(code::THREE, format!("CONNECT {alias}: storage: {e}"))),
    }
}
