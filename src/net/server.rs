//! The runner server: listens on TCP, sets up the Noise channel keyed by the token with each client, keeps
//! uploaded files in a content-addressed cache, and runs one job at a time with the local runner, streaming
//! progress and results.
//!
//! Every resource a peer can make the runner spend is bounded by [`Limits`]: connections still in the
//! handshake (one is dropped at random for a new one, so slow-drip connections cannot lock others out),
//! authenticated clients, the time of the whole handshake, every read and write afterwards, frame sizes (one
//! connection holds at most a few frames in memory), upload bytes per job, the cache (least recently used
//! files go first), decompressed dataset bytes and intra-op threads.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, bounded, select};

use super::frame::{self, CHUNK_BYTES, Frame, PROTOCOL_VERSION, WireError};
use super::protocol::{self, ClientMessage, RemoteJob, RunnerMessage, WireDynamicRun, WireTraceRun};
use super::secure::{self, SecureReader, SecureWriter, TimedStream};
use crate::data::{DATASET_FORMAT, DATASET_VERSION, Dataset, DatasetSpec};
use crate::model::Variant;
use crate::record::{DeviceRecord, RunOutput};
use crate::runtime::{Job, JobMessage, LocalRunner, Runner, spawn_job};

/// Quiet time after which a running job sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Samples per streamed checkpoint.
const CHECKPOINT_SAMPLES: usize = 200;
/// Most files one offer may list (a job needs its segments, images and labels).
const MAX_OFFER_FILES: usize = 64;
const MIB: u64 = 1024 * 1024;
/// Largest preprocessed sample (3 channels of f32) a job may ask for: 4096 x 4096 pixels.
const MAX_SAMPLE_BYTES: u64 = 4096 * 4096 * 3 * 4;

/// What one runner lets its peers use. The defaults fit a Raspberry Pi (4 GB); every field has a flag on
/// `edgescope-runner`, and the runner prints them when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Authenticated clients served at once (`--max-clients`).
    pub max_clients: usize,
    /// Connections still in the handshake; a new one beyond this closes one of them chosen at random
    /// (`--max-pending`).
    pub max_pending: usize,
    /// Time for the preamble, the handshake and the first encrypted message, all together
    /// (`--handshake-timeout-ms`).
    pub handshake_timeout_ms: u64,
    /// An authenticated client that sends nothing for this long outside a job is dropped
    /// (`--idle-timeout-ms`); it is also the longest wait for the rest of a frame.
    pub idle_timeout_ms: u64,
    /// A client that takes longer than this to accept a write (it stopped reading) is dropped and its job
    /// cancelled (`--write-timeout-ms`).
    pub write_timeout_ms: u64,
    /// Largest JSON message from a client (`--max-message-kib`).
    pub max_message_bytes: u32,
    /// Bytes one connection may upload (`--max-upload-mib`).
    pub max_upload_bytes: u64,
    /// Size of the file cache; least recently used files are evicted to stay under it (`--max-cache-mib`).
    pub max_cache_bytes: u64,
    /// Largest dataset file once decompressed (`--max-dataset-mib`).
    pub max_dataset_bytes: u64,
    /// Most intra-op threads a job may ask for; more is capped (`--max-threads`, default: the cores).
    pub max_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clients: 4,
            max_pending: 64,
            handshake_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 15_000,
            max_message_bytes: 1024 * 1024,
            max_upload_bytes: 512 * MIB,
            max_cache_bytes: 2048 * MIB,
            max_dataset_bytes: 512 * MIB,
            max_threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

impl Limits {
    /// One line per limit, as the runner prints them at start.
    pub fn describe(&self) -> String {
        format!(
            "limits: {} clients at once, {} connections in the handshake (one dropped at random for a newcomer), handshake {} ms, \
             idle {} ms, write {} ms, messages {} KiB, uploads {} MiB per connection, cache {} MiB (least recently \
             used evicted), datasets {} MiB decompressed, {} intra-op threads",
            self.max_clients,
            self.max_pending,
            self.handshake_timeout_ms,
            self.idle_timeout_ms,
            self.write_timeout_ms,
            self.max_message_bytes / 1024,
            self.max_upload_bytes / MIB,
            self.max_cache_bytes / MIB,
            self.max_dataset_bytes / MIB,
            self.max_threads,
        )
    }

