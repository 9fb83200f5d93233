use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = server::Config::parse();
    match server::run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            server::report_exit_error(&e);
            std::process::ExitCode::FAILURE
        }
    }
}
