//! The canvas window as a person uses it: a real process on the Xvfb display of scripts/test,
//! real mouse clicks and a drag through xdotool. (A file of its own: a window of the same name
//! in another test of the same process would confuse the search.)

use std::time::Instant;

use e2e::{CanvasConn, Server, PATIENCE};
use serde_json::Value;

/// The window as a person uses it: a real process on the Xvfb display, real mouse clicks and a
/// drag through xdotool.
#[test]
fn the_canvas_window_paints_with_real_clicks_under_xvfb() {
    assert!(
        client::gui::display_available(),
        "needs the Xvfb of scripts/test"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_all(dir.path(), &[]);
    let port = server.canvas_port.unwrap().to_string();
    let mut window = e2e::spawn_client(&["--canvas", "-s", "127.0.0.1", "-p", &port]);
    // Waits until the window is shown (mapped), so it takes the clicks.
    let xdotool = |args: &[&str]| {
        let out = std::process::Command::new("xdotool")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "xdotool {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let start = Instant::now();
    let id = loop {
        let found = std::process::Command::new("xdotool")
            .args(["search", "--onlyvisible", "--name", "^DrawColorCanvas$"])
            .output()
            .unwrap();
        if let Some(id) = String::from_utf8_lossy(&found.stdout).lines().next() {
            break id.to_string();
        }
        if start.elapsed() >= PATIENCE {
            // Say why: the client may have died, or be stuck before showing the window.
            let _ = window.kill();
            let output = window.wait_with_output().expect("the client's output");
            panic!(
                "the window did not appear within {PATIENCE:?}; the client ended with {}, \
                 stderr: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut viewer = CanvasConn::connect(&server);
    viewer.send(r#"{"comando": "nuevo"}"#);
    viewer.recv();
    // The board (600x600 at 10,11 in the 620x700 window): cells of 12 pixels, row y across,
    // column x down. Black is chosen at first.
    let at = |x: usize, y: usize| ((10 + y * 12 + 6).to_string(), (11 + x * 12 + 6).to_string());
    let (px, py) = at(7, 3);
    xdotool(&["mousemove", "--window", &id, &px, &py, "click", "1"]);
    // A drag along x = 20 from y = 5 to y = 15.
    let (from_x, from_y) = at(20, 5);
    let (to_x, to_y) = at(20, 15);
    xdotool(&[
        "mousemove",
        "--window",
        &id,
        &from_x,
        &from_y,
        "mousedown",
        "1",
    ]);
    xdotool(&[
        "mousemove",
        "--window",
        &id,
        &to_x,
        &to_y,
        "sleep",
        "0.1",
        "mouseup",
        "1",
    ]);
    let mut board = viewer.recv();
    let painted =
        |b: &Value| b["3"]["7"] == "black" && (5..=15).all(|y| b[y.to_string()]["20"] == "black");
    while !painted(&board) {
        board = viewer.recv();
    }
    let _ = window.kill();
    let _ = window.wait();
}
