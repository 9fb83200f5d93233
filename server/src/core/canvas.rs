//! The shared canvas: one 50×50 board that canvas sessions paint on and watch.
//!
//! Paints change the board at once; viewers hear about changes once per tick
//! ([`CANVAS_TICK`]) at most: a viewer of whole boards gets the newest board (a snapshot, so
//! one that is behind loses nothing by skipping), a compact viewer gets the pixels changed
//! since the last tick with version numbers to detect a gap. Paints are stored with the session
//! bus's events (`Chore::Publish`): in the turn on SQLite, beside the reactor on PostgreSQL,
//! where they go with their events to the other nodes.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Core, Notice, SessionId};
use crate::storage::{self, Storage};

/// Cells per side.
pub const SIDE: usize = 50;

/// The colours, by index: what a pixel stores.
pub const COLOURS: [&str; 8] = [
    "white", "black", "red", "green", "yellow", "blue", "cyan", "magenta",
];

/// How often, at most, viewers hear about changes.
pub const CANVAS_TICK: Duration = Duration::from_millis(50);

/// Changes kept for compact viewers within one tick; past it they get the whole board.
const MAX_CHANGES_PER_TICK: usize = SIDE * SIDE;

/// One changed pixel: column, row, colour index.
pub type Change = (u8, u8, u8);

pub(super) struct Canvas {
    pixels: Vec<u8>,
    /// Bumped by every paint that changed a pixel.
    version: u64,
    /// The version viewers were last told.
    told: u64,
    /// Changes since `told`, unless there were too many.
    changes: Vec<Change>,
    overflowed: bool,
    /// Paints not yet handed to storage, `(index, colour)` in order: what the next
    /// `Chore::Publish` stores and publishes.
    unstored: Vec<(usize, u8)>,
    /// Viewers, and whether each wants compact changes.
    viewers: HashMap<SessionId, bool>,
    pub(super) tick_at: Option<Instant>,
}

impl Canvas {
    pub(super) fn load(store: &dyn Storage) -> storage::Result<Canvas> {
        let mut pixels = store.canvas()?;
        // A damaged board (edited by hand) is read as white where it makes no sense.
        pixels.resize(SIDE * SIDE, 0);
        for pixel in &mut pixels {
            if usize::from(*pixel) >= COLOURS.len() {
                *pixel = 0;
            }
        }
        Ok(Canvas {
            pixels,
            version: 0,
            told: 0,
            changes: Vec::new(),
            overflowed: false,
            unstored: Vec::new(),
            viewers: HashMap::new(),
            tick_at: None,
        })
    }

    pub(super) fn unstored(&self) -> bool {
        !self.unstored.is_empty()
    }

    /// The paints not yet stored, which the caller hands to storage.
    pub(super) fn take_unstored(&mut self) -> Vec<(usize, u8)> {
        std::mem::take(&mut self.unstored)
    }

    /// Paints whose storage failed or was put off, to go before the newer ones.
    pub(super) fn unstore(&mut self, paints: Vec<(usize, u8)>) {
        self.unstored.splice(0..0, paints);
        self.bound_unstored();
    }

    /// Keeps only the last paint of each pixel once there are more than the board has
    /// pixels: a bound while storage is away, with the same board in the end.
    fn bound_unstored(&mut self) {
        if self.unstored.len() > SIDE * SIDE {
            let mut seen = [false; SIDE * SIDE];
            let mut last: Vec<(usize, u8)> = Vec::with_capacity(SIDE * SIDE);
            for &(index, colour) in self.unstored.iter().rev() {
                if !std::mem::replace(&mut seen[index], true) {
                    last.push((index, colour));
                }
            }
            last.reverse();
            self.unstored = last;
        }
    }

    /// The board now, for an engine that stores it whole.
    pub(super) fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    fn snapshot(&self) -> Rc<[u8]> {
        self.pixels.as_slice().into()
    }

    /// Sets a pixel; true if it changed (a new version, one more change for compact viewers).
    fn set_pixel(&mut self, x: usize, y: usize, colour: u8) -> bool {
        let pixel = &mut self.pixels[y * SIDE + x];
        if *pixel == colour {
            return false;
        }
        *pixel = colour;
        self.version += 1;
        if self.changes.len() < MAX_CHANGES_PER_TICK {
            self.changes.push((x as u8, y as u8, colour));
        } else {
            self.overflowed = true;
        }
        true
    }
}

/// The bus events of `paints` (`(index, colour)` in order), each well under NOTIFY's limit.
pub(super) fn paint_events(paints: &[(usize, u8)]) -> Vec<crate::bus::Event> {
    paints
        .chunks(400)
        .map(|chunk| crate::bus::Event::Paints {
            paints: chunk
                .iter()
                .map(|&(index, colour)| ((index % SIDE) as u8, (index / SIDE) as u8, colour))
                .collect(),
        })
        .collect()
}

impl Core {
    /// Adds a viewer (or changes how it hears changes) and returns the board now:
    /// `(version, pixels)`.
    pub fn canvas_join(&mut self, session: SessionId, compact: bool) -> (u64, Rc<[u8]>) {
        self.canvas.viewers.insert(session, compact);
        (self.canvas.version, self.canvas.snapshot())
    }

    pub fn canvas_leave(&mut self, session: SessionId) {
        self.canvas.viewers.remove(&session);
    }

    /// Paints pixel (`x`, `y`) with colour index `colour`; the caller has checked the ranges.
    pub fn canvas_paint(&mut self, x: usize, y: usize, colour: u8) {
        assert!(x < SIDE && y < SIDE && usize::from(colour) < COLOURS.len());
        self.metrics.message("paint");
        if self.canvas.set_pixel(x, y, colour) {
            self.canvas.unstored.push((y * SIDE + x, colour));
            self.canvas.bound_unstored();
        }
    }

    /// Applies paints made through another node (or this one's, again, in the database's
    /// order: see [`crate::bus::Event::Paints`]). Out-of-range ones are ignored.
    pub(super) fn canvas_apply_remote(&mut self, paints: &[Change]) {
        let mut changed = false;
        for &(x, y, colour) in paints {
            let (x, y) = (usize::from(x), usize::from(y));
            if x < SIDE && y < SIDE && usize::from(colour) < COLOURS.len() {
                changed |= self.canvas.set_pixel(x, y, colour);
            }
        }
        if changed && self.canvas.tick_at.is_none() {
            self.canvas.tick_at = Some(Instant::now() + CANVAS_TICK);
        }
    }

    /// Arranges the next tick.
    pub(super) fn canvas_end_turn(&mut self, now: Instant) {
        if self.canvas.version > self.canvas.told && self.canvas.tick_at.is_none() {
            self.canvas.tick_at = Some(now + CANVAS_TICK);
        }
    }

    /// Tells every viewer what changed since the last tick.
    pub(super) fn canvas_tick(&mut self) {
        let canvas = &mut self.canvas;
        canvas.tick_at = None;
        if canvas.version == canvas.told {
            return;
        }
        let board = Notice::CanvasBoard {
            version: canvas.version,
            pixels: canvas.snapshot(),
        };
        let changes = (!canvas.overflowed).then(|| Notice::CanvasChanges {
            from: canvas.told,
            to: canvas.version,
            changes: std::mem::take(&mut canvas.changes).into(),
        });
        canvas.changes.clear();
        canvas.overflowed = false;
        canvas.told = canvas.version;
        for (&session, &compact) in &canvas.viewers {
            let notice = match (&changes, compact) {
                (Some(changes), true) => changes.clone(),
                _ => board.clone(),
            };
            self.notices.push((session, notice));
        }
    }
}
