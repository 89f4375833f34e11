//! The plugin side of the ABI: implement [`PluginBackend`] and call [`export_plugin!`](crate::export_plugin).
//!
//! The generated `irtdb_plugin_entry` and every function in the vtable catch panics and turn
//! them, like ordinary errors, into a [`Status`] plus a message for `last_error`. A panic that
//! escaped an `extern "C"` function would abort the host.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use irtdb_core::{BackboneInfo, StepStats};

use crate::config::{BackboneConfig, TrainerConfig};
use crate::{
    BackboneHandle, OutTensor, PluginDescription, PluginVTable, Status, TrainerHandle, ABI_VERSION,
    MAX_DIMS, STATUS_ERROR, STATUS_OK, STATUS_PANIC,
};

/// A plugin: a name, capabilities, and factories for backbones and (with [`crate::CAP_TRAIN`])
/// trainers.
pub trait PluginBackend: 'static {
    /// Short name, e.g. `c"ort-tensorrt"`.
    const NAME: &'static CStr;
    /// The plugin's version, e.g. `c"0.1.0"`.
    const VERSION: &'static CStr;
    /// [`crate::CAP_INFER`] | [`crate::CAP_TRAIN`].
    const CAPABILITIES: u64;
    type Backbone: PluginBackbone;
    /// What the plugin offers on this machine (called once, cached).
    fn describe() -> PluginDescription;
    /// Creates a backbone from the host's configuration (parsed from its JSON by the generated
    /// entry point; a malformed one never reaches the plugin).
    fn create(config: BackboneConfig) -> Result<Self::Backbone, String>;
    /// [`NoTrainer`] for a plugin that only runs inference.
    type Trainer: PluginTrainer;
    /// Creates a trainer from the host's configuration. The default refuses: the host never
    /// calls it unless [`Self::CAPABILITIES`] has [`crate::CAP_TRAIN`].
    fn create_trainer(config: TrainerConfig) -> Result<Self::Trainer, String> {
        let _ = config;
        Err(format!("plugin {} cannot train", Self::NAME.to_string_lossy()))
    }
}

/// A trainer living inside a plugin: the network, its optimiser and cross-batch memory.
/// The semantics are those of [`irtdb_core::Trainer`]; inputs are `[B, 3, H, W]` as for
/// [`PluginBackbone::forward`].
pub trait PluginTrainer: 'static {
    /// The network's description; `output` is [`irtdb_core::OutputKind::Pooled`].
    fn info(&self) -> BackboneInfo;
    fn step(
        &mut self,
        input: &[f32],
        shape: &[usize],
        labels: &[i64],
        lr: f32,
    ) -> Result<StepStats, String>;
    /// L2-normalised descriptors `[B, D]`: returns the shape and values.
    fn embed(&mut self, input: &[f32], shape: &[usize]) -> Result<(Vec<usize>, Vec<f32>), String>;
    fn save_weights(&mut self, path: &std::path::Path) -> Result<(), String>;
    fn save_state(&mut self, path: &std::path::Path) -> Result<(), String>;
    fn load_state(&mut self, path: &std::path::Path) -> Result<(), String>;
}

/// The trainer type of a plugin that does not train. It has no values, so none of its methods
/// can ever run.
#[derive(Debug)]
pub enum NoTrainer {}

impl PluginTrainer for NoTrainer {
    fn info(&self) -> BackboneInfo {
        match *self {}
    }
    fn step(&mut self, _: &[f32], _: &[usize], _: &[i64], _: f32) -> Result<StepStats, String> {
        match *self {}
    }
    fn embed(&mut self, _: &[f32], _: &[usize]) -> Result<(Vec<usize>, Vec<f32>), String> {
        match *self {}
    }
    fn save_weights(&mut self, _: &std::path::Path) -> Result<(), String> {
        match *self {}
    }
    fn save_state(&mut self, _: &std::path::Path) -> Result<(), String> {
        match *self {}
    }
    fn load_state(&mut self, _: &std::path::Path) -> Result<(), String> {
        match *self {}
    }
}

/// A backbone living inside a plugin.
pub trait PluginBackbone: 'static {
    fn info(&self) -> BackboneInfo;
    /// `input` is `[B, 3, H, W]` (shape in `shape`); returns the output shape and values.
    fn forward(&mut self, input: &[f32], shape: &[usize])
        -> Result<(Vec<usize>, Vec<f32>), String>;
}

