//! HEIF/HEIC and AVIF decoding through the system's libheif, loaded at run time.
//!
//! Why this module exists: iPhones store photos as HEIC, and AVIF is spreading; neither has a
//! maintained pure-Rust decoder. libheif (with libde265 for HEVC and dav1d/aom for AV1) is what
//! GIMP, ImageMagick, GNOME and Pillow's `pillow-heif` use. irtdb loads `libheif.so.1` with
//! `dlopen` on first use instead of linking it, for two reasons: the build then needs no
//! `libheif-dev`, and a machine without libheif still runs irtdb (HEIC files get an error that
//! says which package to install). The Rust wrapper crate `libheif-rs` requires libheif ≥ 1.17,
//! newer than Debian 12's 1.15; the dozen C functions below exist unchanged since libheif 1.4.
//!
//! libheif applies the HEIF transformations (`irot` rotation, `imir` mirror, `clap` crop) while
//! decoding, which is the HEIF equivalent of EXIF orientation (an EXIF orientation tag inside a
//! HEIF file must be ignored, per the HEIF specification, and is).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;
use std::sync::OnceLock;

use image::{GrayImage, RgbImage, RgbaImage};

use crate::decode::DecodeLimits;
use crate::error::{Error, Result};

/// The library names tried, in order.
const LIBRARY_NAMES: &[&str] = &["libheif.so.1", "libheif.so", "libheif.1.dylib", "libheif.dylib"];

/// What a user installs to read HEIC/AVIF files.
pub const INSTALL_HINT: &str = "install libheif (Debian/Ubuntu: apt install libheif1; Fedora: dnf \
                                install libheif; macOS: brew install libheif), or convert the file \
                                to JPEG/PNG";

/// `struct heif_error`, returned by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct HeifError {
    code: c_int,
    subcode: c_int,
    message: *const c_char,
}

// enum values from libheif/heif.h (stable across 1.x).
const COLORSPACE_RGB: c_int = 1;
const CHROMA_INTERLEAVED_RGB: c_int = 10;
const CHROMA_INTERLEAVED_RGBA: c_int = 11;
const CHANNEL_INTERLEAVED: c_int = 10;

type Ctx = c_void;
type Handle = c_void;
type Image = c_void;

/// The functions irtdb calls, resolved once.
struct Api {
    // Kept alive for as long as the function pointers are used (the process lifetime).
    _lib: libloading::Library,
    version: String,
    context_alloc: unsafe extern "C" fn() -> *mut Ctx,
    context_free: unsafe extern "C" fn(*mut Ctx),
    read_from_memory:
        unsafe extern "C" fn(*mut Ctx, *const c_void, usize, *const c_void) -> HeifError,
    primary_handle: unsafe extern "C" fn(*mut Ctx, *mut *mut Handle) -> HeifError,
    handle_release: unsafe extern "C" fn(*const Handle),
    handle_width: unsafe extern "C" fn(*const Handle) -> c_int,
    handle_height: unsafe extern "C" fn(*const Handle) -> c_int,
    handle_has_alpha: unsafe extern "C" fn(*const Handle) -> c_int,
    decode: unsafe extern "C" fn(
        *const Handle,
        *mut *mut Image,
        c_int,
        c_int,
        *const c_void,
    ) -> HeifError,
    image_release: unsafe extern "C" fn(*const Image),
    image_width: unsafe extern "C" fn(*const Image, c_int) -> c_int,
    image_height: unsafe extern "C" fn(*const Image, c_int) -> c_int,
    plane: unsafe extern "C" fn(*const Image, c_int, *mut c_int) -> *const u8,
}

// SAFETY: the API is a table of C function pointers into a library that stays loaded; libheif
// is thread-safe for separate contexts, and every call here uses its own context.
unsafe impl Send for Api {}
unsafe impl Sync for Api {}

/// libheif, loaded on first use; `Err` says why it could not be.
fn api() -> std::result::Result<&'static Api, &'static str> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(String::as_str)
}

