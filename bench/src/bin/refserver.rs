//! A reference server for the benchmark: it reads each request and answers the right bytes for
//! its op. By default it stores nothing: what it costs is the cost of the TCP connections alone,
//! the limit for any server on the machine; one thread per core, blocking accept.
//!
//! With `--durable LOG` it also appends each request to the file LOG and answers only once an
//! fdatasync that started after the append has ended (group commit: one thread syncs for all
//! that wait), on enough threads for 128 requests in flight: the limit for any server that
//! answers after its data is on disk, with no database at all.
//!
//! usage: refserver [--durable LOG]

use std::fs::File;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};

use wire::{read_field, FieldCount, Op, MAX_FIELD_LEN, MAX_OP_LEN};

/// Requests in flight with `--durable` (a thread each, blocking).
const DURABLE_THREADS: usize = 128;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let log = match args.as_slice() {
        [] => None,
        [flag, path] if flag == "--durable" => Some(Arc::new(Log::create(path))),
        _ => bench::usage_exit("refserver [--durable LOG]"),
    };
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").expect("bind"));
    println!("refserver listening on {}", listener.local_addr().unwrap());
    let threads = match log {
        Some(_) => DURABLE_THREADS,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            let (listener, log) = (Arc::clone(&listener), log.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    serve(&stream, log.as_deref());
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

/// Reads one request and answers it (after making it durable with a log).
fn serve(stream: &TcpStream, log: Option<&Log>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    let Ok(op_name) = read_field(&mut reader, MAX_OP_LEN) else {
        return;
    };
    let Some(op) = Op::from_name(&op_name) else {
        return;
    };
    // The benchmark always sends the short form of REGISTER and USERS with an alias.
    let count = match op.fields() {
        FieldCount::Exactly(n) => n,
        FieldCount::OneOrThree | FieldCount::ZeroOrOne => 1,
    };
    let mut request = op_name;
    for _ in 0..count {
        let Ok(field) = read_field(&mut reader, MAX_FIELD_LEN) else {
            return;
        };
        request.push(0);
        request.extend_from_slice(&field);
    }
    if let Some(log) = log {
        request.push(b'\n');
        log.append_durably(&request);
    }
    let answer: &[u8] = match op {
        Op::Send | Op::SendAttach => b"\x001\0",
        Op::Users | Op::ConnectedUsers => b"\x000\0",
        _ => b"\0",
    };
    let _ = (&*stream).write_all(answer);
}

/// An append-only file with group commit.
struct Log {
    file: File,
    state: Mutex<LogState>,
    synced: Condvar,
}

#[derive(Default)]
struct LogState {
    /// Appends made so far.
    written: u64,
    /// Appends known to be on disk.
    durable: u64,
    /// A thread is in fdatasync for everyone.
    syncing: bool,
}

impl Log {
    fn create(path: &str) -> Log {
        Log {
            file: File::create(path).expect("create the log"),
            state: Mutex::default(),
            synced: Condvar::new(),
        }
    }

    /// Appends `bytes` and returns once they are on disk.
    fn append_durably(&self, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap();
        (&self.file).write_all(bytes).expect("append to the log");
        state.written += 1;
        let mine = state.written;
        while state.durable < mine {
            if state.syncing {
                state = self.synced.wait(state).unwrap();
                continue;
            }
            // Nobody is syncing: this thread syncs for every append made so far.
            state.syncing = true;
            let covered = state.written;
            drop(state);
            self.file.sync_data().expect("fdatasync the log");
            state = self.state.lock().unwrap();
            state.durable = covered;
            state.syncing = false;
            self.synced.notify_all();
        }
    }
}
