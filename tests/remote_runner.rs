//! The remote runner over real TCP sockets on loopback: the shared runner contract, then faults.

mod common;
mod runner_contract;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use edgescope::net::frame::{self, Frame};
use edgescope::net::protocol::{ClientMessage, RunnerMessage};
use edgescope::net::secure::{self, SecureReader, SecureWriter};
use edgescope::net::{RemoteRunner, RunnerServer, ServerConfig, ServerHandle};
use edgescope::record::RunMode;
use edgescope::runtime::{CancelToken, Runner};

const TOKEN: &[u8] = b"test-token-0123456789abcdef";

fn start_runner(cache: &std::path::Path) -> ServerHandle {
    let config = ServerConfig::new(TOKEN.to_vec(), cache.to_path_buf());
    RunnerServer::bind("127.0.0.1:0", config).expect("bind loopback").spawn().expect("serve")
}

#[test]
fn remote_runner_meets_the_runner_contract() {
    let cache = tempfile::tempdir().expect("temp dir");
    let server = start_runner(cache.path());
    let address = server.address.to_string();
    runner_contract::check_runner(&|| {
        Box::new(RemoteRunner::new(&format!("tcp://{address}"), TOKEN.to_vec())) as Box<dyn Runner>
    });
}

#[test]
fn files_are_cached_by_content_and_not_sent_twice() {
    let cache = tempfile::tempdir().expect("temp dir");
    let server = start_runner(cache.path());
    let mut runner = RemoteRunner::new(&server.address.to_string(), TOKEN.to_vec());
    let mut job = common::job("tiny_ee.toml", "fmnist500", RunMode::Trace);
    job.settings.limit = Some(20);
    common::trace(&mut runner, &job);
    let cached = std::fs::read_dir(cache.path()).expect("cache").filter_map(Result::ok).count();
    assert_eq!(cached, 4, "two segments, images and labels");
    // An upload lands as a new file (a temporary file renamed into place), so the same inodes mean nothing
    // was sent again (modification times change: they order the cache's least-recently-used eviction).
    use std::os::unix::fs::MetadataExt;
    let inodes = |dir: &std::path::Path| -> Vec<u64> {
        let mut inodes: Vec<u64> = std::fs::read_dir(dir)
            .expect("cache")
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok().map(|m| m.ino()))
            .collect();
        inodes.sort_unstable();
        inodes
    };
    let before = inodes(cache.path());
    common::trace(&mut runner, &job);
    assert_eq!(inodes(cache.path()), before, "nothing was re-uploaded");
}

#[test]
fn a_wrong_token_is_refused_and_the_runner_keeps_serving() {
    let cache = tempfile::tempdir().expect("temp dir");
    let server = start_runner(cache.path());
    let mut wrong = RemoteRunner::new(&server.address.to_string(), b"not-the-token-at-all-000".to_vec());
    let error = wrong.device().expect_err("refused").to_string();
    assert!(error.contains("wrong token") && error.contains(&server.address.to_string()), "{error}");
    let mut right = RemoteRunner::new(&server.address.to_string(), TOKEN.to_vec());
    assert!(right.device().is_ok(), "still serving");
}

