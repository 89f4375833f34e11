//! The host side: finding plugin libraries, loading them, checking the handshake, and wrapping
//! their backbones in [`irtdb_core::Backbone`] so that the rest of irtdb never sees FFI.
//!
//! Loaded libraries are never unloaded (their static vtables, thread-locals and runtime threads
//! must outlive every handle); each path is opened once per process.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use irtdb_core::{Backbone, BackboneInfo, Features, OutputKind};
use ndarray::{Array2, Array3, ArrayView4};
use thiserror::Error;

use crate::{BackboneConfig, TrainerConfig};
use crate::{
    EntryFn, OutTensor, PluginDescription, PluginVTable, ABI_VERSION, CAP_INFER, ENTRY_SYMBOL,
    MIN_STRUCT_SIZE, STATUS_OK, STATUS_PANIC,
};

/// Environment variable holding extra plugin folders (`:`-separated), searched first.
pub const PLUGIN_PATH_ENV: &str = "IRTDB_PLUGIN_PATH";

/// Why a plugin could not be found or loaded. Each message names the file and what to do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error(
        "no plugin named '{name}': looked for {file} in\n{}\nput the library in one of these \
         folders, add its folder to {PLUGIN_PATH_ENV}, or pass --plugin /path/to/{file}",
        searched.iter().map(|p| format!("  - {}", p.display())).collect::<Vec<_>>().join("\n")
    )]
    NotFound { name: String, file: String, searched: Vec<PathBuf> },
    #[error("plugin file {0} does not exist")]
    NoSuchFile(PathBuf),
    #[error(
        "cannot load {path} as a plugin: {reason} (is it a shared library built for this machine?)"
    )]
    Open { path: PathBuf, reason: String },
    #[error("{path} is not an irtdb plugin: it does not export `{ENTRY_SYMBOL}`")]
    MissingEntry { path: PathBuf },
    #[error("plugin {path} failed to initialise: its entry point returned no function table")]
    EntryFailed { path: PathBuf },
    #[error(
        "plugin {path} speaks irtdb plugin ABI {plugin_abi}, this irtdb speaks ABI {host_abi}: \
         rebuild the plugin against irtdb-plugin-api with ABI {host_abi}, or use an irtdb that \
         matches it"
    )]
    VersionMismatch { path: PathBuf, plugin_abi: u32, host_abi: u32 },
    #[error(
        "plugin {path} has a function table of {size} bytes, smaller than the {needed} bytes of \
         ABI {ABI_VERSION}: it is damaged or not built with irtdb-plugin-api"
    )]
    TableTooSmall { path: PathBuf, size: u32, needed: usize },
    #[error("plugin {path}: {what}")]
    BadMetadata { path: PathBuf, what: String },
}

