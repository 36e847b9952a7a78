//! The remote runner client: the same [`Runner`] contract as the local runner, carried out by an
//! `edgescope-runner` on a device. Files go by content hash, so a re-run sends nothing twice.
//!
//! The client trusts the runner only once it has proven it knows the token (the Noise handshake of
//! `secure.rs`): a fake runner receives nothing but the first handshake message. Every wait has a deadline
//! and every loop checks the cancel token, so a runner that goes silent is a clear error naming it, never a
//! hang.

use std::io::Read;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};

use super::frame::{self, CHUNK_BYTES, Frame, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use super::protocol::{self, ClientMessage, FileOffer, RemoteDataset, RemoteJob, RunnerMessage};
use super::secure::{self, HandshakeError, SecureReader, SecureWriter, TimedStream};
use crate::record::{DeviceRecord, RunOutput};
use crate::runtime::{CancelToken, Job, Runner, RuntimeError};

/// Time to connect, and then for the whole handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the runner to answer a request (file offer, upload) before a job runs.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// A write the runner does not accept within this time (it stopped reading) fails the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Silence after which a running job's link counts as lost (the runner sends a heartbeat every 2 s).
const LINK_TIMEOUT: Duration = Duration::from_secs(15);
/// How often waits look at the cancel token.
const POLL: Duration = Duration::from_millis(50);
/// How long a cancelled client still waits for an answer already asked for.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Runs jobs on an `edgescope-runner` over TCP.
pub struct RemoteRunner {
    address: String,
    token: Vec<u8>,
    device: Option<DeviceRecord>,
    /// What the runner announced beyond running jobs (`Welcome.features`).
    features: Vec<String>,
    /// The runner's name and version, as it said.
    runner_name: String,
    reply_timeout: Duration,
}

struct Connection {
    writer: SecureWriter<TimedStream>,
    frames: Receiver<Result<Frame, String>>,
    stream: TcpStream,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Ends the reader thread too.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// How one connection attempt ended badly.
enum Attempt {
    /// The runner closed the connection mid-handshake (it may be flooded): try again.
    Retry(RuntimeError),
    /// Anything else: report it.
    Fail(RuntimeError),
}

/// `tcp://host:port` or `host:port` -> `host:port`.
pub fn parse_address(text: &str) -> String {
    text.strip_prefix("tcp://").unwrap_or(text).trim_end_matches('/').to_string()
}

impl RemoteRunner {
    /// A client for the runner at `address` (`tcp://HOST:PORT` or `HOST:PORT`) sharing `token`.
    pub fn new(address: &str, token: Vec<u8>) -> Self {
        Self {
            address: parse_address(address),
            token,
            device: None,
            features: Vec::new(),
            runner_name: String::new(),
            reply_timeout: REPLY_TIMEOUT,
        }
    }

    /// The same client waiting at most `timeout` for each answer before a job runs (default 30 s).
    pub fn with_reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// The runner's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn remote(&self, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Remote(format!("runner {}: {message}", self.address))
    }

    /// Connects and completes the handshake within [`CONNECT_TIMEOUT`]. A runner flooded with half-open
    /// connections may close ours before the handshake ends (it drops one at random for each newcomer): that,
    /// and only that, is retried a few times.
    fn connect(&mut self, cancel: &CancelToken) -> Result<Connection, RuntimeError> {
        let address = self
            .address
            .to_socket_addrs()
            .map_err(|e| self.remote(format!("cannot resolve the address ({e})")))?
            .next()
            .ok_or_else(|| self.remote("the address resolves to nothing"))?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut attempt = 0u32;
        loop {
            match self.connect_once(address, deadline) {
                Ok(connection) => return Ok(connection),
                Err(Attempt::Retry(error)) => {
                    if attempt >= 6 || cancel.is_cancelled() || Instant::now() >= deadline {
                        return Err(error);
                    }
                    std::thread::sleep(Duration::from_millis(20 << attempt));
                    attempt += 1;
                }
                Err(Attempt::Fail(error)) => return Err(error),
            }
        }
    }

    fn connect_once(&mut self, address: std::net::SocketAddr, deadline: Instant) -> Result<Connection, Attempt> {
        let fail = |error: RuntimeError| Attempt::Fail(error);
        let name = self.address.clone();
        let remote = |message: String| RuntimeError::Remote(format!("runner {name}: {message}"));
        // The runner closed or reset the connection mid-handshake: worth another try; anything else is not.
        let io = |e: std::io::Error| {
            let message = remote(format!(
                "connection failed during the handshake ({e}); is it an edgescope-runner, and is it overloaded?"
            ));
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) {
                Attempt::Retry(message)
            } else {
                Attempt::Fail(message)
            }
        };
        let wire = |e: frame::WireError| match e {
            frame::WireError::Io(e) => io(e),
            other => fail(remote(format!("sent something else than an edgescope preamble ({other})"))),
        };
        let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(|e| {
            fail(self.remote(format!("cannot connect ({e}); is edgescope-runner running there and the port open?")))
        })?;
        stream.set_nodelay(true).map_err(io)?;
        let mut timed =
            TimedStream::new(stream.try_clone().map_err(io)?, CONNECT_TIMEOUT, WRITE_TIMEOUT).map_err(io)?;
        timed.set_deadline(Some(deadline));
        frame::write_preamble(&mut timed).map_err(io)?;
        let version = frame::read_preamble(&mut timed).map_err(wire)?;
        if version != PROTOCOL_VERSION {
            let advice = if version < PROTOCOL_VERSION {
                "update edgescope-runner on the device to this edgescope's version"
            } else {
                "update this edgescope to the runner's version"
            };
            return Err(fail(self.remote(format!(
                "this runner speaks protocol version {version}, this edgescope speaks {PROTOCOL_VERSION}; {advice}"
            ))));
        }
        let keys = secure::client_handshake(&mut timed, &self.token, PROTOCOL_VERSION).map_err(|e| match e {
            HandshakeError::Refused => fail(
                self.remote("refused the connection: wrong token (the runner does not share it); check the token file"),
            ),
            HandshakeError::WrongToken => fail(self.remote(
                "failed to prove it knows the token, so nothing was sent: it is not the runner you configured, or its \
                 token differs (wrong token)",
            )),
            HandshakeError::Io(e) => io(e),
            other => fail(self.remote(other)),
        })?;
        let mut writer = SecureWriter::new(timed.try_clone().map_err(io)?, keys.clone());
        let mut reader = SecureReader::new(timed, keys);
        let hello = ClientMessage::Hello { client: format!("edgescope {}", env!("CARGO_PKG_VERSION")) };
        send(&mut writer, &hello).map_err(io)?;
        let welcome = frame::read_frame(&mut reader, MAX_MESSAGE_BYTES).map_err(wire)?;
        match self.decode(welcome).map_err(fail)? {
            RunnerMessage::Welcome { device, runner, features } => {
                self.device = Some(*device);
                self.features = features;
                self.runner_name = runner;
            }
            RunnerMessage::Denied { reason } => {
                return Err(fail(self.remote(format!("refused the connection: {reason}"))));
            }
            other => return Err(fail(self.remote(format!("answered {} to Hello", name_of(&other))))),
        }
        // From now on the waits below have their own deadlines; the reader just waits for frames.
        reader.get_mut().set_deadline(None);
        reader.get_mut().keep_waiting().store(true, std::sync::atomic::Ordering::SeqCst);
        let frames = spawn_reader(reader).map_err(io)?;
        Ok(Connection { writer, frames, stream })
    }

    fn decode(&self, frame: Frame) -> Result<RunnerMessage, RuntimeError> {
        match frame {
            Frame::Message(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| self.remote(format!("sent a malformed message ({e})")))
            }
            Frame::Data(_) => Err(self.remote("sent an unexpected data frame")),
        }
    }

    /// The next message, waiting at most `timeout`; `Ok(None)` on timeout.
    fn next(&self, connection: &Connection, timeout: Duration) -> Result<Option<RunnerMessage>, RuntimeError> {
        match connection.frames.recv_timeout(timeout) {
            Ok(Ok(frame)) => self.decode(frame).map(Some),
            Ok(Err(e)) => Err(self.remote(format!("connection broke: {e}"))),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(self.remote("closed the connection")),
        }
    }

    /// The runner's answer to a request, within the reply timeout, or an error naming the runner. Once
    /// cancelled, the wait ends within [`CANCEL_GRACE`]: a live runner answers in milliseconds (and a cancelled
    /// job then ends with what it measured), a silent one is given up on.
    fn expect_reply(
        &self,
        connection: &Connection,
        cancel: &CancelToken,
        what: &str,
    ) -> Result<RunnerMessage, RuntimeError> {
        let mut deadline = Instant::now() + self.reply_timeout;
        let mut cancelled = false;
        loop {
            if !cancelled && cancel.is_cancelled() {
                cancelled = true;
                deadline = deadline.min(Instant::now() + CANCEL_GRACE);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if cancelled {
                    return Err(self.remote(format!("cancelled while waiting for {what}; nothing was measured")));
                }
                return Err(self.remote(format!(
                    "no answer to {what} within {} s; the runner or the link is down (or overloaded)",
                    self.reply_timeout.as_secs_f32()
                )));
            }
            if let Some(message) = self.next(connection, left.min(POLL))? {
                return Ok(message);
            }
        }
    }

    /// Sends the files the runner does not have yet; stops between chunks when cancelled.
    fn upload(
        &self,
        connection: &mut Connection,
        files: &[(std::path::PathBuf, FileOffer)],
        cancel: &CancelToken,
    ) -> Result<(), RuntimeError> {
        let io = |e: std::io::Error| self.remote(format!("connection failed while uploading ({e})"));
        let offers: Vec<FileOffer> = files.iter().map(|(_, o)| o.clone()).collect();
        send(&mut connection.writer, &ClientMessage::Offer { files: offers }).map_err(io)?;
        let hashes = match self.expect_reply(connection, cancel, "the file offer")? {
            RunnerMessage::Need { hashes } => hashes,
            RunnerMessage::Failed { error } => return Err(self.remote(error)),
            other => return Err(self.remote(format!("answered {} to the file offer", name_of(&other)))),
        };
        if hashes.is_empty() {
            return Ok(());
        }
        // A write blocked on a runner that stopped reading would only end at the write timeout: a cancel closes
        // the socket instead, which ends it at once.
        let _watcher = CancelWatcher::start(&connection.stream, cancel);
        let io = |e: std::io::Error| {
            if cancel.is_cancelled() {
                self.remote("cancelled while uploading; nothing was measured")
            } else {
                self.remote(format!("connection failed while uploading ({e})"))
            }
        };
        for hash in hashes {
            let Some((path, offer)) = files.iter().find(|(_, o)| o.hash == hash) else {
                return Err(self.remote(format!("asked for a file it was not offered ({hash})")));
            };
            send(&mut connection.writer, &ClientMessage::Upload { hash: hash.clone(), size: offer.size })
                .map_err(io)?;
            let mut file = std::fs::File::open(path)
                .map_err(|e| RuntimeError::Remote(format!("cannot read {}: {e}", path.display())))?;
            let mut chunk = vec![0u8; CHUNK_BYTES];
            let mut sent = 0u64;
            while sent < offer.size {
                if cancel.is_cancelled() {
                    return Err(
                        self.remote(format!("cancelled while uploading {}; nothing was measured", path.display()))
                    );
                }
                let want = usize::try_from(offer.size - sent).map_or(CHUNK_BYTES, |left| left.min(CHUNK_BYTES));
                let read = file
                    .read(&mut chunk[..want])
                    .map_err(|e| RuntimeError::Remote(format!("cannot read {}: {e}", path.display())))?;
                if read == 0 {
                    return Err(RuntimeError::Remote(format!(
                        "{} changed while it was uploaded; run again",
                        path.display()
                    )));
                }
                frame::write_frame(&mut connection.writer, &Frame::Data(chunk[..read].to_vec())).map_err(io)?;
                sent += read as u64;
            }
            let reply = self.expect_reply(connection, cancel, "an upload").map_err(|e| {
                if cancel.is_cancelled() { self.remote("cancelled while uploading; nothing was measured") } else { e }
            })?;
            match reply {
                RunnerMessage::Stored { .. } => {}
                RunnerMessage::Failed { error } => return Err(self.remote(error)),
                other => return Err(self.remote(format!("answered {} to an upload", name_of(&other)))),
            }
        }
        Ok(())
    }
}

