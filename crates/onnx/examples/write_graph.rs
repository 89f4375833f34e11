//! Writes the ONNX graph irtdb builds for a timm-named safetensors file, for inspection (Netron,
//! `onnx.checker`) and for comparing ONNX Runtime's optimised graphs and profiles with another
//! export of the same weights (benches/ort_graphs.py).
//!
//!     cargo run --release -p irtdb-onnx --example write_graph -- WEIGHTS.safetensors OUT.onnx [pooled]

use std::path::Path;

use irtdb_onnx::{build_vit_onnx, ConfigOverrides, GraphOutput, VitWeights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, out, rest @ ..] = args.as_slice() else {
        return Err("usage: write_graph WEIGHTS.safetensors OUT.onnx [pooled]".into());
    };
    let output = match rest.first().map(String::as_str) {
        None | Some("tokens") => GraphOutput::Tokens,
        Some("pooled") => GraphOutput::Pooled,
        Some(other) => return Err(format!("unknown output {other:?}: tokens or pooled").into()),
    };
    let w = VitWeights::load(Path::new(weights), &ConfigOverrides::default())?;
    let bytes = build_vit_onnx(&w, output)?;
    std::fs::write(out, &bytes)?;
    println!("wrote {out} ({} bytes)", bytes.len());
    Ok(())
}