/// Errors from calls into a loaded plugin.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CallError {
    #[error("plugin '{plugin}' cannot {what}: it does not have that capability")]
    Unsupported { plugin: String, what: &'static str },
    #[error("plugin '{plugin}' {call} failed: {message}")]
    Failed { plugin: String, call: &'static str, message: String },
    #[error("plugin '{plugin}' panicked in {call}: {message}")]
    Panicked { plugin: String, call: &'static str, message: String },
    #[error("plugin '{plugin}' returned bad output from {call}: {message}")]
    BadOutput { plugin: String, call: &'static str, message: String },
}

impl From<CallError> for irtdb_core::Error {
    fn from(e: CallError) -> Self {
        irtdb_core::Error::Backend(e.to_string())
    }
}

/// The library file name for a plugin name: `ort-tensorrt` → `libirtdb_plugin_ort_tensorrt.so`.
pub fn library_file_name(name: &str) -> String {
    let stem = format!("irtdb_plugin_{}", name.replace('-', "_"));
    format!("{}{stem}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// The folders searched for a plugin by name, in order: each entry of `IRTDB_PLUGIN_PATH`,
/// `<exe dir>/plugins`, `<exe dir>` (where `cargo build` puts plugins beside the binary),
/// `<exe dir>/../lib/irtdb/plugins` (where `scripts/install.sh` puts them) and
/// `<user data dir>/irtdb/plugins`. The current directory is never searched implicitly.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(v) = std::env::var_os(PLUGIN_PATH_ENV) {
        dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
    }
    if let Some(exe_dir) =
        std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("plugins"));
        dirs.push(exe_dir.clone());
        if let Some(prefix) = exe_dir.parent() {
            dirs.push(prefix.join("lib").join("irtdb").join("plugins"));
        }
    }
    if let Some(data) = dirs::data_dir() {
        dirs.push(data.join("irtdb").join("plugins"));
    }
    dirs
}

/// True when `spec` names a file rather than a plugin name.
fn is_path_spec(spec: &str) -> bool {
    spec.contains(std::path::MAIN_SEPARATOR)
        || spec.contains('/')
        || spec.ends_with(std::env::consts::DLL_SUFFIX)
}

/// Resolves `--plugin NAME|PATH` to a library path.
pub fn resolve(spec: &str) -> Result<PathBuf, LoadError> {
    if is_path_spec(spec) {
        let p = PathBuf::from(spec);
        return if p.is_file() { Ok(p) } else { Err(LoadError::NoSuchFile(p)) };
    }
    let file = library_file_name(spec);
    let searched = search_dirs();
    searched.iter().map(|d| d.join(&file)).find(|p| p.is_file()).ok_or(LoadError::NotFound {
        name: spec.to_string(),
        file,
        searched,
    })
}

/// Every plugin library present in the search folders (first occurrence of each file name wins),
/// each with the result of loading it.
pub fn discover() -> Vec<(PathBuf, Result<Plugin, LoadError>)> {
    let prefix = format!("{}irtdb_plugin_", std::env::consts::DLL_PREFIX);
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for dir in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&prefix) && n.ends_with(std::env::consts::DLL_SUFFIX)
                    })
            })
            .collect();
        files.sort();
        for f in files {
            if seen.insert(f.file_name().map(|n| n.to_os_string())) {
                let loaded = Plugin::load(&f);
                found.push((f, loaded));
            }
        }
    }
    found
}

struct Inner {
    path: PathBuf,
    vtable: &'static PluginVTable,
    name: String,
    version: String,
    capabilities: u64,
    description: PluginDescription,
}

/// A loaded, handshaken plugin. Cheap to clone.
#[derive(Clone)]
pub struct Plugin(Arc<Inner>);

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.0.name).field("path", &self.0.path).finish()
    }
}

fn loaded_libraries() -> &'static Mutex<HashMap<PathBuf, Plugin>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Plugin>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// Reads a plugin-owned C string, refusing null and non-UTF-8.
///
/// # Safety
/// `p` must be null or point at a NUL-terminated string that outlives the call.
unsafe fn plugin_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: per the function contract.
    unsafe { CStr::from_ptr(p) }.to_str().ok().map(str::to_owned)
}

impl Plugin {
    /// Resolves `--plugin NAME|PATH` and loads it.
    pub fn open(spec: &str) -> Result<Plugin, LoadError> {
        Plugin::load(&resolve(spec)?)
    }

