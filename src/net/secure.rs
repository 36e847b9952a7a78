//! The secure channel of protocol v2: a Noise handshake keyed by the shared token, then every byte in
//! encrypted, authenticated records.
//!
//! Pattern `Noise_NNpsk0_25519_ChaChaPoly_SHA256` (the Noise protocol framework, implemented by the `snow`
//! crate): both sides mix a pre-shared key derived from the token into the handshake, so only a peer that
//! knows the token can complete it, and the session keys also depend on fresh ephemeral X25519 keys on both
//! sides, so a recorded or relayed handshake gives an attacker nothing. The preambles both sides exchanged
//! are mixed in as the Noise prologue, so a tampered version number breaks the handshake.
//!
//! On the wire, after the preamble, everything is a record: `length: u16` (big endian) and `length` bytes.
//! The first record from the client is Noise message 1, the first from the runner Noise message 2 (or an
//! empty record: "I could not authenticate you", then the runner closes). Every later record is a Noise
//! transport message of at most 65 535 bytes carrying a piece of the frame stream of `frame.rs`. Each
//! direction numbers its records (the Noise nonce) from 0, so a replayed, dropped, reordered or altered record
//! fails authentication and ends the connection.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use snow::StatelessTransportState;

/// The Noise protocol name this version speaks.
pub const NOISE_PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Largest record (a Noise message) on the wire.
pub const MAX_RECORD_BYTES: usize = 65_535;
/// Authentication tag added to every record.
const TAG_BYTES: usize = 16;
/// Largest plaintext one record carries.
pub const MAX_RECORD_PLAINTEXT_BYTES: usize = MAX_RECORD_BYTES - TAG_BYTES;
/// Domain separation for the pre-shared key.
const PSK_CONTEXT: &[u8] = b"edgescope-runner-psk-v2";

/// What can go wrong while two peers set up the channel.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The connection failed, closed or timed out.
    #[error("connection failed during the handshake ({0})")]
    Io(#[from] io::Error),
    /// The peer does not know the token (its handshake message failed authentication).
    #[error("the peer does not know the token (its handshake failed authentication)")]
    WrongToken,
    /// The runner could not authenticate this client and said so (an empty record).
    #[error("the runner refused the handshake: it does not share this token")]
    Refused,
    /// The Noise library refused a step (should not happen with valid parameters).
    #[error("the secure channel could not be set up ({0})")]
    Noise(String),
}

fn noise(error: snow::Error) -> HandshakeError {
    HandshakeError::Noise(error.to_string())
}

/// The pre-shared key: SHA-256 of a context string and the token.
///
/// Tokens must be long random strings (`openssl rand -hex 32`): like any pre-shared key, a short guessable
/// token could be found offline by someone who recorded a handshake.
pub fn psk_of(token: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(PSK_CONTEXT);
    hasher.update(token);
    hasher.finalize().into()
}

fn prologue(version: u16) -> Vec<u8> {
    let mut bytes = b"edgescope-runner-protocol/".to_vec();
    bytes.extend_from_slice(&super::frame::MAGIC);
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes
}

fn builder_for<'a>(
    params: &'a snow::params::NoiseParams,
    psk: &'a [u8; 32],
    prologue: &'a [u8],
) -> Result<snow::Builder<'a>, HandshakeError> {
    snow::Builder::new(params.clone()).psk(0, psk).map_err(noise)?.prologue(prologue).map_err(noise)
}

fn params() -> Result<snow::params::NoiseParams, HandshakeError> {
    NOISE_PATTERN.parse().map_err(noise)
}

/// Writes one record.
pub fn write_record(writer: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let length = u16::try_from(bytes.len()).map_err(|_| io::Error::other("record longer than 65535 bytes"))?;
    let mut record = Vec::with_capacity(2 + bytes.len());
    record.extend_from_slice(&length.to_be_bytes());
    record.extend_from_slice(bytes);
    writer.write_all(&record)?;
    writer.flush()
}

