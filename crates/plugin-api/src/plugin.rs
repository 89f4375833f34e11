//! The plugin side of the ABI: implement [`PluginBackend`] and call [`export_plugin!`](crate::export_plugin).
//!
//! The generated `irtdb_plugin_entry` and every function in the vtable catch panics and turn
//! them, like ordinary errors, into a [`Status`] plus a message for `last_error`. A panic that
//! escaped an `extern "C"` function would abort the host.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use irtdb_core::BackboneInfo;

use crate::{
    BackboneHandle, OutTensor, PluginDescription, PluginVTable, Status, ABI_VERSION, MAX_DIMS,
    STATUS_ERROR, STATUS_OK, STATUS_PANIC,
};

/// A plugin: a name, capabilities, and a factory for backbones.
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
    /// Creates a backbone from the host's JSON configuration.
    fn create(config_json: &str) -> Result<Self::Backbone, String>;
}

/// A backbone living inside a plugin.
pub trait PluginBackbone: 'static {
    fn info(&self) -> BackboneInfo;
    /// `input` is `[B, 3, H, W]` (shape in `shape`); returns the output shape and values.
    fn forward(&mut self, input: &[f32], shape: &[usize])
        -> Result<(Vec<usize>, Vec<f32>), String>;
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
        let backbone = T::create(config)?;
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
        // SAFETY: the host passes `ndim` dims and a buffer of their product (checked by host).
        let dims: Vec<usize> = unsafe { std::slice::from_raw_parts(shape, ndim as usize) }
            .iter()
            .map(|&d| d as usize)
            .collect();
        let len = dims.iter().product::<usize>();
        let data = unsafe { std::slice::from_raw_parts(input, len) };
        // SAFETY: handle came from backbone_create for T; the host serialises calls per handle.
        let h = unsafe { &mut *handle.cast::<Handle<T::Backbone>>() };
        let (out_shape, out_data) = h.backbone.forward(data, &dims)?;
        if out_shape.len() > MAX_DIMS || out_shape.iter().product::<usize>() != out_data.len() {
            return Err(format!(
                "plugin bug: output shape {out_shape:?} does not match {} values",
                out_data.len()
            ));
        }
        h.out_shape = out_shape;
        h.out_data = out_data;
        let mut t = OutTensor {
            data: h.out_data.as_ptr(),
            ndim: h.out_shape.len() as u32,
            ..Default::default()
        };
        for (slot, d) in t.shape.iter_mut().zip(&h.out_shape) {
            *slot = *d as u64;
        }
        // SAFETY: `out` is non-null and writable.
        unsafe { *out = t };
        Ok(())
    })
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
