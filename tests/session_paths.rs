//! A session's paths resolve from any working directory, through a relative path and through symlinks, and
//! saving it back keeps them right. Its own test binary: it changes the working directory.

mod common;

use std::path::{Path, PathBuf};

use edgescope::session::{DatasetEntry, Session, VariantEntry};

fn session_with(model: &Path, dataset: &Path) -> Session {
    Session {
        variants: vec![VariantEntry { name: "tiny/base".into(), path: model.to_path_buf(), ..Default::default() }],
        datasets: vec![DatasetEntry { name: "fmnist500".into(), path: dataset.to_path_buf(), ..Default::default() }],
        ..Default::default()
    }
}

#[cfg(unix)]
#[test]
fn paths_resolve_from_any_folder_through_relative_paths_and_symlinks() {
    let root = tempfile::tempdir().expect("temp dir");
    let root = std::fs::canonicalize(root.path()).expect("real temp dir");
    let project = root.join("real/project");
    for dir in ["models", "sessions", "data"] {
        std::fs::create_dir_all(project.join(dir)).expect("mkdir");
    }
    let model = project.join("models/tiny_base.onnx");
    std::fs::copy(common::fixture("tiny_base.onnx"), &model).expect("copy");
    let dataset = project.join("data/labels.npy");
    std::fs::copy(common::fixture("fmnist500/labels.npy"), &dataset).expect("copy");
    let saved = project.join("sessions/s.json");
    session_with(&model, &dataset).save(&saved).expect("save");
    let text = std::fs::read_to_string(&saved).expect("read");
    assert!(text.contains("../models/tiny_base.onnx"), "stored relative to the session: {text}");

    // A symlink to the sessions folder elsewhere, and a working directory that is neither.
    std::os::unix::fs::symlink(project.join("sessions"), root.join("link")).expect("symlink");
    std::os::unix::fs::symlink(&saved, root.join("file-link.json")).expect("symlink");
    std::fs::create_dir_all(root.join("elsewhere/deeper")).expect("mkdir");
    let previous = std::env::current_dir().expect("cwd");
    std::env::set_current_dir(root.join("elsewhere/deeper")).expect("chdir");
    let check = |path: &str| {
        let session = Session::load(Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(session.variants[0].path, model, "{path}");
        assert_eq!(session.datasets[0].path, dataset, "{path}");
        session
    };
    // Lexically, link/../models would be root/models, which does not exist; the kernel goes to the project.
    let through_link = check("../../link/s.json");
    check("../../file-link.json");
    check(&saved.display().to_string());
    // Saving through the relative, symlinked path writes the real file (the links stay links) with the same
    // relative paths, so it opens again from anywhere.
    through_link.save(Path::new("../../link/s.json")).expect("save through the link");
    through_link.save(Path::new("../../file-link.json")).expect("save through the file link");
    assert!(std::fs::symlink_metadata(root.join("file-link.json")).expect("meta").file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&saved).expect("read"), text, "the same paths, byte for byte");
    std::env::set_current_dir(&previous).expect("chdir back");
    let again = Session::load(&PathBuf::from(&saved)).expect("loads");
    assert_eq!(again.variants[0].path, model);
}