    /// Loads the library at `path`, calls its entry point and checks the handshake.
    pub fn load(path: &Path) -> Result<Plugin, LoadError> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut loaded = loaded_libraries().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = loaded.get(&key) {
            return Ok(p.clone());
        }
        if !path.is_file() {
            return Err(LoadError::NoSuchFile(path.to_path_buf()));
        }
        // SAFETY: loading a library runs its initialisers; that is the point of a plugin, and the
        // user chose this file. The library is leaked below, so it is never unloaded.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| LoadError::Open { path: path.to_path_buf(), reason: e.to_string() })?;
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        // SAFETY: the symbol's type is fixed by the ABI; a library exporting the name with another
        // type is broken beyond what can be checked.
        let entry: libloading::Symbol<'static, EntryFn> =
            unsafe { lib.get(ENTRY_SYMBOL.as_bytes()) }
                .map_err(|_| LoadError::MissingEntry { path: path.to_path_buf() })?;
        // SAFETY: calling the plugin's entry point per the ABI.
        let table = unsafe { entry(ABI_VERSION) };
        if table.is_null() {
            return Err(LoadError::EntryFailed { path: path.to_path_buf() });
        }
        // The first two fields are the same in every ABI version: read them before the rest.
        // SAFETY: non-null, points at the plugin's static table whose prefix is two u32s.
        let (abi, size) = unsafe {
            let head = table.cast::<u32>();
            (head.read(), head.add(1).read())
        };
        if abi != ABI_VERSION {
            return Err(LoadError::VersionMismatch {
                path: path.to_path_buf(),
                plugin_abi: abi,
                host_abi: ABI_VERSION,
            });
        }
        if (size as usize) < MIN_STRUCT_SIZE {
            return Err(LoadError::TableTooSmall {
                path: path.to_path_buf(),
                size,
                needed: MIN_STRUCT_SIZE,
            });
        }
        // SAFETY: same ABI version and a table at least as large as ours.
        let vtable: &'static PluginVTable = unsafe { &*table };
        let bad =
            |what: &str| LoadError::BadMetadata { path: path.to_path_buf(), what: what.into() };
        // SAFETY: ABI: static NUL-terminated strings.
        let name =
            unsafe { plugin_str(vtable.name) }.ok_or_else(|| bad("name is null or not UTF-8"))?;
        let version = unsafe { plugin_str(vtable.version) }
            .ok_or_else(|| bad("version is null or not UTF-8"))?;
        // SAFETY: ABI function; returns a static string.
        let description_json = unsafe { plugin_str((vtable.describe)()) }
            .ok_or_else(|| bad("describe() returned null or non-UTF-8"))?;
        let description: PluginDescription = serde_json::from_str(&description_json)
            .map_err(|e| bad(&format!("describe() returned invalid JSON: {e}")))?;
        let plugin = Plugin(Arc::new(Inner {
            path: path.to_path_buf(),
            vtable,
            name,
            version,
            capabilities: vtable.capabilities,
            description,
        }));
        loaded.insert(key, plugin.clone());
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }
    pub fn version(&self) -> &str {
        &self.0.version
    }
    pub fn path(&self) -> &Path {
        &self.0.path
    }
    pub fn abi_version(&self) -> u32 {
        self.0.vtable.abi_version
    }
    pub fn capabilities(&self) -> u64 {
        self.0.capabilities
    }
    /// Capability names, e.g. `["infer"]`.
    pub fn capability_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.0.capabilities & CAP_INFER != 0 {
            v.push("infer");
        }
        if self.0.capabilities & crate::CAP_TRAIN != 0 {
            v.push("train");
        }
        v
    }
    pub fn description(&self) -> &PluginDescription {
        &self.0.description
    }

    fn last_error(&self) -> String {
        // SAFETY: ABI function; the string lives until the next call on this thread.
        unsafe { plugin_str((self.0.vtable.last_error)()) }
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "no error message given".into())
    }

    fn call_error(&self, call: &'static str, status: i32) -> CallError {
        let message = self.last_error();
        let plugin = self.0.name.clone();
        if status == STATUS_PANIC {
            CallError::Panicked { plugin, call, message }
        } else {
            CallError::Failed { plugin, call, message }
        }
    }

    /// Creates a backbone from a JSON configuration (the plugin documents its keys).
    pub fn create_backbone(&self, config: &BackboneConfig) -> Result<LoadedBackbone, CallError> {
        if self.0.capabilities & CAP_INFER == 0 {
            return Err(CallError::Unsupported {
                plugin: self.0.name.clone(),
                what: "run inference",
            });
        }
        let json = config_json(config);
        let mut handle: crate::BackboneHandle = std::ptr::null_mut();
        // SAFETY: ABI call with a valid string and out-pointer.
        let status = unsafe { (self.0.vtable.backbone_create)(json.as_ptr(), &mut handle) };
        if status != STATUS_OK {
            return Err(self.call_error("backbone_create", status));
        }
        let bad = |message: String| CallError::BadOutput {
            plugin: self.0.name.clone(),
            call: "backbone_info",
            message,
        };
        if handle.is_null() {
            return Err(bad("backbone_create succeeded but returned a null handle".into()));
        }
        // Owned from here on, so that every early return below destroys the handle.
        let mut backbone = LoadedBackbone { plugin: self.clone(), handle, info: None };
        // SAFETY: valid handle; string valid until the next call on the handle.
        let info_json = unsafe { plugin_str((self.0.vtable.backbone_info)(handle)) }
            .ok_or_else(|| bad("info is null or not UTF-8".into()))?;
        let info: BackboneInfo =
            serde_json::from_str(&info_json).map_err(|e| bad(format!("invalid info JSON: {e}")))?;
        if info.dim == 0 {
            return Err(bad("declared feature dimension 0".into()));
        }
        backbone.info = Some(info);
        Ok(backbone)
    }
}

