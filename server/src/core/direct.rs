//! Private messages around the mailbox: from a session to another session of this node, when
//! nothing waits for the recipient, a message goes straight to the recipient's session, and
//! nothing is written for it but, once in 1024 messages, the sender's id block (the console line
//! and the messenger's acks need ids that never repeat). The mailbox stays the fallback, so
//! every promise holds:
//!
//! - order: a message goes around only if the recipient's mailbox is empty and no delivery
//!   to them is under way, so nothing older can come after it; once something waits, the
//!   next messages wait behind it, and mailbox deliveries to the recipient wait until the
//!   messages around it are written;
//! - never lost: what the first write (at the end of the turn that told it) leaves unwritten
//!   is stored at once, in front of the recipient's mailbox ([`Storage::queue_in_front`]),
//!   ahead of what came for them since, all of which is younger; so is a message whose session
//!   ended before it was written at all;
//! - a commit that fails takes the turn's messages back: nothing of it is written out.
//!
//! A shared database (PostgreSQL) never takes this path: another node may be adding to the
//! recipient's mailbox at the same moment ([`Storage::direct_message_id`] says None).
//!
//! [`Storage::queue_in_front`]: crate::storage::Storage::queue_in_front
//! [`Storage::direct_message_id`]: crate::storage::Storage::direct_message_id

use std::collections::HashMap;
use std::rc::Rc;

use super::{Core, DeliveryMark, Event, Job, JobId, Notice, Removal, SendOutcome};
use crate::storage;

/// A message around the mailbox that was never written: `(recipient, sender, id, text)`.
pub(super) type Unwritten = (Rc<str>, Rc<str>, u32, Rc<[u8]>);

/// Most messages around the mailbox a session may have unwritten; the next ones wait in
/// the mailbox (a reader slower than its senders is paced by it, not disconnected).
const MAX_UNWRITTEN_DIRECT: usize = super::DELIVERY_BATCH;

