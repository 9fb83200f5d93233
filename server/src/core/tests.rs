//! The core with a recording delivery sink and a hand-moved clock, on a real SQLite file.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use super::*;
use crate::accounts::Proof;
use crate::storage::SqliteStore;

/// The address the fixture's clients come from.
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Default)]
struct Recorded {
    started: Vec<Delivery>,
    cancelled: Vec<JobId>,
    /// Reports the test queued for the next `reports` call.
    reports: Vec<Report>,
    /// Jobs that may be in flight at once, and those that are.
    room: usize,
    open: usize,
}

struct FakeSink(Rc<RefCell<Recorded>>);

impl DeliverySink for FakeSink {
    fn has_room(&self) -> bool {
        let r = self.0.borrow();
        r.open < r.room
    }
    fn start(&mut self, delivery: Delivery) {
        let mut r = self.0.borrow_mut();
        assert!(r.open < r.room, "started without room");
        r.open += 1;
        r.started.push(delivery);
    }
    fn cancel(&mut self, job: JobId) {
        self.0.borrow_mut().cancelled.push(job);
    }
    fn reports(&mut self, out: &mut Vec<Report>) {
        let mut r = self.0.borrow_mut();
        r.open -= r.reports.iter().filter(|report| report.job_done).count();
        out.append(&mut r.reports);
    }
    fn dispatch(&mut self) {}
    fn shut_down(&mut self) {}
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Fixture {
    _dir: tempfile::TempDir,
    core: Core,
    sink: Rc<RefCell<Recorded>>,
    now: Instant,
}

impl Fixture {
    /// A core whose sink has room for `room` jobs in flight, with users `ana` and `bea`.
    fn new(room: usize) -> Fixture {
        Fixture::with_bus(room, None)
    }

    /// [`Fixture::new`] whose core hears a session bus fed by the test.
    fn with_bus(room: usize, bus: Option<Bus>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("core.db"), None, 1000).unwrap();
        let sink = Rc::new(RefCell::new(Recorded {
            room,
            ..Recorded::default()
        }));
        let settings = Settings {
            history: 20,
            max_rooms: 100,
            max_pending_per_user: None,
            pending_ttl: None,
            max_new_names_per_minute: None,
            room_history_kept: None,
        };
        let metrics: std::sync::Arc<crate::metrics::Metrics> = Default::default();
        let checker = crate::accounts::Checker::start(1, 16, std::sync::Arc::new(|| {})).unwrap();
        let accounts = crate::accounts::Accounts::new(Default::default(), checker, metrics.clone());
        let core = Core::new(
            Box::new(store),
            Box::new(FakeSink(sink.clone())),
            bus,
            None,
            accounts,
            settings,
            metrics,
        )
        .unwrap();
        let mut fixture = Fixture {
            _dir: dir,
            core,
            sink,
            now: Instant::now(),
        };
        for user in ["ana", "bea", "cid"] {
            let work = Work::Register {
                alias: user.into(),
                full_name: None,
                birth_date: None,
                from: LOCALHOST,
                proof: Proof::None,
            };
            assert_eq!(fixture.run(work), Finished::Registered(true));
        }
        fixture.commit();
        fixture
    }

    /// What sessions must be told, taken.
    fn notices(&mut self) -> Vec<(SessionId, Notice)> {
        let mut taken = Vec::new();
        self.core.take_notices_into(&mut taken);
        taken
    }

    fn commit(&mut self) -> Vec<Event> {
        let (committed, events) = self.core.end_turn(self.now);
        committed.unwrap();
        events
    }

    fn send(&mut self, to: &str, text: &str) -> u32 {
        let sender = ("ana", Proof::None, LOCALHOST);
        let work = self.core.send_work(sender, to, text.as_bytes(), None);
        match self.run(work) {
            Finished::Sent(SendOutcome::Accepted { id, .. }) => id,
            other => panic!("{other:?}"),
        }
    }

    /// Logs `session` in as `alias` (in the turn: SQLite has no storage workers).
    fn login(&mut self, alias: &str, session: SessionId, interests: Interests) -> LoginOutcome {
        match self
            .core
            .start_login(alias, session, interests, LOCALHOST, Proof::None, self.now)
        {
            Started::Now(Ok(Finished::Login(outcome))) => outcome,
            other => panic!("login of {alias}: {other:?}"),
        }
    }