/// A configuration as the NUL-terminated JSON the ABI carries.
fn config_json(config: &impl serde::Serialize) -> CString {
    let json = serde_json::to_string(config).expect("a configuration serialises to JSON");
    CString::new(json).expect("JSON escapes NUL")
}

/// A backbone that lives in a plugin, seen through [`Backbone`]: the host's handle on what the
/// plugin implements as a [`crate::plugin::PluginBackbone`].
///
/// Calls on one handle are serialised by `&mut self`; the plugin may run them on any thread.
pub struct LoadedBackbone {
    plugin: Plugin,
    handle: crate::BackboneHandle,
    info: Option<BackboneInfo>,
}

// SAFETY: the ABI requires handles to be usable from any thread, one call at a time; `&mut self`
// on forward provides the "one at a time".
unsafe impl Send for LoadedBackbone {}

impl std::fmt::Debug for LoadedBackbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedBackbone")
            .field("plugin", &self.plugin)
            .field("info", &self.info)
            .finish()
    }
}

impl Drop for LoadedBackbone {
    fn drop(&mut self) {
        // SAFETY: the handle came from backbone_create and is destroyed exactly once.
        unsafe { (self.plugin.0.vtable.backbone_destroy)(self.handle) };
    }
}

impl LoadedBackbone {
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

impl Backbone for LoadedBackbone {
    fn info(&self) -> &BackboneInfo {
        self.info.as_ref().expect("set at creation")
    }