    /// The bound on what one authenticated connection holds in memory besides its job: the frame being read,
    /// two queued in the reader channel, one being handled, and the record buffers.
    pub fn connection_memory_bytes(&self) -> u64 {
        let frame = u64::from(self.max_message_bytes.max(CHUNK_BYTES as u32));
        4 * frame + 4 * secure::MAX_RECORD_BYTES as u64
    }
}

/// Configuration of a runner.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The shared secret.
    pub token: Vec<u8>,
    /// Where uploaded files are kept, by hash.
    pub cache_dir: PathBuf,
    /// What peers may use.
    pub limits: Limits,
}

impl ServerConfig {
    /// A configuration with the default limits.
    pub fn new(token: Vec<u8>, cache_dir: PathBuf) -> Self {
        Self { token, cache_dir, limits: Limits::default() }
    }
}

/// Connections in the handshake, with a handle to close each.
#[derive(Default)]
struct Pending {
    next_id: u64,
    streams: VecDeque<(u64, TcpStream)>,
}

struct Shared {
    config: ServerConfig,
    busy: AtomicBool,
    stop: AtomicBool,
    device: DeviceRecord,
    pending: Mutex<Pending>,
    clients: AtomicUsize,
    cache_lock: Mutex<()>,
}

/// A bound runner; [`RunnerServer::serve`] accepts connections until stopped.
pub struct RunnerServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// A runner serving on a background thread (tests, embedding); dropping it stops accepting.
pub struct ServerHandle {
    /// Where it listens.
    pub address: SocketAddr,
    shared: Arc<Shared>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.address);
    }
}

impl ServerHandle {
    /// Authenticated clients connected now.
    pub fn clients(&self) -> usize {
        self.shared.clients.load(Ordering::SeqCst)
    }

    /// Connections in the handshake now.
    pub fn pending(&self) -> usize {
        self.shared.pending.lock().map_or(0, |p| p.streams.len())
    }
}

impl RunnerServer {
    /// Binds `address` (e.g. `127.0.0.1:7878`); the device record is read once, now. The dataset expansion cap
    /// applies to the whole process from now on.
    pub fn bind(address: &str, config: ServerConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.cache_dir)?;
        crate::data::set_max_decompressed_bytes(config.limits.max_dataset_bytes);
        let listener = TcpListener::bind(address)?;
        let mut runner = LocalRunner::new();
        let device = runner.device().unwrap_or_else(|_| DeviceRecord::this_machine());
        let shared = Arc::new(Shared {
            config,
            busy: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            device,
            pending: Mutex::new(Pending::default()),
            clients: AtomicUsize::new(0),
            cache_lock: Mutex::new(()),
        });
        Ok(Self { listener, shared })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections, each on its own thread, until stopped.
    pub fn serve(self) {
        for stream in self.listener.incoming() {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    // Out of file descriptors or similar: do not spin.
                    log(&format!("cannot accept a connection: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let Some(id) = register_pending(&self.shared, &stream) else { continue };
            let shared = Arc::clone(&self.shared);
            let peer = stream.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string());
            let name = format!("edgescope-runner-{peer}");
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                let closer = stream.try_clone().ok();
                if let Err(e) = serve_connection(stream, &shared, id) {
                    log(&format!("{peer}: {e}"));
                }
                unregister_pending(&shared, id);
                // Ends this connection's reader thread too.
                if let Some(stream) = closer {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            });
            if let Err(e) = spawned {
                log(&format!("cannot serve a connection: {e}"));
                unregister_pending(&self.shared, id);
            }
        }
    }

    /// Serves on a background thread named `edgescope-runner-accept`.
    pub fn spawn(self) -> std::io::Result<ServerHandle> {
        let address = self.local_addr()?;
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new().name("edgescope-runner-accept".into()).spawn(move || self.serve())?;
        Ok(ServerHandle { address, shared })
    }
}

