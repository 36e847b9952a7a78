//! Messages of the runner protocol (version 2), their JSON encoding, tokens and content hashes.
//!
//! Within version 2 (the framing and the handshake), messages grow by revision: a runner lists what it can do
//! beyond running jobs in `Welcome.features` (revision 1 added [`FEATURE_PROFILE`]: the `Profile` request and
//! its `ProfileProgress` / `ProfileResult` answers). A runner of revision 0 sends no list, so a client asks it
//! only for what every version 2 runner does and tells the user to update it for the rest; a newer runner
//! answers an older client exactly as before. Fixtures per revision: `tests/fixtures/protocol/`.
//!
//! ```text
//! client                                  runner
//!   preamble (ESRP, version)  ─────────►
//!                             ◄─────────  preamble (ESRP, version)
//!   Noise NNpsk0 message 1    ─────────►  (keyed by the token: see secure.rs)
//!                             ◄─────────  Noise message 2 | empty record (wrong token, then close)
//!   -- every frame below is encrypted and authenticated --
//!   Hello                     ─────────►
//!                             ◄─────────  Welcome { device } | Denied { reason } (then close)
//!   Offer { files by SHA-256 } ────────►
//!                             ◄─────────  Need { hashes not in the runner's cache } | Failed (over quota)
//!   Upload { hash, size } + data frames ►  (only hashes the runner asked for, at the offered size)
//!                             ◄─────────  Stored { hash } | Failed
//!   Run { job }               ─────────►
//!                             ◄─────────  Event* , then TraceResult | DynamicResult | Failed | Busy
//!                             ◄─────────  Partial { samples so far } (every few hundred samples), Heartbeat
//!   Cancel (any time during a run) ─────►
//!   Profile { job } (revision 1) ─────►
//!                             ◄─────────  ProfileProgress*, Heartbeat, then ProfileResult | Failed | Busy
//! ```
//! The token never crosses the wire; both sides prove they know it by completing the handshake.

use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::analysis::policy::Policy;
use crate::data::{DatasetKind, Preprocess};
use crate::model::Manifest;
use crate::record::columns::{ColumnarDynamic, ColumnarTrace};
use crate::record::{
    DeviceRecord, DynamicRun, ProfileSettings, RunEvent, RunInfo, RunMode, RunSettings, TraceRun, VariantProfile,
};

/// The message revision this build speaks within [`super::frame::PROTOCOL_VERSION`] (see the module docs).
pub const MESSAGE_REVISION: u16 = 1;

/// `Welcome.features` entry of a runner that profiles (revision 1).
pub const FEATURE_PROFILE: &str = "profile";

/// What this build's runner announces in `Welcome.features`.
pub fn runner_features() -> Vec<String> {
    vec![FEATURE_PROFILE.to_string()]
}

/// A file the client can send, by content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer {
    /// SHA-256, lowercase hex.
    pub hash: String,
    /// Bytes.
    pub size: u64,
}

/// A dataset as a runner receives it: files by hash plus the spec's other fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteDataset {
    /// Dataset name.
    pub name: String,
    /// IDX or NPY.
    pub kind: DatasetKind,
    /// Hash of the images file.
    pub images: String,
    /// Hash of the labels file.
    pub labels: String,
    /// Class names.
    pub classes: Vec<String>,
    /// Preprocessing.
    pub preprocess: Preprocess,
}

/// A job as a runner receives it: the variant's manifest with segment files named by hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteJob {
    /// The manifest; each segment's `file` is the SHA-256 of its ONNX file.
    pub variant: Manifest,
    /// The dataset.
    pub dataset: RemoteDataset,
    /// Settings.
    pub settings: RunSettings,
    /// Trace or dynamic.
    pub mode: RunMode,
    /// The reference variant (the base) for exact probability loyalty beyond the trace's top-k classes, its
    /// segment files named by hash like `variant`'s. Runners that predate it ignore it (the client then shows
    /// loyalty as an estimate with its bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Manifest>,
}

/// A profile job as a runner receives it (revision 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteProfileJob {
    /// The manifest; each segment's `file` is the SHA-256 of its ONNX file.
    pub variant: Manifest,
    /// The dataset whose first samples are profiled.
    pub dataset: RemoteDataset,
    /// Samples, warm-up, threads.
    pub settings: ProfileSettings,
}

/// A trace run on the wire (`TraceResult`, `Partial`): the run's facts and its columns. The protocol's own type
/// over the shared column codec, so the session file can change without changing what peers exchange
/// (`tests/protocol_results.rs` holds this form to the revision 0 fixtures).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireTraceRun {
    info: RunInfo,
    trace: ColumnarTrace,
}

