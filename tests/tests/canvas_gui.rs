//! The canvas window in process: real widgets against the real server (compact mode) and
//! against an original-style server (whole boards). Needs a display (scripts/test provides
//! Xvfb). One test function, since FLTK wants one thread.

use std::io::{Read, Write};
use std::time::Instant;

use client::canvas::CanvasWindow;
use e2e::{CanvasConn, Server, PATIENCE};
use fltk::{app, prelude::*};
use serde_json::Value;

/// Runs FLTK's loop until `ready` holds (a signal may interrupt a wait: that is no failure).
fn pump_until(canvas: &mut CanvasWindow, what: &str, ready: impl Fn(&CanvasWindow) -> bool) {
    let start = Instant::now();
    while !ready(canvas) {
        let _ = app::wait_for(0.01);
        canvas.pump();
        assert!(
            start.elapsed() < PATIENCE,
            "waited for {what}; status: {}",
            canvas.status.label()
        );
    }
}

fn blank_board() -> Value {
    let row: serde_json::Map<String, Value> = (0..50)
        .map(|x| (x.to_string(), Value::from("white")))
        .collect();
    Value::Object(
        (0..50)
            .map(|y| (y.to_string(), Value::Object(row.clone())))
            .collect(),
    )
}

fn read_frame(stream: &mut std::net::TcpStream) -> Value {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header[..5]).unwrap();
    let mut body = vec![0u8; u64::from_le_bytes(header) as usize];
    stream.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn the_canvas_window_paints_and_follows_others() {
    assert!(
        client::gui::display_available(),
        "GUI tests need a display: run them through scripts/test (Xvfb)"
    );
    let _app = app::App::default();
    let dir = tempfile::tempdir().unwrap();
    // Over TLS (docs/tls.md); the original-style server below speaks plain TCP.
    let (cert, key) = e2e::self_signed(dir.path(), "server", true);
    let server = Server::start_all_tls(dir.path(), &cert, &key, &[]);
    let tls = Some(client::link::client_config(Some(&cert)).unwrap());
    let mut canvas = CanvasWindow::build("127.0.0.1", server.tls_port("canvas"), &tls).unwrap();
    canvas.window.show();
    pump_until(&mut canvas, "the board", |c| {
        c.status.label() == "Conectado (modo compacto)"
    });

    // The palette and a click, as the widgets' callbacks do them.
    canvas.choose(2);
    canvas.paint(7, 3);
    assert_eq!(canvas.pixel(7, 3), "red", "painted at once on screen");
    let mut other = CanvasConn::connect(&server);
    other.send(r#"{"comando": "nuevo"}"#);
    let mut board = other.recv();
    while board["3"]["7"] != "red" {
        board = other.recv();
    }
    // Somebody else's paint shows up in the window.
    other.send(r#"{"comando": "pintar", "x_pos": "1", "y_pos": "2", "nombre_color": "blue"}"#);
    pump_until(&mut canvas, "the other client's paint", |c| {
        c.pixel(1, 2) == "blue"
    });

    // Resized, the board grows with the window.
    let before = canvas.board_view.w();
    canvas.window.resize(0, 0, 900, 980);
    let _ = app::wait_for(0.05);
    assert!(
        canvas.board_view.w() > before + 200,
        "the board follows the window"
    );
    canvas.close();
    canvas.window.hide();

    // An original-style server: it ignores the compact mode and sends whole boards.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let original_port = socket.local_addr().unwrap().port();
    let original = std::thread::spawn(move || {
        let (mut stream, _) = socket.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        assert_eq!(read_frame(&mut stream)["comando"], "nuevo");
        let send = |stream: &mut std::net::TcpStream, board: &Value| {
            let body = board.to_string();
            let mut bytes = (body.len() as u64).to_le_bytes()[..5].to_vec();
            bytes.extend_from_slice(body.as_bytes());
            stream.write_all(&bytes).unwrap();
        };
        let mut board = blank_board();
        send(&mut stream, &board);
        let paint = read_frame(&mut stream);
        // Coordinates as strings, as the original client sends them.
        let (x, y) = (
            paint["x_pos"].as_str().unwrap(),
            paint["y_pos"].as_str().unwrap(),
        );
        board[y][x] = paint["nombre_color"].clone();
        send(&mut stream, &board);
        paint
    });
    let mut canvas = CanvasWindow::build("127.0.0.1", original_port, &None).unwrap();
    canvas.window.show();
    pump_until(&mut canvas, "a whole board", |c| {
        c.status.label() == "Conectado (tableros completos)"
    });
    canvas.choose(6);
    canvas.paint(4, 9);
    let paint = original.join().unwrap();
    assert_eq!(
        paint,
        serde_json::json!({"comando": "pintar", "x_pos": "4", "y_pos": "9", "nombre_color": "cyan"})
    );
    pump_until(&mut canvas, "the board back", |c| c.pixel(4, 9) == "cyan");
}
