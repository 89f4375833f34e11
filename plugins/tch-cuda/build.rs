//! Link arguments for libtorch: an rpath so the plugin finds libtorch without LD_LIBRARY_PATH,
//! and libtorch_cuda forced in when (and only when) this libtorch has it.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=build.rs");
    let lib = match (std::env::var_os("LIBTORCH_LIB"), std::env::var_os("LIBTORCH")) {
        (Some(l), _) | (None, Some(l)) => PathBuf::from(l).join("lib"),
        (None, None) => return, // torch-sys fails with its own message
    };
    let lib = lib.canonicalize().unwrap_or(lib);
    // Switching between the CPU and the --cuda setup adds or removes libtorch_cuda.so.
    println!("cargo:rerun-if-changed={}", lib.display());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    // The build tree's libtorch (absolute), then libtorch next to an installed plugin.
    for dir in [lib.display().to_string(), "$ORIGIN".into(), "$ORIGIN/libtorch/lib".into()] {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    // Nothing in tch calls into libtorch_cuda directly: its CUDA kernels register themselves
    // when the library loads. rustc links with --as-needed, which would drop it and leave
    // `Cuda::is_available()` false on a GPU host, so keep it explicitly. A CPU-only setup
    // (scripts/setup-libtorch.sh without --cuda) has no libtorch_cuda.so: then nothing is forced.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        println!("cargo:rustc-cfg=tch_cuda_linked");
    }
    println!("cargo:rustc-check-cfg=cfg(tch_cuda_linked)");
}
