//! The remote runner client: the same [`Runner`] contract as the local runner, carried out by an
//! `edgescope-runner` on a device. Files go by content hash, so a re-run sends nothing twice.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};

use super::frame::{self, CHUNK_BYTES, Frame, MAX_FRAME_BEFORE_AUTH, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use super::protocol::{self, ClientMessage, FileOffer, RemoteDataset, RemoteJob, RunnerMessage};
use crate::runtime::{CancelToken, DeviceRecord, Job, RunOutput, Runner, RuntimeError};

/// Time to connect and to finish the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which a running job's link counts as lost (the runner sends a heartbeat every 2 s).
const LINK_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs jobs on an `edgescope-runner` over TCP.
pub struct RemoteRunner {
    address: String,
    token: Vec<u8>,
    device: Option<DeviceRecord>,
}

struct Connection {
    writer: BufWriter<TcpStream>,
    frames: Receiver<Result<Frame, String>>,
    stream: TcpStream,
}

/// `tcp://host:port` or `host:port` -> `host:port`.
pub fn parse_address(text: &str) -> String {
    text.strip_prefix("tcp://").unwrap_or(text).trim_end_matches('/').to_string()
}

impl RemoteRunner {
    /// A client for the runner at `address` (`tcp://HOST:PORT` or `HOST:PORT`) sharing `token`.
    pub fn new(address: &str, token: Vec<u8>) -> Self {
        Self { address: parse_address(address), token, device: None }
    }

    /// The runner's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn remote(&self, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Remote(format!("runner {}: {message}", self.address))
    }

    fn connect(&mut self) -> Result<Connection, RuntimeError> {
        let address = self
            .address
            .to_socket_addrs()
            .map_err(|e| self.remote(format!("cannot resolve the address ({e})")))?
            .next()
            .ok_or_else(|| self.remote("the address resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(|e| {
            self.remote(format!("cannot connect ({e}); is edgescope-runner running there and the port open?"))
        })?;
        let address_text = self.address.clone();
        let io = move |e: std::io::Error| {
            RuntimeError::Remote(format!("runner {address_text}: connection failed during the handshake ({e})"))
        };
        stream.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(io.clone())?;
        stream.set_nodelay(true).map_err(io.clone())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(io.clone())?);
        let mut writer = BufWriter::new(stream.try_clone().map_err(io.clone())?);
        frame::write_preamble(&mut writer).map_err(io.clone())?;
        let version = frame::read_preamble(&mut reader).map_err(|e| self.remote(e))?;
        if version != PROTOCOL_VERSION {
            return Err(self.remote(format!(
                "it speaks protocol version {version}, this edgescope speaks {PROTOCOL_VERSION}; install the same \
                 edgescope version on both sides"
            )));
        }
        let hello = ClientMessage::Hello { client: format!("edgescope {}", env!("CARGO_PKG_VERSION")) };
        send(&mut writer, &hello).map_err(io.clone())?;
        let RunnerMessage::Challenge { nonce } = self.read_handshake(&mut reader)? else {
            return Err(self.remote("expected a challenge"));
        };
        let nonce = hex::decode(&nonce).map_err(|_| self.remote("sent a malformed challenge"))?;
        send(&mut writer, &ClientMessage::Auth { mac: protocol::auth_mac(&self.token, &nonce) }).map_err(io.clone())?;
        match self.read_handshake(&mut reader)? {
            RunnerMessage::Welcome { device, .. } => self.device = Some(*device),
            RunnerMessage::Denied { reason } => {
                return Err(self.remote(format!("refused the connection: {reason}; check the token file")));
            }
            other => return Err(self.remote(format!("answered {other:?} to authentication"))),
        }
        stream.set_read_timeout(None).map_err(io.clone())?;
        let frames = spawn_reader(reader).map_err(io)?;
        Ok(Connection { writer, frames, stream })
    }

    fn read_handshake(&self, reader: &mut impl Read) -> Result<RunnerMessage, RuntimeError> {
        let frame = frame::read_frame(reader, MAX_FRAME_BEFORE_AUTH).map_err(|e| {
            self.remote(format!("closed the connection during the handshake ({e}); wrong token or protocol?"))
        })?;
        self.decode(frame)
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

    fn expect_reply(&self, connection: &Connection) -> Result<RunnerMessage, RuntimeError> {
        loop {
            if let Some(message) = self.next(connection, Duration::from_secs(120))? {
                return Ok(message);
            }
        }
    }

    /// Sends the files the runner does not have yet.
    fn upload(
        &self,
        connection: &mut Connection,
        files: &[(std::path::PathBuf, FileOffer)],
    ) -> Result<(), RuntimeError> {
        let io = |e: std::io::Error| self.remote(format!("connection failed while uploading ({e})"));
        let offers: Vec<FileOffer> = files.iter().map(|(_, o)| o.clone()).collect();
        send(&mut connection.writer, &ClientMessage::Offer { files: offers }).map_err(io)?;
        let RunnerMessage::Need { hashes } = self.expect_reply(connection)? else {
            return Err(self.remote("did not answer the file offer"));
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
            loop {
                let read = file
                    .read(&mut chunk)
                    .map_err(|e| RuntimeError::Remote(format!("cannot read {}: {e}", path.display())))?;
                if read == 0 {
                    break;
                }
                frame::write_frame(&mut connection.writer, &Frame::Data(chunk[..read].to_vec())).map_err(io)?;
            }
            match self.expect_reply(connection)? {
                RunnerMessage::Stored { .. } => {}
                RunnerMessage::Failed { error } => return Err(self.remote(error)),
                other => return Err(self.remote(format!("answered {other:?} to an upload"))),
            }
        }
        Ok(())
    }
}

