//! `CONNECTEDUSERS [alias]` (plain aliases) and `USERS [alias]` (`alias::IP::port` entries).
//! Answers 0, the count and one string per user; 1 if the requester is not connected; 2 on error
//! (also: requester not registered).

use wire::{code, format_user_entry, validate_name, Op};

use crate::core::{Core, ListOutcome};
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
    match core.connected_users(requester, caller.peer.ip()) {
        Ok(ListOutcome::Users(users)) => {
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
            Applied::read_only(Reply {
                answer,
                console: Some("CONNECTEDUSERS OK".into()),
                diagnostic: None,
            })
        }
        Ok(ListOutcome::NotConnected) => Applied::read_only(fail(
            code::ONE,
            format!("{}: {who} is not connected", op.name()),
        )),
        Ok(ListOutcome::NotRegistered) => Applied::read_only(fail(
            code::TWO,
            format!("{}: {who} is not registered", op.name()),
        )),
        Err(e) => Applied::read_only(fail(code::TWO, format!("{}: storage: {e}", op.name()))),
    }
}
