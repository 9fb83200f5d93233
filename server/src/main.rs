use clap::Parser;

fn main() -> std::process::ExitCode {
    // `server account ...` manages accounts; anything else runs the server.
    let mut args = std::env::args();
    if std::env::args().nth(1).as_deref() == Some("account") {
        let program = args.next().unwrap_or_default();
        let rest = args.skip(1);
        return match server::accounts::operator::run(std::iter::once(program).chain(rest)) {
            Ok(done) => {
                println!("{done}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("server account: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let config = server::Config::parse();
    match server::run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            server::report_exit_error(&e);
            std::process::ExitCode::FAILURE
        }
    }
}