fn send(writer: &mut impl Write, message: &ClientMessage) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    frame::write_frame(writer, &Frame::Message(bytes))
}

fn spawn_reader(mut reader: BufReader<TcpStream>) -> std::io::Result<Receiver<Result<Frame, String>>> {
    let (sender, frames) = bounded(16);
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
            self.connect()?;
        }
        self.device.clone().ok_or_else(|| self.remote("sent no device record"))
    }

    fn run(
        &mut self,
        job: &Job,
        events: &mut dyn FnMut(crate::runtime::RunEvent),
        cancel: &CancelToken,
    ) -> Result<RunOutput, RuntimeError> {
        let (images, labels) = job.dataset.files.clone().ok_or_else(|| {
            RuntimeError::Remote(format!(
                "dataset {} is an image folder; remote runs take IDX or NPY datasets for now (convert it with numpy)",
                job.dataset.name
            ))
        })?;
        let mut files = Vec::new();
        let mut manifest = job.variant.manifest();
        for segment in &mut manifest.segments {
            let (path, offered) = offer(&segment.file)?;
            segment.file = offered.hash.clone().into();
            files.push((path, offered));
        }
        let images = offer(&images)?;
        let labels = offer(&labels)?;
        let remote_job = RemoteJob {
            variant: manifest,
            dataset: RemoteDataset {
                name: job.dataset.name.clone(),
                kind: job.dataset.kind,
                images: images.1.hash.clone(),
                labels: labels.1.hash.clone(),
                classes: job.dataset.classes.clone(),
                preprocess: job.dataset.preprocess.clone(),
            },
            settings: crate::runtime::RunSettings {
                // The runner receives the whole files: a truncated local dataset becomes a limit.
                limit: Some(job.settings.limit.map_or(job.dataset.len(), |l| l.min(job.dataset.len()))),
                ..job.settings.clone()
            },
            mode: job.mode.clone(),
        };
        files.push(images);
        files.push(labels);
        files.dedup_by(|a, b| a.1.hash == b.1.hash);

        let mut connection = self.connect()?;
        self.upload(&mut connection, &files)?;
        let io = |e: std::io::Error| self.remote(format!("connection failed ({e})"));
        send(&mut connection.writer, &ClientMessage::Run { job: Box::new(remote_job) }).map_err(io)?;
        let mut partial: Option<crate::runtime::TraceRun> = None;
        let result = self.follow_run(&mut connection, events, cancel, &mut partial);
        let _ = connection.stream.shutdown(std::net::Shutdown::Both);
        match (result, partial) {
            (Err(RuntimeError::Remote(message)), Some(mut partial)) if !partial.trace.is_empty() => {
                let info = &mut partial.info;
                info.variant = job.variant.name.clone();
                info.dataset = job.dataset.name.clone();
                info.settings = job.settings.clone();
                info.samples_total = job.settings.limit.map_or(job.dataset.len(), |l| l.min(job.dataset.len()));
                info.provider = match job.settings.provider {
                    crate::runtime::ProviderChoice::Cpu => "CPUExecutionProvider",
                    crate::runtime::ProviderChoice::Cuda => "CUDAExecutionProvider",
                    crate::runtime::ProviderChoice::Tensorrt => "TensorrtExecutionProvider",
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
        events: &mut dyn FnMut(crate::runtime::RunEvent),
        cancel: &CancelToken,
        partial: &mut Option<crate::runtime::TraceRun>,
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
                    let run = partial.get_or_insert_with(|| crate::runtime::TraceRun {
                        info: crate::runtime::RunInfo {
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
                other => return Err(self.remote(format!("sent {other:?} during a run"))),
            }
        }
    }
}
