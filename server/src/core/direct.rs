//! Private messages around the mailbox: between two sessions of this node, when nothing
//! waits for the recipient, a message goes straight to the recipient's session; only the
//! sender's id sequence is written (the console line and the messenger's acks need ids that
//! never repeat). The mailbox is the fallback, so every promise holds:
//!
//! - order: a message goes around only if the recipient's mailbox is empty and no delivery
//!   to them is under way, so nothing older can come after it; once something waits, the
//!   next messages wait behind it;
//! - never lost: a message its session did not write (the session ended first) is queued in
//!   front of the recipient's mailbox ([`Storage::queue_in_front`]), ahead of what came for
//!   them since, all of which is younger;
//! - a commit that fails takes the turn's messages back: nothing of it is written out.
//!
//! A shared database (PostgreSQL) never takes this path: another node may be adding to the
//! recipient's mailbox at the same moment ([`Storage::direct_message_id`] says None).
//!
//! [`Storage::queue_in_front`]: crate::storage::Storage::queue_in_front
//! [`Storage::direct_message_id`]: crate::storage::Storage::direct_message_id

use std::rc::Rc;

use super::{Core, DeliveryMark, Event, Job, JobId, Notice, SendOutcome};
use crate::storage;

/// Most messages around the mailbox a session may have unwritten; the next ones wait in
/// the mailbox (a reader slower than its senders is paced by it, not disconnected).
pub const MAX_UNWRITTEN_DIRECT: usize = super::DELIVERY_BATCH;

impl Core {
    /// Sends `text` (clean already) from `sender` to `recipient` around the mailbox if it
    /// may go so; None if it must go through the mailbox (nothing done then).
    pub(super) fn send_direct(
        &mut self,
        sender: &str,
        recipient: &str,
        text: &[u8],
    ) -> Option<storage::Result<SendOutcome>> {
        if self.beside.is_some() || self.stopped {
            return None;
        }
        let session = self.sessions.session_of(recipient)?;
        if !self.sessions.accepts_private(session)
            || self.delivery_under_way(recipient)
            || self.unwritten_direct.get(recipient).copied().unwrap_or(0) >= MAX_UNWRITTEN_DIRECT
        {
            return None;
        }
        let id = match self.store.direct_message_id(sender, recipient) {
            Ok(Some(id)) => id,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        self.metrics.message("private");
        let text: Rc<[u8]> = text.into();
        let job = self.new_job(Job::Direct {
            recipient: recipient.to_string(),
            sender: sender.to_string(),
            id,
            text: Rc::clone(&text),
        });
        *self
            .unwritten_direct
            .entry(recipient.to_string())
            .or_default() += 1;
        self.turn_direct.push(job);
        self.notices.push((
            session,
            Notice::Private {
                from: sender.into(),
                text,
                delivery: DeliveryMark {
                    job,
                    index: 0,
                    last: true,
                },
            },
        ));
        Some(Ok(SendOutcome::Accepted { id, online: true }))
    }

    /// True if a delivery to `alias` is being gathered, is on its way, waits for its removal
    /// or its retry, or is about to start this turn.
    fn delivery_under_way(&self, alias: &str) -> bool {
        self.gathering.contains(alias)
            || self.in_flight.contains_key(alias)
            || self.unremoved.contains_key(alias)
            || self.removing.contains_key(alias)
            || self.retry_at.contains_key(alias)
            || self.waiting_set.contains(alias)
            || self.kicks.contains(alias)
    }

    /// A message around the mailbox was written to its session (`written`), or never will be:
    /// then it is queued in front of its recipient's mailbox.
    pub(super) fn direct_reported(&mut self, job: JobId, written: bool) {
        let Some(Job::Direct {
            recipient,
            sender,
            id,
            text,
        }) = self.jobs.remove(&job)
        else {
            unreachable!("a direct job's report");
        };
        self.one_less_unwritten(&recipient);
        self.metrics
            .push(if written { "delivered" } else { "failed" });
        if written {
            self.events.push(Event::Delivered {
                id,
                sender,
                recipient,
            });
            return;
        }
        // Queued at the end of the turn, with the others of the same ending in the order sent.
        self.unwritten_to_queue.push((recipient, sender, id, text));
    }

    /// Queues in front of their recipients' mailboxes the messages around the mailbox that
    /// will never be written (their sessions ended), before the turn commits: each
    /// recipient's in the order they were sent. (A session reports all its unwritten ones
    /// as it ends, and none goes around a mailbox with something in it, so no two endings'
    /// messages are in a mailbox at once.)
    pub(super) fn queue_unwritten_in_front(&mut self) {
        let mut unwritten = std::mem::take(&mut self.unwritten_to_queue);
        while let Some((recipient, ..)) = unwritten.first() {
            let recipient = recipient.clone();
            let (theirs, others): (Vec<_>, Vec<_>) =
                unwritten.into_iter().partition(|(to, ..)| *to == recipient);
            unwritten = others;
            let messages: Vec<(&str, u32, &[u8])> = theirs
                .iter()
                .map(|(_, sender, id, text)| (sender.as_str(), *id, &text[..]))
                .collect();
            match self.store.queue_in_front(&recipient, &messages) {
                // Wherever they are now (the messenger, another session), it reaches them.
                Ok(()) => {
                    self.kicks.insert(recipient);
                }
                // The turn's transaction is broken: its commit fails and says so.
                Err(e) => log::error!(
                    "{} messages to {recipient} were not written to its session and could not \
                     be queued: {e}",
                    messages.len()
                ),
            }
        }
    }

    /// The end of a turn's commit: if it failed, the messages that went around the mailbox
    /// in it are taken back before anything is written out (their ids were rolled back too,
    /// and their senders hear that nothing was stored).
    pub(super) fn direct_turn_committed(&mut self, committed: bool) {
        let jobs = std::mem::take(&mut self.turn_direct);
        if committed || jobs.is_empty() {
            return;
        }
        self.notices.retain(|(_, notice)| {
            !matches!(notice, Notice::Private { delivery, .. } if jobs.contains(&delivery.job))
        });
        for job in jobs {
            if let Some(Job::Direct { recipient, .. }) = self.jobs.remove(&job) {
                self.one_less_unwritten(&recipient);
            }
        }
    }

    fn one_less_unwritten(&mut self, recipient: &str) {
        if let Some(count) = self.unwritten_direct.get_mut(recipient) {
            *count -= 1;
            if *count == 0 {
                self.unwritten_direct.remove(recipient);
            }
        }
    }
}