/// Puts a new connection in the handshake registry. When it is full, a connection chosen at random is
/// closed to make room (as OpenSSH's `MaxStartups` drops at random): slow-drip connections cannot fill the
/// registry and keep a legitimate client out, whose handshake takes a round trip or two; the client retries
/// the rare time it is the one dropped.
fn register_pending(shared: &Shared, stream: &TcpStream) -> Option<u64> {
    use std::hash::{BuildHasher, Hasher};
    let handle = stream.try_clone().ok()?;
    let mut pending = shared.pending.lock().ok()?;
    if pending.streams.len() >= shared.config.limits.max_pending.max(1) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(pending.next_id);
        let victim = (hasher.finish() % pending.streams.len() as u64) as usize;
        if let Some((_, dropped)) = pending.streams.remove(victim) {
            let _ = dropped.shutdown(Shutdown::Both);
        }
    }
    let id = pending.next_id;
    pending.next_id += 1;
    pending.streams.push_back((id, handle));
    Some(id)
}

fn unregister_pending(shared: &Shared, id: u64) {
    if let Ok(mut pending) = shared.pending.lock() {
        pending.streams.retain(|(other, _)| *other != id);
    }
}

/// A slot among the authenticated clients, given back on drop.
struct ClientSlot<'a>(&'a AtomicUsize);

impl<'a> ClientSlot<'a> {
    fn take(counter: &'a AtomicUsize, max: usize) -> Option<Self> {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Self(counter))
    }
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn log(message: &str) {
    eprintln!("edgescope-runner: {message}");
}

fn send(writer: &mut impl Write, message: &RunnerMessage) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    frame::write_frame(writer, &Frame::Message(bytes))
}

fn parse(frame: Frame) -> Result<ClientMessage, String> {
    match frame {
        Frame::Message(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("malformed message: {e}")),
        Frame::Data(_) => Err("unexpected data frame".into()),
    }
}

type Writer = SecureWriter<TimedStream>;

fn serve_connection(stream: TcpStream, shared: &Shared, id: u64) -> Result<(), String> {
    let limits = &shared.config.limits;
    let text = |e: std::io::Error| e.to_string();
    stream.set_nodelay(true).map_err(text)?;
    let mut timed = TimedStream::new(
        stream,
        Duration::from_millis(limits.idle_timeout_ms),
        Duration::from_millis(limits.write_timeout_ms),
    )
    .map_err(text)?;
    // One deadline for everything before the client is known: a peer dripping bytes is dropped at it.
    let deadline = Instant::now() + Duration::from_millis(limits.handshake_timeout_ms);
    timed.set_deadline(Some(deadline));
    let version = frame::read_preamble(&mut timed).map_err(|e| e.to_string())?;
    frame::write_preamble(&mut timed).map_err(text)?;
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "the client speaks protocol version {version}, this runner {PROTOCOL_VERSION}; install the same edgescope \
             version on the workstation and the device"
        ));
    }
    let keys = secure::server_handshake(&mut timed, &shared.config.token, PROTOCOL_VERSION)
        .map_err(|e| format!("handshake failed: {e}"))?;
    let mut writer = SecureWriter::new(timed.try_clone().map_err(text)?, keys.clone());
    let mut reader = SecureReader::new(timed, keys);
    let frame_cap = limits.max_message_bytes.max(CHUNK_BYTES as u32);
    let hello = parse(frame::read_frame(&mut reader, frame_cap).map_err(|e| format!("handshake failed: {e}"))?)?;
    if !matches!(hello, ClientMessage::Hello { .. }) {
        return Err("the client did not start with Hello".into());
    }
    // Authenticated and live: out of the handshake registry, into a client slot.
    unregister_pending(shared, id);
    reader.get_mut().set_deadline(None);
    let Some(_slot) = ClientSlot::take(&shared.clients, limits.max_clients) else {
        let reason = format!(
            "this runner serves at most {} clients at once (--max-clients); try again when one disconnects",
            limits.max_clients
        );
        let _ = send(&mut writer, &RunnerMessage::Denied { reason: reason.clone() });
        return Err(reason);
    };
    send(
        &mut writer,
        &RunnerMessage::Welcome {
            runner: format!("edgescope-runner {}", env!("CARGO_PKG_VERSION")),
            device: Box::new(shared.device.clone()),
            features: protocol::runner_features(),
        },
    )
    .map_err(text)?;

    // After the handshake a reader thread turns the socket into a channel, so a running job can be cancelled
    // while its events stream out.
    let keep_waiting = reader.get_mut().keep_waiting();
    let frames = spawn_reader(reader, frame_cap)?;
    let mut state = ConnectionState::default();
    loop {
        let message = match frames.recv() {
            Ok(Ok(frame)) => parse(frame),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                send(&mut writer, &RunnerMessage::Failed { error: e.clone() }).map_err(text)?;
                return Err(e);
            }
        };
        match message {
            ClientMessage::Offer { files } => {
                let reply = state.offer(shared, files)?;
                send(&mut writer, &reply).map_err(text)?;
            }
            ClientMessage::Upload { hash, size } => {
                if state.accepted.remove(&hash) != Some(size) {
                    return Err(format!("upload of {hash:?} ({size} bytes) was not asked for at that size"));
                }
                state.uploaded = state.uploaded.saturating_add(size);
                let reply = match receive_upload(&frames, shared, &hash, size) {
                    Ok(()) => RunnerMessage::Stored { hash },
                    Err(UploadError::Fatal(e)) => return Err(e),
                    Err(UploadError::Refused(error)) => RunnerMessage::Failed { error },
                };
                send(&mut writer, &reply).map_err(text)?;
            }
            ClientMessage::Run { job } => {
                keep_waiting.store(true, Ordering::SeqCst);
                let result = run_job(*job, shared, &frames, &mut writer);
                keep_waiting.store(false, Ordering::SeqCst);
                result?;
            }
            ClientMessage::Profile { job } => {
                keep_waiting.store(true, Ordering::SeqCst);
                let result = run_profile(*job, shared, &frames, &mut writer);
                keep_waiting.store(false, Ordering::SeqCst);
                result?;
            }
            ClientMessage::Cancel => {}
            ClientMessage::Hello { .. } => {
                send(&mut writer, &RunnerMessage::Failed { error: "already authenticated".into() }).map_err(text)?;
            }
        }
    }
}

