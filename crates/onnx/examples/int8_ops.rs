//! Which ONNX formulation of an int8 linear layer ONNX Runtime's CPU runs fastest: the forward
//! of a random DeiT-S in f32, with `com.microsoft.DynamicQuantizeMatMul`, and with the standard
//! `DynamicQuantizeLinear → MatMulInteger → Cast → Mul` chain, in one run (same machine state).
//!
//!     ORT_DYLIB_PATH=.deps/onnxruntime/libonnxruntime.so \
//!       cargo run --release -p irtdb-onnx --example int8_ops -- [BATCH] [THREADS] [PREPACK]
//!
//! PREPACK 0 turns weight prepacking off (`session.disable_prepacking`, as the ort plugin's
//! sessions run); default 1 (ONNX Runtime's default).

use std::time::Instant;

use irtdb_onnx::testing::{deit_config, random_images, random_vit};
use irtdb_onnx::{build_vit_onnx, build_vit_onnx_int8_ops, GraphOutput, Int8Ops, VitWeights};
use ort::session::Session;
use ort::value::Tensor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let batch = args.first().copied().unwrap_or(16);
    let threads = args.get(1).copied().unwrap_or(2);
    let prepack = args.get(2).copied().unwrap_or(1) != 0;
    let dylib = std::env::var("ORT_DYLIB_PATH").map_err(|_| "set ORT_DYLIB_PATH")?;
    let env = ort::init_from(&dylib)?.with_name("int8-ops").build()?;
    let cfg = deit_config("deit_small_patch16_224").ok_or("preset")?;
    let w = VitWeights::with_config(cfg.clone(), random_vit(&cfg, 1))?;
    let images = random_images(&cfg, batch, 2);
    let shape = vec![batch, 3, cfg.img_size[0], cfg.img_size[1]];
    let graphs = [
        ("fp32 MatMul", build_vit_onnx(&w, GraphOutput::Pooled)?),
        (
            "int8 DynamicQuantizeMatMul",
            build_vit_onnx_int8_ops(&w, GraphOutput::Pooled, Int8Ops::DynamicQuantizeMatMul)?,
        ),
        (
            "int8 DynamicQuantizeLinear+MatMulInteger+Cast+Mul",
            build_vit_onnx_int8_ops(&w, GraphOutput::Pooled, Int8Ops::MatMulInteger)?,
        ),
    ];
    let mut sessions = graphs
        .iter()
        .map(|(name, g)| {
            let s = Session::builder(&env)?
                .with_intra_threads(threads)?
                .with_config_entry("session.disable_prepacking", if prepack { "0" } else { "1" })?
                .commit_from_memory(g)?;
            Ok((*name, s))
        })
        .collect::<Result<Vec<_>, ort::Error>>()?;
    println!(
        "random DeiT-S, batch {batch}, {threads} threads, prepacking {prepack}: img/s per round"
    );
    let mut best = vec![0.0f64; sessions.len()];
    for round in 0..3 {
        for (i, (name, s)) in sessions.iter_mut().enumerate() {
            let t = Instant::now();
            let mut n = 0;
            while n == 0 || t.elapsed().as_secs_f64() < 3.0 {
                let x = Tensor::from_array((shape.clone(), images.clone()))?;
                s.run(ort::inputs!["pixel_values" => x])?;
                n += batch;
            }
            let ips = n as f64 / t.elapsed().as_secs_f64();
            best[i] = best[i].max(ips);
            println!("round {round}  {name:<52} {ips:7.1}");
        }
    }
    for ((name, _), b) in sessions.iter().zip(&best) {
        println!("best  {name:<52} {b:7.1} img/s ({:.2}x fp32)", b / best[0]);
    }
    Ok(())
}
