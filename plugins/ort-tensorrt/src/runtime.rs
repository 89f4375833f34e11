//! Finding and initialising the ONNX Runtime shared library, once per process.
//!
//! Search order: `ORT_DYLIB_PATH` (a file), then `libonnxruntime.so*` beside this plugin's own
//! library, then `<user data dir>/irtdb/onnxruntime/`. The first existing file is loaded; if it
//! fails, the error names it (we do not silently try the next one: a broken install should be
//! fixed, not hidden).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The initialised runtime.
#[derive(Debug)]
pub struct Runtime {
    pub env: ort::environment::Environment,
    pub library: PathBuf,
}

/// The ONNX Runtime release this plugin is built and tested against (`ort` 2.0.0-rc.15's API);
/// scripts/setup-onnxruntime.sh downloads the same one. Everything else names the library
/// without a version (`libonnxruntime.so`, a link the setup script makes).
pub const ONNXRUNTIME_VERSION: &str = "1.32.0";

/// The file names looked for in each folder, most general first.
fn lib_names() -> [String; 3] {
    [
        "libonnxruntime.so".into(),
        "libonnxruntime.so.1".into(),
        format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"),
    ]
}

/// The folder holding this plugin's shared library, found with `dladdr` on one of its symbols.
fn own_dir() -> Option<PathBuf> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address; `info` is a valid out-pointer.
    let ok = unsafe { libc::dladdr(own_dir as *const libc::c_void, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returned a NUL-terminated path.
    let path = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
        path.to_bytes(),
    ));
    path.canonicalize().unwrap_or(path).parent().map(Path::to_path_buf)
}

/// The places searched, in order, for messages.
pub fn candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        c.push(PathBuf::from(p));
    }
    let mut dirs = Vec::new();
    dirs.extend(own_dir());
    dirs.extend(dirs::data_dir().map(|d| d.join("irtdb").join("onnxruntime")));
    for d in dirs {
        c.extend(lib_names().iter().map(|n| d.join(n)));
    }
    c
}

fn init() -> Result<Runtime, String> {
    let candidates = candidates();
    let Some(library) = candidates.iter().find(|p| p.is_file()).cloned() else {
        return Err(format!(
            "ONNX Runtime library not found; looked in:\n{}\nset ORT_DYLIB_PATH to \
             libonnxruntime.so.{v} (from the PyPI wheel onnxruntime=={v}; \
             scripts/setup-onnxruntime.sh fetches it), or put it beside the plugin",
            candidates
                .iter()
                .map(|p| format!("  - {}", p.display()))
                .collect::<Vec<_>>()
                .join("\n"),
            v = ONNXRUNTIME_VERSION,
        ));
    };
    let builder = ort::init_from(&library)
        .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?;
    let env = builder
        .with_name("irtdb")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", library.display()))?;
    Ok(Runtime { env, library })
}

/// The process-wide runtime (initialised on first use).
pub fn environment() -> Result<&'static Runtime, String> {
    static RT: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(init).as_ref().map_err(Clone::clone)
}

/// Providers compiled into the loaded ONNX Runtime (`CPUExecutionProvider`, ...).
pub fn available_providers(_library: &Path) -> Vec<String> {
    use ort::ep::ExecutionProvider;
    let mut v = Vec::new();
    if ort::ep::TensorRT::is_available().unwrap_or(false) {
        v.push("TensorrtExecutionProvider".to_string());
    }
    if ort::ep::CUDA::is_available().unwrap_or(false) {
        v.push("CUDAExecutionProvider".to_string());
    }
    v.push("CPUExecutionProvider".to_string());
    v
}