/// Closes a connection's socket when the cancel token is set, until dropped (uploads only: a running job is
/// cancelled by message, so the runner can answer with what it measured).
struct CancelWatcher {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CancelWatcher {
    fn start(stream: &TcpStream, cancel: &CancelToken) -> Option<Self> {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stream, cancel, finished) = (stream.try_clone().ok()?, cancel.clone(), std::sync::Arc::clone(&done));
        std::thread::Builder::new()
            .name("edgescope-remote-cancel".into())
            .spawn(move || {
                while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                    if cancel.is_cancelled() {
                        let _ = stream.shutdown(Shutdown::Both);
                        break;
                    }
                    std::thread::sleep(POLL);
                }
            })
            .ok()?;
        Some(Self { done })
    }
}

impl Drop for CancelWatcher {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A message's type, for errors (never its content, which may be large).
fn name_of(message: &RunnerMessage) -> String {
    serde_json::to_value(message)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "an unknown message".into())
}

fn send(writer: &mut SecureWriter<TimedStream>, message: &ClientMessage) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    frame::write_frame(writer, &Frame::Message(bytes))
}

fn spawn_reader(mut reader: SecureReader<TimedStream>) -> std::io::Result<Receiver<Result<Frame, String>>> {
    // Few frames queued: each may be large (a trace), and the reader waits when the queue is full.
    let (sender, frames) = bounded(4);
    std::thread::Builder::new().name("edgescope-remote-read".into()).spawn(move || {
        loop {
            let frame = frame::read_frame(&mut reader, MAX_MESSAGE_BYTES).map_err(|e| e.to_string());
            let failed = frame.is_err();
            if sender.send(frame).is_err() || failed {
                break;
            }
        }
    })?;
    Ok(frames)
}