fn load() -> std::result::Result<Api, String> {
    // SAFETY: loading libheif runs its (side-effect free) initialisers only.
    let (lib, name) = unsafe { crate::dylib::open_first("libheif", LIBRARY_NAMES) }?;
    resolve(lib).map_err(|e| format!("{name}: {e}"))
}

fn resolve(lib: libloading::Library) -> std::result::Result<Api, libloading::Error> {
    // SAFETY: each symbol is declared with the signature heif.h gives it.
    unsafe {
        macro_rules! sym {
            ($name:literal) => {
                *lib.get($name)?
            };
        }
        // heif_init (1.13+) loads decoder plugins where libheif was built with them.
        if let Ok(init) = lib.get::<unsafe extern "C" fn(*const c_void) -> HeifError>(b"heif_init")
        {
            init(std::ptr::null());
        }
        let get_version: unsafe extern "C" fn() -> *const c_char = sym!(b"heif_get_version");
        let version = CStr::from_ptr(get_version()).to_string_lossy().into_owned();
        Ok(Api {
            version,
            context_alloc: sym!(b"heif_context_alloc"),
            context_free: sym!(b"heif_context_free"),
            read_from_memory: sym!(b"heif_context_read_from_memory_without_copy"),
            primary_handle: sym!(b"heif_context_get_primary_image_handle"),
            handle_release: sym!(b"heif_image_handle_release"),
            handle_width: sym!(b"heif_image_handle_get_width"),
            handle_height: sym!(b"heif_image_handle_get_height"),
            handle_has_alpha: sym!(b"heif_image_handle_has_alpha_channel"),
            decode: sym!(b"heif_decode_image"),
            image_release: sym!(b"heif_image_release"),
            image_width: sym!(b"heif_image_get_width"),
            image_height: sym!(b"heif_image_get_height"),
            plane: sym!(b"heif_image_get_plane_readonly"),
            _lib: lib,
        })
    }
}

/// The version of the libheif this process would use, or why there is none (for `irtdb doctor`).
pub fn libheif_version() -> std::result::Result<String, String> {
    api().map(|a| a.version.clone()).map_err(str::to_owned)
}

/// Whether `data` starts like an ISO base media file whose brand is HEIF or AVIF.
pub fn is_heif(data: &[u8]) -> bool {
    const BRANDS: &[&[u8; 4]] = &[
        b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1",
        b"avif", b"avis", b"mif2",
    ];
    data.len() >= 12 && &data[4..8] == b"ftyp" && BRANDS.iter().any(|b| &data[8..12] == *b)
}

/// Owns a libheif object and releases it on drop.
struct Owned<'a, T> {
    ptr: *mut T,
    release: &'a dyn Fn(*mut T),
}

impl<T> Drop for Owned<'_, T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            (self.release)(self.ptr);
        }
    }
}