    /// Moves `session` into `room` (in the turn: SQLite has no storage workers).
    fn join(&mut self, session: SessionId, room: &str) -> JoinOutcome {
        match self
            .core
            .start_join_room(session, room, Proof::None, self.now)
        {
            Started::Now(Ok(Finished::Joined(outcome))) => outcome,
            other => panic!("join of {room}: {other:?}"),
        }
    }

    /// Runs `work`'s storage steps in the current turn.
    fn run(&mut self, work: Work) -> Finished {
        match self.core.start(work, self.now) {
            Started::Now(Ok(finished)) => finished,
            other => panic!("{other:?}"),
        }
    }

    fn connect_work(alias: &str, port: u16) -> Work {
        Work::Connect {
            alias: alias.into(),
            ip: LOCAL,
            port,
            proof: Proof::None,
            pin: None,
        }
    }

    fn connect(&mut self, alias: &str, port: u16) {
        let outcome = self.run(Fixture::connect_work(alias, port));
        assert_eq!(outcome, Finished::Connected(ConnectOutcome::Connected));
    }

    /// The message jobs started so far: `(job, recipient port, texts)`.
    fn message_jobs(&self) -> Vec<(JobId, u16, Vec<String>)> {
        self.sink
            .borrow()
            .started
            .iter()
            .filter_map(|d| match d {
                Delivery::Messages {
                    job,
                    to: Endpoint::Listener(addr, None),
                    messages,
                    ..
                } => Some((
                    *job,
                    addr.port(),
                    messages
                        .iter()
                        .map(|m| String::from_utf8(m.text.clone()).unwrap())
                        .collect(),
                )),
                _ => None,
            })
            .collect()
    }

    /// The acks started so far: `(sender's listener port, message id)`.
    fn acks(&self) -> Vec<(u16, u32)> {
        self.sink
            .borrow()
            .started
            .iter()
            .filter_map(|d| match d {
                Delivery::Ack {
                    to: Endpoint::Listener(addr, None),
                    id,
                    ..
                } => Some((addr.port(), *id)),
                _ => None,
            })
            .collect()
    }

    fn report(&mut self, job: JobId, index: usize, outcome: Outcome, job_done: bool) {
        self.sink.borrow_mut().reports.push(Report {
            job,
            index,
            outcome,
            job_done,
        });
        self.core.collect_reports(self.now);
    }
}

#[test]
fn one_job_per_recipient_in_acceptance_order() {
    let mut f = Fixture::new(8);
    f.send("bea", "uno");
    f.send("bea", "dos");
    f.commit();
    assert!(f.message_jobs().is_empty(), "bea is not connected");
    f.connect("bea", 4000);
    f.commit();
    let jobs = f.message_jobs();
    assert_eq!(jobs.len(), 1);
    let (job, port, texts) = jobs[0].clone();
    assert_eq!((port, texts), (4000, vec!["uno".into(), "dos".into()]));
    // A message accepted while a job is in flight waits for it.
    f.send("bea", "tres");
    f.commit();
    assert_eq!(f.message_jobs().len(), 1, "still one job in flight");
    f.report(job, 0, Outcome::Delivered, false);
    f.report(job, 1, Outcome::Delivered, true);
    let events = f.commit();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Delivered { .. }))
            .count(),
        2
    );
    let jobs = f.message_jobs();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[1].2, vec!["tres".to_string()], "only what is left");
}

#[test]
fn unregister_cancels_the_job_in_flight_and_nothing_of_it_counts_as_delivered() {
    let mut f = Fixture::new(8);
    f.connect("bea", 4000);
    for n in 0..5 {
        f.send("bea", &format!("m{n}"));
    }
    f.commit();
    let (job, _, texts) = f.message_jobs()[0].clone();
    assert_eq!(texts.len(), 5);
    assert_eq!(
        f.run(Work::Unregister {
            alias: "bea".into(),
            from: LOCAL,
            proof: Proof::None,
        }),
        Finished::Unregistered(true)
    );
    assert_eq!(f.sink.borrow().cancelled, vec![job]);
    f.commit();
    // Pushes that were already on the wire come back: they must not be logged or acked.
    f.report(job, 0, Outcome::Delivered, false);
    f.report(job, 1, Outcome::Cancelled, true);
    let events = f.commit();
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(f.message_jobs().len(), 1, "nothing more is started");
    assert!(f
        .sink
        .borrow()
        .started
        .iter()
        .all(|d| matches!(d, Delivery::Messages { .. })));
}

