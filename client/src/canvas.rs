//! The canvas window of seed 002 (DrawColorCanvas): the 50×50 board, the eight-colour palette,
//! click and drag to paint, and everybody's paints live.
//!
//! Network work runs on two threads: a reader that turns frames into [`Incoming`] messages
//! for the window (through an FLTK channel), and a writer fed by the window. With our server
//! the client asks for the compact mode (the board once, then numbered changes; a gap asks for
//! the board again); any server of the seed answers with whole boards, and those work too.
//! Like the original window, the pixel of row y is drawn at horizontal position y and column x
//! at vertical position x, so a drawing looks the same in both.

use crate::link::{self, Stream};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::mpsc;

use fltk::{
    app, button::Button, draw, enums::Color, enums::Event, enums::FrameType, frame::Frame,
    group::Flex, prelude::*, window::Window,
};
use serde_json::Value;

/// Cells per side.
pub const SIDE: usize = 50;

/// The seed's colours, by name, with how they are drawn.
pub const COLOURS: [(&str, (u8, u8, u8)); 8] = [
    ("white", (255, 255, 255)),
    ("black", (0, 0, 0)),
    ("red", (230, 30, 30)),
    ("green", (40, 180, 60)),
    ("yellow", (250, 220, 40)),
    ("blue", (30, 70, 220)),
    ("cyan", (40, 200, 220)),
    ("magenta", (210, 50, 200)),
];

/// Longest message we accept from a server: a whole board is about 37 KB.
const MAX_FRAME: u64 = 1 << 20;

const NEW_COMPACT: &str = r#"{"comando": "nuevo", "modo": "compacto"}"#;

/// What the reader thread hands the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole board (colour indexes, row by row); `version` only in compact mode.
    Board {
        version: Option<u64>,
        pixels: Vec<u8>,
    },
    /// Compact mode: the pixels changed from version `from` to `to`, as `(x, y, colour)`.
    Changes {
        from: u64,
        to: u64,
        changes: Vec<(usize, usize, u8)>,
    },
    Closed(String),
}

fn colour_index(name: &str) -> Option<u8> {
    COLOURS
        .iter()
        .position(|(n, _)| *n == name)
        .map(|i| i as u8)
}

fn board_pixels(board: &Value) -> Option<Vec<u8>> {
    let mut pixels = vec![0; SIDE * SIDE];
    for y in 0..SIDE {
        let row = board.get(y.to_string())?;
        for x in 0..SIDE {
            pixels[y * SIDE + x] = colour_index(row.get(x.to_string())?.as_str()?)?;
        }
    }
    Some(pixels)
}

/// Reads one server message: a whole board (either mode), numbered changes, or `cerrar`.
pub fn interpret(message: &Value) -> Option<Incoming> {
    if message.get("cerrar").is_some() {
        return Some(Incoming::Closed("the server closed the canvas".into()));
    }
    if let Some(board) = message.get("tablero") {
        return Some(Incoming::Board {
            version: Some(message.get("version")?.as_u64()?),
            pixels: board_pixels(board)?,
        });
    }
    if let Some(changes) = message.get("pixeles") {
        let changes = changes
            .as_array()?
            .iter()
            .map(|c| {
                let x = usize::try_from(c.get(0)?.as_u64()?)
                    .ok()
                    .filter(|&x| x < SIDE)?;
                let y = usize::try_from(c.get(1)?.as_u64()?)
                    .ok()
                    .filter(|&y| y < SIDE)?;
                Some((x, y, colour_index(c.get(2)?.as_str()?)?))
            })
            .collect::<Option<Vec<_>>>()?;
        return Some(Incoming::Changes {
            from: message.get("desde")?.as_u64()?,
            to: message.get("hasta")?.as_u64()?,
            changes,
        });
    }
    Some(Incoming::Board {
        version: None,
        pixels: board_pixels(message)?,
    })
}