/// Decodes the primary image of a HEIF/AVIF file: 8-bit RGB, transformations applied, plus the
/// alpha channel when the image has one that is not all opaque. The size is checked against `limits` before decoding.
pub(crate) fn decode(
    data: &[u8],
    path: &Path,
    limits: &DecodeLimits,
) -> Result<(RgbImage, Option<GrayImage>)> {
    let api = api().map_err(|why| Error::Unsupported {
        path: path.to_path_buf(),
        detail: format!("a HEIF/HEIC/AVIF image needs libheif: {why}; {INSTALL_HINT}"),
    })?;
    let failed = |what: &str, e: HeifError| {
        let message = if e.message.is_null() {
            String::new()
        } else {
            // SAFETY: libheif's error messages are static NUL-terminated strings.
            unsafe { CStr::from_ptr(e.message) }.to_string_lossy().into_owned()
        };
        Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "libheif {}: {what}: {message} (error {}.{})",
                api.version, e.code, e.subcode
            ),
        }
    };
    // SAFETY: every pointer passed to libheif is either one it returned (checked non-null, freed
    // once by its Owned guard, after every object derived from it) or `data`, which outlives the
    // context that reads it without copying.
    unsafe {
        let free_ctx = |p: *mut Ctx| (api.context_free)(p);
        let ctx = Owned { ptr: (api.context_alloc)(), release: &free_ctx };
        if ctx.ptr.is_null() {
            return Err(Error::TooMuchMemory {
                path: path.to_path_buf(),
                detail: "libheif could not allocate a context".into(),
                limit: limits.max_alloc_bytes,
            });
        }
        let e = (api.read_from_memory)(ctx.ptr, data.as_ptr().cast(), data.len(), std::ptr::null());
        if e.code != 0 {
            return Err(failed("reading the file", e));
        }
        let release_handle = |p: *mut Handle| (api.handle_release)(p);
        let mut handle = Owned { ptr: std::ptr::null_mut(), release: &release_handle };
        let e = (api.primary_handle)(ctx.ptr, &mut handle.ptr);
        if e.code != 0 || handle.ptr.is_null() {
            return Err(failed("finding the primary image", e));
        }
        let (width, height) = ((api.handle_width)(handle.ptr), (api.handle_height)(handle.ptr));
        let (w, h) = (u32::try_from(width).unwrap_or(0), u32::try_from(height).unwrap_or(0));
        let pixels = u64::from(w) * u64::from(h);
        if pixels == 0 {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: format!("the header declares an empty image ({width}×{height})"),
            });
        }
        if pixels > limits.max_pixels {
            return Err(Error::TooLarge {
                path: path.to_path_buf(),
                width: w,
                height: h,
                pixels,
                limit: limits.max_pixels,
            });
        }
        let alpha = (api.handle_has_alpha)(handle.ptr) != 0;
        let channels: u64 = if alpha { 4 } else { 3 };
        // libheif's own YCbCr planes plus the interleaved output, roughly 2× the output.
        let needed = 2 * pixels * channels;
        if needed > limits.max_alloc_bytes {
            return Err(Error::TooMuchMemory {
                path: path.to_path_buf(),
                detail: format!("{w}×{h} HEIF needs about {needed} bytes to decode"),
                limit: limits.max_alloc_bytes,
            });
        }
        let chroma = if alpha { CHROMA_INTERLEAVED_RGBA } else { CHROMA_INTERLEAVED_RGB };
        let release_image = |p: *mut Image| (api.image_release)(p);
        let mut image = Owned { ptr: std::ptr::null_mut(), release: &release_image };
        let e = (api.decode)(handle.ptr, &mut image.ptr, COLORSPACE_RGB, chroma, std::ptr::null());
        if e.code != 0 || image.ptr.is_null() {
            return Err(failed("decoding", e));
        }
        let iw = (api.image_width)(image.ptr, CHANNEL_INTERLEAVED);
        let ih = (api.image_height)(image.ptr, CHANNEL_INTERLEAVED);
        let mut stride: c_int = 0;
        let plane = (api.plane)(image.ptr, CHANNEL_INTERLEAVED, &mut stride);
        let (Ok(iw), Ok(ih), Ok(stride)) =
            (usize::try_from(iw), usize::try_from(ih), usize::try_from(stride))
        else {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: "libheif returned a negative size".into(),
            });
        };
        let row = iw * channels as usize;
        if plane.is_null() || iw == 0 || ih == 0 || stride < row {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: format!("libheif returned no usable pixels ({iw}×{ih}, stride {stride})"),
            });
        }
        let bytes = std::slice::from_raw_parts(plane, stride * (ih - 1) + row);
        // Rows without libheif's padding.
        let mut packed = Vec::with_capacity(row * ih);
        for y in 0..ih {
            packed.extend_from_slice(&bytes[y * stride..y * stride + row]);
        }
        let (iw, ih) = (iw as u32, ih as u32);
        Ok(if alpha {
            crate::decode::split_alpha(RgbaImage::from_raw(iw, ih, packed).expect("sized above"))
        } else {
            (RgbImage::from_raw(iw, ih, packed).expect("sized above"), None)
        })
    }
}
