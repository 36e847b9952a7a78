//! The runner link attacked as an attacker on loopback would: a fake runner without the token, a relay that
//! records, replays and alters, slow-drip connections, a peer that announces huge frames or stops reading, a
//! silent runner, and peers of the old protocol. Real sockets, the real runner, bounded loops.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgescope::net::frame::{self, Frame, PROTOCOL_VERSION};
use edgescope::net::protocol::{ClientMessage, FileOffer, RunnerMessage};
use edgescope::net::secure::{self, SecureReader, SecureWriter};
use edgescope::net::{Limits, RemoteRunner, RunnerServer, ServerConfig, ServerHandle};
use edgescope::record::RunMode;
use edgescope::runtime::{CancelToken, Runner};

const TOKEN: &[u8] = b"hostile-test-token-0123456789abcdef";

fn start_runner(cache: &Path, limits: Limits) -> ServerHandle {
    let config = ServerConfig { token: TOKEN.to_vec(), cache_dir: cache.to_path_buf(), limits };
    RunnerServer::bind("127.0.0.1:0", config).expect("bind loopback").spawn().expect("serve")
}

fn quick_job() -> edgescope::runtime::Job {
    let mut job = common::job("tiny_base.toml", "fmnist500", RunMode::Trace);
    job.settings.limit = Some(20);
    job
}

/// True when any 32-byte window of `secret` occurs in `haystack`.
fn leaks(haystack: &[u8], secret: &[u8]) -> bool {
    let windows: std::collections::HashSet<&[u8]> = secret.chunks_exact(32).collect();
    haystack.windows(32).any(|w| windows.contains(w))
}

/// Reads everything a peer sends until it closes or `limit` passes.
fn drain(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    while started.elapsed() < limit {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    bytes
}

#[test]
fn a_fake_runner_without_the_token_receives_no_byte_of_the_model() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    // The fake runner speaks the preamble, then accepts whatever comes: it answers the client's handshake
    // message with bytes of the right shape (it cannot make the real one without the token) and records all.
    let fake = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut preamble = [0u8; 6];
        stream.read_exact(&mut preamble).expect("client preamble");
        frame::write_preamble(&mut stream).expect("preamble");
        let mut record = Vec::new();
        secure::read_record(&mut stream, &mut record).expect("handshake message");
        secure::write_record(&mut stream, &[0x42; 48]).expect("forged answer");
        let rest = drain(&mut stream, Duration::from_secs(3));
        (preamble.len() + 2 + record.len(), rest)
    });
    let mut client = RemoteRunner::new(&address, TOKEN.to_vec());
    let job = quick_job();
    let error = client.run(&job, &mut |_| {}, &CancelToken::new()).expect_err("a fake runner").to_string();
    assert!(error.contains(&address) && error.contains("failed to prove it knows the token"), "{error}");
    let (handshake_bytes, rest) = fake.join().expect("fake runner thread");
    assert_eq!(handshake_bytes, 6 + 2 + 48, "only the preamble and the first handshake message");
    assert!(rest.is_empty(), "the client sent {} more bytes to a fake runner", rest.len());
}

/// A relay between a client and the real runner: forwards both ways, records what passes, and can flip one
/// bit of the client's stream at an offset.
struct Relay {
    address: String,
    client_to_runner: Arc<Mutex<Vec<u8>>>,
    runner_to_client: Arc<Mutex<Vec<u8>>>,
}

fn relay(runner: std::net::SocketAddr, flip_at: Option<usize>) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let client_to_runner = Arc::new(Mutex::new(Vec::new()));
    let runner_to_client = Arc::new(Mutex::new(Vec::new()));
    let (up, down) = (Arc::clone(&client_to_runner), Arc::clone(&runner_to_client));
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else { return };
        let Ok(upstream) = TcpStream::connect(runner) else { return };
        let pump = |mut from: TcpStream, mut to: TcpStream, record: Arc<Mutex<Vec<u8>>>, flip: Option<usize>| {
            std::thread::spawn(move || {
                let mut buffer = [0u8; 65536];
                let mut offset = 0usize;
                loop {
                    let n = match from.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(at) = flip
                        && (offset..offset + n).contains(&at)
                    {
                        buffer[at - offset] ^= 0x01;
                    }
                    offset += n;
                    record.lock().expect("lock").extend_from_slice(&buffer[..n]);
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
            })
        };
        let a = pump(client.try_clone().expect("clone"), upstream.try_clone().expect("clone"), up, flip_at);
        let b = pump(upstream, client, down, None);
        let _ = a.join();
        let _ = b.join();
    });
    Relay { address, client_to_runner, runner_to_client }
}