#[test]
fn garbage_and_oversized_frames_do_not_hurt_the_runner() {
    let cache = tempfile::tempdir().expect("temp dir");
    let server = start_runner(cache.path());
    // Garbage instead of a preamble.
    let mut stream = TcpStream::connect(server.address).expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buffer = Vec::new();
    let _ = stream.read_to_end(&mut buffer);
    // A valid preamble, then a frame announcing 3 GiB before authentication.
    let mut stream = TcpStream::connect(server.address).expect("connect");
    frame::write_preamble(&mut stream).expect("preamble");
    stream.write_all(&[0, 0xc0, 0, 0, 0]).expect("header");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = stream.read_to_end(&mut buffer);
    // A newer protocol version gets the runner's preamble back, so the client can say what differs.
    let mut stream = TcpStream::connect(server.address).expect("connect");
    stream.write_all(b"ESRP\x00\x09").expect("preamble v9");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let version = frame::read_preamble(&mut stream).expect("runner preamble");
    assert_eq!(version, frame::PROTOCOL_VERSION);
    // A client that authenticates, is asked for a file, starts its upload and disconnects half-way: nothing
    // lands in the cache.
    let mut stream = TcpStream::connect(server.address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    frame::write_preamble(&mut stream).expect("preamble");
    let _ = frame::read_preamble(&mut stream).expect("runner preamble");
    let keys = secure::client_handshake(&mut stream, TOKEN, frame::PROTOCOL_VERSION).expect("handshake");
    let mut writer = SecureWriter::new(stream.try_clone().expect("clone"), keys.clone());
    let mut reader = SecureReader::new(stream.try_clone().expect("clone"), keys);
    let mut send = |message: &ClientMessage| {
        frame::write_frame(&mut writer, &Frame::Message(serde_json::to_vec(message).expect("json"))).expect("send")
    };
    send(&ClientMessage::Hello { client: "test".into() });
    let Frame::Message(bytes) = frame::read_frame(&mut reader, 1 << 20).expect("welcome") else { panic!("message") };
    assert!(matches!(serde_json::from_slice(&bytes), Ok(RunnerMessage::Welcome { .. })));
    let hash = "ab".repeat(32);
    send(&ClientMessage::Offer { files: vec![edgescope::net::protocol::FileOffer { hash: hash.clone(), size: 1000 }] });
    let Frame::Message(bytes) = frame::read_frame(&mut reader, 1 << 20).expect("need") else { panic!("message") };
    assert!(matches!(serde_json::from_slice(&bytes), Ok(RunnerMessage::Need { .. })));
    send(&ClientMessage::Upload { hash, size: 1000 });
    frame::write_frame(&mut writer, &Frame::Data(vec![1; 100])).expect("first chunk");
    drop((writer, reader, stream));
    std::thread::sleep(Duration::from_millis(300));
    let leftovers: Vec<_> = std::fs::read_dir(cache.path()).expect("cache").filter_map(Result::ok).collect();
    assert!(leftovers.is_empty(), "a broken upload leaves nothing in the cache: {leftovers:?}");
    // After all that, a real client still gets served.
    let mut runner = RemoteRunner::new(&server.address.to_string(), TOKEN.to_vec());
    assert!(runner.device().is_ok());
}

#[test]
fn an_unreachable_runner_is_a_clear_error() {
    // Bind and drop to get a port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut runner = RemoteRunner::new(&format!("tcp://127.0.0.1:{port}"), TOKEN.to_vec());
    let job = common::job("tiny_base.toml", "fmnist500", RunMode::Trace);
    let error = runner.run(&job, &mut |_| {}, &CancelToken::new()).expect_err("nothing listens").to_string();
    assert!(error.contains(&format!("127.0.0.1:{port}")) && error.contains("cannot connect"), "{error}");
}

#[test]
fn a_busy_runner_says_so_and_a_killed_runner_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let (mut child, address) = common::spawn_runner_process(&dir.path().join("cache"), &token_file);

    // A long job on one connection...
    let job = common::job("heavy.onnx", "fmnist500", RunMode::Trace);
    let (progress_sender, progress) = crossbeam_channel::bounded(64);
    let long_address = address.clone();
    let long = std::thread::spawn(move || {
        let mut runner = RemoteRunner::new(&long_address, TOKEN.to_vec());
        runner.run(&job, &mut |e| drop(progress_sender.try_send(e)), &CancelToken::new()).map(|_| ())
    });
    // ...wait until it has streamed a checkpoint (200 samples), then a second client is told the runner is busy.
    let started = std::time::Instant::now();
    loop {
        if let Ok(edgescope::record::RunEvent::Progress { done, .. }) = progress.recv_timeout(Duration::from_secs(60))
            && done >= 250
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress from the runner");
    }
    let mut second = RemoteRunner::new(&address, TOKEN.to_vec());
    let quick = common::job("tiny_base.toml", "fmnist500", RunMode::Trace);
    let error = second.run(&quick, &mut |_| {}, &CancelToken::new()).expect_err("busy").to_string();
    assert!(error.contains("busy"), "{error}");

    // Kill the runner mid-job: the client reports it, naming the runner, and keeps the streamed samples.
    child.kill().expect("kill runner");
    let _ = child.wait();
    let result = long.join().expect("the client thread does not panic");
    match result.expect_err("the runner died mid-job") {
        edgescope::runtime::RuntimeError::Interrupted { message, partial } => {
            assert!(message.contains(&address), "{message}");
            assert!(partial.trace.len() >= 200 && partial.trace.len() < 500, "{} samples kept", partial.trace.len());
            assert!(!partial.info.complete && partial.info.variant == "heavy");
            partial.trace.validate().expect("the kept samples form a valid trace");
        }
        other => panic!("expected an interrupted run with its samples, got {other}"),
    }
}

mod frame_decoder {
    use edgescope::net::frame::{decode_frame, read_frame};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..4096), cap in 0u32..8192) {
            let decoded = decode_frame(&bytes, cap);
            let read = read_frame(&mut bytes.as_slice(), cap);
            // Both decoders agree on complete, well-formed frames.
            if let (Ok(Some((frame, _))), Ok(other)) = (&decoded, &read) {
                prop_assert_eq!(frame, other);
            }
            if let Ok(Some((_, used))) = decoded {
                prop_assert!(used <= bytes.len() && used >= 5);
            }
        }
    }
}
