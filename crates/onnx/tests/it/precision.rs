//! int8 graphs ([`Precision::Int8`]): the quantiser against a direct computation, the graph's
//! shape (which layers are int8), and its descriptors against the f32 reference forward.

use irtdb_onnx::proto::ModelProto;
use irtdb_onnx::testing::{deit_config, random_images, random_vit_with_std};
use irtdb_onnx::{
    build_vit_onnx_int8_ops, build_vit_onnx_with, quantize_per_column, reference, GraphOutput,
    Int8Ops, Precision, VitConfig, VitWeights, INPUT_NAME, MS_DOMAIN, POOLED_OUTPUT,
};
use prost::Message;

use crate::common::run_onnx;

/// Documented bound (README, ARCHITECTURE.md): int8 pooled descriptors have a mean cosine of at
/// least this with the f32 ones. Measured on these random micro ViTs: ≥ 0.999 (see the printed
/// values); random DeiT-S on photo-like images: see `benches/precision.rs`.
const MIN_MEAN_COSINE: f64 = 0.99;

fn weights(cfg: &VitConfig, std: f32, seed: u64) -> VitWeights {
    VitWeights::with_config(cfg.clone(), random_vit_with_std(cfg, seed, std)).expect("weights")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn per_column_quantisation_is_symmetric_and_round_trips_within_half_a_step() {
    let (k, n) = (5, 3);
    // Column 0 positive, column 1 mixed with its extreme negative, column 2 all zero.
    let w: Vec<f32> = (0..k)
        .flat_map(|i| [0.1 * (i + 1) as f32, if i == 2 { -2.54 } else { 0.3 * i as f32 }, 0.0])
        .collect();
    let (q, s) = quantize_per_column(&w, k, n);
    assert_eq!(s.len(), n);
    assert!((s[0] - 0.5 / 127.0).abs() < 1e-9, "column 0 scale {}", s[0]);
    assert!((s[1] - 2.54 / 127.0).abs() < 1e-9, "column 1 scale {}", s[1]);
    assert_eq!(s[2], 1.0, "an all-zero column keeps a usable scale");
    let q: Vec<i8> = q.into_iter().map(|b| b as i8).collect();
    assert_eq!(q[(k - 1) * n], 127, "the column's largest |w| maps to 127");
    assert_eq!(q[2 * n + 1], -127, "symmetric: the largest negative maps to -127");
    for (i, (&qi, &wi)) in q.iter().zip(&w).enumerate() {
        let back = f32::from(qi) * s[i % n];
        assert!((back - wi).abs() <= s[i % n] / 2.0 + 1e-7, "element {i}: {wi} -> {back}");
    }
}

#[test]
fn int8_graph_quantises_exactly_the_linear_layers() {
    let cfg = deit_config("vit_micro").expect("preset");
    let model = build_vit_onnx_with(&weights(&cfg, 0.02, 1), GraphOutput::Pooled, Precision::Int8)
        .expect("graph");
    let m = ModelProto::decode(&model[..]).expect("decodes");
    assert!(m.opset_import.iter().any(|o| o.domain == MS_DOMAIN), "contrib domain imported");
    let g = m.graph.expect("graph");
    let q: Vec<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type == "DynamicQuantizeMatMul")
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(q.len(), 4 * cfg.depth, "qkv, proj, fc1, fc2 per block: {q:?}");
    for i in 0..cfg.depth {
        for m in ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"] {
            assert!(q.contains(&format!("blocks.{i}.{m}").as_str()), "blocks.{i}.{m} is int8");
        }
    }
    // What stays f32: the attention products (MatMul of two activations) and the patch Conv.
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    let matmuls: Vec<_> = g.node.iter().filter(|n| n.op_type == "MatMul").collect();
    assert_eq!(matmuls.len(), 2 * cfg.depth, "logits and context per block");
    assert!(matmuls.iter().all(|n| n.input.iter().all(|i| !inits.contains(i.as_str()))));
    assert_eq!(g.node.iter().filter(|n| n.op_type == "Conv").count(), 1);
    assert!(!g.initializer.iter().any(|t| t.name.ends_with(".weight.T")), "no f32 linear weights");
}

/// Runs the pooled graph of `w` at int8 with `ops` on `batch` random images and returns the
/// mean and the lowest cosine against the f32 reference forward.
fn cosines(w: &VitWeights, ops: Option<Int8Ops>, batch: usize, seed: u64) -> (f64, f64) {
    let cfg = &w.config;
    let images = random_images(cfg, batch, seed);
    let expected = reference::pool(w, &reference::forward(w, &images, batch), batch);
    let model = match ops {
        None => build_vit_onnx_with(w, GraphOutput::Pooled, Precision::Int8),
        Some(ops) => build_vit_onnx_int8_ops(w, GraphOutput::Pooled, ops),
    }
    .expect("graph");
    let shape = vec![batch, 3, cfg.img_size[0], cfg.img_size[1]];
    let (_, got) = run_onnx(&model, INPUT_NAME, shape, images, POOLED_OUTPUT);
    let c: Vec<f64> =
        got.chunks(cfg.dim).zip(expected.chunks(cfg.dim)).map(|(a, b)| cosine(a, b)).collect();
    (c.iter().sum::<f64>() / c.len() as f64, c.iter().copied().fold(1.0, f64::min))
}

#[test]
fn int8_descriptors_agree_with_f32_reference() {
    let micro = deit_config("vit_micro").expect("preset");
    let deep = VitConfig { architecture: "micro_deep".into(), depth: 6, ..micro.clone() };
    for (cfg, std, seed) in [(&micro, 0.02, 11), (&micro, 0.2, 12), (&deep, 0.05, 13)] {
        let w = weights(cfg, std, seed);
        let (mean, worst) = cosines(&w, None, 8, seed + 100);
        println!(
            "{} std {std}: int8 vs f32 cosine mean {mean:.5}, min {worst:.5}",
            cfg.architecture
        );
        assert!(mean >= MIN_MEAN_COSINE, "{}: mean cosine {mean}", cfg.architecture);
        // Not a copy of the f32 graph: int8 rounding shows.
        assert!(mean < 1.0 - 1e-7, "{}: int8 output equals f32 ({mean})", cfg.architecture);
    }
}

#[test]
fn both_int8_formulations_compute_the_same_thing() {
    let cfg = deit_config("vit_micro").expect("preset");
    let w = weights(&cfg, 0.1, 21);
    let (a, _) = cosines(&w, Some(Int8Ops::DynamicQuantizeMatMul), 4, 22);
    let (b, _) = cosines(&w, Some(Int8Ops::MatMulInteger), 4, 22);
    println!("DynamicQuantizeMatMul {a:.5}, MatMulInteger {b:.5}");
    assert!(a >= MIN_MEAN_COSINE && b >= MIN_MEAN_COSINE, "{a} {b}");
    assert!((a - b).abs() < 2e-3, "the formulations differ: {a} vs {b}");
}
