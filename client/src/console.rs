//! The console client of seed 003: a `c> ` prompt, one command per line, result lines as the
//! seeds write them. Works with stdin from a pipe and exits cleanly at end of input.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use crate::session::{parse_command, Command, Session, Sinks};
use crate::Endpoints;

const PROMPT: &str = "c> ";

/// Prints `lines`, each on its own line, in one write so the listener thread cannot interleave.
fn print_lines(lines: &[String], then_prompt: bool) {
    let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if then_prompt {
        text.push_str(PROMPT);
    }
    let mut out = io::stdout().lock();
    // A closed stdout only means nobody reads us any more.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Draws a transfer's progress on stderr, one `\r`-rewritten line, redrawn when the percentage
/// changes and ended with a newline at 100 %. stdout keeps only the seeds' lines.
fn progress_bar() -> impl Fn(u64, u64) + Send + Sync {
    let shown = std::sync::Mutex::new(None::<u64>);
    move |done, all| {
        let percent = (done * 100).checked_div(all).unwrap_or(100);
        let mut shown = shown.lock().unwrap_or_else(|p| p.into_inner());
        if *shown == Some(percent) {
            return;
        }
        *shown = if percent == 100 { None } else { Some(percent) };
        let filled = (percent / 5) as usize;
        let mut err = io::stderr().lock();
        let _ = write!(
            err,
            "\rGETFILE [{}{}] {percent:>3}% ({:.1} of {:.1} MiB)",
            "#".repeat(filled),
            "-".repeat(20 - filled),
            done as f64 / 1048576.0,
            all as f64 / 1048576.0
        );
        if percent == 100 {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

pub fn run(endpoints: Endpoints) -> io::Result<()> {
    let sinks = Sinks {
        // A push arrives while the prompt waits: show it, then the prompt again.
        incoming: Arc::new(|lines| print_lines(&lines, true)),
        note: Arc::new(|text| {
            let _ = writeln!(io::stderr().lock(), "{text}");
        }),
        progress: Arc::new(progress_bar()),
        ask_password: Arc::new(crate::secret::ask),
    };
    let mut session = Session::new(endpoints.server, endpoints.formatter_url, sinks);
    let stdin = io::stdin();
    let mut line = String::new();
    loop {
        print_lines(&[], true);
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            // End of input: leave as QUIT would, so the server does not keep pushing to us.
            let outcome = session.execute(Command::Quit);
            print_lines(&outcome.lines, false);
            return Ok(());
        }
        match parse_command(&line) {
            Ok(None) => {}
            Ok(Some(command)) => {
                let outcome = session.execute(command);
                print_lines(&outcome.lines, false);
                if outcome.quit {
                    return Ok(());
                }
            }
            Err(usage) => print_lines(&[usage], false),
        }
    }
}