/// A configuration from the host's JSON; the error names the plugin and the key at fault.
fn parse_config<T: PluginBackend, C: serde::de::DeserializeOwned>(
    json: &str,
    what: &str,
) -> Result<C, String> {
    crate::config::parse(json, what).map_err(|e| format!("{}: {e}", T::NAME.to_string_lossy()))
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    // Interior NULs would truncate the message; replace them rather than lose it.
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs `f`, turning an error or a panic into a status and a `last_error` message.
fn guard(what: &str, f: impl FnOnce() -> Result<(), String>) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(msg)) => {
            set_last_error(&msg);
            STATUS_ERROR
        }
        Err(payload) => {
            set_last_error(&format!("plugin panicked in {what}: {}", panic_message(&*payload)));
            STATUS_PANIC
        }
    }
}

struct Handle<B> {
    backbone: B,
    info_json: CString,
    out_shape: Vec<usize>,
    out_data: Vec<f32>,
}

/// The entry point's body, used by [`export_plugin!`](crate::export_plugin).
///
/// The table is returned whatever ABI the host asks for: its first two fields (`abi_version`,
/// `struct_size`) are the same in every version, so the host reads them and refuses a mismatch
/// itself, naming both versions. A plugin that serves several ABI versions would pick its table
/// by `requested_abi` here.
pub fn entry(requested_abi: u32, vtable: &'static PluginVTable) -> *const PluginVTable {
    let _ = requested_abi;
    vtable
}

/// Builds the vtable for `T`; used by [`export_plugin!`](crate::export_plugin).
pub const fn vtable<T: PluginBackend>() -> PluginVTable {
    PluginVTable {
        abi_version: ABI_VERSION,
        struct_size: std::mem::size_of::<PluginVTable>() as u32,
        name: T::NAME.as_ptr(),
        version: T::VERSION.as_ptr(),
        capabilities: T::CAPABILITIES,
        describe: describe::<T>,
        last_error,
        backbone_create: backbone_create::<T>,
        backbone_info: backbone_info::<T>,
        backbone_forward: backbone_forward::<T>,
        backbone_destroy: backbone_destroy::<T>,
        trainer_create: trainer_create::<T>,
        trainer_info: trainer_info::<T>,
        trainer_step: trainer_step::<T>,
        trainer_embed: trainer_embed::<T>,
        trainer_save_weights: trainer_save_weights::<T>,
        trainer_save_state: trainer_save_state::<T>,
        trainer_load_state: trainer_load_state::<T>,
        trainer_destroy: trainer_destroy::<T>,
    }
}

unsafe extern "C" fn describe<T: PluginBackend>() -> *const c_char {
    static DESCRIPTION: OnceLock<CString> = OnceLock::new();
    // One plugin per library, so one cache per library is enough.
    let json = DESCRIPTION.get_or_init(|| {
        let d = catch_unwind(T::describe).unwrap_or_else(|p| PluginDescription {
            notes: vec![format!("describe panicked: {}", panic_message(&*p))],
            ..Default::default()
        });
        CString::new(serde_json::to_string(&d).unwrap_or_else(|_| "{}".into())).unwrap_or_default()
    });
    json.as_ptr()
}

unsafe extern "C" fn last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

unsafe extern "C" fn backbone_create<T: PluginBackend>(
    config_json: *const c_char,
    out: *mut BackboneHandle,
) -> Status {
    guard("backbone_create", || {
        if config_json.is_null() || out.is_null() {
            return Err("backbone_create: null argument".into());
        }
        // SAFETY: the host passes a valid NUL-terminated string (checked non-null above).
        let config = unsafe { CStr::from_ptr(config_json) }
            .to_str()
            .map_err(|_| "backbone_create: config is not UTF-8".to_string())?;
        let backbone = T::create(parse_config::<T, _>(config, "backbone")?)?;
        let info_json = serde_json::to_string(&backbone.info()).map_err(|e| e.to_string())?;
        let handle = Box::new(Handle::<T::Backbone> {
            backbone,
            info_json: CString::new(info_json).map_err(|e| e.to_string())?,
            out_shape: Vec::new(),
            out_data: Vec::new(),
        });
        // SAFETY: `out` is non-null and points at writable storage for one handle.
        unsafe { *out = Box::into_raw(handle).cast() };
        Ok(())
    })
}

unsafe extern "C" fn backbone_info<T: PluginBackend>(handle: BackboneHandle) -> *const c_char {
    if handle.is_null() {
        set_last_error("backbone_info: null handle");
        return std::ptr::null();
    }
    // SAFETY: non-null handles come from backbone_create for this same T.
    let h = unsafe { &*handle.cast::<Handle<T::Backbone>>() };
    h.info_json.as_ptr()
}