impl WireTraceRun {
    /// Compacts a run for sending.
    pub fn of(run: &TraceRun) -> Self {
        Self { info: run.info.clone(), trace: ColumnarTrace::of(&run.trace) }
    }

    /// Expands and validates what a peer sent; the error says what is wrong.
    pub fn decode(self) -> Result<TraceRun, String> {
        self.trace.into_run(self.info)
    }
}

/// A dynamic run on the wire (`DynamicResult`): facts, policy and columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireDynamicRun {
    info: RunInfo,
    policy: Option<Policy>,
    #[serde(flatten)]
    columns: ColumnarDynamic,
}

impl WireDynamicRun {
    /// Compacts a run for sending.
    pub fn of(run: &DynamicRun) -> Self {
        Self { info: run.info.clone(), policy: run.policy.clone(), columns: ColumnarDynamic::of(run) }
    }

    /// Expands and validates what a peer sent; the error says what is wrong.
    pub fn decode(self) -> Result<DynamicRun, String> {
        let name = self.info.variant.clone();
        self.columns.decode(self.info, self.policy).map_err(|e| format!("dynamic run of {name}: {e}"))
    }
}

/// Client to runner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientMessage {
    /// First encrypted message: proves to the runner that the client holds the session keys.
    Hello {
        /// Client name and version.
        client: String,
    },
    /// Files the job needs.
    Offer {
        /// By content.
        files: Vec<FileOffer>,
    },
    /// A file follows in data frames.
    Upload {
        /// Its hash.
        hash: String,
        /// Its size.
        size: u64,
    },
    /// Run a job.
    Run {
        /// The job.
        job: Box<RemoteJob>,
    },
    /// Stop the running job.
    Cancel,
    /// Profile a variant per operator (revision 1; only to runners that list [`FEATURE_PROFILE`]).
    Profile {
        /// The job.
        job: Box<RemoteProfileJob>,
    },
}

/// Runner to client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum RunnerMessage {
    /// Authenticated.
    Welcome {
        /// The runner's name and version.
        runner: String,
        /// The device.
        device: Box<DeviceRecord>,
        /// What it can do beyond running jobs (revision 1 on; absent from older runners).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// Not authenticated, or not served; the connection closes.
    Denied {
        /// Why.
        reason: String,
    },
    /// Files to upload (the rest is cached).
    Need {
        /// Hashes.
        hashes: Vec<String>,
    },
    /// An upload was received and verified.
    Stored {
        /// Its hash.
        hash: String,
    },
    /// Another job is running.
    Busy {
        /// What runs.
        reason: String,
    },
    /// Progress of the job.
    Event {
        /// The event.
        event: RunEvent,
    },
    /// Samples measured so far (trace jobs), so a dropped link keeps them.
    Partial {
        /// Index of the first sample.
        first_sample: usize,
        /// The samples, compact (its info is empty).
        samples: Box<WireTraceRun>,
    },
    /// Sent every couple of seconds while a job runs, so the client can tell a silent job from a dead link.
    Heartbeat,
    /// The trace of a trace job (possibly incomplete when cancelled).
    TraceResult {
        /// The run, compact.
        run: Box<WireTraceRun>,
    },
    /// The result of a dynamic job.
    DynamicResult {
        /// The run, compact.
        run: Box<WireDynamicRun>,
    },
    /// Samples profiled so far (revision 1).
    ProfileProgress {
        /// Samples done.
        done: usize,
        /// Samples to profile.
        total: usize,
    },
    /// The per-operator profile of a profile job (revision 1); segment paths are the runner's.
    ProfileResult {
        /// The profile.
        profile: Box<VariantProfile>,
    },
    /// The request failed; the connection stays usable.
    Failed {
        /// What went wrong, naming the file or setting.
        error: String,
    },
}

/// SHA-256 of a file, hex, and its size.
pub fn hash_file(path: &std::path::Path) -> std::io::Result<FileOffer> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok(FileOffer { hash: hex::encode(hasher.finalize()), size })
}

/// True for a well-formed hash (64 lowercase hex digits): hashes become file names in the cache.
pub fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads a token file (trimmed); the error says what to do.
pub fn read_token(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(format!(
            "the token in {} is shorter than 16 characters; write a long random one (e.g. `openssl rand -hex 32 > {}`)",
            path.display(),
            path.display()
        ));
    }
    Ok(token.as_bytes().to_vec())
}

/// The default cache folder of a runner.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("edgescope")
        .join("runner-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_checked_before_becoming_file_names() {
        assert!(is_hash(&"a".repeat(64)));
        assert!(!is_hash("../../etc/passwd"));
        assert!(!is_hash(&"A".repeat(64)));
    }
}
