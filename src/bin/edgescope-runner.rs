//! `edgescope-runner`: the headless runner for a device (Jetson, Raspberry Pi). Builds without the GUI
//! (`cargo build --release --no-default-features --bin edgescope-runner`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use edgescope::net::{RunnerServer, ServerConfig, protocol};

/// Runs edgescope jobs sent by a workstation. Loopback by default: exposing it is an explicit choice.
#[derive(Debug, Parser)]
#[command(name = "edgescope-runner", version, about)]
struct Args {
    /// Address to listen on (use 0.0.0.0:7878 to accept other machines).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: String,
    /// File holding the shared token (at least 16 characters; it never crosses the wire).
    #[arg(long)]
    token_file: PathBuf,
    /// Where received models and datasets are cached by content hash.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let token = match protocol::read_token(&args.token_file) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cache_dir = args.cache_dir.unwrap_or_else(protocol::default_cache_dir);
    let server = match RunnerServer::bind(&args.listen, ServerConfig { token, cache_dir: cache_dir.clone() }) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let address = server.local_addr().map_or_else(|_| args.listen.clone(), |a| a.to_string());
    eprintln!("edgescope-runner {} listening on {address}, cache {}", env!("CARGO_PKG_VERSION"), cache_dir.display());
    server.serve();
    ExitCode::SUCCESS
}
