//! The runner server: listens on TCP, authenticates clients by challenge-response, keeps uploaded files in a
//! content-addressed cache, and runs one job at a time with the local runner, streaming progress and results.

use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded, select};

use super::frame::{self, Frame, MAX_FRAME_BEFORE_AUTH, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, WireError};
use super::protocol::{self, ClientMessage, RemoteJob, RunnerMessage};
use crate::data::{DATASET_FORMAT, DATASET_VERSION, Dataset, DatasetSpec};
use crate::model::Variant;
use crate::runtime::{DeviceRecord, Job, JobMessage, LocalRunner, RunOutput, Runner, spawn_job};
use crate::session::{StoredDynamicRun, StoredTraceRun};

/// Time a client has to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Quiet time after which a running job sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Samples per streamed checkpoint.
const CHECKPOINT_SAMPLES: usize = 200;

/// Configuration of a runner.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The shared secret.
    pub token: Vec<u8>,
    /// Where uploaded files are kept, by hash.
    pub cache_dir: PathBuf,
}

struct Shared {
    config: ServerConfig,
    busy: AtomicBool,
    stop: AtomicBool,
    device: DeviceRecord,
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

impl RunnerServer {
    /// Binds `address` (e.g. `127.0.0.1:7878`); the device record is read once, now.
    pub fn bind(address: &str, config: ServerConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.cache_dir)?;
        let listener = TcpListener::bind(address)?;
        let mut runner = LocalRunner::new();
        let device = runner.device().unwrap_or_else(|_| DeviceRecord::this_machine());
        let shared = Arc::new(Shared { config, busy: AtomicBool::new(false), stop: AtomicBool::new(false), device });
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
            let Ok(stream) = stream else { continue };
            let shared = Arc::clone(&self.shared);
            let peer = stream.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string());
            let name = format!("edgescope-runner-{peer}");
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                if let Err(e) = serve_connection(stream, &shared) {
                    log(&format!("{peer}: {e}"));
                }
            });
            if let Err(e) = spawned {
                log(&format!("cannot serve a connection: {e}"));
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

fn serve_connection(stream: TcpStream, shared: &Shared) -> Result<(), String> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = BufWriter::new(stream.try_clone().map_err(|e| e.to_string())?);

    let version = frame::read_preamble(&mut reader).map_err(|e| e.to_string())?;
    frame::write_preamble(&mut writer).map_err(|e| e.to_string())?;
    if version != PROTOCOL_VERSION {
        return Err(format!("client speaks protocol version {version}, this runner {PROTOCOL_VERSION}"));
    }
    let hello = parse(frame::read_frame(&mut reader, MAX_FRAME_BEFORE_AUTH).map_err(|e| e.to_string())?)?;
    if !matches!(hello, ClientMessage::Hello { .. }) {
        return Err("the client did not start with Hello".into());
    }
    let nonce = protocol::new_nonce()?;
    send(&mut writer, &RunnerMessage::Challenge { nonce: hex::encode(nonce) }).map_err(|e| e.to_string())?;
    let auth = parse(frame::read_frame(&mut reader, MAX_FRAME_BEFORE_AUTH).map_err(|e| e.to_string())?)?;
    let ClientMessage::Auth { mac } = auth else { return Err("expected Auth".into()) };
    if !protocol::verify_mac(&shared.config.token, &nonce, &mac) {
        let _ = send(&mut writer, &RunnerMessage::Denied { reason: "wrong token".into() });
        return Err("authentication failed (wrong token)".into());
    }
    send(
        &mut writer,
        &RunnerMessage::Welcome {
            runner: format!("edgescope-runner {}", env!("CARGO_PKG_VERSION")),
            device: Box::new(shared.device.clone()),
        },
    )
    .map_err(|e| e.to_string())?;

    // After the handshake a reader thread turns the socket into a channel, so a running job can be cancelled
    // while its events stream out.
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    let frames = spawn_reader(reader)?;
    loop {
        let message = match frames.recv() {
            Ok(Ok(frame)) => parse(frame),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                send(&mut writer, &RunnerMessage::Failed { error: e.clone() }).map_err(|e| e.to_string())?;
                return Err(e);
            }
        };
        match message {
            ClientMessage::Offer { files } => {
                let mut hashes = Vec::new();
                for file in files {
                    if !protocol::is_hash(&file.hash) {
                        return Err(format!("invalid hash {:?}", file.hash));
                    }
                    if !shared.config.cache_dir.join(&file.hash).is_file() {
                        hashes.push(file.hash);
                    }
                }
                send(&mut writer, &RunnerMessage::Need { hashes }).map_err(|e| e.to_string())?;
            }
            ClientMessage::Upload { hash, size } => {
                let reply = match receive_upload(&frames, &shared.config.cache_dir, &hash, size) {
                    Ok(()) => RunnerMessage::Stored { hash },
                    Err(UploadError::Fatal(e)) => return Err(e),
                    Err(UploadError::Refused(error)) => RunnerMessage::Failed { error },
                };
                send(&mut writer, &reply).map_err(|e| e.to_string())?;
            }
            ClientMessage::Run { job } => run_job(*job, shared, &frames, &mut writer)?,
            ClientMessage::Cancel => {}
            ClientMessage::Hello { .. } | ClientMessage::Auth { .. } => {
                send(&mut writer, &RunnerMessage::Failed { error: "already authenticated".into() })
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}

type FrameResult = Result<Frame, String>;

fn spawn_reader(mut reader: BufReader<TcpStream>) -> Result<Receiver<FrameResult>, String> {
    let (sender, frames) = bounded::<FrameResult>(4);
    std::thread::Builder::new()
        .name("edgescope-runner-read".into())
        .spawn(move || {
            loop {
                match frame::read_frame(&mut reader, MAX_MESSAGE_BYTES) {
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

/// Receives `size` bytes of data frames into the cache, verifying the hash before the file becomes visible.
fn receive_upload(frames: &Receiver<FrameResult>, cache: &Path, hash: &str, size: u64) -> Result<(), UploadError> {
    if !protocol::is_hash(hash) {
        return Err(UploadError::Fatal(format!("invalid hash {hash:?}")));
    }
    let mut temporary = tempfile::NamedTempFile::new_in(cache).map_err(|e| UploadError::Fatal(e.to_string()))?;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut received = 0u64;
    while received < size {
        match frames.recv() {
            Ok(Ok(Frame::Data(bytes))) => {
                received += bytes.len() as u64;
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
    if received != size || actual != hash {
        return Err(UploadError::Refused(format!(
            "upload of {hash} arrived corrupted ({received} bytes, hash {actual})"
        )));
    }
    temporary.persist(cache.join(hash)).map_err(|e| UploadError::Fatal(e.error.to_string()))?;
    Ok(())
}

/// Builds the variant and dataset from cached files.
fn materialize(job: RemoteJob, cache: &Path) -> Result<Job, String> {
    let mut manifest = job.variant;
    for segment in &mut manifest.segments {
        let hash = segment.file.to_string_lossy().into_owned();
        if !protocol::is_hash(&hash) {
            return Err(format!("segment file {hash:?} is not a content hash"));
        }
        segment.file = cache.join(&hash);
    }
    let source = PathBuf::from(format!("{} (received)", manifest.name));
    let variant = Variant::from_manifest(manifest, &source, cache).map_err(|e| e.to_string())?;
    let remote = job.dataset;
    for hash in [&remote.images, &remote.labels] {
        if !protocol::is_hash(hash) {
            return Err(format!("dataset file {hash:?} is not a content hash"));
        }
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
        preprocess: remote.preprocess,
    };
    let dataset = Dataset::from_spec(spec, &PathBuf::from(format!("{} (received)", remote.name)), cache)
        .map_err(|e| e.to_string())?;
    Ok(Job { variant: Arc::new(variant), dataset: Arc::new(dataset), settings: job.settings, mode: job.mode })
}

/// Releases the busy flag when a job ends, however it ends.
struct BusyGuard<'a>(&'a AtomicBool);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn run_job(
    job: RemoteJob,
    shared: &Shared,
    frames: &Receiver<FrameResult>,
    writer: &mut impl Write,
) -> Result<(), String> {
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
    let job = match materialize(job, &shared.config.cache_dir) {
        Ok(job) => job,
        Err(error) => return send(writer, &RunnerMessage::Failed { error }).map_err(io),
    };
    log(&format!("running {name} on {} samples", job.dataset.len()));
    let handle = spawn_job(LocalRunner::new(), job, || {}).map_err(io)?;
    loop {
        select! {
            recv(handle.messages) -> message => match message {
                Ok(JobMessage::Event(crate::runtime::RunEvent::Checkpoint { first_sample, samples })) => {
                    let partial = crate::runtime::TraceRun { info: Default::default(), trace: *samples };
                    let samples = Box::new(StoredTraceRun::of(&partial));
                    send(writer, &RunnerMessage::Partial { first_sample, samples }).map_err(io)?;
                }
                Ok(JobMessage::Event(event)) => send(writer, &RunnerMessage::Event { event }).map_err(io)?,
                Ok(JobMessage::Finished(result)) => {
                    let reply = match *result {
                        Ok(RunOutput::Trace(run)) => RunnerMessage::TraceResult { run: Box::new(StoredTraceRun::of(&run)) },
                        Ok(RunOutput::Dynamic(run)) => RunnerMessage::DynamicResult { run: Box::new(StoredDynamicRun::of(&run)) },
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