#[test]
fn disconnect_cancels_too() {
    let mut f = Fixture::new(8);
    f.connect("bea", 4000);
    f.send("bea", "hola");
    f.commit();
    let (job, _, _) = f.message_jobs()[0].clone();
    let work = Work::Disconnect {
        alias: "bea".into(),
        from: LOCAL,
        proof: Proof::None,
    };
    assert_eq!(
        f.run(work),
        Finished::Disconnected(DisconnectOutcome::Disconnected)
    );
    assert_eq!(f.sink.borrow().cancelled, vec![job]);
}

#[test]
fn a_refusal_in_the_connect_window_is_retried_when_the_clock_says_so() {
    let mut f = Fixture::new(8);
    f.connect("bea", 4000);
    f.send("bea", "hola");
    f.commit();
    let (job, _, _) = f.message_jobs()[0].clone();
    f.report(
        job,
        0,
        Outcome::RetryAfter(Duration::from_millis(100)),
        true,
    );
    f.commit();
    assert_eq!(f.message_jobs().len(), 1, "not before the retry is due");
    assert!(f.core.next_deadline() <= Some(f.now + Duration::from_millis(100)));
    f.now += Duration::from_millis(99);
    f.core.fire_timers(f.now);
    f.commit();
    assert_eq!(f.message_jobs().len(), 1);
    f.now += Duration::from_millis(1);
    f.core.fire_timers(f.now);
    f.commit();
    assert_eq!(f.message_jobs().len(), 2, "retried");
}

#[test]
fn a_failed_push_marks_the_recipient_disconnected_and_keeps_the_message() {
    let mut f = Fixture::new(8);
    f.connect("bea", 4000);
    f.send("bea", "hola");
    f.commit();
    let (job, _, _) = f.message_jobs()[0].clone();
    f.report(job, 0, Outcome::Failed("connection refused".into()), true);
    let events = f.commit();
    assert!(matches!(events[..], [Event::PushFailed { .. }]));
    let list = Work::ListUsers {
        requester: Some("bea".into()),
        from: LOCAL,
    };
    assert_eq!(
        f.run(list),
        Finished::Listed {
            users: vec![],
            requester_present: Some(false)
        }
    );
    f.connect("bea", 4001);
    f.commit();
    let jobs = f.message_jobs();
    assert_eq!((jobs[1].1, jobs[1].2.clone()), (4001, vec!["hola".into()]));
}

#[test]
fn recipients_beyond_the_sinks_room_wait_their_turn() {
    let mut f = Fixture::new(1);
    f.connect("bea", 4000);
    f.connect("cid", 4001);
    f.send("bea", "b");
    f.send("cid", "c");
    f.commit();
    let jobs = f.message_jobs();
    assert_eq!(jobs.len(), 1, "room for one");
    f.report(jobs[0].0, 0, Outcome::Delivered, true);
    f.commit();
    let jobs = f.message_jobs();
    assert_eq!(jobs.len(), 2, "the waiting recipient goes next");
    assert_ne!(jobs[0].1, jobs[1].1);
}

#[test]
fn acks_go_to_a_connected_sender_after_delivery() {
    let mut f = Fixture::new(8);
    f.connect("ana", 5000);
    f.connect("bea", 4000);
    let id = f.send("bea", "hola");
    f.commit();
    let (job, _, _) = f.message_jobs()[0].clone();
    f.report(job, 0, Outcome::Delivered, true);
    f.commit();
    assert_eq!(f.acks(), [(5000, id)]);
}

