//! The ONNX graph, run by real ONNX Runtime, against the plain-Rust reference forward.

use irtdb_onnx::testing::{deit_config, random_images, random_vit_with_std};
use irtdb_onnx::{
    build_vit_onnx, reference, ConfigOverrides, GraphOutput, VitConfig, VitWeights, INPUT_NAME,
    POOLED_OUTPUT, TOKENS_OUTPUT,
};

use crate::common::{max_abs_diff, run_onnx};

const TOLERANCE: f32 = 1e-4;

fn micro() -> VitConfig {
    deit_config("vit_micro").expect("vit_micro preset")
}

/// Builds the weights for `cfg`, runs both outputs through ONNX Runtime on a batch and compares
/// them with the reference. Returns the largest difference seen.
fn check(cfg: &VitConfig, std: f32, batch: usize, seed: u64) -> f32 {
    let weights = VitWeights::with_config(cfg.clone(), random_vit_with_std(cfg, seed, std))
        .expect("weights match their config");
    let images = random_images(cfg, batch, seed + 1);
    let shape = vec![batch, 3, cfg.img_size[0], cfg.img_size[1]];
    let expected = reference::forward(&weights, &images, batch);

    let model = build_vit_onnx(&weights, GraphOutput::Tokens).expect("graph");
    let (out_shape, tokens) =
        run_onnx(&model, INPUT_NAME, shape.clone(), images.clone(), TOKENS_OUTPUT);
    assert_eq!(out_shape, [batch as i64, cfg.output_tokens() as i64, cfg.dim as i64]);
    let tokens_diff = max_abs_diff(&tokens, &expected);
    assert!(tokens_diff <= TOLERANCE, "{}: tokens differ by {tokens_diff}", cfg.architecture);

    let model = build_vit_onnx(&weights, GraphOutput::Pooled).expect("graph");
    let (out_shape, pooled) = run_onnx(&model, INPUT_NAME, shape, images, POOLED_OUTPUT);
    assert_eq!(out_shape, [batch as i64, cfg.dim as i64]);
    let pooled_diff = max_abs_diff(&pooled, &reference::pool(&weights, &expected, batch));
    assert!(pooled_diff <= TOLERANCE, "{}: pooled differs by {pooled_diff}", cfg.architecture);
    println!("{} (std {std}, batch {batch}): max |onnx - reference| = {tokens_diff:e} tokens, {pooled_diff:e} pooled", cfg.architecture);
    tokens_diff.max(pooled_diff)
}

#[test]
fn micro_vit_matches_reference_at_timm_init() {
    check(&micro(), 0.02, 2, 1);
}

#[test]
fn micro_vit_matches_reference_with_large_weights() {
    // std 0.2 makes attention far from uniform and GELU far from linear.
    check(&micro(), 0.2, 2, 2);
}

#[test]
fn distilled_vit_matches_reference() {
    let cfg = VitConfig { architecture: "micro_distilled".into(), prefix_tokens: 2, ..micro() };
    check(&cfg, 0.2, 2, 3);
}

#[test]
fn non_square_image_matches_reference() {
    // A 2×4 patch grid: catches any mix-up of height and width.
    let cfg = VitConfig { architecture: "micro_wide".into(), img_size: [16, 32], ..micro() };
    check(&cfg, 0.2, 2, 4);
}

#[test]
fn layer_scale_without_qkv_bias_matches_reference() {
    let cfg = VitConfig {
        architecture: "micro_deit3".into(),
        layer_scale: true,
        qkv_bias: false,
        depth: 3,
        ..micro()
    };
    check(&cfg, 0.2, 2, 5);
}

/// DINOv2's shape at test size: patch 14, layer scale, a class-token position.
fn micro_dinov2(registers: usize) -> VitConfig {
    VitConfig {
        architecture: format!("micro_dinov2_reg{registers}"),
        patch: 14,
        img_size: [42, 28],
        layer_scale: true,
        reg_tokens: registers,
        no_embed_class: registers > 0,
        ..micro()
    }
}

