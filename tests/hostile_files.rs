//! Hostile files: headers whose dimensions overflow or are zero, columns claiming 2^40 or 2^61 values,
//! `top_k * samples` overflowing, gzip bombs, forged ONNX initializers, flipped bits in a session, and numbers
//! JSON cannot hold. Each gets an error naming the file — never a panic, an abort or a changed figure.

mod common;

use std::io::Write;
use std::path::Path;

use edgescope::analysis::{Criterion, Policy};
use edgescope::data::Dataset;
use edgescope::record::columns::Column;
use edgescope::session::Session;

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

/// Writes an IDX image file and a valid label file beside it; returns the image path.
fn idx_pair(dir: &Path, images: &[u8]) -> std::path::PathBuf {
    let path = dir.join("images-idx3-ubyte");
    std::fs::write(&path, images).expect("write");
    std::fs::write(dir.join("labels-idx1-ubyte"), idx(&[2], &[0, 1])).expect("write");
    path
}

#[test]
fn idx_headers_that_overflow_or_hold_zero_sizes_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (dims, what) in [
        (vec![u32::MAX, u32::MAX, u32::MAX], "multiply past"),
        (vec![65_536, 65_536, 65_536, 65_536], "multiply past"),
        (vec![2, 0, 28], "zero dimension"),
        (vec![0, 28, 28], "zero dimension"),
        (vec![2, 28, 28], "promises"),
    ] {
        let path = idx_pair(dir.path(), &idx(&dims, &[0; 100]));
        let error = Dataset::open(&path).expect_err("refused").to_string();
        assert!(error.contains("images-idx3-ubyte") && error.contains(what), "{dims:?}: {error}");
    }
}

/// A minimal NPY v1 file.
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn npy_shapes_that_overflow_lie_or_hold_zero_sizes_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("labels.npy"), npy("<i8", "(2,)", &[0; 16])).expect("write");
    for shape in ["(1099511627776, 28, 28)", "(4611686018427387904, 4, 4)", "(2, 0, 28)", "(0, 28, 28)", "(3, 28, 28)"]
    {
        let path = dir.path().join("images.npy");
        std::fs::write(&path, npy("|u1", shape, &[0; 2 * 28 * 28])).expect("write");
        let error = Dataset::open(&path).expect_err("refused").to_string();
        assert!(error.contains("images.npy") && error.contains("NPY shape"), "{shape}: {error}");
    }
    // Labels claiming 2^40 entries.
    let images = dir.path().join("images.npy");
    std::fs::write(&images, npy("|u1", "(2, 28, 28)", &[0; 2 * 28 * 28])).expect("write");
    std::fs::write(dir.path().join("labels.npy"), npy("<i8", "(1099511627776,)", &[0; 16])).expect("write");
    let error = Dataset::open(&images).expect_err("refused").to_string();
    assert!(error.contains("labels.npy"), "{error}");
}

#[test]
fn a_gzip_bomb_stops_at_the_expansion_cap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&idx(&[80_000, 28, 28], &[])).expect("header");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..60 {
        encoder.write_all(&zeros).expect("zeros");
    }
    let compressed = encoder.finish().expect("gzip");
    assert!(compressed.len() < 200_000, "{} bytes", compressed.len());
    let path = dir.path().join("images-idx3-ubyte.gz");
    std::fs::write(&path, &compressed).expect("write");
    std::fs::write(dir.path().join("labels-idx1-ubyte.gz"), idx(&[2], &[0, 1])).expect("write");
    edgescope::data::set_max_decompressed_bytes(16 << 20);
    let error = Dataset::open(&path).expect_err("bomb").to_string();
    edgescope::data::set_max_decompressed_bytes(edgescope::data::DEFAULT_MAX_DECOMPRESSED_BYTES);
    assert!(error.contains("images-idx3-ubyte.gz") && error.contains("expands to more than 16 MiB"), "{error}");
}

/// Protobuf encoding helpers for forged ONNX files.
fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | 2), out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn forged_onnx(dims: &[i64]) -> Vec<u8> {
    let mut node = Vec::new();
    field(4, b"Relu", &mut node);
    let mut tensor = Vec::new();
    for &d in dims {
        varint(8, &mut tensor); // field 1, varint
        varint(d as u64, &mut tensor);
    }
    field(8, b"w", &mut tensor);
    let mut output = Vec::new();
    field(1, b"y", &mut output);
    let mut graph = Vec::new();
    field(1, &node, &mut graph);
    field(5, &tensor, &mut graph);
    field(12, &output, &mut graph);
    let mut model = Vec::new();
    field(7, &graph, &mut model);
    model
}

#[test]
fn onnx_initializers_whose_dimensions_overflow_are_refused() {
    let path = Path::new("forged.onnx");
    for dims in [vec![1 << 40, 1 << 40], vec![-1, 5], vec![i64::MAX, 4]] {
        let error = edgescope::model::onnx::inspect_bytes(path, &forged_onnx(&dims)).expect_err("forged").to_string();
        assert!(error.contains("forged.onnx") && error.contains("initializer"), "{dims:?}: {error}");
    }
    let fine = edgescope::model::onnx::inspect_bytes(path, &forged_onnx(&[3, 4])).expect("valid");
    assert_eq!(fine.parameter_count, 12);
}

