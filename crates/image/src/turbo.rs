//! Scaled JPEG decoding through the system's libjpeg-turbo (its TurboJPEG API), loaded at run
//! time.
//!
//! Why this module exists: a 12-megapixel phone photo prepared for a 224-pixel model needs only
//! 1/8 of its pixels, and libjpeg's scaled decoding (what Pillow's `Image.draft` uses) produces
//! them without an inverse DCT at full size. What remains is the entropy decoding of every
//! coefficient, and there libjpeg-turbo is ~2.7× faster than `jpeg-decoder` (23 vs 64 ms for a
//! 2.4 MB 4000×3000 photo at 1/8 on the development machine; `cargo bench --bench decode`).
//!
//! It is loaded with `dlopen` rather than linked, as libheif is (see [`crate::heif`]): the build
//! needs no `libturbojpeg0-dev`, and a machine without `libturbojpeg.so.0` still decodes every
//! JPEG, with `jpeg-decoder` at 1/4 and 1/8 instead. The few functions used are the TurboJPEG 2
//! API, unchanged since libjpeg-turbo 1.4 and kept by 3.x.
//!
//! Untrusted input: every call has its own decompressor handle (thread-safe), a progressive file
//! may not have more than 500 scans (`TJFLAG_LIMITSCANS`, against scan-flooding bombs), the
//! output buffer is allocated here at the size the header promises, and a fatal libjpeg error
//! comes back as an error code (TurboJPEG catches libjpeg's `longjmp` inside the library). A
//! *warning* (e.g. "extraneous bytes before marker", common in camera files) still yields the
//! image, as in every photo viewer built on libjpeg; truncation is caught before decoding (see
//! `decode::jpeg_reaches_end`).

use std::ffi::{c_char, c_int, c_ulong, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The library names tried, in order.
const LIBRARY_NAMES: &[&str] =
    &["libturbojpeg.so.0", "libturbojpeg.so", "libturbojpeg.0.dylib", "libturbojpeg.dylib"];

/// What a user installs for fast decoding of large JPEGs.
pub const INSTALL_HINT: &str = "install libjpeg-turbo's TurboJPEG library (Debian/Ubuntu: apt \
                                install libturbojpeg0; Fedora: dnf install turbojpeg; macOS: brew \
                                install jpeg-turbo)";

// Values from turbojpeg.h (stable since 1.4).
const TJPF_RGB: c_int = 0;
const TJCS_RGB: c_int = 0;
const TJCS_YCBCR: c_int = 1;
const TJCS_GRAY: c_int = 2;
const TJERR_WARNING: c_int = 0;
/// At most 500 scans in a progressive JPEG (libjpeg-turbo ≥ 2.1; ignored by older versions).
const TJFLAG_LIMITSCANS: c_int = 32768;

type Handle = *mut c_void;

/// The functions irtdb calls, resolved once.
struct Api {
    // Kept alive for as long as the function pointers are used (the process lifetime).
    _lib: libloading::Library,
    name: &'static str,
    init_decompress: unsafe extern "C" fn() -> Handle,
    destroy: unsafe extern "C" fn(Handle) -> c_int,
    decompress_header3: unsafe extern "C" fn(
        Handle,
        *const u8,
        c_ulong,
        *mut c_int,
        *mut c_int,
        *mut c_int,
        *mut c_int,
    ) -> c_int,
    decompress2: unsafe extern "C" fn(
        Handle,
        *const u8,
        c_ulong,
        *mut u8,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
    ) -> c_int,
    error_str2: unsafe extern "C" fn(Handle) -> *const c_char,
    error_code: unsafe extern "C" fn(Handle) -> c_int,
}

// SAFETY: a table of C function pointers into a library that stays loaded; TurboJPEG handles are
// independent, and every decode here uses its own.
unsafe impl Send for Api {}
unsafe impl Sync for Api {}

/// libturbojpeg, loaded on first use; `Err` says why it could not be.
fn api() -> std::result::Result<&'static Api, &'static str> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(String::as_str)
}

fn load() -> std::result::Result<Api, String> {
    if std::env::var_os("IRTDB_NO_TURBOJPEG").is_some_and(|v| !v.is_empty() && v != "0") {
        return Err("disabled by IRTDB_NO_TURBOJPEG".into());
    }
    // SAFETY: loading libturbojpeg runs its (side-effect free) initialisers only.
    let (lib, name) = unsafe { crate::dylib::open_first("libturbojpeg", LIBRARY_NAMES) }?;
    resolve(lib, name).map_err(|e| format!("{name}: {e}"))
}