/// One frame: the length in 5 little-endian bytes, then the JSON.
pub fn frame(body: &str) -> Vec<u8> {
    let mut bytes = (body.len() as u64).to_le_bytes()[..5].to_vec();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

fn read_frames(mut stream: Stream, tx: app::Sender<Incoming>) {
    let closed = loop {
        let mut header = [0u8; 8];
        if let Err(e) = stream.read_exact(&mut header[..5]) {
            break format!("connection lost: {e}");
        }
        let length = u64::from_le_bytes(header);
        if length > MAX_FRAME {
            break format!("the server announced a message of {length} bytes");
        }
        let mut body = vec![0u8; length as usize];
        if let Err(e) = stream.read_exact(&mut body) {
            break format!("connection lost: {e}");
        }
        let parsed = serde_json::from_slice(&body)
            .ok()
            .and_then(|v| interpret(&v));
        match parsed {
            Some(Incoming::Closed(why)) => break why,
            Some(message) => tx.send(message),
            None => eprintln!("canvas: ignored a message the client does not understand"),
        }
    };
    tx.send(Incoming::Closed(closed));
}

/// The board as the window knows it.
pub struct Board {
    pub pixels: Vec<u8>,
    /// Compact mode: the version of `pixels`; None with whole boards.
    pub version: Option<u64>,
    /// The palette's choice.
    pub colour: u8,
}

pub struct CanvasWindow {
    pub window: Window,
    pub board_view: Frame,
    pub palette: Vec<Button>,
    pub status: Frame,
    pub board: Rc<RefCell<Board>>,
    outgoing: mpsc::Sender<String>,
    receiver: app::Receiver<Incoming>,
    closed: bool,
}

/// Paints (`x`, `y`) with the chosen colour: at once on screen, then to the server.
fn paint(board: &RefCell<Board>, outgoing: &mpsc::Sender<String>, x: usize, y: usize) -> bool {
    let mut board = board.borrow_mut();
    let colour = board.colour;
    if board.pixels[y * SIDE + x] == colour {
        return false;
    }
    board.pixels[y * SIDE + x] = colour;
    // Strings, as the original client sends them.
    let _ = outgoing.send(format!(
        r#"{{"comando": "pintar", "x_pos": "{x}", "y_pos": "{y}", "nombre_color": "{}"}}"#,
        COLOURS[usize::from(colour)].0
    ));
    true
}

/// Shows which colour of the palette is chosen.
fn mark_choice(palette: &mut [Button], chosen: usize) {
    for (n, button) in palette.iter_mut().enumerate() {
        button.set_frame(if n == chosen {
            FrameType::DownBox
        } else {
            FrameType::UpBox
        });
        button.set_label(if n == chosen { "@+2circle" } else { "" });
        button.set_label_color(if n == 1 || n == 5 {
            Color::White
        } else {
            Color::Black
        });
        button.redraw();
    }
}

/// The cells from `from` to `to`, both included (Bresenham's line).
pub fn line(from: (i32, i32), to: (i32, i32)) -> Vec<(i32, i32)> {
    let (mut x, mut y) = from;
    let (dx, dy) = ((to.0 - x).abs(), -(to.1 - y).abs());
    let (sx, sy) = ((to.0 - x).signum(), (to.1 - y).signum());
    let mut error = dx + dy;
    let mut cells = vec![(x, y)];
    while (x, y) != to {
        let doubled = 2 * error;
        if doubled >= dy {
            error += dy;
            x += sx;
        }
        if doubled <= dx {
            error += dx;
            y += sy;
        }
        cells.push((x, y));
    }
    cells
}

/// The cell size and the board's top-left corner inside `view`.
fn layout(view: &Frame) -> (i32, i32, i32) {
    let cell = (view.w().min(view.h()) / SIDE as i32).max(1);
    let side = cell * SIDE as i32;
    (
        cell,
        view.x() + (view.w() - side) / 2,
        view.y() + (view.h() - side) / 2,
    )
}

impl CanvasWindow {
    /// Connects to the canvas at `host:port`, starts the network threads and builds the
    /// window.
    pub fn build(host: &str, port: u16, tls: &link::Tls) -> Result<CanvasWindow, String> {
        let stream = link::connect(host, port, tls, std::time::Duration::from_secs(5))
            .map_err(|e| format!("cannot reach {host}:{port}: {e}"))?;
        let reader = stream.try_clone().map_err(|e| e.to_string())?;
        let (tx, receiver) = app::channel::<Incoming>();
        std::thread::spawn(move || read_frames(reader, tx));
        let (outgoing, queue) = mpsc::channel::<String>();
        let mut writer = stream;
        std::thread::spawn(move || {
            for body in queue {
                // One write per frame: the original server reads the header with one recv.
                if writer.write_all(&frame(&body)).is_err() {
                    return;
                }
            }
        });
        let _ = outgoing.send(NEW_COMPACT.to_string());

        let board = Rc::new(RefCell::new(Board {
            pixels: vec![0; SIDE * SIDE],
            version: None,
            colour: 1,
        }));
        let mut window = Window::default()
            .with_size(620, 700)
            .with_label("DrawColorCanvas");
        window.set_xclass("drawcolorcanvas");
        let mut root = Flex::default_fill().column();
        root.set_margin(10);
        root.set_pad(8);
        let mut board_view = Frame::default();
        board_view.set_frame(FrameType::FlatBox);
        board_view.set_color(Color::from_rgb(60, 60, 60));
        let drawn = board.clone();
        board_view.draw(move |view| {
            draw::draw_box(
                FrameType::FlatBox,
                view.x(),
                view.y(),
                view.w(),
                view.h(),
                view.color(),
            );
            let (cell, left, top) = layout(view);
            let pixels = &drawn.borrow().pixels;
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let (r, g, b) = COLOURS[usize::from(pixels[y * SIDE + x])].1;
                    // Transposed, as the original window: row y across, column x down.
                    draw::draw_rect_fill(
                        left + y as i32 * cell,
                        top + x as i32 * cell,
                        cell,
                        cell,
                        Color::from_rgb(r, g, b),
                    );
                }
            }
        });
        let (painted, out) = (board.clone(), outgoing.clone());
        // The cell of the last Push or Drag: a fast drag skips cells, so each Drag paints the
        // line from there.
        let mut last: Option<(i32, i32)> = None;
        board_view.handle(move |view, event| match event {
            Event::Push | Event::Drag => {
                let (cell, left, top) = layout(view);
                let (mx, my) = app::event_coords();
                let here = ((mx - left).div_euclid(cell), (my - top).div_euclid(cell));
                let from = if event == Event::Drag {
                    last.unwrap_or(here)
                } else {
                    here
                };
                let mut changed = false;
                for (column, row) in line(from, here) {
                    let inside =
                        (0..SIDE as i32).contains(&column) && (0..SIDE as i32).contains(&row);
                    // Transposed: the screen's row is x, its column y.
                    changed |= inside && paint(&painted, &out, row as usize, column as usize);
                }
                last = Some(here);
                if changed {
                    view.redraw();
                }
                true
            }
            Event::Released => {
                last = None;
                true
            }
            _ => false,
        });
        let mut row = Flex::default().row();
        row.set_pad(4);
        let mut palette: Vec<Button> = COLOURS
            .iter()
            .map(|(name, (r, g, b))| {
                let mut button = Button::default();
                button.set_color(Color::from_rgb(*r, *g, *b));
                button.set_tooltip(name);
                button
            })
            .collect();
        for n in 0..palette.len() {
            let (chosen, mut buttons) = (board.clone(), palette.clone());
            palette[n].set_callback(move |_| {
                chosen.borrow_mut().colour = n as u8;
                mark_choice(&mut buttons, n);
            });
        }
        row.end();
        root.fixed(&row, 40);
        let mut status = Frame::default().with_label("Conectando...");
        status.set_align(fltk::enums::Align::Left | fltk::enums::Align::Inside);
        root.fixed(&status, 22);
        root.end();
        window.end();
        window.make_resizable(true);
        let mut canvas = CanvasWindow {
            window,
            board_view,
            palette,
            status,
            board,
            outgoing,
            receiver,
            closed: false,
        };
        let chosen = usize::from(canvas.board.borrow().colour);
        mark_choice(&mut canvas.palette, chosen);
        Ok(canvas)
    }

    /// What a click on the palette does.
    pub fn choose(&mut self, colour: usize) {
        self.palette[colour].do_callback();
    }

    /// What a click on cell (`x`, `y`) does.
    pub fn paint(&mut self, x: usize, y: usize) {
        if paint(&self.board, &self.outgoing, x, y) {
            self.board_view.redraw();
        }
    }

    /// The colour name of pixel (`x`, `y`).
    pub fn pixel(&self, x: usize, y: usize) -> &'static str {
        COLOURS[usize::from(self.board.borrow().pixels[y * SIDE + x])].0
    }

    /// Applies what the network brought; true once the connection is gone.
    pub fn pump(&mut self) -> bool {
        while let Some(message) = self.receiver.recv() {
            match message {
                Incoming::Board { version, pixels } => {
                    let mut board = self.board.borrow_mut();
                    board.pixels = pixels;
                    board.version = version;
                    drop(board);
                    self.status.set_label(match version {
                        Some(_) => "Conectado (modo compacto)",
                        None => "Conectado (tableros completos)",
                    });
                }
                Incoming::Changes { from, to, changes } => {
                    let mut board = self.board.borrow_mut();
                    if board.version == Some(from) {
                        for (x, y, colour) in changes {
                            board.pixels[y * SIDE + x] = colour;
                        }
                        board.version = Some(to);
                    } else {
                        // A gap: ask for the whole board again.
                        board.version = None;
                        let _ = self.outgoing.send(NEW_COMPACT.to_string());
                    }
                }
                Incoming::Closed(why) => {
                    self.status.set_label(&format!("Desconectado: {why}"));
                    self.closed = true;
                }
            }
            self.board_view.redraw();
        }
        self.closed
    }

    /// Says goodbye as the original window does when it closes.
    pub fn close(&mut self) {
        let _ = self.outgoing.send(r#"{"comando": "cerrar"}"#.to_string());
    }
}

