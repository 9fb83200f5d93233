//! `formatter -p PORT`: serves the white-space normaliser over HTTP with a small worker pool.

use std::io::Read;
use std::sync::Arc;

use clap::Parser;
use formatter::{handle, Request, MAX_BODY};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tiny_http::{Header, Response, Server};

/// The formatter web service: REST (`POST /normalize`) and SOAP 1.1 (WSDL at `/?wsdl`).
#[derive(Parser)]
#[command(name = "formatter", version)]
struct Args {
    /// TCP port; 0 picks a free one (printed on the first line).
    #[arg(short = 'p', long, default_value_t = 8000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Worker threads serving requests.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let server = match Server::http((args.bind, args.port)) {
        Ok(server) => Arc::new(server),
        Err(e) => {
            eprintln!(
                "formatter: cannot listen on {}:{}: {e}",
                args.bind, args.port
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = server.server_addr().to_ip().expect("an IP listener");
    println!("formatter listening on http://{addr}/");
    let workers: Vec<_> = (0..args.workers)
        .map(|_| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                // `recv` returns an error once `unblock` is called at shutdown.
                while let Ok(request) = server.recv() {
                    serve(request);
                }
            })
        })
        .collect();
    let mut signals = Signals::new([SIGINT, SIGTERM]).expect("signal handlers");
    if let Some(signal) = signals.forever().next() {
        eprintln!("formatter: signal {signal}, shutting down");
    }
    for _ in &workers {
        server.unblock();
    }
    for worker in workers {
        let _ = worker.join();
    }
    std::process::ExitCode::SUCCESS
}

fn serve(mut request: tiny_http::Request) {
    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_string())
    };
    let (content_type, host) = (header("Content-Type"), header("Host"));
    // Read one byte past the limit to tell "at the limit" from "over it".
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body);
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let answer = match read {
        Ok(_) => handle(&Request {
            method: &method,
            url: &url,
            content_type: content_type.as_deref(),
            host: host.as_deref(),
            body: &body,
        }),
        Err(e) => {
            eprintln!("formatter: reading a {method} {url} body failed: {e}");
            return;
        }
    };
    if answer.status >= 400 {
        eprintln!("formatter: {method} {url} -> {}", answer.status);
    }
    let mut response = Response::from_data(answer.body)
        .with_status_code(answer.status)
        .with_header(
            Header::from_bytes("Content-Type", answer.content_type).expect("static header"),
        );
    if let Some(allow) = answer.allow {
        response = response.with_header(Header::from_bytes("Allow", allow).expect("static header"));
    }
    if let Err(e) = request.respond(response) {
        eprintln!("formatter: answering {method} {url} failed: {e}");
    }
}
