//! Loading an optional system library at run time (libheif, libturbojpeg): the first of its
//! usual names that the dynamic loader finds.

/// Opens the first of `names` that loads, returning it with the name it was found under; `Err`
/// says which library was missing and why each name failed.
///
/// # Safety
///
/// Loading a library runs its initialisers: only for libraries whose initialisers have no side
/// effects beyond their own state (libheif, libturbojpeg).
pub(crate) unsafe fn open_first(
    what: &str,
    names: &'static [&'static str],
) -> Result<(libloading::Library, &'static str), String> {
    let mut errors = Vec::new();
    for name in names {
        // SAFETY: the caller vouches for the library's initialisers.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return Ok((lib, name)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(format!("{what} was not found ({})", errors.join("; ")))
}