/// Runs the canvas window until it is closed.
pub fn run(host: &str, port: u16, tls: &link::Tls) -> Result<(), String> {
    if !crate::gui::display_available() {
        return Err("no display found (DISPLAY is unset or unreachable)".into());
    }
    let app = app::App::default();
    let mut canvas = CanvasWindow::build(host, port, tls)?;
    canvas.window.show();
    while app.wait() {
        canvas.pump();
        if !canvas.window.shown() {
            break;
        }
    }
    canvas.close();
    // Give the writer a moment to send the goodbye before the process ends.
    std::thread::sleep(std::time::Duration::from_millis(100));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drag_paints_every_cell_on_its_way() {
        assert_eq!(line((0, 0), (3, 0)), [(0, 0), (1, 0), (2, 0), (3, 0)]);
        assert_eq!(line((2, 2), (2, 2)), [(2, 2)]);
        let diagonal = line((0, 0), (4, 2));
        assert_eq!(diagonal.first(), Some(&(0, 0)));
        assert_eq!(diagonal.last(), Some(&(4, 2)));
        assert_eq!(diagonal.len(), 5, "one cell per column: {diagonal:?}");
    }

    #[test]
    fn boards_changes_and_goodbyes_are_understood() {
        let mut rows = serde_json::Map::new();
        for y in 0..SIDE {
            let row: serde_json::Map<String, Value> = (0..SIDE)
                .map(|x| (x.to_string(), Value::from("white")))
                .collect();
            rows.insert(y.to_string(), Value::Object(row));
        }
        rows["3"]["7"] = Value::from("red");
        let board = Value::Object(rows);
        let Some(Incoming::Board {
            version: None,
            pixels,
        }) = interpret(&board)
        else {
            panic!("a whole board")
        };
        assert_eq!(pixels[3 * SIDE + 7], 2);
        let compact = serde_json::json!({"version": 4, "tablero": board});
        assert!(matches!(
            interpret(&compact),
            Some(Incoming::Board {
                version: Some(4),
                ..
            })
        ));
        let changes = serde_json::json!({"desde": 4, "hasta": 6, "pixeles": [[1, 2, "blue"]]});
        assert_eq!(
            interpret(&changes),
            Some(Incoming::Changes {
                from: 4,
                to: 6,
                changes: vec![(1, 2, 5)]
            })
        );
        assert!(matches!(
            interpret(&serde_json::json!({"cerrar": true})),
            Some(Incoming::Closed(_))
        ));
        assert_eq!(
            interpret(&serde_json::json!({"0": {}})),
            None,
            "a partial board"
        );
    }
}