#[test]
fn a_storm_of_logins_costs_each_session_one_user_list_per_tick() {
    let mut f = Fixture::new(8);
    let chat = Interests {
        user_list: true,
        broadcasts: true,
        privates_only_in_a_room: false,
    };
    for n in 0..100u64 {
        let outcome = f.login(&format!("u{n}"), n, chat);
        assert_eq!(outcome, LoginOutcome::LoggedIn { registered: true });
        f.commit();
    }
    let lists = |notices: &[(SessionId, Notice)], session: SessionId| {
        notices
            .iter()
            .filter(|(s, n)| *s == session && matches!(n, Notice::UserList(_)))
            .count()
    };
    let at_login = f.notices();
    // Each newcomer heard the list once, at its login, and nobody else yet.
    assert!((0..100).all(|s| lists(&at_login, s) == 1));
    assert_eq!(f.core.next_deadline(), Some(f.now + USER_LIST_TICK));
    f.now += USER_LIST_TICK;
    f.core.fire_timers(f.now);
    let ticked = f.notices();
    // One more for everyone who was behind (all but the last to log in), then the full list.
    assert_eq!((0..99).filter(|&s| lists(&ticked, s) == 1).count(), 99);
    assert_eq!(lists(&ticked, 99), 0);
    let Some((_, Notice::UserList(list))) = ticked.last() else {
        panic!("a list")
    };
    assert_eq!(list.len(), 100);
}

/// A fixture whose core hears what the test sends as other nodes' events.
fn with_bus() -> (Fixture, crossbeam_channel::Sender<(NodeId, BusEvent)>) {
    let (sender, events) = crossbeam_channel::bounded(16);
    (Fixture::with_bus(4, Some(Bus { events })), sender)
}

#[test]
fn another_nodes_room_events_reach_this_nodes_members_and_count_in_the_room_list() {
    let (mut f, bus) = with_bus();
    f.login("ana", 1, Interests::ROOMS);
    f.join(1, "Sala1");
    f.commit();
    f.notices();
    let event = |e| bus.send((7, e)).unwrap();
    event(BusEvent::Member {
        room: "Sala1".into(),
        user: "yan".into(),
    });
    event(BusEvent::Joined {
        room: "Sala1".into(),
        user: "zoe".into(),
    });
    event(BusEvent::RoomMessage {
        room: "Sala1".into(),
        from: "zoe".into(),
        text: "hola".into(),
    });
    event(BusEvent::RoomMessage {
        room: "Otra".into(),
        from: "zoe".into(),
        text: "no es tu sala".into(),
    });
    f.core.collect_bus();
    assert_eq!(
        f.notices(),
        [
            (1, Notice::JoinedRoom { user: "zoe".into() }),
            (
                1,
                Notice::RoomMessage {
                    from: "zoe".into(),
                    text: "hola".into()
                }
            ),
        ],
        "a member said as state (yan) is nobody's news"
    );
    assert_eq!(f.core.room_list(), [("Sala1".to_string(), 3, false)]);
    event(BusEvent::LeftChat {
        room: "Sala1".into(),
        user: "zoe".into(),
    });
    f.core.collect_bus();
    assert_eq!(f.notices(), [(1, Notice::LeftChat { user: "zoe".into() })]);
    assert_eq!(f.core.room_list(), [("Sala1".to_string(), 2, false)]);
}

/// On PostgreSQL a join's storage work publishes it and comes back on the worker's report,
/// while the bus may bring the join back, and what other nodes said after it, first: those
/// lines are not in the join's history, so they follow its answer.
#[test]
fn another_nodes_room_events_after_a_join_that_came_back_through_the_bus_first_follow_it() {
    let (mut f, bus) = with_bus();
    const HERE: NodeId = 1;
    f.core.own_nodes.push(HERE);
    f.login("ana", 1, Interests::ROOMS);
    f.commit();
    f.notices();
    // The test plays the storage worker of ana's join.
    f.core.await_join_echo("ana", "Sala1", f.now);
    let work = Work::JoinRoom {
        session: 1,
        alias: "ana".into(),
        room: "Sala1".into(),
        create: false,
        history: 20,
        announce: None,
        key: Proof::None,
        from: LOCALHOST,
    };
    let done = perform(&*f.core.store, &work, Default::default()).unwrap();
    f.commit();
    let event = |node, e| bus.send((node, e)).unwrap();
    // Before ana's join in the bus's order: neither in her history nor news to her.
    event(
        7,
        BusEvent::RoomMessage {
            room: "Sala1".into(),
            from: "zoe".into(),
            text: "antes".into(),
        },
    );
    event(
        HERE,
        BusEvent::Joined {
            room: "Sala1".into(),
            user: "ana".into(),
        },
    );
    event(
        7,
        BusEvent::RoomMessage {
            room: "Sala1".into(),
            from: "zoe".into(),
            text: "después".into(),
        },
    );
    f.core.collect_bus();
    assert_eq!(f.notices(), [], "not in the room before the answer");
    let finished = f.core.finished(done, f.now);
    assert!(
        matches!(finished, Finished::Joined(JoinOutcome::Joined { .. })),
        "{finished:?}"
    );
    assert_eq!(
        f.notices(),
        [(
            1,
            Notice::RoomMessage {
                from: "zoe".into(),
                text: "después".into()
            }
        )]
    );
    // Then a member like any other.
    event(
        7,
        BusEvent::RoomMessage {
            room: "Sala1".into(),
            from: "zoe".into(),
            text: "luego".into(),
        },
    );
    f.core.collect_bus();
    assert_eq!(f.notices().len(), 1);
}

