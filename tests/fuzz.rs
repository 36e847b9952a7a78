//! Fuzz targets with a fixed budget inside `cargo test`: the frame decoder, the secure record reader, wire
//! messages (runner results with their compact columns), session files, IDX / NPY datasets and ONNX
//! inspection. Inputs are real files and messages with random bytes changed, inserted, or cut, plus pure
//! noise. A panic or an abort fails the test; every input must give a value or an error.
//!
//! The default suite runs a small budget per target; the `#[ignore]` twin runs `EDGESCOPE_FUZZ_CASES` inputs
//! per target (default 20 000; the dataset target at most 5 000): `cargo test --test fuzz -- --ignored --nocapture`.

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use edgescope::net::frame::{decode_frame, read_frame};
use edgescope::net::protocol::{ClientMessage, RunnerMessage};

/// Cases for the default suite.
const QUICK_CASES: u32 = 1000;

fn long_cases() -> u32 {
    std::env::var("EDGESCOPE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

/// Edits applied to a seed input: (position fraction, new byte) pairs, and an optional cut.
#[derive(Clone, Debug)]
struct Mutation {
    edits: Vec<(f64, u8, u8)>,
    cut: Option<f64>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (proptest::collection::vec((0.0f64..1.0, any::<u8>(), 0u8..4), 1..8), proptest::option::of(0.0f64..1.0))
        .prop_map(|(edits, cut)| Mutation { edits, cut })
}

/// Applies a mutation: each edit replaces, inserts, deletes or bit-flips a byte.
fn apply(seed: &[u8], mutation: &Mutation) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for &(at, byte, kind) in &mutation.edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let index = ((at * bytes.len() as f64) as usize).min(bytes.len() - 1);
        match kind {
            0 => bytes[index] = byte,
            1 => bytes.insert(index, byte),
            2 => {
                bytes.remove(index);
            }
            _ => bytes[index] ^= 1 << (byte % 8),
        }
    }
    if let Some(cut) = mutation.cut {
        // Cut only sometimes far into the input: a quarter of the cuts keep everything.
        if cut < 0.75 {
            bytes.truncate((cut / 0.75 * bytes.len() as f64) as usize);
        }
    }
    bytes
}

fn run(name: &str, cases: u32, seeds: &[Vec<u8>], target: &dyn Fn(&[u8])) {
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let strategy = (0..seeds.len(), mutation(), proptest::collection::vec(any::<u8>(), 0..512), 0u8..10);
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |(seed, mutation, noise, pick)| {
        let input = if pick == 0 { noise } else { apply(&seeds[seed], &mutation) };
        target(&input);
        Ok(())
    });
    eprintln!(
        "fuzz {name}: {cases} inputs in {:.1} s, {}",
        started.elapsed().as_secs_f64(),
        if result.is_ok() { "0 crashes" } else { "FAILED" }
    );
    if let Err(e) = result {
        panic!("fuzz target {name} failed: {e}");
    }
}

fn frame_seeds() -> Vec<Vec<u8>> {
    let mut bytes = Vec::new();
    edgescope::net::frame::write_frame(
        &mut bytes,
        &edgescope::net::frame::Frame::Message(b"{\"type\":\"Cancel\"}".to_vec()),
    )
    .expect("frame");
    edgescope::net::frame::write_frame(&mut bytes, &edgescope::net::frame::Frame::Data(vec![1; 40])).expect("frame");
    vec![bytes]
}

fn frames(bytes: &[u8]) {
    for cap in [0, 64, 1 << 20] {
        let _ = decode_frame(bytes, cap);
        let mut reader = bytes;
        while read_frame(&mut reader, cap).is_ok() {}
    }
}

fn message_seeds() -> Vec<Vec<u8>> {
    let session: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("sessions/v1.json")).expect("fixture"))
            .expect("json");
    let run = session["runs"][0].clone();
    let mut seeds = vec![
        serde_json::to_vec(&serde_json::json!({"type": "TraceResult", "run": run})).expect("json"),
        serde_json::to_vec(&serde_json::json!({"type": "Partial", "first_sample": 0, "samples": session["runs"][1]}))
            .expect("json"),
        br#"{"type":"Need","hashes":["aa"]}"#.to_vec(),
        br#"{"type":"Offer","files":[{"hash":"ab","size":10}]}"#.to_vec(),
    ];
    seeds.push(br#"{"type":"Upload","hash":"abababababababababababababababababababababababababababababababab","size":18446744073709551615}"#.to_vec());
    seeds
}