#[test]
fn a_capture_of_a_real_job_holds_no_plaintext_and_a_relay_gets_no_session() {
    let cache = tempfile::tempdir().expect("temp dir");
    let server = start_runner(cache.path(), Limits::default());
    // A passive relay: the job completes through it, and what it saw holds no 32 bytes of the model, the
    // dataset or the token.
    let relay_a = relay(server.address, None);
    let mut client = RemoteRunner::new(&relay_a.address, TOKEN.to_vec());
    let run = common::trace(&mut client, &quick_job());
    assert!(run.info.complete && run.trace.len() == 20);
    let captured = relay_a.client_to_runner.lock().expect("lock").clone();
    let answered = relay_a.runner_to_client.lock().expect("lock").clone();
    assert!(captured.len() > 100_000, "the upload passed through the relay ({} bytes)", captured.len());
    let model = std::fs::read(common::fixture("tiny_base.onnx")).expect("model");
    let labels = std::fs::read(common::fixture("fmnist500/labels-idx1-ubyte.gz")).expect("labels");
    for (name, secret) in [("model", &model), ("labels", &labels)] {
        assert!(!leaks(&captured, secret), "the {name} crossed the wire in plaintext");
    }
    for text in [&b"tiny_base"[..], b"Offer", b"Upload", TOKEN, b"CPUExecutionProvider"] {
        assert!(!captured.windows(text.len()).any(|w| w == text), "{:?} in the capture", String::from_utf8_lossy(text));
        assert!(!answered.windows(text.len()).any(|w| w == text), "{:?} in the answers", String::from_utf8_lossy(text));
    }

    // The relay replays the client's whole recorded stream to the runner on a connection of its own: the
    // runner answers the handshake (it cannot tell a replayed first message) but the first encrypted record
    // fails, so the relay gets no Welcome, no Need, nothing stored.
    let cached_before = std::fs::read_dir(cache.path()).expect("cache").count();
    let mut replay = TcpStream::connect(server.address).expect("connect");
    replay.write_all(&captured).expect("replay");
    let answer = drain(&mut replay, Duration::from_secs(5));
    assert!(answer.len() <= 6 + 2 + 48, "the runner said more than its handshake to a replay: {} bytes", answer.len());
    assert_eq!(std::fs::read_dir(cache.path()).expect("cache").count(), cached_before);

    // An active relay that flips one bit of the client's stream after the handshake: the runner refuses the
    // record and the client gets an error naming the runner, never a result.
    let fresh = tempfile::tempdir().expect("temp dir");
    let server = start_runner(fresh.path(), Limits::default());
    let relay_b = relay(server.address, Some(6 + 2 + 48 + 30));
    let mut client = RemoteRunner::new(&relay_b.address, TOKEN.to_vec()).with_reply_timeout(Duration::from_secs(5));
    let error = client.run(&quick_job(), &mut |_| {}, &CancelToken::new()).expect_err("altered").to_string();
    assert!(error.contains(&relay_b.address), "{error}");
    assert_eq!(std::fs::read_dir(fresh.path()).expect("cache").count(), 0, "nothing stored from an altered stream");
}

