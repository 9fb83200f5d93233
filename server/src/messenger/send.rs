//! `SEND sender recipient message` and `SENDATTACH sender recipient message file`. Answers 0 and
//! the message id once the message is on disk, 1 if either user does not exist, 2 on error.

use wire::{code, validate_name};

use super::Parsed;
use crate::core::{Core, Finished, SendOutcome};
use crate::frontend::{Applied, Reply};
use crate::storage;

/// The storage work SEND asks for, or the answer to a request refused at once.
pub fn apply(fields: &[&[u8]], core: &Core, from: std::net::IpAddr) -> Parsed {
    let (sender, recipient, text, attachment) = match fields {
        [sender, recipient, text] => (*sender, *recipient, *text, None),
        [sender, recipient, text, file] => (*sender, *recipient, *text, Some(*file)),
        _ => unreachable!("the framing passes SEND three fields and SENDATTACH four"),
    };
    let op = if attachment.is_some() {
        "SENDATTACH"
    } else {
        "SEND"
    };
    let (sender, recipient) = match (validate_name(sender), validate_name(recipient)) {
        (Ok(sender), Ok(recipient)) => (sender, recipient),
        (Err(e), _) | (_, Err(e)) => {
            return Applied::read_only(fail(format!("{op} rejected: {e}"))).into()
        }
    };
    if attachment.is_some_and(|file| file.is_empty() || file.iter().any(u8::is_ascii_control)) {
        return Applied::read_only(fail(format!(
            "{op} {sender} -> {recipient} rejected: empty or unprintable file name"
        )))
        .into();
    }
    let caller = (sender, crate::accounts::Proof::None, from);
    Parsed::Work(core.send_work(caller, recipient, text, attachment))
}

fn fail(why: String) -> Reply {
    Reply::code(code::TWO).diagnostic(why)
}

/// The answer once the storage work of `op` (SEND or SENDATTACH) is done.
pub fn answer(
    op: &str,
    sender: &str,
    recipient: &str,
    result: storage::Result<Finished>,
) -> Applied {
    match result {
        Ok(Finished::Sent(SendOutcome::Accepted { id, online })) => {
            let mut answer = vec![code::OK];
            answer.extend_from_slice(id.to_string().as_bytes());
            answer.push(0);
            let reply = Reply::bytes(answer);
            // An online recipient's line is printed when the push completes.
            let reply = if online {
                reply
            } else {
                reply.console(format!("MESSAGE {id} FROM {sender} TO {recipient} STORED"))
            };
            Applied::written(
                reply,
                fail(format!("{op} {sender} -> {recipient}: not committed")),
            )
        }
        Ok(Finished::Sent(SendOutcome::MailboxFull)) => Applied::read_only(fail(format!(
            "{op} {sender} -> {recipient}: {recipient}'s mailbox is full (--max-pending-per-user)"
        ))),
        Ok(Finished::Sent(SendOutcome::NoSuchUser)) => Applied::read_only(
            Reply::code(code::ONE)
                .diagnostic(format!("{op} {sender} -> {recipient}: no such user")),
        ),
        Ok(other) => Applied::read_only(fail(format!("{op} {sender} -> {recipient}: {other:?}"))),
        Err(e) => Applied::read_only(fail(format!("{op} {sender} -> {recipient}: storage: {e}"))),
    }
}