unsafe extern "C" fn backbone_forward<T: PluginBackend>(
    handle: BackboneHandle,
    input: *const f32,
    shape: *const u64,
    ndim: u32,
    out: *mut OutTensor,
) -> Status {
    guard("backbone_forward", || {
        if handle.is_null() || input.is_null() || shape.is_null() || out.is_null() {
            return Err("backbone_forward: null argument".into());
        }
        // SAFETY: per the ABI (the host checks the buffer against the shape).
        let (data, dims) = unsafe { input_tensor(input, shape, ndim) };
        // SAFETY: handle came from backbone_create for T; the host serialises calls per handle.
        let h = unsafe { &mut *handle.cast::<Handle<T::Backbone>>() };
        let (out_shape, out_data) = h.backbone.forward(data, &dims)?;
        // SAFETY: `out` is non-null and writable.
        unsafe { lend_output(out_shape, out_data, &mut h.out_shape, &mut h.out_data, out) }
    })
}

/// The input batch: `ndim` dims at `shape`, and their product of values at `input`.
///
/// # Safety
/// Non-null pointers to that many values, valid for the call.
unsafe fn input_tensor<'a>(
    input: *const f32,
    shape: *const u64,
    ndim: u32,
) -> (&'a [f32], Vec<usize>) {
    // SAFETY: per the function contract.
    let dims: Vec<usize> = unsafe { std::slice::from_raw_parts(shape, ndim as usize) }
        .iter()
        .map(|&d| d as usize)
        .collect();
    let len = dims.iter().product::<usize>();
    // SAFETY: per the function contract.
    (unsafe { std::slice::from_raw_parts(input, len) }, dims)
}

/// Keeps `shape`/`data` in the handle's buffers and points `out` at them.
///
/// # Safety
/// `out` is non-null and writable.
unsafe fn lend_output(
    shape: Vec<usize>,
    data: Vec<f32>,
    keep_shape: &mut Vec<usize>,
    keep_data: &mut Vec<f32>,
    out: *mut OutTensor,
) -> Result<(), String> {
    if shape.len() > MAX_DIMS || shape.iter().product::<usize>() != data.len() {
        return Err(format!(
            "plugin bug: output shape {shape:?} does not match {} values",
            data.len()
        ));
    }
    *keep_shape = shape;
    *keep_data = data;
    let mut t =
        OutTensor { data: keep_data.as_ptr(), ndim: keep_shape.len() as u32, ..Default::default() };
    for (slot, d) in t.shape.iter_mut().zip(keep_shape.iter()) {
        *slot = *d as u64;
    }
    // SAFETY: per the function contract.
    unsafe { *out = t };
    Ok(())
}

/// A host string argument as `&str`.
///
/// # Safety
/// `p` is null or a NUL-terminated string valid for the call.
unsafe fn arg_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, String> {
    if p.is_null() {
        return Err(format!("{what}: null argument"));
    }
    // SAFETY: per the function contract.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| format!("{what}: argument is not UTF-8"))
}

unsafe extern "C" fn backbone_destroy<T: PluginBackend>(handle: BackboneHandle) {
    if handle.is_null() {
        return;
    }
    let _ = guard("backbone_destroy", || {
        // SAFETY: handle came from Box::into_raw in backbone_create for T; destroyed once.
        drop(unsafe { Box::from_raw(handle.cast::<Handle<T::Backbone>>()) });
        Ok(())
    });
}

struct TrainerBox<T> {
    trainer: T,
    info_json: CString,
    stats_json: CString,
    out_shape: Vec<usize>,
    out_data: Vec<f32>,
}

/// # Safety
/// `handle` is non-null and came from `trainer_create` for the same `T`; calls per handle are
/// serialised by the host.
unsafe fn trainer_ref<'a, T: PluginBackend>(
    handle: TrainerHandle,
) -> &'a mut TrainerBox<T::Trainer> {
    // SAFETY: per the function contract.
    unsafe { &mut *handle.cast::<TrainerBox<T::Trainer>>() }
}

unsafe extern "C" fn trainer_create<T: PluginBackend>(
    config_json: *const c_char,
    out: *mut TrainerHandle,
) -> Status {
    guard("trainer_create", || {
        if out.is_null() {
            return Err("trainer_create: null argument".into());
        }
        // SAFETY: the host passes a valid string or null (refused).
        let config = unsafe { arg_str(config_json, "trainer_create") }?;
        let trainer = T::create_trainer(parse_config::<T, _>(config, "trainer")?)?;
        let info_json = serde_json::to_string(&trainer.info()).map_err(|e| e.to_string())?;
        let b = Box::new(TrainerBox::<T::Trainer> {
            trainer,
            info_json: CString::new(info_json).map_err(|e| e.to_string())?,
            stats_json: CString::default(),
            out_shape: Vec::new(),
            out_data: Vec::new(),
        });
        // SAFETY: `out` is non-null and writable.
        unsafe { *out = Box::into_raw(b).cast() };
        Ok(())
    })
}