/// Found by the three-node test: a member who joined a room here heard "zoe se ha unido a la
/// sala." of a join that came before theirs (its event was still on its way through the bus).
#[test]
fn another_nodes_room_events_from_before_a_members_join_are_not_news_to_them() {
    let (mut f, bus) = with_bus();
    const HERE: NodeId = 1;
    f.core.own_nodes.push(HERE);
    f.login("ana", 1, Interests::ROOMS);
    f.join(1, "Sala1");
    f.commit();
    f.notices();
    // In the bus's (commit) order: zoe's join on node 7, then ana's own, then zoe's line.
    bus.send((
        7,
        BusEvent::Joined {
            room: "Sala1".into(),
            user: "zoe".into(),
        },
    ))
    .unwrap();
    bus.send((
        HERE,
        BusEvent::Joined {
            room: "Sala1".into(),
            user: "ana".into(),
        },
    ))
    .unwrap();
    bus.send((
        7,
        BusEvent::RoomMessage {
            room: "Sala1".into(),
            from: "zoe".into(),
            text: "hola".into(),
        },
    ))
    .unwrap();
    f.core.collect_bus();
    assert_eq!(
        f.notices(),
        [(
            1,
            Notice::RoomMessage {
                from: "zoe".into(),
                text: "hola".into()
            }
        )]
    );
    assert_eq!(
        f.core.room_list(),
        [("Sala1".to_string(), 2, false)],
        "zoe is a member all the same"
    );
}

#[test]
fn a_name_in_a_session_on_another_node_is_taken_here_until_it_goes_offline() {
    let (mut f, bus) = with_bus();
    bus.send((
        7,
        BusEvent::Online {
            alias: "bea".into(),
            session: true,
        },
    ))
    .unwrap();
    f.core.collect_bus();
    assert_eq!(f.login("bea", 1, Interests::ROOMS), LoginOutcome::Taken);
    assert_eq!(
        f.run(Fixture::connect_work("bea", 4000)),
        Finished::Connected(ConnectOutcome::AlreadyConnected)
    );
    assert!(f.core.online_users().contains(&"bea".to_string()));
    bus.send((
        7,
        BusEvent::Offline {
            alias: "bea".into(),
        },
    ))
    .unwrap();
    f.core.collect_bus();
    assert!(!f.core.online_users().contains(&"bea".to_string()));
    assert_eq!(
        f.login("bea", 1, Interests::ROOMS),
        LoginOutcome::LoggedIn { registered: false }
    );
}

#[test]
fn paints_from_the_bus_reach_viewers_at_the_next_tick_and_nonsense_is_ignored() {
    let (mut f, bus) = with_bus();
    f.core.canvas_join(3, true);
    bus.send((
        7,
        BusEvent::Paints {
            paints: vec![(1, 2, 3), (60, 0, 1), (0, 0, 9)],
        },
    ))
    .unwrap();
    f.core.collect_bus();
    let tick = f.core.next_deadline().expect("a canvas tick");
    f.core.fire_timers(tick);
    assert_eq!(
        f.notices(),
        [(
            3,
            Notice::CanvasChanges {
                from: 0,
                to: 1,
                changes: vec![(1, 2, 3)].into()
            }
        )]
    );
}

