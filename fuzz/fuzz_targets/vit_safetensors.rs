//! timm-named safetensors → `VitWeights` → ONNX graph, on arbitrary bytes: every malformed,
//! truncated or inconsistent checkpoint must be an `Err` naming what is wrong, never a panic or
//! an abort, and whatever is accepted must build a graph.
#![no_main]

use irtdb_onnx::{build_vit_onnx, ConfigOverrides, GraphOutput, VitWeights};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(w) = VitWeights::from_safetensors_bytes(data, &ConfigOverrides::default()) else {
        return;
    };
    let c = &w.config;
    // Shapes are checked against the tensors, which are all in `data`: a config this large
    // cannot have come from a small input unless a check is missing.
    assert!(c.dim * c.depth <= data.len(), "{c:?} from {} bytes", data.len());
    let graph = build_vit_onnx(&w, GraphOutput::Tokens).expect("accepted weights build a graph");
    assert!(!graph.is_empty());
    build_vit_onnx(&w, GraphOutput::Pooled).expect("accepted weights build a pooled graph");
});