/// Opens a connection and performs the v2 handshake; returns the two halves.
fn authenticate(address: std::net::SocketAddr) -> (SecureWriter<TcpStream>, SecureReader<TcpStream>) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    stream.set_write_timeout(Some(Duration::from_secs(20))).expect("timeout");
    frame::write_preamble(&mut stream).expect("preamble");
    frame::read_preamble(&mut stream).expect("preamble");
    let keys = secure::client_handshake(&mut stream, TOKEN, PROTOCOL_VERSION).expect("handshake");
    let mut writer = SecureWriter::new(stream.try_clone().expect("clone"), keys.clone());
    let mut reader = SecureReader::new(stream, keys);
    send(&mut writer, &ClientMessage::Hello { client: "hostile test".into() });
    assert!(matches!(receive(&mut reader), Some(RunnerMessage::Welcome { .. })));
    (writer, reader)
}

fn send(writer: &mut SecureWriter<TcpStream>, message: &ClientMessage) {
    frame::write_frame(writer, &Frame::Message(serde_json::to_vec(message).expect("json"))).expect("send");
}

fn receive(reader: &mut SecureReader<TcpStream>) -> Option<RunnerMessage> {
    match frame::read_frame(reader, 1 << 24) {
        Ok(Frame::Message(bytes)) => serde_json::from_slice(&bytes).ok(),
        _ => None,
    }
}

#[test]
fn uploads_past_the_quota_are_refused_and_the_cache_stays_under_its_cap() {
    let cache = tempfile::tempdir().expect("temp dir");
    let limits = Limits { max_upload_bytes: 3 << 20, max_cache_bytes: 2 << 20, ..Limits::default() };
    let server = start_runner(cache.path(), limits);
    let (mut writer, mut reader) = authenticate(server.address);
    // An offer over the per-connection quota is refused before a byte is uploaded.
    let hash = |i: u8| hex::encode([i; 32]);
    send(&mut writer, &ClientMessage::Offer { files: vec![FileOffer { hash: hash(1), size: 4 << 20 }] });
    match receive(&mut reader) {
        Some(RunnerMessage::Failed { error }) => assert!(error.contains("--max-upload-mib"), "{error}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // An upload nobody asked for ends the connection.
    send(&mut writer, &ClientMessage::Upload { hash: hash(2), size: 10 });
    assert!(receive(&mut reader).is_none(), "the runner closes a connection that uploads unasked");

    // Three real 1 MiB files through a 2 MiB cache: the least recently used is evicted.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut stored = Vec::new();
    for i in 0..3u8 {
        let (mut writer, mut reader) = authenticate(server.address);
        let path = dir.path().join(format!("{i}.bin"));
        std::fs::write(&path, vec![i; 1 << 20]).expect("write");
        let offer = edgescope::net::protocol::hash_file(&path).expect("hash");
        send(&mut writer, &ClientMessage::Offer { files: vec![offer.clone()] });
        assert!(matches!(receive(&mut reader), Some(RunnerMessage::Need { .. })));
        send(&mut writer, &ClientMessage::Upload { hash: offer.hash.clone(), size: offer.size });
        for chunk in std::fs::read(&path).expect("read").chunks(edgescope::net::frame::CHUNK_BYTES) {
            frame::write_frame(&mut writer, &Frame::Data(chunk.to_vec())).expect("chunk");
        }
        assert!(matches!(receive(&mut reader), Some(RunnerMessage::Stored { .. })));
        stored.push(offer.hash);
        std::thread::sleep(Duration::from_millis(20));
    }
    let names: Vec<String> = std::fs::read_dir(cache.path())
        .expect("cache")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!names.contains(&stored[0]) && names.contains(&stored[2]), "the oldest went first: {names:?}");
}

#[test]
fn a_client_that_stops_reading_is_dropped_at_the_write_timeout() {
    let cache = tempfile::tempdir().expect("temp dir");
    let limits = Limits { write_timeout_ms: 1_000, idle_timeout_ms: 120_000, ..Limits::default() };
    let server = start_runner(cache.path(), limits);
    let (writer, reader) = authenticate(server.address);
    assert_eq!(server.clients(), 1);
    // Offers of 64 uncached files, each answered with a 4 KB Need the client never reads: the runner's writes
    // back up once the socket buffers are full.
    let files: Vec<FileOffer> = (0..64u8).map(|i| FileOffer { hash: hex::encode([i; 32]), size: 1 }).collect();
    let offer = serde_json::to_vec(&ClientMessage::Offer { files }).expect("json");
    let flooder = std::thread::spawn(move || {
        let mut writer = writer;
        for _ in 0..20_000 {
            if frame::write_frame(&mut writer, &Frame::Message(offer.clone())).is_err() {
                break;
            }
        }
        writer
    });
    let started = Instant::now();
    while server.clients() > 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "the runner still serves a client that stopped reading");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("a client that stopped reading was dropped {:?} after it started flooding", started.elapsed());
    drop(reader);
    drop(flooder.join().expect("flooder"));
}

