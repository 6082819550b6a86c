//! The `repobox` binary: parses arguments and hands over to the library.
//!
//! `repobox sandbox-forward …` is dispatched first, before argument parsing and before
//! any async runtime starts: it runs inside a sandbox as the wrapper of one command
//! (`sandbox::network::forward`) and needs neither.

use clap::Parser;
use repobox::sandbox::network::forward;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(forward::SUBCOMMAND.as_ref()) {
        return forward::main(args.collect());
    }
    let cli = repobox::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(repobox::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