/// Reads one record into `buffer` (at most 65 535 bytes, so the allocation is bounded). `Ok(false)` on a clean
/// end of stream before the record.
pub fn read_record(reader: &mut impl Read, buffer: &mut Vec<u8>) -> io::Result<bool> {
    let mut header = [0u8; 2];
    let mut filled = 0;
    while filled < 2 {
        let read = reader.read(&mut header[filled..])?;
        if read == 0 {
            if filled == 0 {
                return Ok(false);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += read;
    }
    let length = usize::from(u16::from_be_bytes(header));
    buffer.resize(length, 0);
    reader.read_exact(buffer)?;
    Ok(true)
}

/// The keys of an established channel, shared by its reading and writing halves.
#[derive(Clone)]
pub struct Keys(Arc<StatelessTransportState>);

/// Client side: sends Noise message 1, checks the runner's message 2. The runner has proven it knows the token
/// when this returns; it is the caller's first encrypted frame that proves the client's liveness to the runner.
pub fn client_handshake(stream: &mut (impl Read + Write), token: &[u8], version: u16) -> Result<Keys, HandshakeError> {
    let params = params()?;
    let psk = psk_of(token);
    let prologue = prologue(version);
    let mut state = builder_for(&params, &psk, &prologue)?.build_initiator().map_err(noise)?;
    let mut message = vec![0u8; MAX_RECORD_BYTES];
    let length = state.write_message(&[], &mut message).map_err(noise)?;
    write_record(stream, &message[..length])?;
    let mut record = Vec::new();
    if !read_record(stream, &mut record)? {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    if record.is_empty() {
        return Err(HandshakeError::Refused);
    }
    let mut payload = vec![0u8; MAX_RECORD_BYTES];
    state.read_message(&record, &mut payload).map_err(|_| HandshakeError::WrongToken)?;
    Ok(Keys(Arc::new(state.into_stateless_transport_mode().map_err(noise)?)))
}

/// Runner side: checks the client's Noise message 1 (an empty record answers a wrong token), sends message 2.
pub fn server_handshake(stream: &mut (impl Read + Write), token: &[u8], version: u16) -> Result<Keys, HandshakeError> {
    let params = params()?;
    let psk = psk_of(token);
    let prologue = prologue(version);
    let mut state = builder_for(&params, &psk, &prologue)?.build_responder().map_err(noise)?;
    let mut record = Vec::new();
    if !read_record(stream, &mut record)? {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    let mut payload = vec![0u8; MAX_RECORD_BYTES];
    if state.read_message(&record, &mut payload).is_err() {
        // Say so in the clear (an empty record is never a Noise message): a forged refusal can only do what
        // cutting the link does.
        let _ = write_record(stream, &[]);
        return Err(HandshakeError::WrongToken);
    }
    let mut message = vec![0u8; MAX_RECORD_BYTES];
    let length = state.write_message(&[], &mut message).map_err(noise)?;
    write_record(stream, &message[..length])?;
    Ok(Keys(Arc::new(state.into_stateless_transport_mode().map_err(noise)?)))
}

fn authentication_failed() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "a record failed authentication (altered, replayed, reordered or not from the peer); connection closed",
    )
}

/// The reading half: decrypts records in order and yields the plaintext byte stream.
pub struct SecureReader<R> {
    inner: R,
    keys: Keys,
    nonce: u64,
    record: Vec<u8>,
    plain: Vec<u8>,
    start: usize,
}

impl<R: Read> SecureReader<R> {
    /// Reads records from `inner` with the channel's keys.
    pub fn new(inner: R, keys: Keys) -> Self {
        Self { inner, keys, nonce: 0, record: Vec::new(), plain: Vec::new(), start: 0 }
    }

    /// The underlying reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for SecureReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // Records with an empty plaintext carry nothing; a peer can only send so many before its nonce runs out,
        // and each costs it 18 bytes, so this loop is bounded by the bytes it sends.
        while self.start >= self.plain.len() {
            if !read_record(&mut self.inner, &mut self.record)? {
                return Ok(0);
            }
            self.plain.resize(MAX_RECORD_BYTES, 0);
            let length = self
                .keys
                .0
                .read_message(self.nonce, &self.record, &mut self.plain)
                .map_err(|_| authentication_failed())?;
            self.nonce = self.nonce.checked_add(1).ok_or_else(|| io::Error::other("record counter exhausted"))?;
            self.plain.truncate(length);
            self.start = 0;
        }
        let count = out.len().min(self.plain.len() - self.start);
        out[..count].copy_from_slice(&self.plain[self.start..self.start + count]);
        self.start += count;
        Ok(count)
    }
}

/// The writing half: buffers plaintext and seals it into records on `flush` or when a record is full.
pub struct SecureWriter<W: Write> {
    inner: W,
    keys: Keys,
    nonce: u64,
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

impl<W: Write> SecureWriter<W> {
    /// Writes records to `inner` with the channel's keys.
    pub fn new(inner: W, keys: Keys) -> Self {
        Self {
            inner,
            keys,
            nonce: 0,
            plain: Vec::with_capacity(MAX_RECORD_PLAINTEXT_BYTES),
            sealed: vec![0u8; 2 + MAX_RECORD_BYTES],
        }
    }

    fn seal(&mut self) -> io::Result<()> {
        let length = self
            .keys
            .0
            .write_message(self.nonce, &self.plain, &mut self.sealed[2..])
            .map_err(|e| io::Error::other(format!("cannot encrypt a record ({e})")))?;
        self.nonce = self.nonce.checked_add(1).ok_or_else(|| io::Error::other("record counter exhausted"))?;
        let header = u16::try_from(length).map_err(|_| io::Error::other("record too long"))?.to_be_bytes();
        self.sealed[..2].copy_from_slice(&header);
        self.inner.write_all(&self.sealed[..2 + length])?;
        self.plain.clear();
        Ok(())
    }
}

impl<W: Write> Write for SecureWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = MAX_RECORD_PLAINTEXT_BYTES - self.plain.len();
        let count = bytes.len().min(room);
        self.plain.extend_from_slice(&bytes[..count]);
        if self.plain.len() == MAX_RECORD_PLAINTEXT_BYTES {
            self.seal()?;
        }
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.plain.is_empty() {
            self.seal()?;
        }
        self.inner.flush()
    }
}

