//! The `s> ...` lines of seed 000 section 7 on stdout, and diagnostics on stderr.
//!
//! Lines are collected during a reactor turn and written in one go at its end, so they appear
//! promptly whether stdout is a terminal, a pipe or a file. A closed stdout or stderr is ignored:
//! the server must not die because nobody reads its console.

use std::io::Write;

#[derive(Default)]
pub struct Console {
    lines: String,
}

impl Console {
    pub fn line(&mut self, text: &str) {
        self.lines.push_str("s> ");
        self.lines.push_str(text);
        self.lines.push('\n');
    }

    /// A bare prompt line, as the seed prints before the first request.
    pub fn prompt(&mut self) {
        self.lines.push_str("s>\n");
    }

    pub fn flush(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = out
            .write_all(self.lines.as_bytes())
            .and_then(|()| out.flush());
        self.lines.clear();
    }
}

/// Writes one line to stderr, ignoring a closed stderr.
pub fn diagnostic(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
