//! Accounts: who may act as a name, and the passwords (and room keys) that decide it.
//!
//! A name has a password only if somebody gave it one (opt-in), so the original clients keep
//! working with names that have none. One function answers "may this caller act as this
//! name" for every front-end ([`gate`]); it runs inside the storage steps of each request
//! that acts as a user (`core::work`), against the password hash as stored in the same
//! transaction. A password is never compared there: when one must be checked (or hashed, to
//! claim a new name), the storage steps stop with [`Verdict::Prove`] and write nothing, the
//! core hands the secret to the [`checker`] threads (argon2id costs milliseconds by design,
//! so never on the reactor), and the request runs again with the result as its proof.
//!
//! Guessing is slowed per name and client address ([`throttle`]). Hashes are stored in the
//! PHC string form (`$argon2id$v=19$m=...`), never a password.

pub mod checker;
pub mod operator;
pub mod password;
pub mod throttle;

pub use checker::{CheckJob, Checked, Checker};
pub use password::Secret;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::beside::Ticket;
use crate::core::Work;

/// How a request proves that its caller may act as a name (or enter a keyed room).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Proof {
    /// Nothing: fine for a name without a password.
    #[default]
    None,
    /// A password (or room key) the caller gave, not yet checked.
    Given(Secret),
    /// The caller's secret matched this stored hash, or was hashed into it to claim a new
    /// name: the storage steps accept the request only if the hash stored is still this one
    /// (or, for a claim, the name is still new).
    Checked(String),
    /// The caller is the session logged in as the name (it proved itself at its login).
    Session,
}

impl Proof {
    /// A secret as a request gives it (none, or empty: nothing given).
    pub fn given(secret: Option<&str>) -> Proof {
        match secret {
            None | Some("") => Proof::None,
            Some(secret) => Proof::Given(Secret::new(secret.to_string())),
        }
    }
}

/// A new password or room key that a request stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewSecret {
    /// As the caller gave it: hashed by the checker before the request runs again.
    Plain(Secret),
    Hashed(String),
}

impl NewSecret {
    /// A new password or key as a request gives it: empty removes it (None); one that may
    /// not be a password is refused with why.
    pub fn given(secret: &str) -> Result<Option<NewSecret>, &'static str> {
        match secret {
            "" => Ok(None),
            secret => password::acceptable(secret)
                .map(|()| Some(NewSecret::Plain(Secret::new(secret.to_string())))),
        }
    }
}

/// Why a request was refused on the accounts' account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The name has a password (or `--require-passwords`) and none was given.
    PasswordNeeded,
    WrongPassword,
    /// The room has a key and none was given.
    KeyNeeded,
    WrongKey,
    /// Too many failed attempts for this name from this address: refused for a while.
    Throttled,
    /// The password checker's queue is full (or full for this address).
    Busy,
    /// DISCONNECT or UNREGISTER of a present user from another address than it came from.
    NotFromThere,
    /// The user is in a session on another node, whose address this node cannot check.
    OnAnotherNode,
    /// Setting the password of a name without one needs that user's presence.
    NotPresent,
    /// Only the member who created a room sets its key.
    NotCreator,
}

/// Every denial, in the order the metrics list them.
pub const DENIALS: [Denial; 10] = [
    Denial::PasswordNeeded,
    Denial::WrongPassword,
    Denial::KeyNeeded,
    Denial::WrongKey,
    Denial::Throttled,
    Denial::Busy,
    Denial::NotFromThere,
    Denial::OnAnotherNode,
    Denial::NotPresent,
    Denial::NotCreator,
];

impl Denial {
    /// A failed attempt at a secret: counted towards the throttle.
    pub fn is_failed_guess(self) -> bool {
        matches!(
            self,
            Denial::PasswordNeeded | Denial::WrongPassword | Denial::KeyNeeded | Denial::WrongKey
        )
    }