/// A socket whose reads wait at most `idle` each and, while a deadline is set, end at the deadline; writes
/// wait at most the socket's write timeout. While `keep_waiting` is set (a job runs and the client has nothing
/// to say), an idle read simply waits again.
pub struct TimedStream {
    stream: TcpStream,
    idle: Duration,
    deadline: Option<Instant>,
    keep_waiting: Arc<AtomicBool>,
}

impl TimedStream {
    /// Wraps `stream`; `write_timeout` applies to every write from now on.
    pub fn new(stream: TcpStream, idle: Duration, write_timeout: Duration) -> io::Result<Self> {
        stream.set_write_timeout(Some(write_timeout.max(Duration::from_millis(1))))?;
        Ok(Self {
            stream,
            idle: idle.max(Duration::from_millis(1)),
            deadline: None,
            keep_waiting: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Ends every read at `deadline` (the handshake's), or lifts it with `None`.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// A flag that, while set, turns idle timeouts into more waiting.
    pub fn keep_waiting(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.keep_waiting)
    }

    /// Another handle to the same socket with the same settings (a separate deadline and flag).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            stream: self.stream.try_clone()?,
            idle: self.idle,
            deadline: self.deadline,
            keep_waiting: Arc::clone(&self.keep_waiting),
        })
    }
}

