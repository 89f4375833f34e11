//! The tch ViT against the plain-loop reference of irtdb-onnx, on random timm-named weights.

use irtdb_onnx::testing::{deit_config, random_images, random_vit_with_std, save_safetensors};
use irtdb_onnx::{reference, ConfigOverrides, VitConfig, VitWeights};
use irtdb_plugin_tch_cuda::vit::Vit;
use tch::{Device, Tensor};

fn check(cfg: &VitConfig, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    // std 0.2: attention far from uniform, GELU far from linear.
    save_safetensors(&path, &random_vit_with_std(cfg, seed, 0.2)).unwrap();
    let overrides = ConfigOverrides { heads: Some(cfg.heads), ..Default::default() };
    let weights = VitWeights::load(&path, &overrides).unwrap();
    assert_eq!(weights.config.prefix_tokens, cfg.prefix_tokens);
    assert_eq!(weights.config.layer_scale, cfg.layer_scale);
    let vit = Vit::from_weights(&weights, Device::Cpu).unwrap();

    // The VarStore holds exactly the checkpoint's backbone tensors, under the same names.
    let mut names: Vec<String> = vit.vs.variables().into_keys().collect();
    names.sort();
    let mut expected: Vec<String> =
        weights.tensors().keys().filter(|k| !k.starts_with("head.")).cloned().collect();
    expected.sort();
    assert_eq!(names, expected);

    let batch = 3;
    let images = random_images(cfg, batch, seed + 1);
    let [h, w] = cfg.img_size;
    let want = reference::forward(&weights, &images, batch);
    let x = Tensor::from_slice(&images).reshape([batch as i64, 3, h as i64, w as i64]);
    let out = tch::no_grad(|| vit.forward_tokens(&x));
    assert_eq!(out.size(), [batch as i64, cfg.output_tokens() as i64, cfg.dim as i64]);
    let got = Vec::<f32>::try_from(out.contiguous().view(-1)).unwrap();
    let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-4, "{}: max |tch − reference| = {max}", cfg.architecture);

    // Pooling as the reference's pool.
    let pooled = Vec::<f32>::try_from(vit.pool(&out).contiguous().view(-1)).unwrap();
    let want_pooled = reference::pool(&weights, &got, batch);
    let max = pooled.iter().zip(&want_pooled).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-5, "pool: {max}");
}

#[test]
fn vit_micro_matches_reference() {
    check(&deit_config("vit_micro").unwrap(), 1);
}

#[test]
fn distilled_layer_scale_and_no_qkv_bias_match_reference() {
    let base = deit_config("vit_micro").unwrap();
    check(&VitConfig { prefix_tokens: 2, ..base.clone() }, 2);
    check(&VitConfig { layer_scale: true, ..base.clone() }, 3);
    check(&VitConfig { qkv_bias: false, ..base }, 4);
}

#[test]
fn missing_tensor_is_named() {
    let cfg = deit_config("vit_micro").unwrap();
    let weights = VitWeights::from_tensors(
        random_vit_with_std(&cfg, 5, 0.02),
        &ConfigOverrides { heads: Some(4), ..Default::default() },
    )
    .unwrap();
    // A model with one more block than the weights have.
    let mut vit = Vit::new(&VitConfig { depth: 3, ..cfg }, Device::Cpu);
    let e = vit.load_weights(&weights).unwrap_err();
    assert!(e.contains("blocks.2."), "{e}");
}

#[test]
fn dinov2_with_and_without_registers_and_fc_norm_match_reference() {
    let dinov2 = |registers: usize| VitConfig {
        architecture: format!("micro_dinov2_reg{registers}"),
        patch: 14,
        img_size: [42, 42],
        layer_scale: true,
        reg_tokens: registers,
        no_embed_class: registers > 0,
        ..deit_config("vit_micro").unwrap()
    };
    check(&dinov2(0), 6);
    check(&dinov2(4), 7);
    check(&VitConfig { fc_norm: true, ..dinov2(0) }, 8);
    check(&VitConfig { fc_norm: true, ..dinov2(2) }, 9);
}