/// Found while writing the nodes test of a login whose connection the node closes while its
/// storage work waits: when that work came back, it started the next login of the name, made
/// meanwhile by another session, which then never heard its own answer.
#[test]
fn a_login_that_comes_back_after_its_session_ended_leaves_the_next_login_of_the_name_alone() {
    let mut f = Fixture::new(4);
    // On PostgreSQL: session 1's login of zoe runs on a storage worker (played by the test)...
    let login = |session| Work::Login {
        session,
        alias: "zoe".into(),
        from: LOCALHOST,
        may_register: true,
        proof: Proof::None,
    };
    let first = perform(&*f.core.store, &login(1), Default::default()).unwrap();
    f.commit();
    // ...its session ends, and session 2 starts a login of the name, beside too (what
    // `start_login` notes then).
    f.core.logout(1);
    f.core
        .logging_in
        .insert("zoe".into(), (2, Interests::ROOMS));
    f.core.login_of.insert(2, "zoe".into());
    assert_eq!(
        f.core.finished(first, f.now),
        Finished::Login(LoginOutcome::Gone)
    );
    assert_eq!(f.core.session_alias(2), None);
    let second = perform(&*f.core.store, &login(2), Default::default()).unwrap();
    f.commit();
    assert_eq!(
        f.core.finished(second, f.now),
        Finished::Login(LoginOutcome::LoggedIn { registered: false })
    );
    assert_eq!(f.core.session_alias(2), Some("zoe"));
}

#[test]
fn a_connect_that_ran_beside_while_the_user_logged_in_to_a_session_gives_way() {
    let mut f = Fixture::new(4);
    assert_eq!(
        f.login("bea", 1, Interests::ROOMS),
        LoginOutcome::LoggedIn { registered: false }
    );
    // A storage worker runs the CONNECT's steps, which know nothing of the session.
    let done = perform(
        &*f.core.store,
        &Fixture::connect_work("bea", 4000),
        Default::default(),
    )
    .unwrap();
    f.commit();
    let finished = f.core.finished(done, f.now);
    f.commit();
    assert_eq!(
        finished,
        Finished::Connected(ConnectOutcome::AlreadyConnected)
    );
    assert!(!f.core.store.user("bea").unwrap().unwrap().connected);
    assert!(f.message_jobs().is_empty(), "no delivery to the listener");
}

