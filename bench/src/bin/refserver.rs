//! A stateless reference server for the benchmark: it reads each request and answers the right
//! bytes for its op, storing nothing. What it costs is the cost of the TCP connections alone,
//! the limit for any server on the machine. One thread per core, blocking accept.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

use wire::{read_field, FieldCount, Op, MAX_FIELD_LEN, MAX_OP_LEN};

fn main() {
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").expect("bind"));
    println!("refserver listening on {}", listener.local_addr().unwrap());
    let threads: Vec<_> = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|_| {
            let listener = Arc::clone(&listener);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_nodelay(true);
                    let mut reader = BufReader::new(&stream);
                    let Ok(op) = read_field(&mut reader, MAX_OP_LEN) else {
                        continue;
                    };
                    let Some(op) = Op::from_name(&op) else {
                        continue;
                    };
                    // The benchmark always sends the short form of REGISTER and USERS with an alias.
                    let fields = match op.fields() {
                        FieldCount::Exactly(n) => n,
                        FieldCount::OneOrThree | FieldCount::ZeroOrOne => 1,
                    };
                    if (0..fields).any(|_| read_field(&mut reader, MAX_FIELD_LEN).is_err()) {
                        continue;
                    }
                    let answer: &[u8] = match op {
                        Op::Send | Op::SendAttach => b"\x001\0",
                        Op::Users | Op::ConnectedUsers => b"\x000\0",
                        _ => b"\0",
                    };
                    let _ = (&stream).write_all(answer);
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}
