//! The canvas server as the seed builds it, the reference for `canvasload`: a thread per
//! client, and after every paint the whole board, as JSON, to every client. It keeps the board
//! in memory only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

const SIDE: usize = 50;

struct Shared {
    board: Mutex<Vec<String>>,
    clients: Mutex<Vec<Arc<Mutex<TcpStream>>>>,
}

fn board_json(board: &[String]) -> String {
    let rows: Vec<String> = (0..SIDE)
        .map(|y| {
            let cells: Vec<String> = (0..SIDE)
                .map(|x| format!("\"{x}\": \"{}\"", board[y * SIDE + x]))
                .collect();
            format!("\"{y}\": {{{}}}", cells.join(", "))
        })
        .collect();
    format!("{{{}}}", rows.join(", "))
}

fn frame(body: &str) -> Vec<u8> {
    let mut bytes = (body.len() as u64).to_le_bytes()[..5].to_vec();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let me = Arc::new(Mutex::new(stream.try_clone().expect("clone")));
    shared.clients.lock().unwrap().push(me.clone());
    let mut stream = stream;
    loop {
        let mut header = [0u8; 8];
        if stream.read_exact(&mut header[..5]).is_err() {
            break;
        }
        let mut body = vec![0u8; u64::from_le_bytes(header).min(4096) as usize];
        if stream.read_exact(&mut body).is_err() {
            break;
        }
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        match request["comando"].as_str() {
            Some("nuevo") => {
                let board = board_json(&shared.board.lock().unwrap());
                let _ = me.lock().unwrap().write_all(&frame(&board));
            }
            Some("pintar") => {
                let coordinate = |key: &str| request[key].as_str()?.parse::<usize>().ok();
                let (Some(x), Some(y), Some(colour)) = (
                    coordinate("x_pos"),
                    coordinate("y_pos"),
                    request["nombre_color"].as_str(),
                ) else {
                    continue;
                };
                if x >= SIDE || y >= SIDE {
                    continue;
                }
                let bytes = {
                    let mut board = shared.board.lock().unwrap();
                    board[y * SIDE + x] = colour.to_string();
                    frame(&board_json(&board))
                };
                let clients = shared.clients.lock().unwrap().clone();
                for client in clients {
                    let _ = client.lock().unwrap().write_all(&bytes);
                }
            }
            _ => break,
        }
    }
    shared
        .clients
        .lock()
        .unwrap()
        .retain(|c| !Arc::ptr_eq(c, &me));
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("canvasref listening on {}", listener.local_addr().unwrap());
    let shared = Arc::new(Shared {
        board: Mutex::new(vec!["white".to_string(); SIDE * SIDE]),
        clients: Mutex::new(Vec::new()),
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        std::thread::spawn(move || serve(stream, shared));
    }
}