impl Read for TimedStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut wait = self.idle;
            if let Some(deadline) = self.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "the handshake deadline passed"));
                }
                wait = wait.min(left);
            }
            self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            match self.stream.read(out) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    let deadline_passed = self.deadline.is_some_and(|d| Instant::now() >= d);
                    if self.keep_waiting.load(Ordering::SeqCst) && !deadline_passed {
                        continue;
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no data for {} ms", wait.as_millis()),
                    ));
                }
                other => return other,
            }
        }
    }
}

impl Write for TimedStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.stream.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two ends of a handshake over in-memory pipes: (client keys, server keys).
    fn keys_for(
        client_token: &[u8],
        server_token: &[u8],
    ) -> (Result<Keys, HandshakeError>, Result<Keys, HandshakeError>) {
        // Run the two halves against each other through byte buffers, one message at a time.
        let params = params().expect("params");
        let (client_psk, server_psk) = (psk_of(client_token), psk_of(server_token));
        let prologue = prologue(2);
        let mut client = builder_for(&params, &client_psk, &prologue).expect("b").build_initiator().expect("i");
        let mut server = builder_for(&params, &server_psk, &prologue).expect("b").build_responder().expect("r");
        let mut m1 = vec![0u8; MAX_RECORD_BYTES];
        let n1 = client.write_message(&[], &mut m1).expect("m1");
        let mut payload = vec![0u8; MAX_RECORD_BYTES];
        if server.read_message(&m1[..n1], &mut payload).is_err() {
            return (Err(HandshakeError::Refused), Err(HandshakeError::WrongToken));
        }
        let mut m2 = vec![0u8; MAX_RECORD_BYTES];
        let n2 = server.write_message(&[], &mut m2).expect("m2");
        let server_keys = Keys(Arc::new(server.into_stateless_transport_mode().expect("t")));
        if client.read_message(&m2[..n2], &mut payload).is_err() {
            return (Err(HandshakeError::WrongToken), Ok(server_keys));
        }
        (Ok(Keys(Arc::new(client.into_stateless_transport_mode().expect("t")))), Ok(server_keys))
    }

    #[test]
    fn only_the_same_token_completes_a_handshake() {
        let (client, server) = keys_for(b"the right token 0123", b"the right token 0123");
        assert!(client.is_ok() && server.is_ok());
        let (client, server) = keys_for(b"the right token 0123", b"a different token 01");
        assert!(client.is_err() && server.is_err());
    }

    #[test]
    fn records_round_trip_and_altered_replayed_or_reordered_ones_fail() {
        let (Ok(client), Ok(server)) = keys_for(b"the right token 0123", b"the right token 0123") else {
            panic!("keys")
        };
        let mut wire = Vec::new();
        let mut writer = SecureWriter::new(&mut wire, client);
        let big = vec![7u8; 150_000];
        writer.write_all(b"hello").expect("write");
        writer.flush().expect("flush");
        writer.write_all(&big).expect("write");
        writer.flush().expect("flush");
        drop(writer);
        let mut reader = SecureReader::new(wire.as_slice(), server.clone());
        let mut got = Vec::new();
        reader.read_to_end(&mut got).expect("read");
        assert_eq!(&got[..5], b"hello");
        assert_eq!(&got[5..], big.as_slice());
        assert!(!wire.windows(64).any(|w| w == &big[..64]), "no plaintext on the wire");

        // One flipped bit anywhere in a record's body fails it.
        let mut altered = wire.clone();
        altered[10] ^= 1;
        let mut reader = SecureReader::new(altered.as_slice(), server.clone());
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
        // The first record replayed after itself fails (its nonce is 0, the reader expects 1).
        let first = 2 + usize::from(u16::from_be_bytes([wire[0], wire[1]]));
        let mut replayed = wire[..first].to_vec();
        replayed.extend_from_slice(&wire[..first]);
        let mut reader = SecureReader::new(replayed.as_slice(), server.clone());
        let mut out = Vec::new();
        assert!(reader.read_to_end(&mut out).is_err());
        assert_eq!(out, b"hello");
        // A dropped record (the second arrives first) fails.
        let mut reader = SecureReader::new(&wire[first..], server);
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
    }
}
