//! The stable C ABI between irtdb and its backend plugins.
//!
//! A plugin is a shared library (`cdylib`) that exports one symbol, [`ENTRY_SYMBOL`]
//! (`irtdb_plugin_entry`), a C function that takes the ABI version the host speaks and returns a
//! pointer to a static [`PluginVTable`] (or null if it cannot serve that version). Nothing but C
//! types crosses the boundary: NUL-terminated UTF-8 strings, JSON documents as strings, plain
//! `f32` buffers with `u64` shapes, and opaque handles. Errors are reported as a non-zero
//! [`Status`] plus a message read back through `last_error`.
//!
//! Why a hand-written C vtable: Rust trait objects across a `cdylib` need the exact same compiler
//! and crate versions on both sides (Bevy's dynamic plugins died of this), while a C vtable with
//! a version handshake (ONNX Runtime's `OrtGetApiBase`) can be checked at load time and grown by
//! appending fields. See shared/STYLE.md §4.
//!
//! Growth rule: fields are only ever appended. `struct_size` tells the host how many fields the
//! plugin filled in; the host reads a field only if `struct_size` covers it. A change that cannot
//! be expressed by appending bumps [`ABI_VERSION`].
//!
//! - [`plugin`]: what a plugin author uses: implement [`plugin::PluginBackend`], call
//!   [`export_plugin!`]; every entry point then catches panics and reports them as errors.
//! - [`config`]: the typed configurations ([`BackboneConfig`], [`TrainerConfig`]) the host
//!   sends and the plugin receives.
//! - `host` (feature `host`): finding, loading and wrapping plugins into
//!   [`irtdb_core::Backbone`], so that the rest of irtdb never sees FFI.

use std::ffi::{c_char, c_void};

pub mod config;
#[cfg(feature = "host")]
pub mod host;
pub mod plugin;

pub use config::{BackboneConfig, TrainerConfig};

/// The ABI version this crate speaks. Bumped only for changes that appending cannot express.
pub const ABI_VERSION: u32 = 1;

/// The one symbol a plugin exports: `irtdb_plugin_entry(requested_abi: u32) -> *const PluginVTable`.
pub const ENTRY_SYMBOL: &str = "irtdb_plugin_entry";

/// Signature of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn(requested_abi: u32) -> *const PluginVTable;

/// Capability bit: the plugin can create backbones and run inference.
pub const CAP_INFER: u64 = 1;
/// Capability bit: the plugin can train (the `trainer_*` part of the vtable).
pub const CAP_TRAIN: u64 = 2;

/// Return code of every fallible call: 0 is success; anything else is a failure whose message is
/// available from `last_error` on the same thread.
pub type Status = i32;
pub const STATUS_OK: Status = 0;
/// The call failed with an ordinary error.
pub const STATUS_ERROR: Status = 1;
/// The plugin panicked; the panic was caught at the boundary.
pub const STATUS_PANIC: Status = 2;

/// Opaque backbone handle owned by the plugin.
pub type BackboneHandle = *mut c_void;
/// Opaque trainer handle owned by the plugin.
pub type TrainerHandle = *mut c_void;

/// The most dimensions an output tensor may have.
pub const MAX_DIMS: usize = 8;

/// An output tensor lent by the plugin: `data` points at `product(shape[..ndim])` f32 values that
/// stay valid until the next call on the same handle or its destruction. The host copies them.
#[repr(C)]
#[derive(Debug)]
pub struct OutTensor {
    pub data: *const f32,
    pub ndim: u32,
    pub shape: [u64; MAX_DIMS],
}

impl Default for OutTensor {
    fn default() -> Self {
        Self { data: std::ptr::null(), ndim: 0, shape: [0; MAX_DIMS] }
    }
}

/// The plugin's function table. `repr(C)`; fields only ever appended (see the crate docs).
///
/// All strings are NUL-terminated UTF-8. Strings returned by the plugin stay valid for the life
/// of the process (`name`, `version`, `describe`) or until the next call on the same thread
/// (`last_error`) or handle (`backbone_info`).
#[repr(C)]
#[derive(Debug)]
pub struct PluginVTable {
    /// [`ABI_VERSION`] the plugin was built against.
    pub abi_version: u32,
    /// `size_of::<PluginVTable>()` in the plugin's build: which fields are present.
    pub struct_size: u32,
    /// Short name, e.g. `ort-tensorrt`.
    pub name: *const c_char,
    /// The plugin's own version (semver).
    pub version: *const c_char,
    /// [`CAP_INFER`] | [`CAP_TRAIN`].
    pub capabilities: u64,
    /// A JSON object describing the plugin: `{"backbones": [...], "providers": [...], ...}`.
    pub describe: unsafe extern "C" fn() -> *const c_char,
    /// The message of the last failed call on this thread (empty if none).
    pub last_error: unsafe extern "C" fn() -> *const c_char,
    /// Creates a backbone from a JSON config (plugin-specific; documented by the plugin).
    pub backbone_create:
        unsafe extern "C" fn(config_json: *const c_char, out: *mut BackboneHandle) -> Status,
    /// JSON of the backbone's [`irtdb_core::BackboneInfo`].
    pub backbone_info: unsafe extern "C" fn(handle: BackboneHandle) -> *const c_char,
    /// Runs a batch: `input` holds `product(shape[..ndim])` f32 values, `[B, 3, H, W]`.
    pub backbone_forward: unsafe extern "C" fn(
        handle: BackboneHandle,
        input: *const f32,
        shape: *const u64,
        ndim: u32,
        out: *mut OutTensor,
    ) -> Status,
    /// Frees the handle. Null is ignored.
    pub backbone_destroy: unsafe extern "C" fn(handle: BackboneHandle),

