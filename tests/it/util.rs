//! Shared helpers: running the binary, compiling fixture plugins, making images and models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// ONNX Runtime's library: `ORT_DYLIB_PATH`, else the copy `scripts/setup-onnxruntime.sh` makes.
pub fn ort_lib() -> PathBuf {
    let p = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/onnxruntime/libonnxruntime.so"));
    assert!(
        p.is_file(),
        "ONNX Runtime library not found at {}: run scripts/setup-onnxruntime.sh (the README's test \
         command does) or set ORT_DYLIB_PATH",
        p.display()
    );
    p
}

/// The `irtdb` binary under test, with a clean plugin environment.
pub fn irtdb() -> Command {
    irtdb_at(Path::new(env!("CARGO_BIN_EXE_irtdb")))
}

pub fn irtdb_at(exe: &Path) -> Command {
    let mut c = Command::new(exe);
    c.env_remove("IRTDB_PLUGIN_PATH")
        .env_remove("IRTDB_MODEL")
        .env_remove("IRTDB_FIXTURE_ENTRY")
        .env_remove("IRTDB_FIXTURE_MODE")
        .env("ORT_DYLIB_PATH", ort_lib())
        // Keep the user's data dir (and any plugins installed there) out of the tests.
        .env("XDG_DATA_HOME", scratch().join("xdg-data"))
        .env("XDG_CACHE_HOME", scratch().join("xdg-cache"))
        // Never the real hub: a cache of the tests' own and an endpoint that refuses.
        .env_remove("HF_HOME")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_HUB_CACHE", scratch().join("hf-cache"))
        .env("HF_ENDPOINT", "http://127.0.0.1:9");
    c
}

/// The test Python (`IRTDB_TEST_PYTHON`, else `.deps/venv/bin/python`) if it can import
/// `module`. Under the README's test command (which sets the variable) a missing module fails
/// the test; in a bare `cargo test` the test is skipped with a note.
pub fn test_python_with(module: &str) -> Option<PathBuf> {
    let set = std::env::var_os("IRTDB_TEST_PYTHON").map(PathBuf::from);
    let python = set.clone().unwrap_or_else(|| root().join(".deps/venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    match (ok, set.is_some()) {
        (true, _) => Some(python),
        (false, true) => panic!(
            "IRTDB_TEST_PYTHON={} cannot import {module}: run scripts/setup-test-env.sh",
            python.display()
        ),
        (false, false) => {
            eprintln!("skipped: no test Python with {module} (run scripts/setup-test-env.sh)");
            None
        }
    }
}

/// A process-wide scratch folder (fixtures compiled once per test run live here).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path()
}

/// Runs and returns output; panics with both streams if the exit status is not `code`.
pub fn run_expect(cmd: &mut Command, code: i32) -> Output {
    let out = cmd.output().expect("spawn irtdb");
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}):\n{}", String::from_utf8_lossy(&o.stdout))
    })
}

