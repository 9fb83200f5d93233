//! The rooms server as seed 004 builds it, the reference for `chatload`'s fan-out: a thread per
//! client, a dictionary of rooms behind one lock, and every message written to each member of
//! the room in turn (blocking writes, under the lock). It keeps nothing on disk and knows only
//! what the fan-out uses: `JOIN name`, `ROOM r`, `MESSAGE text`, with the lines of
//! `docs/rooms.md`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A member of a room: its client number and its connection.
type Member = (u64, Arc<TcpStream>);

#[derive(Default)]
struct Shared {
    names: Mutex<HashSet<String>>,
    /// Room name → its members.
    rooms: Mutex<HashMap<String, Vec<Member>>>,
}

impl Shared {
    /// Writes `line` to every member of `room` but `except`, one after another, as the seed does.
    fn broadcast(&self, room: &str, except: u64, line: &str) {
        let rooms = self.rooms.lock().unwrap();
        for (client, stream) in rooms.get(room).into_iter().flatten() {
            if *client != except {
                let _ = (&**stream).write_all(line.as_bytes());
            }
        }
    }

    fn leave(&self, room: &str, client: u64) {
        if let Some(members) = self.rooms.lock().unwrap().get_mut(room) {
            members.retain(|(c, _)| *c != client);
        }
    }
}

fn serve(shared: &Shared, client: u64, stream: TcpStream) {
    let stream = Arc::new(stream);
    let reader = BufReader::new(&*stream);
    let (mut name, mut room) = (None::<String>, None::<String>);
    let answer = |text: String| (&*stream).write_all(text.as_bytes()).is_ok();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let (command, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let ok = match (command, &name) {
            ("JOIN", None) => {
                if shared.names.lock().unwrap().insert(rest.to_string()) {
                    name = Some(rest.to_string());
                    answer("OK\n".into())
                } else {
                    answer("ERROR: Username ya en uso.\n".into())
                }
            }
            ("ROOM", Some(me)) => {
                if let Some(old) = room.take() {
                    shared.leave(&old, client);
                    shared.broadcast(&old, client, &format!("{me} ha salido de la sala.\n"));
                }
                shared
                    .rooms
                    .lock()
                    .unwrap()
                    .entry(rest.to_string())
                    .or_default()
                    .push((client, Arc::clone(&stream)));
                room = Some(rest.to_string());
                let joined = answer(format!("Te has unido a la sala {rest}.\n"));
                shared.broadcast(rest, client, &format!("{me} se ha unido a la sala.\n"));
                joined
            }
            ("MESSAGE", Some(me)) => {
                if let Some(room) = &room {
                    shared.broadcast(room, client, &format!("{me}: {rest}\n"));
                }
                true
            }
            _ => answer("ERROR: Comando no reconocido.\n".into()),
        };
        if !ok {
            break;
        }
    }
    if let Some(room) = room {
        shared.leave(&room, client);
    }
    if let Some(name) = name {
        shared.names.lock().unwrap().remove(&name);
    }
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("roomsref listening on {}", listener.local_addr().unwrap());
    let shared = Arc::new(Shared::default());
    for (client, stream) in (0u64..).zip(listener.incoming()) {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || serve(&shared, client, stream));
    }
}
