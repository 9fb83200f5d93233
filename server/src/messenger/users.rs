//! `CONNECTEDUSERS [alias]` (plain aliases) and `USERS [alias]` (`alias::IP::port` entries).
//! Answers 0, the count and one string per user; 1 if the requester is not connected; 2 on error
//! (also: requester not registered).

use wire::{code, format_user_entry, validate_name, Op};

use crate::core::Core;
use crate::frontend::{Applied, Caller, Reply};

pub fn apply(op: Op, fields: &[&[u8]], caller: &Caller, core: &mut Core) -> Applied {
    let fail = |code: u8, why: String| {
        Reply::code(code)
            .console("CONNECTEDUSERS FAIL")
            .diagnostic(why)
    };
    let requester = match fields {
        [] => None,
        [alias] => match validate_name(alias) {
            Ok(alias) => Some(alias),
            Err(e) => {
                return Applied::read_only(fail(code::TWO, format!("{} rejected: {e}", op.name())))
            }
        },
        _ => unreachable!("the framing passes {} at most one field", op.name()),
    };
    let who = requester.map_or_else(
        || format!("the user at {}", caller.peer.ip()),
        str::to_string,
    );
    let users = match core.connected_users() {
        Ok(users) => users,
        Err(e) => {
            return Applied::read_only(fail(code::TWO, format!("{}: storage: {e}", op.name())))
        }
    };
    // Without an alias the requester is whoever is connected from the caller's address.
    let requester_connected = match requester {
        Some(alias) => match core.presence(alias) {
            Ok(None) => {
                return Applied::read_only(fail(
                    code::TWO,
                    format!("{}: {who} is not registered", op.name()),
                ))
            }
            Ok(Some(present)) => present.is_some(),
            Err(e) => {
                return Applied::read_only(fail(code::TWO, format!("{}: storage: {e}", op.name())))
            }
        },
        None => {
            let from = caller.peer.ip().to_canonical().to_string();
            users.iter().any(|(_, ip, _)| *ip == from)
        }
    };
    if !requester_connected {
        return Applied::read_only(fail(
            code::ONE,
            format!("{}: {who} is not connected", op.name()),
        ));
    }
    let mut answer = vec![code::OK];
    let mut push = |field: &str| {
        answer.extend_from_slice(field.as_bytes());
        answer.push(0);
    };
    push(&users.len().to_string());
    for (alias, ip, port) in &users {
        match op {
            Op::Users => push(&format_user_entry(alias, ip, *port)),
            _ => push(alias),
        }
    }
    Applied::read_only(Reply::bytes(answer).console("CONNECTEDUSERS OK"))
}