/// Compiles `tests/fixtures/<source>.rs` into `<dir>/libirtdb_plugin_<name>.so` with plain rustc:
/// a library built outside irtdb's own build.
pub fn compile_fixture(source: &str, name: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch().join("fixture-plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("libirtdb_plugin_{name}.so"));
    if !out.exists() {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let status = Command::new(rustc)
            .args(["--edition", "2021", "--crate-type", "cdylib", "-O", "-o"])
            .arg(&out)
            .arg(root().join("tests/fixtures").join(format!("{source}.rs")))
            .status()
            .expect("run rustc");
        assert!(status.success(), "compiling fixture {source} failed");
    }
    out
}

/// Writes an RGB image of `w`×`h` whose pixel (x, y) is `f(x, y)`; format from the extension.
pub fn write_image(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    img.save(path).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A smooth, seed-dependent test picture (so that different seeds give different descriptors).
pub fn write_picture(path: &Path, w: u32, h: u32, seed: u32) {
    let s = seed as f32;
    write_image(path, w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        [
            (127.0 + 120.0 * (6.0 * fx + s).sin()) as u8,
            (127.0 + 120.0 * (5.0 * fy + 2.0 * s).cos()) as u8,
            (127.0 + 120.0 * (4.0 * (fx + fy) + 0.5 * s).sin()) as u8,
        ]
    });
}

/// Writes a random-weight tiny ViT (`vit_micro`: dim 32, 2 blocks, 4 heads, patch 8, 32×32).
pub fn write_micro_vit(dir: &Path, distilled: bool) -> (PathBuf, irtdb_onnx::VitWeights) {
    let mut cfg = irtdb_onnx::testing::deit_config("vit_micro").expect("vit_micro preset");
    if distilled {
        cfg.prefix_tokens = 2;
    }
    let path =
        dir.join(if distilled { "micro_distilled.safetensors" } else { "micro.safetensors" });
    write_random_vit(&cfg, 7, path)
}

/// [`write_micro_vit`] (not distilled) with the random weights of `seed`, as
/// `micro{seed}.safetensors`.
pub fn write_micro_vit_seeded(dir: &Path, seed: u64) -> (PathBuf, irtdb_onnx::VitWeights) {
    let cfg = irtdb_onnx::testing::deit_config("vit_micro").expect("vit_micro preset");
    write_random_vit(&cfg, seed, dir.join(format!("micro{seed}.safetensors")))
}

/// Random weights of `cfg` from `seed` written to `path`, with the model card beside them.
fn write_random_vit(
    cfg: &irtdb_onnx::VitConfig,
    seed: u64,
    path: PathBuf,
) -> (PathBuf, irtdb_onnx::VitWeights) {
    let tensors = irtdb_onnx::testing::random_vit(cfg, seed);
    irtdb_onnx::testing::save_safetensors(&path, &tensors).unwrap();
    let overrides = irtdb_onnx::ConfigOverrides { heads: Some(cfg.heads), ..Default::default() };
    let weights = irtdb_onnx::VitWeights::from_tensors(tensors, &overrides).unwrap();
    // The model card `irtdb model random` writes beside the weights.
    let card = serde_json::json!({"num_heads": cfg.heads, "random_weights": true});
    std::fs::write(path.with_extension("json"), card.to_string()).unwrap();
    (path, weights)
}

/// Pictures of the generated galleries are 64×48 JPEGs.
pub const PICTURE_W: u32 = 64;
pub const PICTURE_H: u32 = 48;

/// The shared fixture of the collection tests: a temporary folder `dir` with the micro ViT
/// (`model`), a gallery of generated pictures in class folders (`gallery`) and the path of the
/// collection database (`db`, not created).
pub struct Fixture {
    pub _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub gallery: PathBuf,
    pub db: PathBuf,
    pub model: PathBuf,
}

impl Fixture {
    /// `classes × per_class` pictures in `gallery/classNN/III.jpg` (see [`add_pictures`]).
    pub fn new(classes: usize, per_class: usize) -> Self {
        let f = Self::model_only();
        add_pictures(&f.gallery, 0, classes, per_class, 0);
        f
    }

    /// The micro ViT only; `gallery` (`dir/gallery`) is not written.
    pub fn model_only() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let (model, _) = write_micro_vit(&dir, false);
        Fixture { gallery: dir.join("gallery"), db: dir.join("c.db"), dir, model, _tmp: tmp }
    }

    /// `irtdb SUBCOMMAND --db <db> ARGS...`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = irtdb();
        c.arg(args[0]).arg("--db").arg(&self.db).args(&args[1..]);
        c
    }

    /// `irtdb info --db <db> --json`.
    pub fn info(&self) -> serde_json::Value {
        json(&run_expect(&mut self.cmd(&["info", "--json"]), 0))
    }
}

/// The `(path, error)` of every failed image that `irtdb info --json` lists.
pub fn info_failures(info: &serde_json::Value) -> Vec<(String, String)> {
    info["failures"]
        .as_array()
        .unwrap_or_else(|| panic!("no failures list in {info:#}"))
        .iter()
        .map(|f| {
            (f["path"].as_str().unwrap().to_string(), f["error"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Writes `classes × per_class` pictures into `gallery/class{first_class + c}/III.jpg`, picture
/// `i` of class `c` from seed `c · 1000 + i + salt` (so that rewriting a file with another salt
/// changes its content).
pub fn add_pictures(
    gallery: &Path,
    first_class: usize,
    classes: usize,
    per_class: usize,
    salt: u32,
) {
    for c in first_class..first_class + classes {
        let dir = gallery.join(format!("class{c:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let seed = (c * 1000 + i) as u32 + salt;
            write_picture(&dir.join(format!("{i:03}.jpg")), PICTURE_W, PICTURE_H, seed);
        }
    }
}
