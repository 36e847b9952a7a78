//! Remote per-operator profiling over a real loopback runner, an older runner told apart with a clear
//! message, and the protocol fixtures of every message revision.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgescope::data::Dataset;
use edgescope::model::Variant;
use edgescope::net::frame::{self, Frame, PROTOCOL_VERSION};
use edgescope::net::protocol::{ClientMessage, FEATURE_PROFILE, RunnerMessage};
use edgescope::net::secure::{self, SecureReader, SecureWriter};
use edgescope::net::{RemoteRunner, RunnerServer, ServerConfig};
use edgescope::record::{ProfileSettings, VariantProfile};
use edgescope::runtime::CancelToken;
use edgescope::runtime::profile::profile_variant;

const TOKEN: &[u8] = b"test-token-0123456789abcdef";

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn inputs() -> (Variant, Dataset) {
    let variant = Variant::open(&repo("models/resnet/dq.toml")).expect("zoo variant");
    let dataset = Dataset::open(&repo("tests/fixtures/fmnist500")).expect("IDX fixture");
    (variant, dataset)
}

const SETTINGS: ProfileSettings = ProfileSettings { samples: 30, warmup: 5, intra_threads: 1 };

#[test]
fn a_loopback_runner_profiles_like_this_machine() {
    let cache = tempfile::tempdir().expect("temp dir");
    let config = ServerConfig::new(TOKEN.to_vec(), cache.path().to_path_buf());
    let server = RunnerServer::bind("127.0.0.1:0", config).expect("bind loopback").spawn().expect("serve");
    let (variant, dataset) = inputs();
    let mut runner = RemoteRunner::new(&format!("tcp://{}", server.address), TOKEN.to_vec());
    let mut progress = Vec::new();
    let remote = runner
        .profile(&variant, &dataset, &SETTINGS, &mut |p| progress.push(p), &CancelToken::new())
        .expect("remote profile");
    let local = profile_variant(&variant, &dataset, &SETTINGS, &mut |_| {}, &CancelToken::new()).expect("local");

    assert_eq!(remote.variant, "resnet/dq");
    assert!(remote.device.contains(&server.address.to_string()), "{}", remote.device);
    assert_eq!(remote.runs + remote.disturbed_runs, 30);
    assert!(remote.complete);
    assert_eq!(progress.last().map(|p| (p.done, p.total)), Some((30, 30)), "progress streamed");
    // The user sees their own file names, not the runner's cache.
    assert_eq!(remote.segments[0].path, variant.segments[0].path);
    // The same graph on the same ONNX Runtime: the same operator types and node counts as a local profile.
    let shape = |p: &VariantProfile| {
        let mut types: Vec<(String, f64)> = p.op_types.iter().map(|o| (o.op_type.clone(), o.nodes_per_run)).collect();
        types.sort_by(|a, b| a.0.cmp(&b.0));
        types
    };
    assert_eq!(shape(&remote), shape(&local));
    assert!(remote.op_type_us("ConvInteger") > 0.0 && remote.op_type_us("DynamicQuantizeLinear") > 0.0);
    let segment = &remote.segments[0];
    let parts: f64 = segment.remainder_parts().iter().map(|(_, us)| us).sum();
    assert!((parts - segment.remainder_us()).abs() < 1e-6);
    assert!(segment.explained() > 0.5 && segment.explained() <= 1.0, "{}", segment.explained());
    assert!(segment.plain_mean_us > 0.0);

    // The runner serves a run after a profile on the same cache (nothing left busy).
    let again = runner.profile(&variant, &dataset, &SETTINGS, &mut |_| {}, &CancelToken::new());
    assert!(again.is_ok(), "{:?}", again.err());
}