    // ---- Training: appended; read only when `capabilities` has [`CAP_TRAIN`] and
    // `struct_size` ≥ [`TRAIN_STRUCT_SIZE`]. -----------------------------------------------------
    /// Creates a trainer from a JSON config (plugin-specific: starting weights, device, loss
    /// settings). The trainer owns its network, optimiser state and cross-batch memory.
    pub trainer_create:
        unsafe extern "C" fn(config_json: *const c_char, out: *mut TrainerHandle) -> Status,
    /// JSON of the trainer network's [`irtdb_core::BackboneInfo`] (its `output` is `pooled`:
    /// what `trainer_embed` returns).
    pub trainer_info: unsafe extern "C" fn(handle: TrainerHandle) -> *const c_char,
    /// One optimisation step on a labelled batch: `input` `[B, 3, H, W]` as for
    /// `backbone_forward`, `labels` B class ids, learning rate `lr`. On success `*stats_json`
    /// points at a JSON [`irtdb_core::StepStats`] valid until the next call on the handle.
    pub trainer_step: unsafe extern "C" fn(
        handle: TrainerHandle,
        input: *const f32,
        shape: *const u64,
        ndim: u32,
        labels: *const i64,
        n_labels: u64,
        lr: f32,
        stats_json: *mut *const c_char,
    ) -> Status,
    /// The current network's L2-normalised descriptors `[B, D]` in evaluation mode (no
    /// gradient, no change to any state).
    pub trainer_embed: unsafe extern "C" fn(
        handle: TrainerHandle,
        input: *const f32,
        shape: *const u64,
        ndim: u32,
        out: *mut OutTensor,
    ) -> Status,
    /// Writes the network's weights to `path` (safetensors, timm names): a file the same
    /// plugin's (and, for ViTs, the ort plugin's) `backbone_create` accepts as its `model`.
    pub trainer_save_weights:
        unsafe extern "C" fn(handle: TrainerHandle, path: *const c_char) -> Status,
    /// Writes everything besides the weights that the next step depends on (optimiser moments
    /// and step count, cross-batch memory) to `path`, for [`Self::trainer_load_state`].
    pub trainer_save_state:
        unsafe extern "C" fn(handle: TrainerHandle, path: *const c_char) -> Status,
    /// Restores a state written by `trainer_save_state` into a trainer created from the weights
    /// saved at the same moment: the next step is then the step the saving run would have taken.
    pub trainer_load_state:
        unsafe extern "C" fn(handle: TrainerHandle, path: *const c_char) -> Status,
    /// Frees the handle. Null is ignored.
    pub trainer_destroy: unsafe extern "C" fn(handle: TrainerHandle),
}

// SAFETY: the vtable is immutable static data: function pointers and pointers to static strings.
unsafe impl Sync for PluginVTable {}
unsafe impl Send for PluginVTable {}

/// The smallest `struct_size` a host accepts: a vtable through `backbone_destroy` (the inference
/// part, as the first release of ABI 1 defined it).
pub const MIN_STRUCT_SIZE: usize = std::mem::offset_of!(PluginVTable, trainer_create);

/// The `struct_size` a plugin with [`CAP_TRAIN`] must have: a vtable through `trainer_destroy`.
pub const TRAIN_STRUCT_SIZE: usize = std::mem::size_of::<PluginVTable>();

/// The JSON a plugin's `describe` returns.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PluginDescription {
    /// Backbones (architectures or model kinds) the plugin offers, e.g. `vit`, `deit`, `onnx`.
    #[serde(default)]
    pub backbones: Vec<String>,
    /// Execution providers or devices this build can use, in default preference order.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Those of `providers` that are usable on this machine right now.
    #[serde(default)]
    pub available_providers: Vec<String>,
    /// Anything else worth showing in `irtdb plugins` (e.g. the runtime library found).
    #[serde(default)]
    pub notes: Vec<String>,
}
