//! The `s> ...` lines of seed 000 section 7 on stdout, and timestamped, levelled diagnostics on
//! stderr (the `log` facade; [`init_logging`] installs this module as its logger).
//!
//! Nobody writes to the real streams from the reactor: each stream has a writer thread fed
//! through a bounded buffer. A stalled pipe (a terminal paused with ^S, a log collector that
//! stopped reading) fills the buffer and then costs dropped lines, counted and reported on
//! stderr once it moves again, never a stalled server. A closed stream is ignored: the server
//! must not die because nobody reads its console.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::watched::Watched;

/// Bytes each stream may hold while its reader is not reading.
pub const STREAM_BUFFER_LIMIT: usize = 1 << 20;

/// How long the final flush at exit waits for a stalled stream.
const EXIT_FLUSH_WAIT: Duration = Duration::from_secs(2);

/// How long a writer lets lines gather after a write before it writes again. Under load the
/// reactor hands over lines every turn (thousands a second); waking the writer for each cost
/// a context switch each (about a tenth of the server's CPU in a SEND benchmark), and at 2 ms
/// the writer's sleeps and writes were still 3 % of a private message's cost. A line written
/// when the writer is idle goes out at once.
const GATHER: Duration = Duration::from_millis(10);

/// Lines of one kind of client-caused diagnostic written per second; past it they are counted
/// and summed up in one line, so a client making errors on purpose cannot flood the log.
pub const RATE_LIMITED_LINES_PER_SECOND: u32 = 20;

#[derive(Default)]
struct Buffered {
    bytes: Vec<u8>,
    /// Lines refused because the buffer was full, not yet reported.
    dropped: u64,
    /// True while the writer thread holds bytes it took but has not finished writing.
    writing: bool,
}

/// One output stream and its writer thread.
struct Stream {
    buffered: Watched<Buffered>,
    name: &'static str,
}

impl Stream {
    fn start(name: &'static str, write: fn(&[u8])) -> Arc<Stream> {
        let stream = Arc::new(Stream {
            buffered: Watched::new(Buffered::default()),
            name,
        });
        let writer = stream.clone();
        // Without the thread every line would be dropped, but the server still serves.
        let _ = std::thread::Builder::new()
            .name(format!("{name}-writer"))
            .spawn(move || writer.run(write));
        stream
    }

    fn push(&self, bytes: &[u8]) {
        self.buffered.change(|buffered| {
            if buffered.bytes.len() + bytes.len() > STREAM_BUFFER_LIMIT {
                buffered.dropped += 1;
            } else {
                buffered.bytes.extend_from_slice(bytes);
            }
        });
    }

    fn run(&self, write: fn(&[u8])) {
        loop {
            let (bytes, dropped) = self.buffered.wait_until(
                |buffered| !buffered.bytes.is_empty() || buffered.dropped > 0,
                |buffered| {
                    buffered.writing = true;
                    (
                        std::mem::take(&mut buffered.bytes),
                        std::mem::take(&mut buffered.dropped),
                    )
                },
            );
            write(&bytes);
            if dropped > 0 {
                log::warn!(
                    "{dropped} {} lines were dropped: nobody read them while {} KiB waited",
                    self.name,
                    STREAM_BUFFER_LIMIT / 1024
                );
            }
            // Wakes `drain`, if it waits.
            self.buffered.change(|buffered| buffered.writing = false);
            std::thread::sleep(GATHER);
        }
    }

    /// Waits until everything pushed so far is written, or `wait` has passed.
    fn drain(&self, wait: Duration) {
        self.buffered.wait_for(
            |buffered| buffered.bytes.is_empty() && !buffered.writing,
            wait,
        );
    }
}

fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}

fn write_stderr(bytes: &[u8]) {
    let _ = std::io::stderr().lock().write_all(bytes);
}

fn stdout() -> &'static Stream {
    static STDOUT: OnceLock<Arc<Stream>> = OnceLock::new();
    STDOUT.get_or_init(|| Stream::start("stdout", write_stdout))
}

fn stderr() -> &'static Stream {
    static STDERR: OnceLock<Arc<Stream>> = OnceLock::new();
    STDERR.get_or_init(|| Stream::start("stderr", write_stderr))
}

/// The reactor's console: lines are collected during a turn and handed over at its end.
#[derive(Default)]
pub struct Console {
    lines: String,
}

impl Console {
    /// A console line: what a client sent shows escaped (`wire::escape_controls`), so it can
    /// neither forge a line nor drive the operator's terminal.
    pub fn line(&mut self, text: &str) {
        self.line_fmt(format_args!("{text}"));
    }

    /// [`Console::line`] of a line still to format, formatted in place.
    pub fn line_fmt(&mut self, text: std::fmt::Arguments) {
        self.lines.push_str("s> ");
        let start = self.lines.len();
        // Writing to a String cannot fail.
        let _ = std::fmt::Write::write_fmt(&mut self.lines, text);
        if let std::borrow::Cow::Owned(escaped) = wire::escape_controls(&self.lines[start..]) {
            self.lines.truncate(start);
            self.lines.push_str(&escaped);
        }
        self.lines.push('\n');
    }

