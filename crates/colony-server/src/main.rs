//! `colony`: start a node.

use clap::Parser;
use colony_server::config::{Cli, Command, NodeConfig};
use std::io::IsTerminal;
use std::process::ExitCode;

// glibc's malloc was a third of the CPU profile under pipelined load (arena
// contention between worker threads); mimalloc's thread-local heaps are not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Start(flags) => NodeConfig::resolve(*flags).and_then(|config| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.threads)
                .enable_all()
                .thread_name("colony")
                .build()?
                .block_on(colony_server::node::run(config))
        }),
        Command::Admin(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => match rt.block_on(colony_server::admin::run(args)) {
                    Ok(()) => return ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("colony admin: {e:#}");
                        return ExitCode::FAILURE;
                    }
                },
                Err(e) => Err(e.into()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("colony: cannot start: {e:#}");
            eprintln!("colony: cannot start: {e:#}");
            ExitCode::FAILURE
        }
    }
}