unsafe extern "C" fn trainer_info<T: PluginBackend>(handle: TrainerHandle) -> *const c_char {
    if handle.is_null() {
        set_last_error("trainer_info: null handle");
        return std::ptr::null();
    }
    // SAFETY: non-null handle from trainer_create for T.
    unsafe { trainer_ref::<T>(handle) }.info_json.as_ptr()
}

#[allow(clippy::too_many_arguments)] // the C signature
unsafe extern "C" fn trainer_step<T: PluginBackend>(
    handle: TrainerHandle,
    input: *const f32,
    shape: *const u64,
    ndim: u32,
    labels: *const i64,
    n_labels: u64,
    lr: f32,
    stats_json: *mut *const c_char,
) -> Status {
    guard("trainer_step", || {
        if handle.is_null()
            || input.is_null()
            || shape.is_null()
            || labels.is_null()
            || stats_json.is_null()
        {
            return Err("trainer_step: null argument".into());
        }
        // SAFETY: per the ABI, checked non-null above.
        let (data, dims) = unsafe { input_tensor(input, shape, ndim) };
        // SAFETY: `n_labels` values at `labels`, per the ABI.
        let labels = unsafe { std::slice::from_raw_parts(labels, n_labels as usize) };
        // SAFETY: valid handle.
        let t = unsafe { trainer_ref::<T>(handle) };
        let stats = t.trainer.step(data, &dims, labels, lr)?;
        let json = serde_json::to_string(&stats).map_err(|e| e.to_string())?;
        t.stats_json = CString::new(json).map_err(|e| e.to_string())?;
        // SAFETY: non-null, writable.
        unsafe { *stats_json = t.stats_json.as_ptr() };
        Ok(())
    })
}

unsafe extern "C" fn trainer_embed<T: PluginBackend>(
    handle: TrainerHandle,
    input: *const f32,
    shape: *const u64,
    ndim: u32,
    out: *mut OutTensor,
) -> Status {
    guard("trainer_embed", || {
        if handle.is_null() || input.is_null() || shape.is_null() || out.is_null() {
            return Err("trainer_embed: null argument".into());
        }
        // SAFETY: per the ABI, checked non-null above.
        let (data, dims) = unsafe { input_tensor(input, shape, ndim) };
        // SAFETY: valid handle.
        let t = unsafe { trainer_ref::<T>(handle) };
        let (out_shape, out_data) = t.trainer.embed(data, &dims)?;
        // SAFETY: `out` is non-null and writable.
        unsafe { lend_output(out_shape, out_data, &mut t.out_shape, &mut t.out_data, out) }
    })
}

macro_rules! trainer_path_fn {
    ($name:ident, $method:ident) => {
        unsafe extern "C" fn $name<T: PluginBackend>(
            handle: TrainerHandle,
            path: *const c_char,
        ) -> Status {
            guard(stringify!($name), || {
                if handle.is_null() {
                    return Err(concat!(stringify!($name), ": null handle").into());
                }
                // SAFETY: the host passes a valid string or null (refused).
                let path = unsafe { arg_str(path, stringify!($name)) }?;
                // SAFETY: valid handle.
                unsafe { trainer_ref::<T>(handle) }.trainer.$method(std::path::Path::new(path))
            })
        }
    };
}
trainer_path_fn!(trainer_save_weights, save_weights);
trainer_path_fn!(trainer_save_state, save_state);
trainer_path_fn!(trainer_load_state, load_state);

unsafe extern "C" fn trainer_destroy<T: PluginBackend>(handle: TrainerHandle) {
    if handle.is_null() {
        return;
    }
    let _ = guard("trainer_destroy", || {
        // SAFETY: handle came from Box::into_raw in trainer_create for T; destroyed once.
        drop(unsafe { Box::from_raw(handle.cast::<TrainerBox<T::Trainer>>()) });
        Ok(())
    });
}

/// Exports `irtdb_plugin_entry` for a type implementing [`PluginBackend`].
///
/// ```ignore
/// irtdb_plugin_api::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        static __IRTDB_PLUGIN_VTABLE: $crate::PluginVTable = $crate::plugin::vtable::<$plugin>();

        /// The irtdb plugin entry point (see `irtdb_plugin_api`).
        #[no_mangle]
        pub unsafe extern "C" fn irtdb_plugin_entry(
            requested_abi: u32,
        ) -> *const $crate::PluginVTable {
            match ::std::panic::catch_unwind(|| {
                $crate::plugin::entry(requested_abi, &__IRTDB_PLUGIN_VTABLE)
            }) {
                Ok(p) => p,
                Err(_) => ::std::ptr::null(),
            }
        }
    };
}
