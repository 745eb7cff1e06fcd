//! The `telemetry-node` binary: parses the command line and calls the library.

use std::process::ExitCode;

use clap::Parser;
use telemetry_node::config::{Cli, Command};

/// jemalloc instead of the system allocator: at a million series, glibc's per-thread arenas
/// kept about twice the live heap resident (fragmentation across threads that allocate and
/// free each other's batches); jemalloc returns freed pages on its own schedule.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Openapi) => {
            println!("{}", telemetry_api::openapi_json());
            Ok(())
        }
        Some(Command::GenCsv(args)) => telemetry_node::gencsv::run(&args),
        Some(Command::Decommission(args)) => telemetry_node::decommission::run(&args),
        Some(Command::Bench(args)) => telemetry_node::bench::run(&args),
        Some(Command::Gpus(args)) => telemetry_node::cli::gpus(&args),
        Some(Command::Query(args)) => telemetry_node::cli::query(&args),
        Some(Command::Cluster(args)) => telemetry_node::cli::cluster(&args),
        Some(Command::Import(args)) => telemetry_node::cli::import(&args),
        Some(Command::Run(args)) => telemetry_node::serve(*args),
        None => telemetry_node::serve(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telemetry-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