/// What one connection has asked for and sent.
#[derive(Default)]
struct ConnectionState {
    /// Hashes the runner asked for, with the offered size.
    accepted: HashMap<String, u64>,
    /// Bytes uploaded and reserved so far.
    uploaded: u64,
}

impl ConnectionState {
    /// Answers an offer: the files to upload, or a refusal when they would exceed the quota.
    fn offer(&mut self, shared: &Shared, files: Vec<protocol::FileOffer>) -> Result<RunnerMessage, String> {
        let limits = &shared.config.limits;
        if files.len() > MAX_OFFER_FILES {
            return Ok(RunnerMessage::Failed {
                error: format!("an offer lists {} files; a job needs at most {MAX_OFFER_FILES}", files.len()),
            });
        }
        let mut hashes = Vec::new();
        let mut needed = 0u64;
        for file in &files {
            if !protocol::is_hash(&file.hash) {
                return Err(format!("invalid hash {:?}", file.hash));
            }
            let cached = shared.config.cache_dir.join(&file.hash);
            if cached.is_file() {
                touch(&cached);
            } else if !hashes.contains(&file.hash) {
                hashes.push(file.hash.clone());
                needed = needed.saturating_add(file.size);
            }
        }
        let total = self.uploaded.saturating_add(needed);
        if total > limits.max_upload_bytes || needed > limits.max_cache_bytes {
            return Ok(RunnerMessage::Failed {
                error: format!(
                    "the job needs {} MiB uploaded; this runner accepts {} MiB per connection (--max-upload-mib) and \
                     caches {} MiB (--max-cache-mib); raise the limits on the runner or use smaller files",
                    total.div_ceil(MIB),
                    limits.max_upload_bytes / MIB,
                    limits.max_cache_bytes / MIB
                ),
            });
        }
        self.accepted = files.into_iter().filter(|f| hashes.contains(&f.hash)).map(|f| (f.hash, f.size)).collect();
        Ok(RunnerMessage::Need { hashes })
    }
}

type FrameResult = Result<Frame, String>;