fn fixture_session() -> serde_json::Value {
    let text = std::fs::read_to_string(common::fixture("sessions/v1.json")).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn load(value: &serde_json::Value) -> Result<Session, String> {
    Session::from_json(&value.to_string(), &common::fixture("sessions/edited.json")).map_err(|e| e.to_string())
}

#[test]
fn session_columns_claiming_huge_counts_or_overflowing_top_k_are_refused() {
    for (pointer, value) in [
        ("/runs/0/trace/exits/0/top_probs/len", serde_json::json!(1u64 << 40)),
        ("/runs/0/trace/exits/0/top_probs/len", serde_json::json!(1u64 << 61)),
        ("/runs/0/trace/labels/len", serde_json::json!(u64::MAX)),
        ("/runs/0/trace/exits/0/top_k", serde_json::json!(1u64 << 62)),
        ("/runs/0/trace/exits/0/top_k", serde_json::json!(17)),
        ("/runs/0/trace/num_classes", serde_json::json!(0)),
    ] {
        let mut session = fixture_session();
        *session.pointer_mut(pointer).expect(pointer) = value.clone();
        let error = load(&session).expect_err("refused");
        assert!(error.contains("edited.json"), "{pointer} = {value}: {error}");
    }
}

#[test]
fn no_single_bit_flip_in_a_saved_sessions_columns_changes_a_figure() {
    use base64::Engine as _;
    // Re-save the fixture so its columns carry checksums.
    let dir = tempfile::tempdir().expect("temp dir");
    let original = Session::load(&common::fixture("sessions/v1.json")).expect("fixture loads");
    let path = dir.path().join("saved.json");
    original.save(&path).expect("save");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    let reference = Session::from_json(&saved.to_string(), &path).expect("loads");
    let columns = [
        "/runs/0/trace/labels",
        "/runs/0/trace/preprocess_us",
        "/runs/0/trace/segment_latency_us/0",
        "/runs/0/trace/exits/0/top_classes",
        "/runs/0/trace/exits/0/top_probs",
        "/runs/0/trace/exits/0/entropy_nats",
        "/runs/1/trace/exits/0/top_probs",
        "/runs/2/trace/exits/0/entropy_nats",
    ];
    let (mut tried, mut refused) = (0, 0);
    for (c, pointer) in columns.iter().enumerate() {
        let data = saved.pointer(&format!("{pointer}/data")).and_then(|d| d.as_str()).expect(pointer);
        let raw = base64::engine::general_purpose::STANDARD.decode(data).expect("base64");
        // Every 7th bit across the compressed bytes, offset per column: hundreds of flips in all.
        for bit in (c..raw.len() * 8).step_by(7) {
            let mut flipped = raw.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let mut damaged = saved.clone();
            *damaged.pointer_mut(&format!("{pointer}/data")).expect("data") =
                serde_json::json!(base64::engine::general_purpose::STANDARD.encode(&flipped));
            tried += 1;
            match Session::from_json(&damaged.to_string(), &path) {
                Err(e) => {
                    refused += 1;
                    assert!(e.to_string().contains("saved.json"), "{e}");
                }
                Ok(session) => assert_eq!(session, reference, "{pointer} bit {bit} changed a figure silently"),
            }
        }
    }
    eprintln!("{tried} single-bit flips: {refused} refused as damaged, {} harmless (padding)", tried - refused);
    assert!(tried > 200 && refused > tried * 9 / 10, "{refused} of {tried}");
}

#[test]
fn non_finite_numbers_are_refused_on_save_and_reported_on_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut session = Session::load(&common::fixture("sessions/v1.json")).expect("fixture");
    let path = dir.path().join("s.json");
    session.save(&path).expect("a finite session saves");
    let before = std::fs::read(&path).expect("read");
    // `verify --threshold inf --save` used to write null here.
    session.policies.insert("tiny/ee".into(), Policy::uniform(Criterion::Entropy, f64::INFINITY, 1));
    let error = session.save(&path).expect_err("inf refused").to_string();
    assert!(
        error.contains("s.json") && error.contains("policies.tiny/ee") && error.contains("not a finite"),
        "{error}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), before, "the file on disk is untouched");
    session.policies.clear();
    session.runs[0].trace.exits[0].entropy_nats[3] = f32::NAN;
    let error = session.save(&path).expect_err("NaN refused").to_string();
    assert!(error.contains("entropy_nats[3]"), "{error}");

    // Reading: a null where a threshold belongs, and a NaN inside a column, are clear errors naming the file.
    let mut value = fixture_session();
    value["policies"] = serde_json::json!({"tiny/ee": {"criterion": "entropy", "thresholds": [null]}});
    let error = load(&value).expect_err("null threshold");
    assert!(error.contains("edited.json"), "{error}");
    let mut value = fixture_session();
    let n = value["runs"][0]["trace"]["preprocess_us"]["len"].as_u64().expect("len") as usize;
    let mut times = vec![1.0f32; n];
    times[n - 1] = f32::INFINITY;
    value["runs"][0]["trace"]["preprocess_us"] = serde_json::to_value(Column::encode(&times)).expect("column");
    let error = load(&value).expect_err("inf in a column");
    assert!(error.contains("edited.json") && error.contains("non-finite"), "{error}");
}

#[test]
fn sessions_with_and_without_column_checksums_load_to_the_same_figures() {
    // Version 1 files gained an optional `crc32` per column; both forms are fixtures.
    let plain = Session::load(&common::fixture("sessions/v1.json")).expect("v1 without checksums");
    let checked = Session::load(&common::fixture("sessions/v1-checksums.json")).expect("v1 with checksums");
    assert_eq!(plain, checked);
    let text = std::fs::read_to_string(common::fixture("sessions/v1-checksums.json")).expect("read");
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
    let crc = value.pointer_mut("/runs/0/trace/exits/0/top_probs/crc32").expect("a checksum");
    *crc = serde_json::json!(crc.as_u64().expect("number") ^ 1);
    let error =
        Session::from_json(&value.to_string(), &common::fixture("sessions/v1-checksums.json")).expect_err("damaged");
    assert!(error.to_string().contains("damaged"), "{error}");
}
