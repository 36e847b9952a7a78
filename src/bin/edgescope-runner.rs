//! `edgescope-runner`: the headless runner for a device (Jetson, Raspberry Pi). Builds without the GUI
//! (`cargo build --release --no-default-features --bin edgescope-runner`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use edgescope::net::{Limits, RunnerServer, ServerConfig, protocol};

const MIB: u64 = 1024 * 1024;

/// Runs edgescope jobs sent by a workstation over an encrypted channel keyed by a shared token. Loopback by
/// default: exposing it is an explicit choice. The limits' defaults fit a Raspberry Pi.
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
    /// Authenticated clients served at once.
    #[arg(long, default_value_t = Limits::default().max_clients)]
    max_clients: usize,
    /// Connections still in the handshake; a new one beyond this closes one of them at random.
    #[arg(long, default_value_t = Limits::default().max_pending)]
    max_pending: usize,
    /// Time for a connection's whole handshake, in milliseconds.
    #[arg(long, default_value_t = Limits::default().handshake_timeout_ms)]
    handshake_timeout_ms: u64,
    /// An authenticated client silent this long (outside a job) is dropped, in milliseconds.
    #[arg(long, default_value_t = Limits::default().idle_timeout_ms)]
    idle_timeout_ms: u64,
    /// A client that accepts no data for this long is dropped and its job cancelled, in milliseconds.
    #[arg(long, default_value_t = Limits::default().write_timeout_ms)]
    write_timeout_ms: u64,
    /// Largest message from a client, in KiB.
    #[arg(long, default_value_t = Limits::default().max_message_bytes / 1024)]
    max_message_kib: u32,
    /// Bytes one connection may upload, in MiB.
    #[arg(long, default_value_t = Limits::default().max_upload_bytes / MIB)]
    max_upload_mib: u64,
    /// Size of the file cache, in MiB (least recently used files are evicted).
    #[arg(long, default_value_t = Limits::default().max_cache_bytes / MIB)]
    max_cache_mib: u64,
    /// Largest dataset file once decompressed, in MiB.
    #[arg(long, default_value_t = Limits::default().max_dataset_bytes / MIB)]
    max_dataset_mib: u64,
    /// Most intra-op threads a job may use (default: this device's cores).
    #[arg(long, default_value_t = Limits::default().max_threads)]
    max_threads: usize,
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
    let limits = Limits {
        max_clients: args.max_clients.max(1),
        max_pending: args.max_pending.max(1),
        handshake_timeout_ms: args.handshake_timeout_ms,
        idle_timeout_ms: args.idle_timeout_ms,
        write_timeout_ms: args.write_timeout_ms,
        max_message_bytes: args.max_message_kib.saturating_mul(1024),
        max_upload_bytes: args.max_upload_mib.saturating_mul(MIB),
        max_cache_bytes: args.max_cache_mib.saturating_mul(MIB),
        max_dataset_bytes: args.max_dataset_mib.saturating_mul(MIB),
        max_threads: args.max_threads.max(1),
    };
    let cache_dir = args.cache_dir.unwrap_or_else(protocol::default_cache_dir);
    let summary = limits.describe();
    let config = ServerConfig { token, cache_dir: cache_dir.clone(), limits };
    let server = match RunnerServer::bind(&args.listen, config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot listen on {} or create the cache {}: {e}", args.listen, cache_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let address = server.local_addr().map_or_else(|_| args.listen.clone(), |a| a.to_string());
    eprintln!(
        "edgescope-runner {} listening on {address} (protocol v{}, Noise {}), cache {}",
        env!("CARGO_PKG_VERSION"),
        edgescope::net::frame::PROTOCOL_VERSION,
        edgescope::net::secure::NOISE_PATTERN,
        cache_dir.display()
    );
    eprintln!("edgescope-runner {summary}");
    server.serve();
    ExitCode::SUCCESS
}