    fn forward(&mut self, images: ArrayView4<'_, f32>) -> irtdb_core::Result<Features> {
        let info = self.info().clone();
        check_input(&images, &info, "backbone input")?;
        let b = images.dim().0;
        let f = self.plugin.0.vtable.backbone_forward;
        // SAFETY: `f` is the table's backbone_forward and `handle` came from backbone_create.
        let out = unsafe { call_batch(&self.plugin, "backbone_forward", f, self.handle, &images) }?;
        let (dims, values) = take_output(&self.plugin, "backbone_forward", &out, |dims| {
            let ok = match info.output {
                OutputKind::Tokens { prefix } => {
                    dims.len() == 3 && dims[0] == b && dims[1] > prefix && dims[2] == info.dim
                }
                OutputKind::Pooled => dims.len() == 2 && dims[0] == b && dims[1] == info.dim,
            };
            ok.then_some(()).ok_or_else(|| {
                format!(
                    "shape {dims:?} does not match the declared output {:?} with D = {} for a \
                     batch of {b}",
                    info.output, info.dim
                )
            })
        })?;
        Ok(match info.output {
            OutputKind::Tokens { prefix } => Features::Tokens {
                tokens: Array3::from_shape_vec((dims[0], dims[1], dims[2]), values)
                    .expect("checked"),
                prefix,
            },
            OutputKind::Pooled => Features::Pooled(
                Array2::from_shape_vec((dims[0], dims[1]), values).expect("checked"),
            ),
        })
    }
}

/// The C signature of `backbone_forward` and `trainer_embed`: a handle, a `[B, 3, H, W]` batch,
/// a lent output tensor.
type BatchFn =
    unsafe extern "C" fn(*mut std::ffi::c_void, *const f32, *const u64, u32, *mut OutTensor) -> i32;

/// Calls `f` on `handle` with `images` (made contiguous) and returns the tensor it lent,
/// unchecked (see [`take_output`]).
///
/// # Safety
/// `f` is a function of `plugin`'s table and `handle` a live handle of the kind it takes.
unsafe fn call_batch(
    plugin: &Plugin,
    call: &'static str,
    f: BatchFn,
    handle: *mut std::ffi::c_void,
    images: &ArrayView4<'_, f32>,
) -> irtdb_core::Result<OutTensor> {
    let contiguous = images.as_standard_layout();
    let (b, c, h, w) = images.dim();
    let shape = [b as u64, c as u64, h as u64, w as u64];
    let mut out = OutTensor::default();
    // SAFETY: a contiguous buffer of product(shape) values and an out-pointer; the function and
    // handle per the contract.
    let status = unsafe { f(handle, contiguous.as_ptr(), shape.as_ptr(), 4, &mut out) };
    if status != STATUS_OK {
        return Err(plugin.call_error(call, status).into());
    }
    Ok(out)
}

/// Copies a tensor the plugin lent in `out`, never trusting it: rank, null data, the shape
/// (`check_shape`, before anything is read), overflow, and finiteness of every value.
fn take_output(
    plugin: &Plugin,
    call: &'static str,
    out: &OutTensor,
    check_shape: impl FnOnce(&[usize]) -> Result<(), String>,
) -> irtdb_core::Result<(Vec<usize>, Vec<f32>)> {
    let bad = |message: String| -> irtdb_core::Error {
        CallError::BadOutput { plugin: plugin.0.name.clone(), call, message }.into()
    };
    if out.ndim as usize > crate::MAX_DIMS || out.data.is_null() {
        return Err(bad(format!(
            "invalid tensor (ndim {}, data null: {})",
            out.ndim,
            out.data.is_null()
        )));
    }
    let dims: Vec<usize> = out.shape[..out.ndim as usize].iter().map(|&d| d as usize).collect();
    check_shape(&dims).map_err(bad)?;
    // A token count like 2^62 passes a shape check; its product would overflow (a panic in
    // debug builds, a wrapped length and a failed reshape in release).
    let len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / std::mem::size_of::<f32>())
        .ok_or_else(|| bad(format!("shape {dims:?} has more values than can exist")))?;
    // SAFETY: the plugin lends `len` values until the next call on this handle; copied now.
    let values = unsafe { std::slice::from_raw_parts(out.data, len) }.to_vec();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("non-finite value {} at flat index {i}", values[i])));
    }
    Ok((dims, values))
}

/// Checks a batch against the `[B, 3, H, W]` the network was made for.
fn check_input(
    images: &ArrayView4<'_, f32>,
    info: &BackboneInfo,
    what: &'static str,
) -> irtdb_core::Result<()> {
    let (b, c, h, w) = images.dim();
    let [eh, ew] = info.preprocess.size;
    if c != 3 || h != eh as usize || w != ew as usize {
        return Err(irtdb_core::Error::Shape {
            what,
            expected: format!("[B, 3, {eh}, {ew}]"),
            got: vec![b, c, h, w],
        });
    }
    Ok(())
}

