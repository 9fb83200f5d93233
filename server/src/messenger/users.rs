//! `CONNECTEDUSERS [alias]` (plain aliases) and `USERS [alias]` (`alias::IP::port` entries).
//! Answers 0, the count and one string per user; 1 if the requester is not connected; 2 on error
//! (also: requester not registered).

use std::net::IpAddr;

use wire::{code, format_user_entry, validate_name, Op};

use super::Parsed;
use crate::core::{Finished, Work};
use crate::frontend::{Applied, Caller, Reply};
use crate::storage;

fn fail(code: u8, why: String) -> Reply {
    Reply::code(code)
        .console("CONNECTEDUSERS FAIL")
        .diagnostic(why)
}

/// The storage work the listing asks for, or the answer to a request refused at once.
pub fn apply(op: Op, fields: &[&[u8]], caller: &Caller) -> Parsed {
    let requester = match fields {
        [] => None,
        [alias] => match validate_name(alias) {
            Ok(alias) => Some(alias.to_string()),
            Err(e) => {
                return Applied::read_only(fail(code::TWO, format!("{} rejected: {e}", op.name())))
                    .into()
            }
        },
        _ => unreachable!("the framing passes {} at most one field", op.name()),
    };
    Parsed::Work(Work::ListUsers {
        requester,
        from: caller.peer.ip(),
    })
}

/// The answer once the listing's storage work is done: `requester` named, or else whoever is
/// connected from `from`.
pub fn answer(
    op: Op,
    requester: Option<&str>,
    from: IpAddr,
    result: storage::Result<Finished>,
) -> Applied {
    let who = requester.map_or_else(|| format!("the user at {from}"), str::to_string);
    let (users, requester_present) = match result {
        Ok(Finished::Listed {
            users,
            requester_present,
        }) => (users, requester_present),
        Ok(other) => {
            return Applied::read_only(fail(code::TWO, format!("{}: {other:?}", op.name())))
        }
        Err(e) => {
            return Applied::read_only(fail(code::TWO, format!("{}: storage: {e}", op.name())))
        }
    };
    let requester_connected = match (requester, requester_present) {
        (Some(_), None) => {
            return Applied::read_only(fail(
                code::TWO,
                format!("{}: {who} is not registered", op.name()),
            ))
        }
        (Some(_), Some(present)) => present,
        // Without an alias the requester is whoever is connected from the caller's address.
        (None, _) => {
            let from = from.to_canonical().to_string();
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
