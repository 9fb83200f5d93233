//! The shared canvas of seed 002 (DrawColorCanvas): a persistent connection of frames, each a
//! 5-byte little-endian length and that many bytes of UTF-8 JSON.
//!
//! An original client redraws every pixel of every message it gets and fails on anything but a
//! whole board (or `{"cerrar": true}`): so a bad request gets no answer, only a stderr line.
//! Our own client asks for the compact mode in its first message: the board once with its
//! version, then the changed pixels of each tick.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Instant;

use serde_json::Value;

use crate::core::canvas::{Change, COLOURS, SIDE};
use crate::core::{Core, Notice, SessionId};
use crate::frontend::{Applied, Caller, EncodeMemo, Framing, Frontend, Input, Mode, Reply, Shared};

/// The goodbye, to a `cerrar` and when the server closes on its own.
const CERRAR: &str = "{\"cerrar\": true}";

/// Bytes of the length field.
const HEADER: usize = 5;

/// Longest message a client may send; a paint is under 100 bytes. A length field over it is
/// refused without reading the body.
pub const MAX_REQUEST: usize = 4096;

/// The canvas front-end: each session's mode, and the last whole board encoded (shared by
/// every viewer until the board changes).
#[derive(Default)]
pub struct Canvas {
    compact: HashMap<SessionId, bool>,
    memo: EncodeMemo,
    board_json: RefCell<Option<(u64, Rc<str>)>>,
}

/// A frame: the length, little-endian in 5 bytes, then the body.
fn frame(body: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + body.len());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes()[..HEADER]);
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// The board as the seed's client wants it: `{"0": {"0": "white", ...}, ...}`, `[y][x]`.
fn board_json(pixels: &[u8]) -> String {
    let mut json = String::with_capacity(40 * 1024);
    json.push('{');
    for y in 0..SIDE {
        let _ = write!(json, "{}\"{y}\": {{", if y > 0 { ", " } else { "" });
        for x in 0..SIDE {
            let colour = COLOURS[usize::from(pixels[y * SIDE + x])];
            let _ = write!(
                json,
                "{}\"{x}\": \"{colour}\"",
                if x > 0 { ", " } else { "" }
            );
        }
        json.push('}');
    }
    json.push('}');
    json
}

fn changes_json(from: u64, to: u64, changes: &[Change]) -> String {
    let mut json = format!("{{\"desde\": {from}, \"hasta\": {to}, \"pixeles\": [");
    for (n, (x, y, colour)) in changes.iter().enumerate() {
        let colour = COLOURS[usize::from(*colour)];
        let _ = write!(
            json,
            "{}[{x}, {y}, \"{colour}\"]",
            if n > 0 { ", " } else { "" }
        );
    }
    json.push_str("]}");
    json
}

/// A coordinate: a string of digits (as the original sends it) or an integer, below 50.
fn coordinate(value: Option<&Value>) -> Option<usize> {
    let n = match value? {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()?
        }
        Value::Number(n) => n.as_u64()?,
        _ => return None,
    };
    usize::try_from(n).ok().filter(|&n| n < SIDE)
}

enum Request {
    New { compact: bool },
    Paint { x: usize, y: usize, colour: u8 },
    Close,
}

fn parse(body: &[u8]) -> Result<Request, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
    let command = value.get("comando").and_then(Value::as_str);
    match command {
        Some("nuevo") => Ok(Request::New {
            compact: value.get("modo").and_then(Value::as_str) == Some("compacto"),
        }),
        Some("cerrar") => Ok(Request::Close),
        Some("pintar") => {
            let x = coordinate(value.get("x_pos")).ok_or("x_pos missing or not 0 to 49")?;
            let y = coordinate(value.get("y_pos")).ok_or("y_pos missing or not 0 to 49")?;
            let name = value
                .get("nombre_color")
                .and_then(Value::as_str)
                .ok_or("nombre_color missing")?;
            let colour = COLOURS
                .iter()
                .position(|c| *c == name)
                .ok_or_else(|| format!("unknown colour {name:?}"))?;
            Ok(Request::Paint {
                x,
                y,
                colour: colour as u8,
            })
        }
        Some(other) => Err(format!("unknown comando {other:?}")),
        None => Err("no comando".into()),
    }
}

/// The whole board at `version` as a JSON body, encoded once per version (`cache`).
fn board(cache: &RefCell<Option<(u64, Rc<str>)>>, version: u64, pixels: &[u8]) -> Rc<str> {
    let mut cache = cache.borrow_mut();
    match &*cache {
        Some((cached, json)) if *cached == version => json.clone(),
        _ => {
            let json: Rc<str> = board_json(pixels).into();
            *cache = Some((version, json.clone()));
            json
        }
    }
}

/// The frame of a whole board at `version` for a viewer in compact mode or not.
fn board_frame(
    cache: &RefCell<Option<(u64, Rc<str>)>>,
    compact: bool,
    version: u64,
    pixels: &[u8],
) -> Vec<u8> {
    let board = board(cache, version, pixels);
    if compact {
        frame(&format!("{{\"version\": {version}, \"tablero\": {board}}}"))
    } else {
        frame(&board)
    }
}