impl Plugin {
    /// Whether the plugin can train: [`crate::CAP_TRAIN`] and a table that has the trainer part.
    pub fn can_train(&self) -> bool {
        self.0.capabilities & crate::CAP_TRAIN != 0
            && self.0.vtable.struct_size as usize >= crate::TRAIN_STRUCT_SIZE
    }

    /// Creates a trainer from a JSON configuration (the plugin documents its keys).
    pub fn create_trainer(&self, config: &TrainerConfig) -> Result<LoadedTrainer, CallError> {
        if self.0.capabilities & crate::CAP_TRAIN == 0 {
            return Err(CallError::Unsupported { plugin: self.0.name.clone(), what: "train" });
        }
        let bad = |message: String| CallError::BadOutput {
            plugin: self.0.name.clone(),
            call: "trainer_create",
            message,
        };
        if (self.0.vtable.struct_size as usize) < crate::TRAIN_STRUCT_SIZE {
            return Err(bad(format!(
                "it claims the train capability but its function table ({} bytes) ends before \
                 the trainer functions ({} bytes): rebuild it against this irtdb-plugin-api",
                self.0.vtable.struct_size,
                crate::TRAIN_STRUCT_SIZE
            )));
        }
        let json = config_json(config);
        let mut handle: crate::TrainerHandle = std::ptr::null_mut();
        // SAFETY: the table has the trainer part (checked above); valid string and out-pointer.
        let status = unsafe { (self.0.vtable.trainer_create)(json.as_ptr(), &mut handle) };
        if status != STATUS_OK {
            return Err(self.call_error("trainer_create", status));
        }
        if handle.is_null() {
            return Err(bad("trainer_create succeeded but returned a null handle".into()));
        }
        let mut trainer = LoadedTrainer { plugin: self.clone(), handle, info: None };
        // SAFETY: valid handle; string valid until the next call on the handle.
        let info_json = unsafe { plugin_str((self.0.vtable.trainer_info)(handle)) }
            .ok_or_else(|| bad("trainer_info is null or not UTF-8".into()))?;
        let info: BackboneInfo = serde_json::from_str(&info_json)
            .map_err(|e| bad(format!("invalid trainer_info JSON: {e}")))?;
        if info.dim == 0 || info.output != OutputKind::Pooled {
            return Err(bad(format!(
                "a trainer must declare pooled output of dimension > 0, got {:?} with D = {}",
                info.output, info.dim
            )));
        }
        trainer.info = Some(info);
        Ok(trainer)
    }
}

/// A trainer that lives in a plugin, seen through [`irtdb_core::Trainer`]: the host's handle on
/// what the plugin implements as a [`crate::plugin::PluginTrainer`].
pub struct LoadedTrainer {
    plugin: Plugin,
    handle: crate::TrainerHandle,
    info: Option<BackboneInfo>,
}

// SAFETY: as for LoadedBackbone: any thread, one call at a time (`&mut self`).
unsafe impl Send for LoadedTrainer {}

impl std::fmt::Debug for LoadedTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTrainer")
            .field("plugin", &self.plugin)
            .field("info", &self.info)
            .finish()
    }
}

impl Drop for LoadedTrainer {
    fn drop(&mut self) {
        // SAFETY: the handle came from trainer_create and is destroyed exactly once.
        unsafe { (self.plugin.0.vtable.trainer_destroy)(self.handle) };
    }
}

impl LoadedTrainer {
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    fn path_call(
        &mut self,
        call: &'static str,
        f: unsafe extern "C" fn(crate::TrainerHandle, *const c_char) -> crate::Status,
        path: &Path,
    ) -> irtdb_core::Result<()> {
        let s = path.to_str().ok_or_else(|| {
            irtdb_core::Error::Invalid(format!(
                "{}: the plugin ABI passes paths as UTF-8; choose a UTF-8 path",
                path.display()
            ))
        })?;
        let c = CString::new(s)
            .map_err(|_| irtdb_core::Error::Invalid(format!("{s:?}: path contains NUL")))?;
        // SAFETY: valid handle and string.
        let status = unsafe { f(self.handle, c.as_ptr()) };
        if status != STATUS_OK {
            return Err(self.plugin.call_error(call, status).into());
        }
        Ok(())
    }
}