/// Hashes a file for the offer.
fn offer(path: &std::path::Path) -> Result<(std::path::PathBuf, FileOffer), RuntimeError> {
    let offer =
        protocol::hash_file(path).map_err(|e| RuntimeError::Remote(format!("cannot read {}: {e}", path.display())))?;
    Ok((path.to_path_buf(), offer))
}

impl Runner for RemoteRunner {
    fn device(&mut self) -> Result<DeviceRecord, RuntimeError> {
        if self.device.is_none() {
            self.connect(&CancelToken::new())?;
        }
        self.device.clone().ok_or_else(|| self.remote("sent no device record"))
    }

    fn run(
        &mut self,
        job: &Job,
        events: &mut dyn FnMut(crate::record::RunEvent),
        cancel: &CancelToken,
    ) -> Result<RunOutput, RuntimeError> {
        let mut files = Vec::new();
        let mut manifest = job.variant.manifest();
        for segment in &mut manifest.segments {
            let (path, offered) = offer(&segment.file)?;
            segment.file = offered.hash.clone().into();
            files.push((path, offered));
        }
        let reference = match &job.reference {
            Some(reference) => {
                let mut manifest = reference.manifest();
                for segment in &mut manifest.segments {
                    let (path, offered) = offer(&segment.file)?;
                    segment.file = offered.hash.clone().into();
                    files.push((path, offered));
                }
                Some(manifest)
            }
            None => None,
        };
        let (dataset, dataset_files) = self.remote_dataset(&job.dataset)?;
        let remote_job = RemoteJob {
            variant: manifest,
            dataset,
            settings: crate::record::RunSettings {
                // The runner receives the whole files: a truncated local dataset becomes a limit.
                limit: Some(job.settings.limit.map_or(job.dataset.len(), |l| l.min(job.dataset.len()))),
                ..job.settings.clone()
            },
            mode: job.mode.clone(),
            reference,
        };
        files.extend(dataset_files);
        let mut seen = std::collections::HashSet::new();
        files.retain(|file| seen.insert(file.1.hash.clone()));

        let mut connection = self.connect(cancel)?;
        self.upload(&mut connection, &files, cancel)?;
        let io = |e: std::io::Error| self.remote(format!("connection failed ({e})"));
        send(&mut connection.writer, &ClientMessage::Run { job: Box::new(remote_job) }).map_err(io)?;
        let mut partial: Option<crate::record::TraceRun> = None;
        let result = self.follow_run(&mut connection, events, cancel, &mut partial);
        drop(connection);
        match (result, partial) {
            (Err(RuntimeError::Remote(message)), Some(mut partial)) if !partial.trace.is_empty() => {
                let info = &mut partial.info;
                info.variant = job.variant.name.clone();
                info.dataset = job.dataset.name.clone();
                info.settings = job.settings.clone();
                info.samples_total = job.settings.limit.map_or(job.dataset.len(), |l| l.min(job.dataset.len()));
                info.provider = match job.settings.provider {
                    crate::record::ProviderChoice::Cpu => "CPUExecutionProvider",
                    crate::record::ProviderChoice::Cuda => "CUDAExecutionProvider",
                    crate::record::ProviderChoice::Tensorrt => "TensorrtExecutionProvider",
                }
                .into();
                info.complete = false;
                Err(RuntimeError::Interrupted { message, partial: Box::new(partial) })
            }
            (result, _) => result,
        }
    }
}

