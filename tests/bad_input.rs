//! Bad input gets one clear error naming the file and what to do — never a panic, nothing half-written.

mod common;

use std::sync::Arc;

use common::fixture;
use edgescope::data::Dataset;
use edgescope::model::Variant;
use edgescope::record::{RunMode, RunOutput};
use edgescope::runtime::{CancelToken, Job, LocalRunner, Runner, check_compatible};
use edgescope::session::Session;

fn message(error: impl std::fmt::Display) -> String {
    error.to_string()
}

#[test]
fn truncated_and_garbage_onnx_files_name_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = std::fs::read(fixture("tiny_base.onnx")).expect("fixture");
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a model at all").expect("write");
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").expect("write");
    for path in [&truncated, &garbage, &empty] {
        let error = message(Variant::open(path).expect_err("must be refused"));
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("not a usable ONNX model"), "{error}");
    }
}

#[test]
fn manifests_naming_missing_files_or_outputs_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["tiny_ee_seg1.onnx", "tiny_ee_seg2.onnx"] {
        std::fs::copy(fixture(file), dir.path().join(file)).expect("copy");
    }
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let header = "format = \"edgescope-variant\"\nversion = 1\nname = \"x\"\n";
    let missing_file =
        write("missing.toml", &format!("{header}[[segments]]\nfile = \"nope.onnx\"\nexit = \"logits\"\n"));
    let error = message(Variant::open(&missing_file).expect_err("missing segment"));
    assert!(
        error.contains("missing.toml") && error.contains("nope.onnx") && error.contains("does not exist"),
        "{error}"
    );

    let missing_output = write(
        "output.toml",
        &format!(
            "{header}[[segments]]\nfile = \"tiny_ee_seg1.onnx\"\nexit = \"exit_logits\"\ncarry = \"feature\"\n[[segments]]\nfile = \"tiny_ee_seg2.onnx\"\nexit = \"logits\"\n"
        ),
    );
    let error = message(Variant::open(&missing_output).expect_err("missing output"));
    assert!(error.contains("no output named \"feature\"") && error.contains("features"), "{error}");

    let newer = write("newer.toml", "format = \"edgescope-variant\"\nversion = 9\nname = \"x\"\nsegments = []\n");
    let error = message(Variant::open(&newer).expect_err("newer version"));
    assert!(error.contains("version 9") && error.contains("update edgescope"), "{error}");

    let not_toml = write("broken.toml", "format = = =");
    assert!(message(Variant::open(&not_toml).expect_err("broken")).contains("broken.toml"));
}

#[test]
fn images_that_do_not_fit_the_model_are_refused_before_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = dir.path().join("dataset.toml");
    let root = fixture("folder");
    std::fs::write(
        &spec,
        format!(
            "format = \"edgescope-dataset\"\nversion = 1\nname = \"big\"\nkind = \"folder\"\nroot = {root:?}\n[preprocess]\nresize = [32, 32]\n"
        ),
    )
    .expect("write");
    let dataset = Dataset::open(&spec).expect("dataset opens");
    let variant = Variant::open(&fixture("tiny_base.toml")).expect("variant");
    let error = message(check_compatible(&variant, &dataset).expect_err("shape mismatch"));
    assert!(error.contains("dataset.toml") && error.contains("[1, 1, 32, 32]") && error.contains("28"), "{error}");
}

#[test]
fn labels_out_of_range_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 2 images of 28x28 and labels [3, 12] for a 10-class model.
    let images = dir.path().join("images.npy");
    let labels = dir.path().join("labels.npy");
    write_npy(&images, "|u1", &[2, 28, 28], &vec![0u8; 2 * 28 * 28]);
    let label_bytes: Vec<u8> = [3i64, 12].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(&labels, "<i8", &[2], &label_bytes);
    let dataset = Dataset::open(&images).expect("dataset without class names opens");
    let variant = Variant::open(&fixture("tiny_base.toml")).expect("variant");
    let error = message(check_compatible(&variant, &dataset).expect_err("label 12"));
    assert!(error.contains("label 12") && error.contains("10 classes"), "{error}");

    // With class names, the spec itself is refused.
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "format = \"edgescope-dataset\"\nversion = 1\nname = \"n\"\nkind = \"npy\"\nimages = \"images.npy\"\nlabels = \"labels.npy\"\nclasses = [\"a\", \"b\", \"c\", \"d\"]\n",
    )
    .expect("write");
    let error = message(Dataset::open(&spec).expect_err("label 12 of 4 classes"));
    assert!(error.contains("spec.toml") && error.contains("label 12"), "{error}");
}