fn spawn_reader(mut reader: SecureReader<TimedStream>, cap: u32) -> Result<Receiver<FrameResult>, String> {
    // Two frames queued at most: with the one being read and the one being handled, a connection holds at most
    // four frames (see `Limits::connection_memory_bytes`).
    let (sender, frames) = bounded::<FrameResult>(2);
    std::thread::Builder::new()
        .name("edgescope-runner-read".into())
        .spawn(move || {
            loop {
                match frame::read_frame(&mut reader, cap) {
                    Ok(frame) => {
                        if sender.send(Ok(frame)).is_err() {
                            break;
                        }
                    }
                    Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => {
                        let _ = sender.send(Err(e.to_string()));
                        break;
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(frames)
}

enum UploadError {
    /// The connection is unusable.
    Fatal(String),
    /// The upload was refused; the connection goes on.
    Refused(String),
}

/// Marks a cached file as recently used (its modification time orders the eviction).
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Evicts the least recently used cached files until `incoming` more bytes fit under `cap`.
fn make_room(cache: &Path, incoming: u64, cap: u64) -> Result<(), String> {
    let mut files: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(cache)
        .map_err(|e| format!("cannot list the cache {}: {e}", cache.display()))?
        .filter_map(Result::ok)
        .filter(|e| protocol::is_hash(&e.file_name().to_string_lossy()))
        .filter_map(|e| {
            let metadata = e.metadata().ok()?;
            metadata
                .is_file()
                .then(|| (metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH), metadata.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    files.sort();
    for (_, size, path) in files {
        if total.saturating_add(incoming) <= cap {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            log(&format!("cache over {} MiB: evicted {}", cap / MIB, path.display()));
            total = total.saturating_sub(size);
        }
    }
    Ok(())
}

/// Receives `size` bytes of data frames into the cache, verifying the hash before the file becomes visible.
fn receive_upload(frames: &Receiver<FrameResult>, shared: &Shared, hash: &str, size: u64) -> Result<(), UploadError> {
    let cache = &shared.config.cache_dir;
    if !protocol::is_hash(hash) {
        return Err(UploadError::Fatal(format!("invalid hash {hash:?}")));
    }
    let mut temporary = tempfile::NamedTempFile::new_in(cache).map_err(|e| UploadError::Fatal(e.to_string()))?;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut received = 0u64;
    while received < size {
        match frames.recv() {
            Ok(Ok(Frame::Data(bytes))) => {
                received = received.saturating_add(bytes.len() as u64);
                if received > size {
                    return Err(UploadError::Fatal(format!(
                        "upload of {hash} is longer than the {size} bytes announced"
                    )));
                }
                sha2::Digest::update(&mut hasher, &bytes);
                temporary.write_all(&bytes).map_err(|e| UploadError::Fatal(e.to_string()))?;
            }
            Ok(Ok(Frame::Message(_))) => return Err(UploadError::Fatal("message in the middle of an upload".into())),
            // A client gone mid-upload: the temporary file is removed when dropped, the cache stays clean.
            Ok(Err(e)) => return Err(UploadError::Fatal(format!("upload interrupted: {e}"))),
            Err(_) => return Err(UploadError::Fatal("client disconnected mid-upload".into())),
        }
    }
    let actual = hex::encode(sha2::Digest::finalize(hasher));
    if actual != hash {
        return Err(UploadError::Refused(format!(
            "upload of {hash} arrived corrupted ({received} bytes, hash {actual})"
        )));
    }
    let _guard = shared.cache_lock.lock().map_err(|_| UploadError::Fatal("cache lock poisoned".into()))?;
    make_room(cache, size, shared.config.limits.max_cache_bytes).map_err(UploadError::Fatal)?;
    temporary.persist(cache.join(hash)).map_err(|e| UploadError::Fatal(e.error.to_string()))?;
    Ok(())
}

/// Builds the variant and dataset from cached files.
fn materialize(job: RemoteJob, cache: &Path) -> Result<Job, String> {
    let variant = cached_variant(job.variant, cache)?;
    let reference = match job.reference {
        Some(manifest) => Some(Arc::new(cached_variant(manifest, cache)?)),
        None => None,
    };
    let dataset = cached_dataset(job.dataset, cache)?;
    Ok(Job {
        variant: Arc::new(variant),
        dataset: Arc::new(dataset),
        settings: job.settings,
        mode: job.mode,
        reference,
    })
}

/// A received dataset, opened on the cached files (its preprocessing checked against the sample cap).
fn cached_dataset(remote: protocol::RemoteDataset, cache: &Path) -> Result<Dataset, String> {
    // One preprocessed sample is allocated per inference: a forged resize or crop must not ask for gigabytes.
    for [height, width] in [remote.preprocess.resize, remote.preprocess.center_crop].into_iter().flatten() {
        let bytes = u64::from(height) * u64::from(width) * 3 * 4;
        if bytes > MAX_SAMPLE_BYTES {
            return Err(format!(
                "preprocessing to {height} x {width} pixels needs {} MiB per sample, over this runner's {} MiB",
                bytes / MIB,
                MAX_SAMPLE_BYTES / MIB
            ));
        }
    }
    for hash in [&remote.images, &remote.labels] {
        if !protocol::is_hash(hash) {
            return Err(format!("dataset file {hash:?} is not a content hash"));
        }
        touch(&cache.join(hash));
    }
    let spec = DatasetSpec {
        format: DATASET_FORMAT.into(),
        version: DATASET_VERSION,
        name: remote.name.clone(),
        kind: remote.kind,
        images: Some(cache.join(&remote.images)),
        labels: Some(cache.join(&remote.labels)),
        root: None,
        classes: remote.classes,
        class_folders: None,
        folder_labels: Default::default(),
        preprocess: remote.preprocess,
    };
    Dataset::from_spec(spec, &PathBuf::from(format!("{} (received)", remote.name)), cache).map_err(|e| e.to_string())
}

/// A received manifest whose segment files are named by content hash, opened on the cached files.
fn cached_variant(mut manifest: crate::model::Manifest, cache: &Path) -> Result<Variant, String> {
    for segment in &mut manifest.segments {
        let hash = segment.file.to_string_lossy().into_owned();
        if !protocol::is_hash(&hash) {
            return Err(format!("segment file {hash:?} is not a content hash"));
        }
        segment.file = cache.join(&hash);
        touch(&segment.file);
    }
    let source = PathBuf::from(format!("{} (received)", manifest.name));
    Variant::from_manifest(manifest, &source, cache).map_err(|e| e.to_string())
}

/// Releases the busy flag when a job ends, however it ends.
struct BusyGuard<'a>(&'a AtomicBool);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn run_job(job: RemoteJob, shared: &Shared, frames: &Receiver<FrameResult>, writer: &mut Writer) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    if shared.busy.swap(true, Ordering::SeqCst) {
        return send(
            writer,
            &RunnerMessage::Busy { reason: "another job is running on this runner; retry when it ends".into() },
        )
        .map_err(io);
    }
    let _busy = BusyGuard(&shared.busy);
    let name = job.variant.name.clone();
    let mut job = job;
    // Stream the samples as they are measured, so a client whose link drops keeps them.
    job.settings.checkpoint_every = Some(CHECKPOINT_SAMPLES);
    // No job gets more threads than the device has cores (0 lets ONNX Runtime choose, which it caps itself).
    let max_threads = shared.config.limits.max_threads.max(1);
    if job.settings.intra_threads > max_threads {
        log(&format!("{name}: {} intra-op threads asked, {max_threads} given", job.settings.intra_threads));
        job.settings.intra_threads = max_threads;
    }
    let job = match materialize(job, &shared.config.cache_dir) {
        Ok(job) => job,
        Err(error) => return send(writer, &RunnerMessage::Failed { error }).map_err(io),
    };
    log(&format!("running {name} on {} samples", job.dataset.len()));
    let handle = spawn_job(LocalRunner::new(), job, || {}).map_err(io)?;
    loop {
        select! {
            recv(handle.messages) -> message => match message {
                Ok(JobMessage::Event(crate::record::RunEvent::Checkpoint { first_sample, samples })) => {
                    let partial = crate::record::TraceRun { info: Default::default(), trace: *samples };
                    let samples = Box::new(WireTraceRun::of(&partial));
                    send(writer, &RunnerMessage::Partial { first_sample, samples }).map_err(io)?;
                }
                Ok(JobMessage::Event(event)) => send(writer, &RunnerMessage::Event { event }).map_err(io)?,
                Ok(JobMessage::Finished(result)) => {
                    let reply = match *result {
                        Ok(RunOutput::Trace(run)) => RunnerMessage::TraceResult { run: Box::new(WireTraceRun::of(&run)) },
                        Ok(RunOutput::Dynamic(run)) => RunnerMessage::DynamicResult { run: Box::new(WireDynamicRun::of(&run)) },
                        Err(e) => RunnerMessage::Failed { error: e.to_string() },
                    };
                    return send(writer, &reply).map_err(io);
                }
                Err(_) => return send(writer, &RunnerMessage::Failed { error: "the job thread ended unexpectedly".into() }).map_err(io),
            },
            recv(frames) -> frame => match frame.map(|f| f.map(parse)) {
                Ok(Ok(Ok(ClientMessage::Cancel))) => handle.cancel(),
                Ok(Ok(Ok(_))) => send(writer, &RunnerMessage::Busy { reason: "a job is running on this connection".into() }).map_err(io)?,
                // The client is gone or broken: stop the job (dropping the handle cancels it).
                _ => return Err(format!("client of {name} disconnected mid-job; job cancelled")),
            },
            default(HEARTBEAT) => send(writer, &RunnerMessage::Heartbeat).map_err(io)?,
        }
    }
}

/// What the profile thread reports.
enum ProfileWork {
    Progress(crate::record::ProfileProgress),
    Done(Result<crate::record::VariantProfile, String>),
}

/// Runs a profile job (revision 1) on a named thread, streaming its progress and heartbeats; a Cancel
/// message stops it between samples (it then answers with the samples done).
fn run_profile(
    job: protocol::RemoteProfileJob,
    shared: &Shared,
    frames: &Receiver<FrameResult>,
    writer: &mut Writer,
) -> Result<(), String> {
    use crate::record::ProfileProgress;
    use crate::runtime::CancelToken;
    use crate::runtime::profile::profile_variant;
    /// Most warm-up runs a peer may ask for.
    const MAX_WARMUP: usize = 1000;
    let io = |e: std::io::Error| e.to_string();
    if shared.busy.swap(true, Ordering::SeqCst) {
        return send(
            writer,
            &RunnerMessage::Busy { reason: "another job is running on this runner; retry when it ends".into() },
        )
        .map_err(io);
    }
    let _busy = BusyGuard(&shared.busy);
    let name = job.variant.name.clone();
    let mut settings = job.settings;
    settings.intra_threads = settings.intra_threads.min(shared.config.limits.max_threads.max(1));
    settings.warmup = settings.warmup.min(MAX_WARMUP);
    let opened = cached_variant(job.variant, &shared.config.cache_dir)
        .and_then(|variant| Ok((variant, cached_dataset(job.dataset, &shared.config.cache_dir)?)));
    let (variant, dataset) = match opened {
        Ok(pair) => pair,
        Err(error) => return send(writer, &RunnerMessage::Failed { error }).map_err(io),
    };
    log(&format!("profiling {name} on {} samples", settings.samples.min(dataset.len())));
    let cancel = CancelToken::new();
    let (sender, messages) = bounded::<ProfileWork>(4);
    let worker_cancel = cancel.clone();
    let host = shared.device.host.clone();
    std::thread::Builder::new()
        .name("edgescope-runner-profile".into())
        .spawn(move || {
            let progress_sender = sender.clone();
            let mut progress = |p: ProfileProgress| {
                // Progress is a hint: one lost while the link is slow is not waited for.
                let _ = progress_sender.try_send(ProfileWork::Progress(p));
            };
            let result = profile_variant(&variant, &dataset, &settings, &mut progress, &worker_cancel)
                .map(|mut profile| {
                    profile.device = host;
                    profile
                })
                .map_err(|e| e.to_string());
            let _ = sender.send(ProfileWork::Done(result));
        })
        .map_err(io)?;
    loop {
        select! {
            recv(messages) -> message => match message {
                Ok(ProfileWork::Progress(ProfileProgress { done, total })) => {
                    send(writer, &RunnerMessage::ProfileProgress { done, total }).map_err(io)?;
                }
                Ok(ProfileWork::Done(Ok(profile))) => {
                    return send(writer, &RunnerMessage::ProfileResult { profile: Box::new(profile) }).map_err(io);
                }
                Ok(ProfileWork::Done(Err(error))) => return send(writer, &RunnerMessage::Failed { error }).map_err(io),
                Err(_) => {
                    let error = "the profile thread ended unexpectedly".to_string();
                    return send(writer, &RunnerMessage::Failed { error }).map_err(io);
                }
            },
            recv(frames) -> frame => match frame.map(|f| f.map(parse)) {
                Ok(Ok(Ok(ClientMessage::Cancel))) => cancel.cancel(),
                Ok(Ok(Ok(_))) => send(writer, &RunnerMessage::Busy { reason: "a job is running on this connection".into() }).map_err(io)?,
                _ => {
                    cancel.cancel();
                    return Err(format!("client of the {name} profile disconnected mid-job; profile cancelled"));
                }
            },
            default(HEARTBEAT) => send(writer, &RunnerMessage::Heartbeat).map_err(io)?,
        }
    }
}