#[test]
fn clients_beyond_the_cap_are_denied_and_a_slot_frees_when_one_leaves() {
    let cache = tempfile::tempdir().expect("temp dir");
    let server = start_runner(cache.path(), Limits { max_clients: 1, ..Limits::default() });
    let first = authenticate(server.address);
    let error = RemoteRunner::new(&server.address.to_string(), TOKEN.to_vec()).device().expect_err("over the cap");
    assert!(error.to_string().contains("at most 1 clients") && error.to_string().contains("--max-clients"), "{error}");
    drop(first);
    let started = Instant::now();
    while RemoteRunner::new(&server.address.to_string(), TOKEN.to_vec()).device().is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "the slot was not given back");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.clients() <= 1 && server.pending() <= 1);
}

/// VmHWM (peak resident memory) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the runner binary; with `max_open_files`, under that file-descriptor limit (as a small device or a
/// service manager would set it).
fn spawn_runner_limited(dir: &Path, extra: &[&str], max_open_files: Option<u32>) -> (Child, std::net::SocketAddr) {
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut command = match max_open_files {
        Some(limit) => {
            let mut sh = std::process::Command::new("sh");
            sh.args([
                "-c",
                &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                env!("CARGO_BIN_EXE_edgescope-runner"),
            ]);
            sh
        }
        None => std::process::Command::new(env!("CARGO_BIN_EXE_edgescope-runner")),
    };
    let child = command
        .args(["--listen", &address.to_string(), "--token-file"])
        .arg(&token_file)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(extra)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start edgescope-runner");
    let child = Child(child);
    let started = Instant::now();
    while RemoteRunner::new(&address.to_string(), TOKEN.to_vec()).device().is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "runner did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, address)
}

fn spawn_runner(dir: &Path, extra: &[&str]) -> (Child, std::net::SocketAddr) {
    spawn_runner_limited(dir, extra, None)
}

#[test]
fn one_peer_cannot_push_the_runner_past_its_memory_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (child, address) = spawn_runner(dir.path(), &[]);
    let pid = child.0.id();
    let before = peak_rss_kib(pid);
    // Five frames announcing 256 MiB each, before and after authentication, one connection each.
    for _ in 0..5 {
        let (mut writer, mut reader) = authenticate(address);
        writer.write_all(&[0, 0x10, 0, 0, 0]).expect("header");
        let _ = writer.write_all(&vec![b' '; 300_000]);
        let _ = writer.flush();
        assert!(receive(&mut reader).is_none(), "the runner drops a peer announcing 256 MiB");
        let mut raw = TcpStream::connect(address).expect("connect");
        frame::write_preamble(&mut raw).expect("preamble");
        raw.write_all(&[0xff, 0xff]).expect("record header");
        let _ = raw.write_all(&vec![0u8; 65_535]);
    }
    // The largest message it accepts, many times over, each malformed in its own way; and an upload of
    // 8 MiB at full speed.
    let (mut writer, mut reader) = authenticate(address);
    let big = format!("{{\"type\":\"Offer\",\"files\":[{}]}}", vec!["{\"hash\":\"x\",\"size\":1}"; 40_000].join(","));
    assert!(big.len() < 1 << 20);
    frame::write_frame(&mut writer, &Frame::Message(big.into_bytes())).expect("big offer");
    assert!(matches!(receive(&mut reader), Some(RunnerMessage::Failed { .. })), "over 64 files");
    let data = vec![7u8; 8 << 20];
    let path = dir.path().join("upload.bin");
    std::fs::write(&path, &data).expect("write");
    let offer = edgescope::net::protocol::hash_file(&path).expect("hash");
    send(&mut writer, &ClientMessage::Offer { files: vec![offer.clone()] });
    assert!(matches!(receive(&mut reader), Some(RunnerMessage::Need { .. })));
    send(&mut writer, &ClientMessage::Upload { hash: offer.hash.clone(), size: offer.size });
    for chunk in data.chunks(edgescope::net::frame::CHUNK_BYTES) {
        frame::write_frame(&mut writer, &Frame::Data(chunk.to_vec())).expect("chunk");
    }
    assert!(matches!(receive(&mut reader), Some(RunnerMessage::Stored { .. })));
    let after = peak_rss_kib(pid);
    let grown_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!("runner peak RSS: {} MiB before, {} MiB after (+{grown_mib:.1} MiB)", before / 1024, after / 1024);
    let bound_mib = Limits::default().connection_memory_bytes() as f64 / (1 << 20) as f64 * 2.0 + 16.0;
    assert!(grown_mib < bound_mib, "one peer grew the runner by {grown_mib:.1} MiB (bound {bound_mib:.1} MiB)");
}