impl RemoteRunner {
    /// Follows a started run until its result, collecting streamed samples in `partial`.
    fn follow_run(
        &self,
        connection: &mut Connection,
        events: &mut dyn FnMut(crate::record::RunEvent),
        cancel: &CancelToken,
        partial: &mut Option<crate::record::TraceRun>,
    ) -> Result<RunOutput, RuntimeError> {
        let io = |e: std::io::Error| self.remote(format!("connection failed ({e})"));
        let mut cancel_sent = false;
        let mut last_heard = std::time::Instant::now();
        loop {
            if cancel.is_cancelled() && !cancel_sent {
                send(&mut connection.writer, &ClientMessage::Cancel).map_err(io)?;
                cancel_sent = true;
            }
            let Some(message) = self.next(connection, Duration::from_millis(50))? else {
                if last_heard.elapsed() > LINK_TIMEOUT {
                    return Err(self.remote(format!(
                        "no word for {} s mid-job; the link or the runner is down",
                        LINK_TIMEOUT.as_secs()
                    )));
                }
                continue;
            };
            last_heard = std::time::Instant::now();
            match message {
                RunnerMessage::Heartbeat => {}
                RunnerMessage::Event { event } => events(event),
                RunnerMessage::Partial { first_sample, samples } => {
                    let samples = samples.decode().map_err(|e| self.remote(format!("sent corrupt samples: {e}")))?;
                    let run = partial.get_or_insert_with(|| crate::record::TraceRun {
                        info: crate::record::RunInfo {
                            runner: Some(format!("tcp://{}", self.address)),
                            device: self.device.clone().unwrap_or_default(),
                            ..Default::default()
                        },
                        trace: samples.trace.tail(usize::MAX),
                    });
                    if first_sample != run.trace.len() || !run.trace.append(&samples.trace) {
                        return Err(self.remote("sent samples out of order"));
                    }
                    run.info.samples_done = run.trace.len();
                }
                RunnerMessage::TraceResult { run } => {
                    let mut run = run.decode().map_err(|e| self.remote(format!("sent a corrupt trace: {e}")))?;
                    run.info.runner = Some(format!("tcp://{}", self.address));
                    return Ok(RunOutput::Trace(run));
                }
                RunnerMessage::DynamicResult { run } => {
                    let mut run = run.decode().map_err(|e| self.remote(format!("sent a corrupt run: {e}")))?;
                    run.info.runner = Some(format!("tcp://{}", self.address));
                    return Ok(RunOutput::Dynamic(run));
                }
                RunnerMessage::Busy { reason } => return Err(self.remote(format!("is busy: {reason}"))),
                RunnerMessage::Failed { error } => return Err(self.remote(error)),
                other => return Err(self.remote(format!("sent {} during a run", name_of(&other)))),
            }
        }
    }
}

