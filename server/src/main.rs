use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = server::Config::parse();
    match server::run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