/// A runner of message revision 0: it welcomes without `features`, and answers anything it cannot parse as a
/// real one does (`Failed`, "malformed message"). It records what it receives.
fn start_old_runner() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    std::thread::spawn(move || {
        let Some(Ok(mut stream)) = listener.incoming().next() else { return };
        let _ = frame::read_preamble(&mut stream);
        let _ = frame::write_preamble(&mut stream);
        let Ok(keys) = secure::server_handshake(&mut stream, TOKEN, PROTOCOL_VERSION) else { return };
        let mut writer = SecureWriter::new(stream.try_clone().expect("clone"), keys.clone());
        let mut reader = SecureReader::new(stream, keys);
        let welcome = std::fs::read(repo("tests/fixtures/protocol/revision0/welcome.json")).expect("fixture");
        while let Ok(Frame::Message(bytes)) = frame::read_frame(&mut reader, 1 << 20) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let reply = if text.contains("\"Hello\"") {
                welcome.clone()
            } else {
                br#"{"type":"Failed","error":"malformed message: unknown variant"}"#.to_vec()
            };
            log.lock().expect("log").push(text);
            if frame::write_frame(&mut writer, &Frame::Message(reply)).is_err() {
                break;
            }
        }
    });
    (address, received)
}

#[test]
fn an_older_runner_is_told_to_update_before_anything_is_sent() {
    let (address, received) = start_old_runner();
    let (variant, dataset) = inputs();
    let mut runner = RemoteRunner::new(&address, TOKEN.to_vec()).with_reply_timeout(Duration::from_secs(5));
    let error = runner
        .profile(&variant, &dataset, &SETTINGS, &mut |_| {}, &CancelToken::new())
        .expect_err("an old runner cannot profile")
        .to_string();
    assert!(error.contains("this runner cannot profile") && error.contains("update edgescope-runner"), "{error}");
    assert!(error.contains(&address), "names the runner: {error}");
    std::thread::sleep(Duration::from_millis(100));
    let received = received.lock().expect("log").clone();
    assert_eq!(received.len(), 1, "only Hello reached the old runner: {received:?}");
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(repo("tests/fixtures/protocol").join(path)).expect("protocol fixture")
}

#[test]
fn every_message_revision_reads() {
    // Revision 0: a Welcome without features reads, with none.
    match serde_json::from_str::<RunnerMessage>(&fixture("revision0/welcome.json")).expect("revision 0 Welcome") {
        RunnerMessage::Welcome { features, device, .. } => {
            assert!(features.is_empty());
            assert_eq!(device.host, "raspberrypi");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        serde_json::from_str::<RunnerMessage>(&fixture("revision0/failed_unknown.json")),
        Ok(RunnerMessage::Failed { .. })
    ));
    assert!(matches!(
        serde_json::from_str::<ClientMessage>(&fixture("revision0/offer.json")),
        Ok(ClientMessage::Offer { .. })
    ));
    // Revision 1.
    match serde_json::from_str::<RunnerMessage>(&fixture("revision1/welcome.json")).expect("revision 1 Welcome") {
        RunnerMessage::Welcome { features, .. } => assert_eq!(features, [FEATURE_PROFILE]),
        other => panic!("{other:?}"),
    }
    match serde_json::from_str::<ClientMessage>(&fixture("revision1/profile.json")).expect("Profile") {
        ClientMessage::Profile { job } => {
            assert_eq!(job.settings, ProfileSettings { samples: 200, warmup: 20, intra_threads: 1 });
            assert_eq!(job.variant.name, "resnet/dq");
            // What this build sends reads back the same.
            let text = serde_json::to_string(&ClientMessage::Profile { job: job.clone() }).expect("json");
            assert_eq!(serde_json::from_str::<ClientMessage>(&text).expect("again"), ClientMessage::Profile { job });
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        serde_json::from_str::<RunnerMessage>(&fixture("revision1/profile_progress.json")).expect("progress"),
        RunnerMessage::ProfileProgress { done: 120, total: 200 }
    );
    match serde_json::from_str::<RunnerMessage>(&fixture("revision1/profile_result.json")).expect("result") {
        RunnerMessage::ProfileResult { profile } => {
            assert_eq!(profile.runs, 196);
            assert_eq!(profile.segments[0].nodes[0].op_type, "ConvInteger");
            assert!((profile.operator_sum_us() - 4323.4).abs() < 1e-9);
        }
        other => panic!("{other:?}"),
    }
    // This build announces that it profiles.
    let welcome = RunnerMessage::Welcome {
        runner: "edgescope-runner".into(),
        device: Box::default(),
        features: edgescope::net::protocol::runner_features(),
    };
    let value = serde_json::to_value(&welcome).expect("json");
    assert_eq!(value["features"], serde_json::json!(["profile"]));
}
