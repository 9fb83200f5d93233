//! The shared canvas of seed 002 on the real server: clients that behave like the original (and
//! check that every message is a whole valid board), concurrent painters, a restart, bad input,
//! `cerrar`, and the compact mode.

use std::io::{Read, Write};
use std::time::Duration;

use e2e::{CanvasConn, Server, PATIENCE};
use serde_json::Value;

const COLOURS: [&str; 8] = [
    "white", "black", "red", "green", "yellow", "blue", "cyan", "magenta",
];

/// Checks that `value` is what an original client can draw: all 2,500 keys, valid colours.
fn assert_whole_board(value: &Value) {
    let rows = value.as_object().expect("a board is an object");
    assert_eq!(rows.len(), 50, "50 rows");
    for y in 0..50 {
        let row = rows[&y.to_string()]
            .as_object()
            .expect("a row is an object");
        assert_eq!(row.len(), 50, "50 columns in row {y}");
        for x in 0..50 {
            let colour = row[&x.to_string()].as_str().expect("a colour name");
            assert!(COLOURS.contains(&colour), "{colour} at {x},{y}");
        }
    }
}

/// An original client: it sends `nuevo` and checks every board it gets.
struct Original(CanvasConn);

impl Original {
    fn open(server: &Server) -> Original {
        let mut conn = CanvasConn::connect(server);
        conn.send(r#"{"comando": "nuevo"}"#);
        let board = conn.recv();
        assert_whole_board(&board);
        Original(conn)
    }

    fn paint(&mut self, x: usize, y: usize, colour: &str) {
        self.0.send(&format!(
            r#"{{"comando": "pintar", "x_pos": "{x}", "y_pos": "{y}", "nombre_color": "{colour}"}}"#
        ));
    }

    /// Reads boards until one satisfies `done`; each must be whole.
    fn until(&mut self, done: impl Fn(&Value) -> bool) -> Value {
        loop {
            let board = self.0.recv();
            assert_whole_board(&board);
            if done(&board) {
                return board;
            }
        }
    }
}

fn pixel(board: &Value, x: usize, y: usize) -> &str {
    board[y.to_string()][x.to_string()].as_str().unwrap()
}

#[test]
fn two_original_clients_see_each_others_paints_as_whole_boards() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = Original::open(&server);
    let mut bea = Original::open(&server);
    ana.paint(7, 3, "red");
    // [y][x]: painting x=7, y=3 sets board["3"]["7"].
    let seen = bea.until(|b| pixel(b, 7, 3) == "red");
    assert_eq!(pixel(&seen, 3, 7), "white");
    ana.until(|b| pixel(b, 7, 3) == "red");
    // Integers are accepted too.
    bea.0
        .send(r#"{"comando": "pintar", "x_pos": 0, "y_pos": 49, "nombre_color": "magenta"}"#);
    ana.until(|b| pixel(b, 0, 49) == "magenta");
}

#[test]
fn twenty_concurrent_painters_end_with_the_same_board_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    // Painter p owns rows 2p and 2p+1, and paints each of its 100 pixels once.
    let expected = |x: usize, y: usize| COLOURS[1 + (x + y) % 7];
    let painters: Vec<_> = (0..20)
        .map(|p| {
            let mut painter = Original::open(&server);
            std::thread::spawn(move || {
                for y in [2 * p, 2 * p + 1] {
                    for x in 0..50 {
                        painter.paint(x, y, expected(x, y));
                    }
                }
                painter
            })
        })
        .collect();
    let is_final =
        move |board: &Value| (0..40).all(|y| (0..50).all(|x| pixel(board, x, y) == expected(x, y)));
    for painter in painters {
        let mut painter = painter.join().unwrap();
        painter.until(is_final);
    }
    // A newcomer gets the same board at once.
    let mut late = CanvasConn::connect(&server);
    late.send(r#"{"comando": "nuevo"}"#);
    let board = late.recv();
    assert!(is_final(&board));
    assert!((40..50).all(|y| (0..50).all(|x| pixel(&board, x, y) == "white")));
}

#[test]
fn the_board_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = Original::open(&server);
    ana.paint(10, 20, "blue");
    ana.until(|b| pixel(b, 10, 20) == "blue");
    let server = server.restart(&["--canvas-port", "0"]);
    let mut bea = CanvasConn::connect(&server);
    bea.send(r#"{"comando": "nuevo"}"#);
    assert_eq!(pixel(&bea.recv(), 10, 20), "blue");
}

#[test]
fn bad_input_changes_nothing_gets_no_answer_and_a_stderr_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = Original::open(&server);
    for bad in [
        "esto no es JSON",
        r#"{"comando": "pintar", "x_pos": "50", "y_pos": "0", "nombre_color": "red"}"#,
        r#"{"comando": "pintar", "x_pos": "-1", "y_pos": "0", "nombre_color": "red"}"#,
        r#"{"comando": "pintar", "x_pos": -1, "y_pos": "0", "nombre_color": "red"}"#,
        r#"{"comando": "pintar", "x_pos": "1", "y_pos": "0", "nombre_color": "rosa"}"#,
        r#"{"comando": "pintar", "x_pos": "1", "nombre_color": "red"}"#,
        r#"{"comando": "pintar", "y_pos": "1", "nombre_color": "red"}"#,
        r#"{"comando": "pintar", "x_pos": "1", "y_pos": "1"}"#,
        r#"{"comando": "bailar"}"#,
    ] {
        ana.0.send(bad);
    }
    // Nothing comes back: the next message ana sees is the board after a good paint.
    ana.paint(1, 1, "green");
    let board = ana.until(|b| pixel(b, 1, 1) == "green");
    let painted: usize = (0..50)
        .flat_map(|y| (0..50).map(move |x| (x, y)))
        .filter(|&(x, y)| pixel(&board, x, y) != "white")
        .count();
    assert_eq!(painted, 1, "the bad paints changed nothing");
    server.stderr.wait_until(
        |l| l.iter().filter(|l| l.contains("canvas: ignored")).count() == 9,
        "a stderr line for each bad request",
    );
    // A length field of almost 1 TiB (the most 5 bytes say): closed at once, nothing read.
    let mut huge = CanvasConn::connect(&server);
    huge.stream.write_all(&[0xff; 5]).unwrap();
    let mut rest = Vec::new();
    match huge.stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "no answer"),
        // A time-out (WouldBlock) here would mean the server kept the connection open.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    server.stderr.wait_until(
        |l| {
            l.iter()
                .any(|l| l.contains("1099511627775 bytes announced"))
        },
        "the refusal on stderr",
    );
    // Everybody else is still served.
    ana.paint(2, 2, "black");
    ana.until(|b| pixel(b, 2, 2) == "black");
}