    /// What a client is told, in the protocols' Spanish.
    pub fn reason(self) -> &'static str {
        match self {
            Denial::PasswordNeeded => "Se necesita contraseña",
            Denial::WrongPassword => "Contraseña incorrecta",
            Denial::KeyNeeded => "La sala tiene clave",
            Denial::WrongKey => "Clave incorrecta",
            Denial::Throttled => "Demasiados intentos fallidos; espera",
            Denial::Busy => "Servidor ocupado; inténtalo de nuevo",
            Denial::NotFromThere => "Solo desde la dirección de la sesión",
            Denial::OnAnotherNode => "El usuario está en otro nodo",
            Denial::NotPresent => "Solo el usuario conectado puede hacerlo",
            Denial::NotCreator => "Solo quien creó la sala puede ponerle clave",
        }
    }

    /// The label of `messenger_auth_failures_total` and of the stderr line.
    pub fn label(self) -> &'static str {
        match self {
            Denial::PasswordNeeded => "password_needed",
            Denial::WrongPassword => "wrong_password",
            Denial::KeyNeeded => "key_needed",
            Denial::WrongKey => "wrong_key",
            Denial::Throttled => "throttled",
            Denial::Busy => "busy",
            Denial::NotFromThere => "not_from_there",
            Denial::OnAnotherNode => "on_another_node",
            Denial::NotPresent => "not_present",
            Denial::NotCreator => "not_creator",
        }
    }
}

/// The server's policy, fixed at start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--require-passwords`: no name without a password logs in, registers or acts.
    pub require_passwords: bool,
}

/// What must be done before a request may go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proving {
    /// Check the given secret against this stored hash.
    pub verify: Option<String>,
    /// Hash the given secret: it claims a new name.
    pub claim: bool,
    /// Hash the new password or key the request stores.
    pub new: bool,
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on; `claim`: the name is new and gets this password hash.
    Pass {
        claim: Option<String>,
    },
    /// Nothing may be written yet: the secret must be checked (or hashed) first.
    Prove(Proving),
    Deny(Denial),
}

/// What is stored about the subject (a user, or a room for its key).
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// No such user (or room).
    Absent,
    /// Exists, with this password hash (or key hash), if any.
    Present(Option<&'a str>),
}

/// For a room's key rather than a user's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    RoomKey,
}

/// May a caller with `proof` act as `subject`? `may_claim`: the request creates the subject
/// when it is absent (REGISTER, a chat or rooms login), and a given secret becomes its
/// password.
pub fn gate(
    subject: Subject,
    proof: &Proof,
    kind: Kind,
    may_claim: bool,
    policy: Policy,
) -> Verdict {
    let (missing, wrong) = match kind {
        Kind::User => (Denial::PasswordNeeded, Denial::WrongPassword),
        Kind::RoomKey => (Denial::KeyNeeded, Denial::WrongKey),
    };
    let required = kind == Kind::User && policy.require_passwords;
    match (subject, proof) {
        (Subject::Present(Some(_)), Proof::Session) => Verdict::Pass { claim: None },
        (Subject::Present(Some(_)), Proof::None) => Verdict::Deny(missing),
        (Subject::Present(Some(stored)), Proof::Given(_)) => Verdict::Prove(Proving {
            verify: Some(stored.to_string()),
            claim: false,
            new: false,
        }),
        (Subject::Present(Some(stored)), Proof::Checked(hash)) if hash == stored => {
            Verdict::Pass { claim: None }
        }
        // Changed since it was checked, or claimed by somebody else meanwhile.
        (Subject::Present(Some(_)), Proof::Checked(_)) => Verdict::Deny(wrong),
        (Subject::Present(None), Proof::Session) => Verdict::Pass { claim: None },
        (Subject::Present(None), _) if required => Verdict::Deny(missing),
        // A secret given for a name that has none changes nothing: claiming a name in use
        // needs its user's presence (`Work::SetPassword`).
        (Subject::Present(None), _) => Verdict::Pass { claim: None },
        (Subject::Absent, _) if !may_claim => Verdict::Pass { claim: None },
        (Subject::Absent, Proof::Given(_)) => Verdict::Prove(Proving {
            verify: None,
            claim: true,
            new: false,
        }),
        (Subject::Absent, Proof::Checked(hash)) => Verdict::Pass {
            claim: Some(hash.clone()),
        },
        (Subject::Absent, _) if required => Verdict::Deny(missing),
        (Subject::Absent, _) => Verdict::Pass { claim: None },
    }
}