#[test]
fn dinov2_with_and_without_registers_matches_reference() {
    for registers in [0, 4] {
        check(&micro_dinov2(registers), 0.2, 2, 12);
    }
}

#[test]
fn average_pooled_fc_norm_vit_matches_reference() {
    let cfg = VitConfig { architecture: "micro_gap".into(), fc_norm: true, ..micro() };
    check(&cfg, 0.2, 2, 13);
    let cfg = VitConfig { reg_tokens: 2, no_embed_class: true, ..cfg };
    check(&cfg, 0.2, 2, 14);
}

/// Register tokens take part in attention: other register values, other patch tokens (so a
/// graph that left them out would be caught by the reference comparison).
#[test]
fn registers_change_the_output() {
    let cfg = micro_dinov2(4);
    let mut tensors = random_vit_with_std(&cfg, 15, 0.2);
    let a = VitWeights::with_config(cfg.clone(), tensors.clone()).expect("weights");
    // Not a constant shift: LayerNorm would cancel that.
    let registers = &mut tensors.get_mut("reg_token").expect("registers").1;
    registers.iter_mut().enumerate().for_each(|(i, v)| *v += (i % 7) as f32 * 0.3);
    let b = VitWeights::with_config(cfg.clone(), tensors).expect("weights");
    let images = random_images(&cfg, 1, 16);
    let diff =
        max_abs_diff(&reference::forward(&a, &images, 1), &reference::forward(&b, &images, 1));
    assert!(diff > 1e-2, "registers had no effect ({diff})");
}

#[test]
fn depth_zero_and_odd_sizes_match_reference() {
    let cfg = VitConfig {
        architecture: "odd".into(),
        dim: 24,
        heads: 3,
        mlp_hidden: 40,
        patch: 4,
        img_size: [12, 8],
        depth: 0,
        ln_eps: 1e-5,
        ..micro()
    };
    check(&cfg, 0.2, 2, 6);
    check(&VitConfig { depth: 2, ..cfg }, 0.2, 2, 6);
}

#[test]
fn batch_is_dynamic() {
    for batch in [1, 3] {
        check(&micro(), 0.2, batch, 7);
    }
}

#[test]
fn weights_loaded_from_a_file_match_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.safetensors");
    let cfg = micro();
    irtdb_onnx::testing::save_safetensors(&path, &random_vit_with_std(&cfg, 8, 0.2)).expect("save");
    let overrides = ConfigOverrides { heads: Some(4), ..ConfigOverrides::default() };
    let weights = VitWeights::load(&path, &overrides).expect("load");
    assert_eq!(weights.config, VitConfig { architecture: "vit".into(), ..cfg.clone() });
    let images = random_images(&cfg, 2, 9);
    let model = build_vit_onnx(&weights, GraphOutput::Tokens).expect("graph");
    let (_, tokens) =
        run_onnx(&model, INPUT_NAME, vec![2, 3, 32, 32], images.clone(), TOKENS_OUTPUT);
    let diff = max_abs_diff(&tokens, &reference::forward(&weights, &images, 2));
    assert!(diff <= TOLERANCE, "tokens differ by {diff}");
}

/// The comparison must be able to fail: the same weights read with 2 heads instead of 4 give a
/// different network, and the test harness has to see that.
#[test]
fn parity_check_detects_a_wrong_head_count() {
    let cfg = micro();
    let tensors = random_vit_with_std(&cfg, 10, 0.2);
    let four = VitWeights::with_config(cfg.clone(), tensors.clone()).expect("weights");
    let two =
        VitWeights::with_config(VitConfig { heads: 2, ..cfg.clone() }, tensors).expect("weights");
    let images = random_images(&cfg, 2, 11);
    let model = build_vit_onnx(&four, GraphOutput::Tokens).expect("graph");
    let (_, tokens) =
        run_onnx(&model, INPUT_NAME, vec![2, 3, 32, 32], images.clone(), TOKENS_OUTPUT);
    let diff = max_abs_diff(&tokens, &reference::forward(&two, &images, 2));
    assert!(diff > 1e-2, "a 2-head reference should not match a 4-head graph (diff {diff})");
}