impl RemoteRunner {
    /// The dataset's files offered by hash, as a runner receives a dataset.
    fn remote_dataset(
        &self,
        dataset: &crate::data::Dataset,
    ) -> Result<(RemoteDataset, Vec<(std::path::PathBuf, FileOffer)>), RuntimeError> {
        let (images, labels) = dataset.files.clone().ok_or_else(|| {
            RuntimeError::Remote(format!(
                "dataset {} is an image folder; remote runs take IDX or NPY datasets for now (convert it with numpy)",
                dataset.name
            ))
        })?;
        let (images, labels) = (offer(&images)?, offer(&labels)?);
        let remote = RemoteDataset {
            name: dataset.name.clone(),
            kind: dataset.kind,
            images: images.1.hash.clone(),
            labels: labels.1.hash.clone(),
            classes: dataset.classes.clone(),
            preprocess: dataset.preprocess.clone(),
        };
        Ok((remote, vec![images, labels]))
    }

    /// Profiles `variant` per operator on the runner (ONNX Runtime's profiler there), on the first
    /// `settings.samples` samples of `dataset`; `progress` hears how many samples are done. A runner that
    /// predates remote profiling is told apart before anything is sent, and the error says to update it.
    pub fn profile(
        &mut self,
        variant: &crate::model::Variant,
        dataset: &crate::data::Dataset,
        settings: &crate::record::ProfileSettings,
        progress: &mut dyn FnMut(crate::record::ProfileProgress),
        cancel: &CancelToken,
    ) -> Result<crate::record::VariantProfile, RuntimeError> {
        crate::runtime::check_compatible(variant, dataset)?;
        let mut files = Vec::new();
        let mut manifest = variant.manifest();
        for segment in &mut manifest.segments {
            let (path, offered) = offer(&segment.file)?;
            segment.file = offered.hash.clone().into();
            files.push((path, offered));
        }
        let (remote_dataset, dataset_files) = self.remote_dataset(dataset)?;
        files.extend(dataset_files);
        let mut seen = std::collections::HashSet::new();
        files.retain(|file| seen.insert(file.1.hash.clone()));

        let mut connection = self.connect(cancel)?;
        if !self.features.iter().any(|f| f == protocol::FEATURE_PROFILE) {
            let runner = if self.runner_name.is_empty() { "it".to_string() } else { self.runner_name.clone() };
            return Err(self.remote(format!(
                "this runner cannot profile ({runner} predates remote profiling); update edgescope-runner on the \
                 device to this edgescope's version ({})",
                env!("CARGO_PKG_VERSION")
            )));
        }
        self.upload(&mut connection, &files, cancel)?;
        let job = protocol::RemoteProfileJob { variant: manifest, dataset: remote_dataset, settings: settings.clone() };
        let io = |e: std::io::Error| self.remote(format!("connection failed ({e})"));
        send(&mut connection.writer, &ClientMessage::Profile { job: Box::new(job) }).map_err(io)?;
        let mut cancel_sent = false;
        let mut last_heard = Instant::now();
        loop {
            if cancel.is_cancelled() && !cancel_sent {
                send(&mut connection.writer, &ClientMessage::Cancel).map_err(io)?;
                cancel_sent = true;
            }
            let Some(message) = self.next(&connection, POLL)? else {
                if last_heard.elapsed() > LINK_TIMEOUT {
                    return Err(self.remote(format!(
                        "no word for {} s mid-profile; the link or the runner is down",
                        LINK_TIMEOUT.as_secs()
                    )));
                }
                continue;
            };
            last_heard = Instant::now();
            match message {
                RunnerMessage::Heartbeat => {}
                RunnerMessage::ProfileProgress { done, total } => {
                    progress(crate::record::ProfileProgress { done, total });
                }
                RunnerMessage::ProfileResult { profile } => {
                    let mut profile = *profile;
                    if profile.segments.len() != variant.segments.len() {
                        return Err(self.remote(format!(
                            "sent a profile of {} segments for {}, which has {}",
                            profile.segments.len(),
                            variant.name,
                            variant.segments.len()
                        )));
                    }
                    // The runner's paths are its cache; the user knows the files by their own names.
                    for (profiled, segment) in profile.segments.iter_mut().zip(&variant.segments) {
                        profiled.path = segment.path.clone();
                    }
                    profile.variant = variant.name.clone();
                    profile.device =
                        format!("{} (tcp://{})", self.device.as_ref().map_or("?", |d| d.host.as_str()), self.address);
                    return Ok(profile);
                }
                RunnerMessage::Busy { reason } => return Err(self.remote(format!("is busy: {reason}"))),
                RunnerMessage::Failed { error } => return Err(self.remote(error)),
                other => return Err(self.remote(format!("sent {} during a profile", name_of(&other)))),
            }
        }
    }
}
