//! The canvas window as a person uses it: a real process on the Xvfb display of scripts/test,
//! real mouse clicks and a drag through xdotool. (A file of its own: a window of the same name
//! in another test of the same process would confuse the search.)

use e2e::{CanvasConn, Server};
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
    let id = e2e::visible_window("^DrawColorCanvas$", &mut window);
    let xdotool = e2e::xdotool;
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