    /// A bare prompt line, as the seed prints before the first request.
    pub fn prompt(&mut self) {
        self.lines.push_str("s>\n");
    }

    /// Hands the turn's lines to the writer, and the counts of diagnostics left out.
    pub fn flush(&mut self) {
        report_left_out();
        if !self.lines.is_empty() {
            stdout().push(self.lines.as_bytes());
            self.lines.clear();
        }
    }
}

/// The `log` backend: `2026-11-22T04:08:18.123Z WARN  text`, through the bounded stderr
/// writer, so logging never blocks whoever logs.
struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let text = record.args().to_string();
            let line = format!(
                "{} {:<5} {}\n",
                timestamp(SystemTime::now()),
                record.level(),
                wire::escape_controls(&text)
            );
            stderr().push(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// One kind of rate-limited diagnostic: the current second's window.
struct Window {
    level: log::Level,
    since: Instant,
    written: u32,
    suppressed: u64,
}

impl Window {
    /// Logs how many lines the window left out, if any, and starts a new one.
    fn close(&mut self, kind: &str, now: Instant) {
        if self.suppressed > 0 {
            log::log!(
                self.level,
                "{} more lines of {kind} were left out in the last {:.1} s",
                self.suppressed,
                now.duration_since(self.since).as_secs_f64()
            );
        }
        self.since = now;
        self.written = 0;
        self.suppressed = 0;
    }
}

fn windows() -> std::sync::MutexGuard<'static, HashMap<&'static str, Window>> {
    static WINDOWS: OnceLock<Mutex<HashMap<&'static str, Window>>> = OnceLock::new();
    WINDOWS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Logs `line` at INFO, as [`log_rate_limited`] does.
pub fn note_rate_limited(kind: &'static str, line: impl std::fmt::Display) {
    log_rate_limited(log::Level::Info, kind, line);
}

/// Logs `line` at `level` unless [`RATE_LIMITED_LINES_PER_SECOND`] lines of `kind` were
/// logged in the last second; those left out are counted, and the count is logged once the
/// second is over ([`report_left_out`], or the kind's next line). For lines whose number
/// clients decide.
pub fn log_rate_limited(level: log::Level, kind: &'static str, line: impl std::fmt::Display) {
    let now = Instant::now();
    let mut windows = windows();
    let window = windows.entry(kind).or_insert(Window {
        level,
        since: now,
        written: 0,
        suppressed: 0,
    });
    if now.duration_since(window.since) >= Duration::from_secs(1) {
        window.close(kind, now);
    }
    if window.written < RATE_LIMITED_LINES_PER_SECOND {
        window.written += 1;
        log::log!(level, "{line}");
    } else {
        window.suppressed += 1;
    }
}

/// When a count of lines left out is due (the reactor wakes up for it).
pub fn left_out_due() -> Option<Instant> {
    windows()
        .values()
        .filter(|window| window.suppressed > 0)
        .map(|window| window.since + Duration::from_secs(1))
        .min()
}

/// Logs the counts of lines left out in windows that are over (the reactor calls it every
/// turn).
pub fn report_left_out() {
    let now = Instant::now();
    for (kind, window) in windows().iter_mut() {
        if window.suppressed > 0 && now.duration_since(window.since) >= Duration::from_secs(1) {
            window.close(kind, now);
        }
    }
}

/// Sends the `log` macros' records at `level` and above to stderr.
pub fn init_logging(level: log::LevelFilter) {
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
    // A panic is a timestamped stderr line too (with the backtrace `RUST_BACKTRACE` asks
    // for), written before the panic goes on: a caught one (a library's, see
    // `storage::open_postgres`) is one line, and an uncaught one is not lost in the buffer.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let mut line = format!(
            "{} ERROR thread '{}' {info}\n",
            timestamp(SystemTime::now()),
            thread.name().unwrap_or("unnamed")
        );
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            line.push_str(&format!("{backtrace}\n"));
        }
        stderr().push(line.as_bytes());
        drain();
    }));
}

/// Waits (a bounded time) until what was written so far has reached both streams.
pub fn drain() {
    stdout().drain(EXIT_FLUSH_WAIT);
    stderr().drain(EXIT_FLUSH_WAIT);
}

/// Stops the process with a clear message, for failures after which going on could lie to
/// clients (a failed fsync): a restart re-reads what is really on disk.
pub fn fatal(text: &str) -> ! {
    // Whatever the log level: this is the server's last word.
    let line = format!("{} ERROR fatal: {text}\n", timestamp(SystemTime::now()));
    stderr().push(line.as_bytes());
    drain();
    std::process::exit(1);
}

/// `2026-11-22T04:08:18.123Z`: UTC, millisecond precision, sortable.
pub fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs: u64, millis: u64| {
            timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_320_498, 123), "2026-11-22T04:08:18.123Z");
    }
}