fn resolve(lib: libloading::Library, name: &'static str) -> Result<Api, libloading::Error> {
    // SAFETY: each symbol is declared with the signature turbojpeg.h gives it.
    unsafe {
        macro_rules! sym {
            ($name:literal) => {
                *lib.get($name)?
            };
        }
        Ok(Api {
            name,
            init_decompress: sym!(b"tjInitDecompress"),
            destroy: sym!(b"tjDestroy"),
            decompress_header3: sym!(b"tjDecompressHeader3"),
            decompress2: sym!(b"tjDecompress2"),
            error_str2: sym!(b"tjGetErrorStr2"),
            error_code: sym!(b"tjGetErrorCode"),
            _lib: lib,
        })
    }
}

/// Whether scaled decodes may use libjpeg-turbo (see [`set_enabled`]).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether libturbojpeg is loaded and enabled (and so JPEGs are decoded at 1/2 as well as 1/4 and
/// 1/8).
pub fn available() -> bool {
    ENABLED.load(Ordering::Relaxed) && api().is_ok()
}

/// Turns the use of libjpeg-turbo on or off for this process, for side-by-side comparisons
/// (`cargo bench --bench decode`); decoding stays correct either way (jpeg-decoder). To turn it
/// off for a whole run, set `IRTDB_NO_TURBOJPEG=1`.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// The library this process uses, or why there is none (for `irtdb doctor`).
pub fn library() -> std::result::Result<&'static str, &'static str> {
    api().map(|a| a.name)
}

/// Why a scaled decode did not produce an image.
#[derive(Debug)]
pub enum Failure {
    /// The file is one this path does not handle (CMYK/YCCK colours, a size that disagrees with
    /// the caller's header, no library): decode it another way.
    NotHandled,
    /// libjpeg refused the data: the message it gave.
    Corrupt(String),
}

/// Owns a decompressor handle and destroys it on drop.
struct Decompressor<'a> {
    api: &'a Api,
    handle: Handle,
}

impl Drop for Decompressor<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed once.
        unsafe { (self.api.destroy)(self.handle) };
    }
}

impl Decompressor<'_> {
    fn error(&self) -> String {
        // SAFETY: the handle is live; the message is a NUL-terminated string inside it.
        let message = unsafe { (self.api.error_str2)(self.handle) };
        if message.is_null() {
            return "unknown libjpeg error".into();
        }
        // SAFETY: as above.
        unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
    }
}

/// Decodes `data`, a JPEG stored as `width × height`, at `1 / denominator` of its size
/// (`ceil(side / denominator)` pixels per side, as libjpeg computes it) into interleaved 8-bit
/// RGB. Grey JPEGs come back as RGB with equal channels. The caller checked the header's size
/// against its limits; the output is allocated here at the scaled size only.
pub fn decode_scaled(
    data: &[u8],
    width: u32,
    height: u32,
    denominator: u32,
) -> Result<Vec<u8>, Failure> {
    if !ENABLED.load(Ordering::Relaxed) {
        return Err(Failure::NotHandled);
    }
    let api = api().map_err(|_| Failure::NotHandled)?;
    // SAFETY: tjInitDecompress has no preconditions; a null handle is checked.
    let handle = unsafe { (api.init_decompress)() };
    if handle.is_null() {
        return Err(Failure::NotHandled);
    }
    let tj = Decompressor { api, handle };
    let (mut w, mut h, mut subsampling, mut colorspace) = (0, 0, 0, 0);
    let len = c_ulong::try_from(data.len()).map_err(|_| Failure::NotHandled)?;
    // SAFETY: `data` is valid for `len` bytes; the out-pointers are live locals.
    let status = unsafe {
        (api.decompress_header3)(
            tj.handle,
            data.as_ptr(),
            len,
            &mut w,
            &mut h,
            &mut subsampling,
            &mut colorspace,
        )
    };
    if status != 0 {
        return Err(Failure::Corrupt(tj.error()));
    }
    if (u32::try_from(w), u32::try_from(h)) != (Ok(width), Ok(height))
        || !matches!(colorspace, TJCS_RGB | TJCS_YCBCR | TJCS_GRAY)
    {
        return Err(Failure::NotHandled);
    }
    let (out_w, out_h) = (width.div_ceil(denominator), height.div_ceil(denominator));
    let mut out = vec![0u8; out_w as usize * out_h as usize * 3];
    // SAFETY: `out` holds out_h rows of out_w RGB pixels, the pitch given; TurboJPEG decodes at
    // the largest scaling factor whose result fits in out_w × out_h, which for the sizes scaled
    // here (at least 8 pixels a side) is 1/denominator exactly, and never writes beyond.
    let status = unsafe {
        (api.decompress2)(
            tj.handle,
            data.as_ptr(),
            len,
            out.as_mut_ptr(),
            out_w as c_int,
            (out_w * 3) as c_int,
            out_h as c_int,
            TJPF_RGB,
            TJFLAG_LIMITSCANS,
        )
    };
    // SAFETY: the handle is live.
    if status != 0 && unsafe { (api.error_code)(tj.handle) } != TJERR_WARNING {
        return Err(Failure::Corrupt(tj.error()));
    }
    Ok(out)
}