fn messages(bytes: &[u8]) {
    let _ = serde_json::from_slice::<ClientMessage>(bytes);
    match serde_json::from_slice::<RunnerMessage>(bytes) {
        Ok(RunnerMessage::TraceResult { run }) => {
            let _ = run.decode();
        }
        Ok(RunnerMessage::Partial { samples, .. }) => {
            let _ = samples.decode();
        }
        Ok(RunnerMessage::DynamicResult { run }) => {
            let _ = run.decode();
        }
        _ => {}
    }
}

fn session_seeds() -> Vec<Vec<u8>> {
    vec![std::fs::read(common::fixture("sessions/v1.json")).expect("fixture")]
}

fn sessions(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = edgescope::session::Session::from_json(text, std::path::Path::new("/nonexistent/fuzz.json"));
    }
}

fn dataset_seeds() -> Vec<Vec<u8>> {
    let npy = std::fs::read(common::fixture("fmnist500/images.npy")).expect("fixture");
    let idx_gz = std::fs::read(common::fixture("fmnist500/images-idx3-ubyte.gz")).expect("fixture");
    let mut idx = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(idx_gz.as_slice()), &mut idx).expect("gunzip");
    // Headers matter most: keep the seeds short so edits land there.
    vec![npy[..2048].to_vec(), idx[..2048].to_vec(), npy, idx]
}

fn datasets(bytes: &[u8], dir: &std::path::Path) {
    // The same bytes as an NPY and as an IDX image file, with valid labels of another length beside them.
    let npy = dir.join("images.npy");
    let idx = dir.join("images-idx3-ubyte");
    if std::fs::write(&npy, bytes).is_ok() {
        let _ = edgescope::data::Dataset::open(&npy);
    }
    if std::fs::write(&idx, bytes).is_ok() {
        let _ = edgescope::data::Dataset::open(&idx);
    }
}

fn onnx_seeds() -> Vec<Vec<u8>> {
    ["tiny_base.onnx", "tiny_ee_seg1.onnx", "tiny_dq.onnx"]
        .iter()
        .map(|f| std::fs::read(common::fixture(f)).expect("fixture"))
        .collect()
}

fn onnx(bytes: &[u8]) {
    let _ = edgescope::model::onnx::inspect_bytes(std::path::Path::new("/nonexistent/fuzz.onnx"), bytes);
}

fn dataset_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(common::fixture("fmnist500/labels.npy"), dir.path().join("labels.npy")).expect("labels");
    let gz = std::fs::read(common::fixture("fmnist500/labels-idx1-ubyte.gz")).expect("fixture");
    let mut labels = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut labels).expect("gunzip");
    std::fs::write(dir.path().join("labels-idx1-ubyte"), labels).expect("labels");
    dir
}

/// Keys of a real handshake over loopback, and records sealed with the client's half.
fn record_keys() -> (edgescope::net::secure::Keys, Vec<Vec<u8>>) {
    use edgescope::net::secure;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        secure::server_handshake(&mut stream, b"fuzz token 0123456789", 2).expect("server handshake")
    });
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let client = secure::client_handshake(&mut stream, b"fuzz token 0123456789", 2).expect("client handshake");
    let server = server.join().expect("server");
    let mut sealed = Vec::new();
    let mut writer = secure::SecureWriter::new(&mut sealed, client);
    std::io::Write::write_all(&mut writer, &frame_seeds()[0]).expect("write");
    std::io::Write::flush(&mut writer).expect("flush");
    std::io::Write::write_all(&mut writer, &vec![9u8; 70_000]).expect("write");
    std::io::Write::flush(&mut writer).expect("flush");
    drop(writer);
    (server, vec![sealed])
}

fn all_targets(cases: u32) {
    run("frame decoder", cases, &frame_seeds(), &frames);
    let (keys, sealed) = record_keys();
    run("secure records", cases, &sealed, &|bytes| {
        let mut reader = edgescope::net::secure::SecureReader::new(bytes, keys.clone());
        let mut plain = Vec::new();
        let _ = std::io::Read::read_to_end(&mut reader, &mut plain);
        let _ = read_frame(&mut plain.as_slice(), 1 << 20);
    });
    run("wire messages", cases, &message_seeds(), &messages);
    run("session files", cases / 3, &session_seeds(), &sessions);
    let dir = dataset_dir();
    // Each input is two files written and opened: the slowest target, capped.
    run("IDX/NPY datasets", (cases / 3).min(5000), &dataset_seeds(), &|bytes| datasets(bytes, dir.path()));
    run("ONNX inspection", cases, &onnx_seeds(), &onnx);
}

#[test]
fn fuzz_targets_with_a_fixed_budget() {
    all_targets(QUICK_CASES);
}

#[test]
#[ignore = "long fuzz run: EDGESCOPE_FUZZ_CASES inputs per target (default 20 000)"]
fn fuzz_targets_long() {
    all_targets(long_cases());
}