impl irtdb_core::Trainer for LoadedTrainer {
    fn info(&self) -> &BackboneInfo {
        self.info.as_ref().expect("set at creation")
    }

    fn step(
        &mut self,
        images: ArrayView4<'_, f32>,
        labels: &[i64],
        lr: f32,
    ) -> irtdb_core::Result<irtdb_core::StepStats> {
        check_input(&images, self.info(), "trainer input")?;
        let b = images.dim().0;
        if labels.len() != b {
            return Err(irtdb_core::Error::Invalid(format!(
                "{} labels for a batch of {b} images",
                labels.len()
            )));
        }
        let contiguous = images.as_standard_layout();
        let d = images.dim();
        let shape = [d.0 as u64, d.1 as u64, d.2 as u64, d.3 as u64];
        let mut stats: *const c_char = std::ptr::null();
        // SAFETY: contiguous buffer of product(shape) values, `b` labels, valid handle.
        let status = unsafe {
            (self.plugin.0.vtable.trainer_step)(
                self.handle,
                contiguous.as_ptr(),
                shape.as_ptr(),
                4,
                labels.as_ptr(),
                b as u64,
                lr,
                &mut stats,
            )
        };
        if status != STATUS_OK {
            return Err(self.plugin.call_error("trainer_step", status).into());
        }
        let bad = |message: String| -> irtdb_core::Error {
            CallError::BadOutput {
                plugin: self.plugin.0.name.clone(),
                call: "trainer_step",
                message,
            }
            .into()
        };
        // SAFETY: valid until the next call on the handle.
        let json = unsafe { plugin_str(stats) }.ok_or_else(|| bad("no statistics".into()))?;
        let stats: irtdb_core::StepStats = serde_json::from_str(&json)
            .map_err(|e| bad(format!("invalid statistics {json}: {e}")))?;
        if ![stats.loss, stats.contrastive, stats.koleo].iter().all(|v| v.is_finite()) {
            return Err(bad(format!("non-finite loss {stats:?}")));
        }
        Ok(stats)
    }

    fn embed(&mut self, images: ArrayView4<'_, f32>) -> irtdb_core::Result<Array2<f32>> {
        let info = self.info().clone();
        check_input(&images, &info, "trainer input")?;
        let b = images.dim().0;
        let f = self.plugin.0.vtable.trainer_embed;
        // SAFETY: `f` is the table's trainer_embed and `handle` came from trainer_create.
        let out = unsafe { call_batch(&self.plugin, "trainer_embed", f, self.handle, &images) }?;
        let (dims, values) = take_output(&self.plugin, "trainer_embed", &out, |dims| {
            (dims == [b, info.dim])
                .then_some(())
                .ok_or_else(|| format!("shape {dims:?}, expected [{b}, {}]", info.dim))
        })?;
        Ok(Array2::from_shape_vec((dims[0], dims[1]), values).expect("checked"))
    }

    fn save_weights(&mut self, path: &Path) -> irtdb_core::Result<()> {
        let f = self.plugin.0.vtable.trainer_save_weights;
        self.path_call("trainer_save_weights", f, path)
    }

    fn save_state(&mut self, path: &Path) -> irtdb_core::Result<()> {
        let f = self.plugin.0.vtable.trainer_save_state;
        self.path_call("trainer_save_state", f, path)
    }

    fn load_state(&mut self, path: &Path) -> irtdb_core::Result<()> {
        let f = self.plugin.0.vtable.trainer_load_state;
        self.path_call("trainer_load_state", f, path)
    }
}