/// Opens `count` connections that each drip the preamble one byte at a time, reconnecting when the runner
/// drops them, until `stop`; returns how many connections it opened in all.
fn drip(
    address: std::net::SocketAddr,
    count: usize,
    stop: Arc<AtomicBool>,
    opened_so_far: Arc<std::sync::atomic::AtomicUsize>,
    deadline: Instant,
) -> usize {
    let preamble = [b'E', b'S', b'R', b'P', 0, 2];
    let mut streams: Vec<(TcpStream, usize)> = Vec::new();
    let mut opened = 0usize;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        while streams.len() < count {
            match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                Ok(stream) => {
                    opened += 1;
                    opened_so_far.store(opened, Ordering::SeqCst);
                    streams.push((stream, 0));
                }
                Err(_) => break,
            }
        }
        streams.retain_mut(|(stream, sent)| {
            let byte = preamble[*sent % preamble.len()];
            *sent += 1;
            stream.write_all(&[byte]).is_ok()
        });
        std::thread::sleep(Duration::from_millis(200));
    }
    opened
}

fn slow_drip_run(connections: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    // 512 open files: fewer than the drip connections would take if each got a thread and its sockets.
    let (_child, address) = spawn_runner_limited(dir.path(), &[], Some(512));
    let stop = Arc::new(AtomicBool::new(false));
    let opened_so_far = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dripper = {
        let (stop, opened) = (Arc::clone(&stop), Arc::clone(&opened_so_far));
        std::thread::spawn(move || drip(address, connections, stop, opened, Instant::now() + Duration::from_secs(90)))
    };
    // Let the drip connections fill the runner's handshake slots first (all of them opened at least once).
    let waited = Instant::now();
    while opened_so_far.load(Ordering::SeqCst) < connections && waited.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let mut client = RemoteRunner::new(&address.to_string(), TOKEN.to_vec());
    let result = client.run(&quick_job(), &mut |_| {}, &CancelToken::new());
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let opened = dripper.join().expect("dripper");
    eprintln!("legitimate job under {connections} drip connections ({opened} opened in all): {elapsed:?}");
    let output = result.expect("the legitimate job completes despite the drip connections");
    assert!(output.info().complete);
    assert!(opened >= connections, "the drip really ran ({opened} connections)");
}

#[test]
fn three_hundred_slow_drip_connections_do_not_stop_a_legitimate_job() {
    slow_drip_run(300);
}

#[test]
#[ignore = "soak: 1000 drip connections; run with --ignored"]
fn a_thousand_slow_drip_connections_do_not_stop_a_legitimate_job() {
    slow_drip_run(1000);
}

