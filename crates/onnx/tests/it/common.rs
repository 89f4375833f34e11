//! Shared helpers: the process-wide ONNX Runtime environment and a one-call runner.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

/// The ONNX Runtime shared library: `ORT_DYLIB_PATH`, else the copy that
/// `scripts/setup-onnxruntime.sh` puts under `.deps/`. Missing is a failure, not a skip.
fn dylib_path() -> PathBuf {
    let path = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../.deps/onnxruntime/libonnxruntime.so"),
    };
    assert!(
        path.is_file(),
        "ONNX Runtime library not found at {} (from ORT_DYLIB_PATH or the default .deps path); \
         run scripts/setup-onnxruntime.sh at the repository root, or set ORT_DYLIB_PATH",
        path.display()
    );
    path
}

/// ort allows one environment per process (a second `build()` fails even after the first is
/// dropped), so every test shares this one.
pub fn env() -> &'static Environment {
    static ENV: OnceLock<Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = dylib_path();
        ort::init_from(&path)
            .unwrap_or_else(|e| panic!("cannot load ONNX Runtime from {}: {e}", path.display()))
            .with_name("irtdb-onnx-tests")
            .build()
            .unwrap_or_else(|e| panic!("cannot create the ONNX Runtime environment: {e}"))
    })
}

/// Runs `model` on one f32 input of `shape` and returns the named output's shape and data.
pub fn run_onnx(
    model: &[u8],
    input: &str,
    shape: Vec<usize>,
    data: Vec<f32>,
    output: &str,
) -> (Vec<i64>, Vec<f32>) {
    let mut session = Session::builder(env())
        .expect("session builder")
        .with_intra_threads(1)
        .expect("intra threads")
        .commit_from_memory(model)
        .expect("ONNX Runtime rejected the model");
    let tensor = Tensor::from_array((shape, data)).expect("input tensor");
    let outputs = session.run(ort::inputs![input => tensor]).expect("run");
    let (shape, values) = outputs[output].try_extract_tensor::<f32>().expect("f32 output");
    (shape.to_vec(), values.to_vec())
}

/// Largest absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