#[test]
fn a_removal_that_does_not_commit_holds_the_recipient_back_until_a_retry_removes_and_acks_it() {
    let mut f = Fixture::new(8);
    f.connect("ana", 5000);
    f.connect("bea", 4000);
    let first = f.send("bea", "uno");
    let second = f.send("bea", "dos");
    f.commit();
    let (job, _, texts) = f.message_jobs()[0].clone();
    assert_eq!(texts, ["uno", "dos"]);
    // Another connection holds the write lock: the removals fail at once and roll back.
    let holder = rusqlite::Connection::open(f._dir.path().join("core.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    f.report(job, 0, Outcome::Delivered, false);
    f.report(job, 1, Outcome::Delivered, true);
    let (committed, events) = f.core.end_turn(f.now);
    assert!(committed.is_err());
    let postponed: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::RemovalPostponed { id, .. } => Some(*id),
            Event::Delivered { .. } => panic!("reported delivered: {e:?}"),
            _ => None,
        })
        .collect();
    assert_eq!(postponed, [first, second]);
    // Held back: the messages still stored are not delivered again, and nobody is acked.
    assert_eq!(f.message_jobs().len(), 1);
    assert_eq!(f.sink.borrow().started.len(), 1);

    holder.execute_batch("ROLLBACK").unwrap();
    f.now += REMOVAL_RETRY;
    f.core.fire_timers(f.now);
    let delivered: Vec<u32> = f
        .commit()
        .iter()
        .filter_map(|e| match e {
            Event::Delivered { id, recipient, .. } if &**recipient == "bea" => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [first, second]);
    assert_eq!(f.acks(), [(5000, first), (5000, second)]);
    // Nothing is left to deliver.
    assert_eq!(f.message_jobs().len(), 1);
}

/// `ana`'s private message to `to` from her session (as the chat sends one).
fn send_from_session(f: &mut Fixture, to: &str, text: &str) -> u32 {
    match start_from_session(f, to, text) {
        Started::Now(Ok(Finished::Sent(
            SendOutcome::Accepted { id, .. } | SendOutcome::Told { id },
        ))) => id,
        other => panic!("{other:?}"),
    }
}

fn start_from_session(f: &mut Fixture, to: &str, text: &str) -> Started {
    let sender = (&std::rc::Rc::from("ana"), LOCALHOST);
    f.core.send_from_session(sender, to, text.as_bytes(), f.now)
}

/// The private messages told to sessions since the last call: `(session, text, mark)`.
fn privates(f: &mut Fixture) -> Vec<(SessionId, String, DeliveryMark)> {
    f.notices()
        .into_iter()
        .filter_map(|(session, notice)| match notice {
            Notice::Private { text, delivery, .. } => {
                Some((session, String::from_utf8(text.to_vec()).unwrap(), delivery))
            }
            _ => None,
        })
        .collect()
}

/// A core with `ana` in chat session 1 and `bea` in chat session 2, their notices taken.
fn chat_sessions() -> Fixture {
    let mut f = Fixture::new(8);
    f.login("ana", 1, Interests::CHAT);
    f.login("bea", 2, Interests::CHAT);
    f.commit();
    f.notices();
    f
}

/// A session reports the last (or, for a session that ended, the first unwritten) message of
/// `job`, as the reactor does.
fn session_reports(f: &mut Fixture, job: JobId, index: usize, outcome: Outcome) {
    let report = Report {
        job,
        index,
        outcome,
        job_done: true,
    };
    f.core.session_report(report, f.now);
}

/// What waits in `alias`'s mailbox, in its order, read from the file.
fn mailbox(f: &Fixture, alias: &str) -> Vec<String> {
    let db = rusqlite::Connection::open(f._dir.path().join("core.db")).unwrap();
    let mut rows = db
        .prepare("SELECT text FROM pending_messages WHERE recipient = ?1 ORDER BY seq")
        .unwrap();
    rows.query_map([alias], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn delivered_ids(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delivered { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_private_message_between_sessions_goes_around_the_mailbox_and_back_in_front_if_unwritten() {
    let mut f = chat_sessions();

    // Nothing waits for bea: the message goes to her session; nothing is written but ana's
    // id block.
    let uno = send_from_session(&mut f, "bea", "uno");
    assert!(f.commit().is_empty(), "reported once written, not before");
    let told = privates(&mut f);
    assert_eq!(told.len(), 1);
    assert_eq!((told[0].0, told[0].1.as_str()), (2, "uno"));
    assert!(mailbox(&f, "bea").is_empty(), "never in the mailbox");
    session_reports(&mut f, told[0].2.job, 0, Outcome::Delivered);
    assert_eq!(
        delivered_ids(&f.commit()),
        [uno],
        "the console line, with its id"
    );

    // Two more go around; a messenger SEND (somebody else's) then waits in the mailbox, and
    // so does ana's next message, behind it; their delivery waits for the two.
    send_from_session(&mut f, "bea", "dos");
    send_from_session(&mut f, "bea", "tres");
    let sender = ("cid", Proof::None, LOCALHOST);
    let work = f.core.send_work(sender, "bea", b"cuatro", None);
    assert!(matches!(
        f.run(work),
        Finished::Sent(SendOutcome::Accepted { .. })
    ));
    send_from_session(&mut f, "bea", "cinco");
    f.commit();
    let told = privates(&mut f);
    let texts: Vec<&str> = told.iter().map(|(_, text, _)| text.as_str()).collect();
    assert_eq!(texts, ["dos", "tres"]);
    assert_eq!(mailbox(&f, "bea"), ["cuatro", "cinco"]);

    // bea's session ends before either is written: they go back in front of the mailbox,
    // older than what waits there.
    for (_, _, mark) in &told {
        session_reports(
            &mut f,
            mark.job,
            mark.index,
            Outcome::Failed("the session ended".into()),
        );
    }
    f.core.logout(2);
    assert!(delivered_ids(&f.commit()).is_empty());
    assert_eq!(mailbox(&f, "bea"), ["dos", "tres", "cuatro", "cinco"]);

    // Back in a session, she gets them all, in order, from the mailbox.
    f.login("bea", 3, Interests::CHAT);
    f.commit();
    let told = privates(&mut f);
    let texts: Vec<&str> = told.iter().map(|(_, text, _)| text.as_str()).collect();
    assert_eq!(texts, ["dos", "tres", "cuatro", "cinco"]);
    assert!(told.iter().all(|(session, _, _)| *session == 3));
}

#[test]
fn a_message_around_the_mailbox_not_written_at_once_is_stored_until_it_is() {
    let mut f = chat_sessions();
    let uno = send_from_session(&mut f, "bea", "uno");
    let dos = send_from_session(&mut f, "bea", "dos");
    f.commit();
    let told = privates(&mut f);
    assert!(told.iter().all(|(_, _, mark)| mark.unstored));
    assert!(mailbox(&f, "bea").is_empty());
    // bea reads slowly: the first write left both queued, so they are stored, in order, and
    // ana's next message waits behind them.
    f.core
        .store_unwritten(told.iter().map(|(_, _, mark)| *mark).collect());
    send_from_session(&mut f, "bea", "tres");
    f.commit();
    assert_eq!(mailbox(&f, "bea"), ["uno", "dos", "tres"]);
    assert!(
        privates(&mut f).is_empty(),
        "nothing delivered twice meanwhile"
    );
    // uno is written: its row is removed, then it is reported.
    session_reports(&mut f, told[0].2.job, 0, Outcome::Delivered);
    assert_eq!(delivered_ids(&f.commit()), [uno]);
    assert_eq!(mailbox(&f, "bea"), ["dos", "tres"]);
    // dos is written too; then tres comes from the mailbox, once.
    session_reports(&mut f, told[1].2.job, 0, Outcome::Delivered);
    assert_eq!(delivered_ids(&f.commit()), [dos]);
    let texts: Vec<String> = privates(&mut f)
        .into_iter()
        .map(|(_, text, _)| text)
        .collect();
    assert_eq!(texts, ["tres"]);
}

#[test]
fn a_message_around_the_mailbox_whose_id_cannot_be_written_is_not_told() {
    let mut f = chat_sessions();
    // Another connection holds the write lock: the id is not recorded, nothing is told.
    let holder = rusqlite::Connection::open(f._dir.path().join("core.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(matches!(
        start_from_session(&mut f, "bea", "uno"),
        Started::Now(Err(_))
    ));
    let (committed, _) = f.core.end_turn(f.now);
    assert!(committed.is_err());
    assert!(privates(&mut f).is_empty());
    holder.execute_batch("ROLLBACK").unwrap();
    // The next one goes.
    send_from_session(&mut f, "bea", "dos");
    f.commit();
    assert_eq!(privates(&mut f).len(), 1);
}

/// Counts the allocations (and reallocations) of the thread that makes them, so that a test
/// can bound what the core allocates for a request. SQLite allocates with its own calls to
/// `malloc`, not counted.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn allocations() -> u64 {
    ALLOCATIONS.with(std::cell::Cell::get)
}

fn count_allocation() {
    // A thread being torn down has no counter left: nothing to count then.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_allocation();
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        count_allocation();
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

#[test]
fn a_private_message_around_the_mailbox_costs_the_core_one_allocation_its_text() {
    let mut f = chat_sessions();
    let ana: Rc<str> = "ana".into();
    // The lists the reactor swaps with the core's every turn, kept like the reactor's.
    let (mut notices, mut events) = (Vec::new(), Vec::new());
    let mut one = |f: &mut Fixture| {
        let started = f
            .core
            .send_from_session((&ana, LOCALHOST), "bea", b"hola", f.now);
        assert!(matches!(
            started,
            Started::Now(Ok(Finished::Sent(SendOutcome::Told { .. })))
        ));
        let (committed, _) = f.core.end_turn(f.now);
        committed.unwrap();
        f.core.take_notices_into(&mut notices);
        let Some((2, Notice::Private { delivery, .. })) = notices.pop() else {
            panic!("bea is told: {notices:?}");
        };
        notices.clear();
        session_reports(f, delivery.job, 0, Outcome::Delivered);
        f.core.take_write_events_into(&mut events);
        assert!(matches!(events[..], [Event::Delivered { .. }]));
        events.clear();
    };
    // The first reserves ana's block of ids and grows the core's tables.
    one(&mut f);
    one(&mut f);
    let before = allocations();
    const MESSAGES: u64 = 50;
    for _ in 0..MESSAGES {
        one(&mut f);
    }
    let each = (allocations() - before) as f64 / MESSAGES as f64;
    // Only the text, shared by the job and the notice; the names are the sessions' own.
    assert!(each <= 1.0, "{each} allocations a message");
}