#[test]
fn a_silent_runner_is_a_clear_error_within_the_deadline_and_cancel_is_honoured() {
    // A runner that completes the real handshake, welcomes the client, then never answers anything.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = frame::read_preamble(&mut stream);
                let _ = frame::write_preamble(&mut stream);
                let Ok(keys) = secure::server_handshake(&mut stream, TOKEN, PROTOCOL_VERSION) else { return };
                let mut writer = SecureWriter::new(stream.try_clone().expect("clone"), keys.clone());
                let mut reader = SecureReader::new(stream, keys);
                let _ = frame::read_frame(&mut reader, 1 << 20);
                let welcome = RunnerMessage::Welcome {
                    runner: "silent".into(),
                    device: Box::new(edgescope::record::DeviceRecord::this_machine()),
                    features: Vec::new(),
                };
                let _ = frame::write_frame(&mut writer, &Frame::Message(serde_json::to_vec(&welcome).expect("json")));
                // Read and ignore everything, answer nothing.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            });
        }
    });
    let mut client = RemoteRunner::new(&address, TOKEN.to_vec()).with_reply_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let error = client.run(&quick_job(), &mut |_| {}, &CancelToken::new()).expect_err("silent").to_string();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(error.contains(&address) && error.contains("no answer"), "{error}");

    // Cancel ends the wait at once, long before the reply timeout.
    let mut client = RemoteRunner::new(&address, TOKEN.to_vec()).with_reply_timeout(Duration::from_secs(60));
    let cancel = CancelToken::new();
    let canceller = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        canceller.cancel();
    });
    let started = Instant::now();
    let error = client.run(&quick_job(), &mut |_| {}, &cancel).expect_err("cancelled").to_string();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(error.contains("cancelled"), "{error}");
}

/// A runner that knows the token (a compromised device) and answers a job with results whose columns claim
/// `claimed` values.
fn lying_runner(claimed: u64, partial: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let _ = frame::read_preamble(&mut stream);
        let _ = frame::write_preamble(&mut stream);
        let Ok(keys) = secure::server_handshake(&mut stream, TOKEN, PROTOCOL_VERSION) else { return };
        let mut writer = SecureWriter::new(stream.try_clone().expect("clone"), keys.clone());
        let mut reader = SecureReader::new(stream, keys);
        let mut reply = |value: serde_json::Value| {
            frame::write_frame(&mut writer, &Frame::Message(serde_json::to_vec(&value).expect("json"))).is_ok()
        };
        let session: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(common::fixture("sessions/v1.json")).expect("fixture"))
                .expect("json");
        let mut run = session["runs"][0].clone();
        run["trace"]["exits"][0]["top_probs"]["len"] = serde_json::json!(claimed);
        while let Ok(Frame::Message(bytes)) = frame::read_frame(&mut reader, 1 << 20) {
            let message: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let sent = match message["type"].as_str() {
                Some("Hello") => reply(serde_json::json!({"type": "Welcome", "runner": "liar",
                    "device": edgescope::record::DeviceRecord::this_machine()})),
                Some("Offer") => reply(serde_json::json!({"type": "Need", "hashes": []})),
                Some("Run") if partial => {
                    reply(serde_json::json!({"type": "Partial", "first_sample": 0, "samples": run}))
                }
                Some("Run") => reply(serde_json::json!({"type": "TraceResult", "run": run})),
                _ => true,
            };
            if !sent {
                break;
            }
        }
    });
    address
}

#[test]
fn a_runner_with_the_token_that_lies_about_sizes_cannot_crash_the_client() {
    for (claimed, partial) in [(1u64 << 40, false), (1 << 61, false), (u64::MAX, false), (1 << 40, true)] {
        let address = lying_runner(claimed, partial);
        let mut client = RemoteRunner::new(&address, TOKEN.to_vec());
        let error = client.run(&quick_job(), &mut |_| {}, &CancelToken::new()).expect_err("lies").to_string();
        assert!(error.contains(&address) && error.contains("corrupt"), "{claimed} (partial {partial}): {error}");
    }
}