/// The accounts' state beside the core: the checker, the throttle, and the requests whose
/// secrets are being checked.
pub struct Accounts {
    pub policy: Policy,
    checker: Checker,
    throttle: throttle::Throttle,
    /// Requests whose secrets the checker has in hand, by ticket, with the stored hash the
    /// given secret is checked against.
    proving: HashMap<Ticket, (Work, Option<String>)>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// A request whose secrets the checker has looked at.
pub enum Proved {
    /// Its proof is the checker's finding: it runs again.
    Ready(Work),
    Refused(Work, Denial),
}

/// What became of a request sent to be proved.
pub enum Step {
    /// Its secrets are being checked; [`Accounts::checked`] gives it back.
    Checking,
    /// Proved at once (a password verified a moment ago): it runs again now.
    Again(Work),
    Refused(Work, Denial),
}

impl Accounts {
    pub fn new(
        policy: Policy,
        checker: Checker,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Accounts {
        Accounts {
            policy,
            checker,
            throttle: throttle::Throttle::default(),
            proving: HashMap::new(),
            metrics,
        }
    }

    /// Refuses `work` at once if its caller has failed too often at its subject lately.
    pub fn throttled(&self, work: &Work, now: Instant) -> Option<Denial> {
        // A session proved itself at its login; and nobody failed lately (the usual case:
        // no lookup, no allocation).
        if self.throttle.is_empty() || work.from_a_session() {
            return None;
        }
        let (subject, _) = work.subject()?;
        let from = work.from()?;
        self.throttle.allows(&subject, from, now).err().map(|wait| {
            crate::console::note_rate_limited(
                "authentication throttled",
                format!(
                    "{subject:?} from {from}: refused for {} ms more after failed attempts",
                    wait.as_millis()
                ),
            );
            Denial::Throttled
        })
    }

    /// Sends `work`'s secrets to be checked as `proving` says.
    pub fn prove(
        &mut self,
        ticket: Ticket,
        mut work: Work,
        proving: Proving,
        now: Instant,
    ) -> Step {
        let Some((subject, _)) = work.subject() else {
            debug_assert!(false, "a work without a subject to prove: {work:?}");
            return Step::Refused(work, Denial::Busy);
        };
        let given = match work.proof_mut() {
            Some(Proof::Given(secret)) => Some(secret.clone()),
            _ => None,
        };
        let new = match work.new_secret_mut() {
            Some(NewSecret::Plain(secret)) => Some(secret.clone()),
            _ => None,
        };
        if let (Some(stored), Some(secret), false, false) =
            (&proving.verify, &given, proving.claim, proving.new)
        {
            if self
                .checker
                .recently_verified(&subject, secret, stored, now)
            {
                if let Some(proof) = work.proof_mut() {
                    *proof = Proof::Checked(stored.clone());
                }
                return Step::Again(work);
            }
        }
        let verified_against = proving.verify.clone();
        let job = CheckJob {
            ticket,
            verify: proving
                .verify
                .zip(given.clone())
                .map(|(hash, secret)| (secret, hash)),
            claim: given.filter(|_| proving.claim),
            new: new.filter(|_| proving.new),
        };
        // Works without a client address are a session's, whose address proved itself.
        let from = work.from().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if !self.checker.try_start(job, from) {
            self.metrics.refused("password_checks_busy");
            return Step::Refused(work, Denial::Busy);
        }
        self.proving.insert(ticket, (work, verified_against));
        Step::Checking
    }

    /// The requests whose secrets were checked since the last call: each to run again with
    /// its proof, or refused.
    pub fn checked(&mut self, now: Instant) -> Vec<(Ticket, Proved)> {
        let mut out = Vec::new();
        for checked in self.checker.finished() {
            let Some((work, verified_against)) = self.proving.remove(&checked.ticket) else {
                debug_assert!(false, "a checked secret nobody waits for");
                continue;
            };
            let ticket = checked.ticket;
            out.push((ticket, self.proved(work, verified_against, checked, now)));
        }
        out
    }

    /// `work` with the checker's findings as its proof, or why it is refused.
    fn proved(
        &mut self,
        mut work: Work,
        verified_against: Option<String>,
        checked: Checked,
        now: Instant,
    ) -> Proved {
        let (subject, kind) = work.subject().expect("a work proved has a subject");
        let wrong = match kind {
            Kind::User => Denial::WrongPassword,
            Kind::RoomKey => Denial::WrongKey,
        };
        if checked.verified == Some(false) {
            return Proved::Refused(work, wrong);
        }
        let hashed = |result: Option<Result<String, String>>| match result {
            Some(Ok(hash)) => Ok(Some(hash)),
            Some(Err(e)) => {
                log::error!("{e}");
                Err(Denial::Busy)
            }
            None => Ok(None),
        };
        let (claim, new) = match (hashed(checked.claim), hashed(checked.new)) {
            (Ok(claim), Ok(new)) => (claim, new),
            (Err(denial), _) | (_, Err(denial)) => return Proved::Refused(work, denial),
        };
        let proof = work.proof_mut();
        if let Some(proof @ Proof::Given(_)) = proof {
            if let (Some(stored), Proof::Given(secret)) = (&verified_against, &*proof) {
                self.checker.remember(&subject, secret, stored, now);
            }
            if let Some(hash) = verified_against.or(claim) {
                *proof = Proof::Checked(hash);
            }
        }
        if let (Some(hash), Some(target)) = (new, work.new_secret_mut()) {
            *target = NewSecret::Hashed(hash);
        }
        Proved::Ready(work)
    }

    /// Notes a refusal: failed guesses count towards the throttle, and every refusal is
    /// counted and logged.
    pub fn refused(&mut self, work: &Work, denial: Denial, now: Instant) {
        self.metrics.auth_failure(denial.label());
        let Some((subject, _)) = work.subject() else {
            return;
        };
        let from = work.from();
        if denial.is_failed_guess() {
            self.checker.forget(&subject);
            if let Some(from) = from {
                let failures = self.throttle.failed(&subject, from, now);
                crate::console::note_rate_limited(
                    "authentication failures",
                    format!(
                        "{subject:?} from {from}: {} ({failures} in a row)",
                        denial.label()
                    ),
                );
                return;
            }
        }
        crate::console::note_rate_limited(
            "authentication failures",
            format!("{subject:?}: {}", denial.label()),
        );
    }

    /// Forgets the passwords verified for `subject`: its password changed.
    pub fn forget(&mut self, subject: &str) {
        self.checker.forget(subject);
    }

    /// Notes that `work`'s caller proved its secret.
    pub fn succeeded(&mut self, work: &Work) {
        if let (Some((subject, _)), Some(from)) = (work.subject(), work.from()) {
            self.throttle.succeeded(&subject, from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Policy = Policy {
        require_passwords: false,
    };
    const STRICT: Policy = Policy {
        require_passwords: true,
    };

    fn given() -> Proof {
        Proof::Given(Secret::new("s3cret".into()))
    }

    #[test]
    fn a_protected_name_needs_its_password_checked_and_unchanged() {
        let stored = Subject::Present(Some("$argon2id$h"));
        assert_eq!(
            gate(stored, &Proof::None, Kind::User, false, OPEN),
            Verdict::Deny(Denial::PasswordNeeded)
        );
        assert_eq!(
            gate(stored, &given(), Kind::User, false, OPEN),
            Verdict::Prove(Proving {
                verify: Some("$argon2id$h".into()),
                claim: false,
                new: false
            })
        );
        assert_eq!(
            gate(
                stored,
                &Proof::Checked("$argon2id$h".into()),
                Kind::User,
                false,
                OPEN
            ),
            Verdict::Pass { claim: None }
        );
        assert_eq!(
            gate(
                stored,
                &Proof::Checked("$argon2id$old".into()),
                Kind::User,
                false,
                OPEN
            ),
            Verdict::Deny(Denial::WrongPassword)
        );
        assert_eq!(
            gate(stored, &Proof::None, Kind::RoomKey, false, OPEN),
            Verdict::Deny(Denial::KeyNeeded)
        );
    }

    #[test]
    fn a_name_without_a_password_is_open_unless_passwords_are_required() {
        let open = Subject::Present(None);
        assert_eq!(
            gate(open, &Proof::None, Kind::User, false, OPEN),
            Verdict::Pass { claim: None }
        );
        // A password given for it claims nothing.
        assert_eq!(
            gate(open, &given(), Kind::User, true, OPEN),
            Verdict::Pass { claim: None }
        );
        assert_eq!(
            gate(open, &given(), Kind::User, true, STRICT),
            Verdict::Deny(Denial::PasswordNeeded)
        );
        // Room keys are never required.
        assert_eq!(
            gate(open, &Proof::None, Kind::RoomKey, false, STRICT),
            Verdict::Pass { claim: None }
        );
    }

    #[test]
    fn a_new_name_is_claimed_by_the_password_it_comes_with() {
        assert_eq!(
            gate(Subject::Absent, &given(), Kind::User, true, OPEN),
            Verdict::Prove(Proving {
                verify: None,
                claim: true,
                new: false
            })
        );
        assert_eq!(
            gate(
                Subject::Absent,
                &Proof::Checked("$h".into()),
                Kind::User,
                true,
                STRICT
            ),
            Verdict::Pass {
                claim: Some("$h".into())
            }
        );
        assert_eq!(
            gate(Subject::Absent, &Proof::None, Kind::User, true, STRICT),
            Verdict::Deny(Denial::PasswordNeeded)
        );
        // A request that does not create the name answers "no such user" itself.
        assert_eq!(
            gate(Subject::Absent, &given(), Kind::User, false, STRICT),
            Verdict::Pass { claim: None }
        );
    }
}