#[test]
fn cerrar_is_answered_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = Original::open(&server);
    ana.0.send(r#"{"comando": "cerrar"}"#);
    assert_eq!(ana.0.recv(), serde_json::json!({"cerrar": true}));
    let mut rest = Vec::new();
    ana.0.stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the answer");
}

#[test]
fn compact_mode_sends_the_board_once_then_numbered_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ours = CanvasConn::connect(&server);
    ours.send(r#"{"comando": "nuevo", "modo": "compacto"}"#);
    let first = ours.recv();
    assert_whole_board(&first["tablero"]);
    let mut version = first["version"].as_u64().unwrap();
    let mut painter = Original::open(&server);
    let mut board = std::collections::HashMap::new();
    for n in 0..30 {
        painter.paint(n, n, "cyan");
        if n % 10 == 9 {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    let start = std::time::Instant::now();
    while board.len() < 30 {
        assert!(start.elapsed() < PATIENCE);
        let changes = ours.recv();
        assert_eq!(changes["desde"].as_u64(), Some(version), "no gap");
        version = changes["hasta"].as_u64().unwrap();
        for change in changes["pixeles"].as_array().unwrap() {
            let x = change[0].as_u64().unwrap();
            let y = change[1].as_u64().unwrap();
            board.insert((x, y), change[2].as_str().unwrap().to_string());
        }
    }
    assert!((0..30).all(|n| board[&(n, n)] == "cyan"));
}

#[test]
fn at_shutdown_an_original_client_gets_cerrar_and_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let mut ana = Original::open(&server);
    server.signal(libc::SIGTERM);
    // The original client spins on a clean close without noticing it: only a reset ends it.
    let mut received = Vec::new();
    let end = ana.0.stream.read_to_end(&mut received);
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "a reset, not a clean close"
    );
    assert_eq!(server.wait(), Some(0));
}

#[test]
fn a_client_that_stops_reading_holds_one_board_and_slows_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let stuck = Original::open(&server);
    // A small window (yet over the loopback MSS, so that reading again reopens it at once):
    // the kernel holds a few boards for it, not the dozens painted below.
    e2e::set_receive_buffer(&stuck.0.stream, 64 * 1024);
    let mut painter = Original::open(&server);
    // Two seconds of paints, a new board each tick: far more boards than the kernel's buffers
    // and --session-buffer-bytes hold, if they piled up.
    let start = std::time::Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(2) {
        painter.paint(n % 50, n / 50, COLOURS[1 + n % 7]);
        let (x, y) = (n % 50, n / 50);
        painter.until(|b| pixel(b, x, y) != "white");
        n += 1;
    }
    let stderr = server.stderr.snapshot();
    assert!(
        !stderr.iter().any(|l| l.contains("stopped reading")),
        "the stuck client was never over its limit: {stderr:?}"
    );
    // When it reads again, it catches up to the newest board.
    let mut stuck = stuck;
    let last = n - 1;
    let board = stuck.until(|b| pixel(b, last % 50, last / 50) != "white");
    assert_eq!(pixel(&board, 0, 0), COLOURS[1]);
}