#[test]
fn cancel_ends_an_upload_blocked_on_a_runner_that_stopped_reading() {
    // A 47 MB dataset: more than loopback socket buffers hold (4 + 32 MiB), so the upload blocks when the runner stops
    // reading.
    let dir = tempfile::tempdir().expect("temp dir");
    let samples = 60_000usize;
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({samples}, 28, 28), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut images = b"\x93NUMPY\x01\x00".to_vec();
    images.extend_from_slice(&(header.len() as u16).to_le_bytes());
    images.extend_from_slice(header.as_bytes());
    images.extend((0..samples * 784).map(|i| (i * 7 % 251) as u8));
    std::fs::write(dir.path().join("images.npy"), &images).expect("images");
    let mut labels = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({samples},), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    labels.extend_from_slice(&(header.len() as u16).to_le_bytes());
    labels.extend_from_slice(header.as_bytes());
    labels.extend((0..samples).flat_map(|i| ((i % 10) as i64).to_le_bytes()));
    std::fs::write(dir.path().join("labels.npy"), &labels).expect("labels");
    let mut job = quick_job();
    job.dataset = Arc::new(edgescope::data::Dataset::open(&dir.path().join("images.npy")).expect("dataset"));

    // A runner with the token that asks for every file, then never reads again.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let _ = frame::read_preamble(&mut stream);
        let _ = frame::write_preamble(&mut stream);
        let Ok(keys) = secure::server_handshake(&mut stream, TOKEN, PROTOCOL_VERSION) else { return };
        let mut writer = SecureWriter::new(stream.try_clone().expect("clone"), keys.clone());
        let mut reader = SecureReader::new(stream, keys);
        let mut reply = |value: serde_json::Value| {
            let _ = frame::write_frame(&mut writer, &Frame::Message(serde_json::to_vec(&value).expect("json")));
        };
        let _ = frame::read_frame(&mut reader, 1 << 20);
        reply(
            serde_json::json!({"type": "Welcome", "runner": "stuck", "device": edgescope::record::DeviceRecord::this_machine()}),
        );
        if let Ok(Frame::Message(bytes)) = frame::read_frame(&mut reader, 1 << 20) {
            let offer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let hashes: Vec<serde_json::Value> =
                offer["files"].as_array().into_iter().flatten().map(|f| f["hash"].clone()).collect();
            reply(serde_json::json!({"type": "Need", "hashes": hashes}));
        }
        // Stop reading; keep the socket open for a while.
        std::thread::sleep(Duration::from_secs(20));
        drop(reader);
    });
    let cancel = CancelToken::new();
    let canceller = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        canceller.cancel();
    });
    let started = Instant::now();
    let error =
        RemoteRunner::new(&address, TOKEN.to_vec()).run(&job, &mut |_| {}, &cancel).expect_err("cancelled").to_string();
    let elapsed = started.elapsed();
    eprintln!(
        "an upload stuck on a runner that stopped reading ended {elapsed:?} after the start (cancel at 1.5 s): {error}"
    );
    assert!(error.contains("cancelled while uploading"), "{error}");
    // Without the watcher the upload either blocks until the 15 s write timeout or, once the socket buffers
    // took it all, waits out the 2 s grace for an answer: both well past 2.5 s.
    assert!(elapsed < Duration::from_millis(2500), "cancel took {elapsed:?} (the write timeout is 15 s)");
}

#[test]
fn old_and_new_protocol_peers_get_a_message_naming_both_versions() {
    // A v1 runner (it sends its preamble and waits for Hello in the clear).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.write_all(b"ESRP\x00\x01");
            let _ = drain(&mut stream, Duration::from_secs(2));
        }
    });
    let error = RemoteRunner::new(&address, TOKEN.to_vec()).device().expect_err("v1 runner").to_string();
    assert!(error.contains("protocol version 1") && error.contains("update edgescope-runner"), "{error}");

    // A v1 client gets the runner's v2 preamble (so it can say what differs) and nothing else.
    let cache = tempfile::tempdir().expect("temp dir");
    let server = start_runner(cache.path(), Limits::default());
    let mut stream = TcpStream::connect(server.address).expect("connect");
    stream.write_all(b"ESRP\x00\x01").expect("v1 preamble");
    let answer = drain(&mut stream, Duration::from_secs(5));
    assert_eq!(answer, b"ESRP\x00\x02");
}