impl Frontend for Canvas {
    fn name(&self) -> &'static str {
        "canvas"
    }

    fn mode(&self) -> Mode {
        Mode::Persistent
    }

    fn read_limit(&self) -> usize {
        HEADER + MAX_REQUEST
    }

    fn frame(&self, input: &Input) -> Framing {
        let Some(header) = input.buf.get(..HEADER) else {
            return Framing::Incomplete;
        };
        let mut length = [0u8; 8];
        length[..HEADER].copy_from_slice(header);
        let length = u64::from_le_bytes(length);
        if length > MAX_REQUEST as u64 {
            return Framing::Close(format!(
                "a message of {length} bytes announced, more than {MAX_REQUEST}"
            ));
        }
        let whole = HEADER + length as usize;
        if input.buf.len() >= whole {
            Framing::Complete(whole)
        } else {
            Framing::Incomplete
        }
    }

    fn apply(
        &mut self,
        request: &[u8],
        caller: &Caller,
        core: &mut Core,
        _now: Instant,
    ) -> Applied {
        let session = caller.session;
        match parse(&request[HEADER..]) {
            Ok(Request::New { compact }) => {
                self.compact.insert(session, compact);
                let (version, pixels) = core.canvas_join(session, compact);
                let frame = board_frame(&self.board_json, compact, version, &pixels);
                Applied::read_only(Reply::bytes(frame))
            }
            Ok(Request::Paint { x, y, colour }) => {
                core.canvas_paint(x, y, colour);
                Applied::read_only(Reply::default())
            }
            Ok(Request::Close) => Applied::read_only(Reply::bytes(frame(CERRAR)).then_close()),
            // An original client fails on anything but a whole board: no answer.
            Err(why) => Applied::read_only(Reply::default().diagnostic(format!(
                "canvas: ignored a request from {}: {why}",
                caller.peer
            ))),
        }
    }

    fn established(&self, session: SessionId) -> bool {
        self.compact.contains_key(&session)
    }

    fn encode(&mut self, session: SessionId, notice: &Notice) -> Option<Shared> {
        match notice {
            Notice::CanvasBoard { version, pixels } => {
                let compact = self.compact.get(&session) == Some(&true);
                let cache = &self.board_json;
                Some(self.memo.get_or(notice, u8::from(compact), || {
                    board_frame(cache, compact, *version, pixels)
                }))
            }
            Notice::CanvasChanges { from, to, changes } => Some(self.memo.get_or(
                notice,
                0,
                || frame(&changes_json(*from, *to, changes)),
            )),
            _ => None,
        }
    }

    /// The original client notices only a reset: it gets `{"cerrar": true}`, then one.
    fn farewell(&self) -> Option<Vec<u8>> {
        Some(frame(CERRAR))
    }

    fn closed(&mut self, session: SessionId, core: &mut Core) -> Option<String> {
        self.compact.remove(&session);
        core.canvas_leave(session);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_board_is_every_key_white() {
        let json = board_json(&[0; SIDE * SIDE]);
        let value: Value = serde_json::from_str(&json).unwrap();
        let rows = value.as_object().unwrap();
        assert_eq!(rows.len(), SIDE);
        assert!(rows
            .values()
            .all(|row| row.as_object().unwrap().values().all(|c| c == "white")));
        assert_eq!(value["49"]["49"], "white");
    }

    #[test]
    fn frames_carry_a_5_byte_little_endian_length() {
        assert_eq!(frame("{}"), [2, 0, 0, 0, 0, b'{', b'}']);
    }

    #[test]
    fn paints_take_strings_or_integers_in_range() {
        let paint = |body: &str| parse(body.as_bytes());
        assert!(matches!(
            paint(r#"{"comando": "pintar", "x_pos": "7", "y_pos": 3, "nombre_color": "red"}"#),
            Ok(Request::Paint {
                x: 7,
                y: 3,
                colour: 2
            })
        ));
        for bad in [
            r#"{"comando": "pintar", "x_pos": "50", "y_pos": "3", "nombre_color": "red"}"#,
            r#"{"comando": "pintar", "x_pos": "-1", "y_pos": "3", "nombre_color": "red"}"#,
            r#"{"comando": "pintar", "x_pos": -1, "y_pos": "3", "nombre_color": "red"}"#,
            r#"{"comando": "pintar", "x_pos": "1", "y_pos": "3", "nombre_color": "pink"}"#,
            r#"{"comando": "pintar", "x_pos": "1", "nombre_color": "red"}"#,
            r#"{"comando": "pintar", "x_pos": 1.5, "y_pos": "3", "nombre_color": "red"}"#,
            r#"["pintar"]"#,
            "no es json",
        ] {
            assert!(paint(bad).is_err(), "{bad}");
        }
    }
}