#[test]
fn an_unreadable_image_is_skipped_naming_the_file_and_a_folder_of_them_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let class = dir.path().join("a");
    std::fs::create_dir_all(&class).expect("mkdir");
    std::fs::copy(fixture("folder/0_T-shirt_top/test005_gray.png"), class.join("1.png")).expect("copy");
    std::fs::write(class.join("2.png"), b"\x89PNG\r\n\x1a\n definitely not a png").expect("write");
    std::fs::create_dir_all(dir.path().join("b")).expect("mkdir");
    let job = |root: &std::path::Path| Job {
        variant: Arc::new(Variant::open(&fixture("tiny_base.toml")).expect("variant")),
        dataset: Arc::new(Dataset::open(root).expect("folder opens")),
        settings: common::quick_settings(),
        mode: RunMode::Trace,
        reference: None,
    };
    let output = LocalRunner::new().run(&job(dir.path()), &mut |_| {}, &CancelToken::new()).expect("the run goes on");
    let RunOutput::Trace(run) = output else { panic!("a trace") };
    assert!(run.info.complete);
    assert_eq!(run.trace.len(), 1);
    let skipped = &run.info.skipped[0];
    assert_eq!(skipped.index, 1);
    assert!(skipped.source.as_deref().is_some_and(|s| s.ends_with("2.png")), "{skipped:?}");
    assert!(skipped.reason.contains("unreadable image"), "{skipped:?}");

    // A folder whose images are all unreadable is refused when opened, naming the first.
    std::fs::remove_file(class.join("1.png")).expect("remove");
    std::fs::write(class.join("0.png"), b"\x89PNG\r\n\x1a\n not one either").expect("write");
    let error = message(Dataset::open(dir.path()).expect_err("no readable image"));
    assert!(error.contains("0.png") && error.contains("every other image"), "{error}");
}

#[test]
fn truncated_idx_and_npy_files_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = std::fs::read(fixture("fmnist500/images.npy")).expect("fixture");
    let npy = dir.path().join("images.npy");
    std::fs::write(&npy, &bytes[..bytes.len() - 100]).expect("write");
    std::fs::copy(fixture("fmnist500/labels.npy"), dir.path().join("labels.npy")).expect("copy");
    let error = message(Dataset::open(&npy).expect_err("truncated npy"));
    assert!(error.contains("images.npy"), "{error}");

    let gz = std::fs::read(fixture("fmnist500/images-idx3-ubyte.gz")).expect("fixture");
    let idx = dir.path().join("images-idx3-ubyte.gz");
    std::fs::write(&idx, &gz[..gz.len() / 2]).expect("write");
    std::fs::copy(fixture("fmnist500/labels-idx1-ubyte.gz"), dir.path().join("labels-idx1-ubyte.gz")).expect("copy");
    let error = message(Dataset::open(&idx).expect_err("truncated idx"));
    assert!(error.contains("images-idx3-ubyte.gz"), "{error}");
}

#[test]
fn sessions_newer_or_corrupt_are_refused_and_saves_are_atomic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let newer = dir.path().join("newer.json");
    std::fs::write(&newer, r#"{"format": "edgescope-session", "version": 99}"#).expect("write");
    let error = message(Session::load(&newer).expect_err("newer"));
    assert!(
        error.contains("newer.json") && error.contains("version 99") && error.contains("update edgescope"),
        "{error}"
    );

    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, r#"{"format": "edgescope-session", "version": 1, "runs": [{"info": {}, "trace": 5}]}"#)
        .expect("write");
    assert!(message(Session::load(&corrupt).expect_err("corrupt")).contains("corrupt.json"));

    // A save that cannot complete leaves the previous file untouched.
    let target = dir.path().join("keep.json");
    Session::default().save(&target).expect("first save");
    let before = std::fs::read(&target).expect("read");
    let blocked = dir.path().join("blocked").join("session.json");
    std::fs::write(dir.path().join("blocked"), b"a file where a folder should be").expect("write");
    assert!(Session::default().save(&blocked).is_err());
    assert_eq!(std::fs::read(&target).expect("read"), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

/// Writes a minimal NPY v1 file.
fn write_npy(path: &std::path::Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).expect("write npy");
}