impl Core {
    /// Sends `text` (clean already) from `sender` to `recipient` around the mailbox if it
    /// may go so; None if it must go through the mailbox (nothing done then). The names are
    /// the sessions' own, shared: nothing but the text is copied.
    pub(super) fn send_direct(
        &mut self,
        sender: &Rc<str>,
        recipient: &str,
        text: &[u8],
    ) -> Option<storage::Result<SendOutcome>> {
        if self.beside.is_some() || self.stopped {
            return None;
        }
        let (session, recipient) = self.sessions.private_recipient(recipient)?;
        let recipient = Rc::clone(recipient);
        let unwritten = self.unwritten_direct.get(&recipient).copied().unwrap_or(0);
        if unwritten >= MAX_UNWRITTEN_DIRECT || self.delivery_under_way(&recipient) {
            return None;
        }
        let id = match self.store.direct_message_id(sender, &recipient) {
            Ok(Some(id)) => id,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        self.metrics.message("private");
        let text: Rc<[u8]> = text.into();
        self.unwritten_direct
            .insert(Rc::clone(&recipient), unwritten + 1);
        let job = self.new_job(Job::Direct {
            recipient,
            sender: Rc::clone(sender),
            id,
            text: Rc::clone(&text),
            stored: None,
        });
        self.turn_direct.push(job);
        self.notices.push((
            session,
            Notice::Private {
                from: Rc::clone(sender),
                text,
                delivery: DeliveryMark {
                    job,
                    index: 0,
                    last: true,
                    unstored: true,
                },
            },
        ));
        Some(Ok(SendOutcome::Told { id }))
    }

    /// True if a delivery to `alias` is being gathered, is on its way (or held back), or is
    /// about to start this turn.
    fn delivery_under_way(&self, alias: &str) -> bool {
        self.gathering.contains(alias) || self.delivery_held(alias) || self.kicks.contains(alias)
    }

    /// A message around the mailbox was written to its session (`written`), or never will be:
    /// then, unless it was stored already, it is queued in front of its recipient's mailbox.
    pub(super) fn direct_reported(&mut self, job: JobId, written: bool) {
        let Some(Job::Direct {
            recipient,
            sender,
            id,
            text,
            stored,
        }) = self.jobs.remove(&job)
        else {
            unreachable!("a direct job's report");
        };
        self.one_less_unwritten(&recipient);
        self.metrics
            .push(if written { "delivered" } else { "failed" });
        match (written, stored) {
            // Its row is removed like any delivered message's, then reported.
            (true, Some(seq)) => self.delivered(
                &recipient,
                Removal {
                    seq,
                    sender: sender.to_string(),
                    id,
                    attachment: None,
                },
            ),
            (true, None) => self.events.push(Event::Delivered {
                id,
                sender,
                recipient,
            }),
            // It waits in the mailbox already, in its place.
            (false, Some(_)) => {
                self.kicks.insert(recipient.to_string());
            }
            // Queued at the end of the turn, with the others of the same ending in the order
            // sent.
            (false, None) => self.unwritten_to_queue.push((recipient, sender, id, text)),
        }
    }

    /// Stores the messages around the mailbox (`marks`, in the order queued) that their first
    /// write, at the end of the turn that told them, did not write whole: a slow reader's
    /// messages would otherwise wait in memory only, and a crash would lose them. They go in
    /// front of their recipients' mailboxes (what waits there came later); once written they
    /// are removed like any delivered message.
    pub fn store_unwritten(&mut self, marks: Vec<DeliveryMark>) {
        let unstored = marks
            .iter()
            .filter_map(|mark| match self.jobs.get(&mark.job) {
                Some(Job::Direct {
                    recipient,
                    sender,
                    id,
                    text,
                    stored: None,
                }) => Some((
                    Rc::clone(recipient),
                    (mark.job, Rc::clone(sender), *id, Rc::clone(text)),
                )),
                _ => None,
            });
        for (recipient, theirs) in by_recipient(unstored.collect::<Vec<_>>()) {
            let messages: Vec<(&str, u32, &[u8])> = theirs
                .iter()
                .map(|(_, sender, id, text)| (&**sender, *id, &text[..]))
                .collect();
            match self.store.queue_in_front(&recipient, &messages) {
                Ok(seqs) => {
                    for ((job, ..), seq) in theirs.iter().zip(seqs) {
                        if let Some(Job::Direct { stored, .. }) = self.jobs.get_mut(job) {
                            *stored = Some(seq);
                        }
                    }
                }
                // The turn's transaction is broken: its commit fails and says so.
                Err(e) => log::error!(
                    "{} messages to {recipient} wait unwritten and could not be stored: {e}",
                    theirs.len()
                ),
            }
        }
    }

    /// Queues in front of their recipients' mailboxes the messages around the mailbox that
    /// will never be written (their sessions ended), before the turn commits: each
    /// recipient's in the order they were sent. (A session reports all its unwritten ones
    /// as it ends, and none goes around a mailbox with something in it, so no two endings'
    /// messages are in a mailbox at once.)
    pub(super) fn queue_unwritten_in_front(&mut self) {
        let unwritten = std::mem::take(&mut self.unwritten_to_queue)
            .into_iter()
            .map(|(recipient, sender, id, text)| (recipient, (sender, id, text)));
        for (recipient, theirs) in by_recipient(unwritten) {
            let messages: Vec<(&str, u32, &[u8])> = theirs
                .iter()
                .map(|(sender, id, text)| (&**sender, *id, &text[..]))
                .collect();
            match self.store.queue_in_front(&recipient, &messages) {
                // Wherever they are now (the messenger, another session), it reaches them.
                Ok(_) => {
                    self.kicks.insert(recipient.to_string());
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
    /// in it are taken back before anything is written out (their senders hear that nothing
    /// was stored; a block of ids reserved in the turn was rolled back with it).
    pub(super) fn direct_turn_committed(&mut self, committed: bool) {
        if committed || self.turn_direct.is_empty() {
            // Cleared, not taken: its memory serves the next turns.
            self.turn_direct.clear();
            return;
        }
        let jobs = std::mem::take(&mut self.turn_direct);
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
                if self.after_direct.remove(recipient) {
                    self.kicks.insert(recipient.to_string());
                }
            }
        }
    }
}

/// `items` by recipient, each recipient's in their order, the recipients in the order of
/// their first item.
fn by_recipient<T>(items: impl IntoIterator<Item = (Rc<str>, T)>) -> Vec<(Rc<str>, Vec<T>)> {
    let mut grouped: Vec<(Rc<str>, Vec<T>)> = Vec::new();
    let mut at: HashMap<Rc<str>, usize> = HashMap::new();
    for (recipient, item) in items {
        match at.get(&recipient) {
            Some(&index) => grouped[index].1.push(item),
            None => {
                at.insert(recipient.clone(), grouped.len());
                grouped.push((recipient, vec![item]));
            }
        }
    }
    grouped
}