#[test]
fn a_client_that_stops_reading_frees_the_runner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_child, address) = spawn_runner(dir.path(), &["--write-timeout-ms", "2000", "--idle-timeout-ms", "3000"]);
    // Upload the files of a real job with the library client, then a raw client runs it and never reads.
    let job = common::job("heavy.onnx", "fmnist500", RunMode::Trace);
    let mut warm = RemoteRunner::new(&address.to_string(), TOKEN.to_vec());
    let mut quick = job.clone();
    quick.settings.limit = Some(5);
    common::trace(&mut warm, &quick);
    let (mut writer, reader) = authenticate(address);
    let remote = remote_job(&job);
    send(&mut writer, &ClientMessage::Run { job: Box::new(remote) });
    let started = Instant::now();
    // The runner is busy with that job; once the job's output no longer fits the socket or the job ends, the
    // write or idle timeout frees it for others.
    let mut freed = None;
    while started.elapsed() < Duration::from_secs(120) {
        let mut client = RemoteRunner::new(&address.to_string(), TOKEN.to_vec());
        if client.run(&quick, &mut |_| {}, &CancelToken::new()).is_ok() {
            freed = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop((writer, reader));
    let freed = freed.expect("the runner serves others again");
    eprintln!("a client that stopped reading held the runner for {freed:?}");
}

#[test]
fn a_job_asking_for_2000_threads_gets_the_cap_and_a_huge_resize_is_refused() {
    let cache = tempfile::tempdir().expect("temp dir");
    let server = start_runner(cache.path(), Limits { max_threads: 1, ..Limits::default() });
    // The library client uploads the files; then a raw client asks for 2000 intra-op threads.
    let mut job = common::job("tiny_base.toml", "fmnist500", RunMode::Trace);
    job.settings.limit = Some(5);
    common::trace(&mut RemoteRunner::new(&server.address.to_string(), TOKEN.to_vec()), &job);
    let (mut writer, mut reader) = authenticate(server.address);
    let mut remote = remote_job(&job);
    remote.settings.limit = Some(5);
    send(&mut writer, &ClientMessage::Run { job: Box::new(remote.clone()) });
    let started = Instant::now();
    let run = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "no result");
        match receive(&mut reader) {
            Some(RunnerMessage::TraceResult { run }) => break run.decode().expect("valid trace"),
            Some(_) => {}
            None => panic!("the runner closed the connection"),
        }
    };
    assert_eq!(run.info.settings.intra_threads, 1, "capped at --max-threads");
    // A resize to 100 000 x 100 000 pixels would need 40 GB per sample: refused before anything runs.
    remote.dataset.preprocess.resize = Some([100_000, 100_000]);
    send(&mut writer, &ClientMessage::Run { job: Box::new(remote) });
    loop {
        match receive(&mut reader) {
            Some(RunnerMessage::Failed { error }) => {
                assert!(error.contains("100000"), "{error}");
                break;
            }
            Some(RunnerMessage::Heartbeat | RunnerMessage::Event { .. }) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

/// The wire form of a job whose files the runner already has.
fn remote_job(job: &edgescope::runtime::Job) -> edgescope::net::protocol::RemoteJob {
    let hash = |p: &PathBuf| edgescope::net::protocol::hash_file(p).expect("hash").hash;
    let mut manifest = job.variant.manifest();
    for segment in &mut manifest.segments {
        segment.file = hash(&segment.file).into();
    }
    let (images, labels) = job.dataset.files.clone().expect("file dataset");
    edgescope::net::protocol::RemoteJob {
        variant: manifest,
        dataset: edgescope::net::protocol::RemoteDataset {
            name: job.dataset.name.clone(),
            kind: job.dataset.kind,
            images: hash(&images),
            labels: hash(&labels),
            classes: job.dataset.classes.clone(),
            preprocess: job.dataset.preprocess.clone(),
        },
        settings: edgescope::record::RunSettings { intra_threads: 2000, ..job.settings.clone() },
        mode: job.mode.clone(),
        reference: None,
    }
}
