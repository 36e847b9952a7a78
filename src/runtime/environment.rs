//! Finds and loads libonnxruntime once per process.
//!
//! Search order: `ORT_DYLIB_PATH` (e.g. a Jetson build with CUDA), a `libonnxruntime.so*` beside the executable
//! (or one folder up, for test binaries in `target/*/deps`), then the library build.rs cached at build time.
//! A missing or unloadable library is an error that says what to do, never a panic.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::RuntimeError;

/// The ONNX Runtime release build.rs fetched.
pub const BUNDLED_ORT_VERSION: &str = env!("EDGESCOPE_ORT_VERSION");

static ENVIRONMENT: OnceLock<Result<(ort::environment::Environment, PathBuf), String>> = OnceLock::new();

/// Candidate library paths, in search order.
pub fn library_candidates() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(path));
        return candidates;
    }
    let versioned = format!("libonnxruntime.so.{BUNDLED_ORT_VERSION}");
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join(&versioned));
            candidates.push(dir.join("libonnxruntime.so"));
        }
    }
    let built = env!("EDGESCOPE_ORT_DYLIB");
    if !built.is_empty() {
        candidates.push(PathBuf::from(built));
    }
    candidates
}

fn load() -> Result<(ort::environment::Environment, PathBuf), String> {
    let candidates = library_candidates();
    let Some(library) = candidates.iter().find(|p| p.is_file()).cloned() else {
        let searched: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "libonnxruntime {BUNDLED_ORT_VERSION} was not found (searched: {}). Rebuild with network access so the \
             build fetches it, set EDGESCOPE_ORT_WHEEL to an onnxruntime wheel when building offline, or set \
             ORT_DYLIB_PATH to a libonnxruntime 1.31 or newer",
            if searched.is_empty() { "nothing".into() } else { searched.join(", ") }
        ));
    };
    let builder = ort::init_from(&library).map_err(|e| {
        format!(
            "cannot load ONNX Runtime from {}: {e}; set ORT_DYLIB_PATH to a libonnxruntime 1.31 or newer",
            library.display()
        )
    })?;
    let environment = builder
        .with_name("edgescope")
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", library.display()))?;
    Ok((environment, library))
}

/// The process-wide ONNX Runtime environment (loaded on first use).
pub fn ort_environment() -> Result<&'static ort::environment::Environment, RuntimeError> {
    match ENVIRONMENT.get_or_init(load) {
        Ok((environment, _)) => Ok(environment),
        Err(message) => Err(RuntimeError::OrtUnavailable(message.clone())),
    }
}

/// Path of the loaded library (after a successful [`ort_environment`]).
pub fn loaded_library() -> Option<&'static Path> {
    ENVIRONMENT.get().and_then(|r| r.as_ref().ok()).map(|(_, path)| path.as_path())
}

/// The loaded ONNX Runtime's version, read from its build information (`git-branch=rel-1.31.1`).
pub fn ort_version() -> Result<String, RuntimeError> {
    ort_environment()?;
    let info = ort::info();
    let version = info
        .split([',', ' '])
        .find_map(|part| part.strip_prefix("git-branch=rel-"))
        .map(str::to_string)
        .or_else(|| {
            loaded_library()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("libonnxruntime.so."))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    Ok(version)
}

/// Execution providers compiled into the loaded library (`CPUExecutionProvider`, `CUDAExecutionProvider`, ...).
pub fn available_providers() -> Result<Vec<String>, RuntimeError> {
    use ort::ep::ExecutionProvider;
    ort_environment()?;
    let mut providers = vec!["CPUExecutionProvider".to_string()];
    if ort::ep::CUDA::is_available().unwrap_or(false) {
        providers.push("CUDAExecutionProvider".into());
    }
    if ort::ep::TensorRT::is_available().unwrap_or(false) {
        providers.push("TensorrtExecutionProvider".into());
    }
    Ok(providers)
}
