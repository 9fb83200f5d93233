//! `SEND sender recipient message` and `SENDATTACH sender recipient message file`. Answers 0 and
//! the message id once the message is on disk, 1 if either user does not exist, 2 on error.
//! On PostgreSQL the storage work runs beside the reactor and the answer comes with `finish`.

use std::collections::HashMap;

use wire::{code, validate_name};

use crate::beside::Ticket;
use crate::core::{Core, SendOutcome};
use crate::frontend::{Applied, Reply};
use crate::storage;

/// A SEND whose answer waits for its storage work beside the reactor.
pub struct Waiting {
    op: &'static str,
    sender: String,
    recipient: String,
}

pub fn apply(fields: &[&[u8]], core: &mut Core, waiting: &mut HashMap<Ticket, Waiting>) -> Applied {
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
            return Applied::read_only(fail(format!("{op} rejected: {e}")))
        }
    };
    if attachment.is_some_and(|file| file.is_empty() || file.iter().any(u8::is_ascii_control)) {
        return Applied::read_only(fail(format!(
            "{op} {sender} -> {recipient} rejected: empty or unprintable file name"
        )));
    }
    let request = Waiting {
        op,
        sender: sender.to_string(),
        recipient: recipient.to_string(),
    };
    if let Some(ticket) = core.send_beside(sender, recipient, text, attachment) {
        waiting.insert(ticket, request);
        return Applied::later(ticket);
    }
    answer(&request, core.send(sender, recipient, text, attachment))
}

impl Waiting {
    /// `SEND` or `SENDATTACH`.
    pub fn op(&self) -> &'static str {
        self.op
    }
}

/// The answer to a SEND run beside the reactor.
pub fn finish(request: &Waiting, outcome: storage::Result<SendOutcome>) -> Applied {
    answer(request, outcome).stored_beside()
}

fn fail(why: String) -> Reply {
    Reply::code(code::TWO).diagnostic(why)
}

fn answer(request: &Waiting, outcome: storage::Result<SendOutcome>) -> Applied {
    let Waiting {
        op,
        sender,
        recipient,
    } = request;
    match outcome {
        Ok(SendOutcome::Accepted { id, online }) => {
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
        Ok(SendOutcome::MailboxFull) => Applied::read_only(fail(format!(
            "{op} {sender} -> {recipient}: {recipient}'s mailbox is full (--max-pending-per-user)"
        ))),
        Ok(SendOutcome::NoSuchUser) => Applied::read_only(
            Reply::code(code::ONE)
                .diagnostic(format!("{op} {sender} -> {recipient}: no such user")),
        ),
        Err(e) => Applied::read_only(fail(format!("{op} {sender} -> {recipient}: storage: {e}"))),
    }
}
