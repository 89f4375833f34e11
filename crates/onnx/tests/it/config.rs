//! Configuration inference from timm-shaped checkpoints.

use std::path::Path;

use irtdb_onnx::testing::{
    deit_config, random_vit, save_safetensors, save_safetensors_as, StoreDtype,
};
use irtdb_onnx::{ConfigOverrides, Tensors, VitConfig, VitWeights};

fn save(dir: &Path, tensors: &Tensors, sidecar: Option<&str>) -> std::path::PathBuf {
    let path = dir.join("model.safetensors");
    save_safetensors(&path, tensors).expect("save");
    if let Some(json) = sidecar {
        std::fs::write(dir.join("config.json"), json).expect("write config.json");
    }
    path
}

/// The preset with depth 1 (inference does not depend on depth; this keeps the files small).
fn shallow(name: &str) -> VitConfig {
    VitConfig { depth: 1, ..deit_config(name).expect("preset") }
}

#[test]
fn deit_sizes_are_inferred_from_shapes_and_sidecar_name() {
    for name in ["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"] {
        let cfg = shallow(name);
        let dir = tempfile::tempdir().expect("tempdir");
        let sidecar = format!(
            r#"{{"architecture": "{name}", "pretrained_cfg": {{"input_size": [3, 224, 224]}}}}"#
        );
        let path = save(dir.path(), &random_vit(&cfg, 1), Some(&sidecar));
        let loaded = VitWeights::load(&path, &ConfigOverrides::default()).expect("load");
        assert_eq!(loaded.config, cfg, "{name}");
    }
}

#[test]
fn without_any_hint_heads_default_to_dim_over_64() {
    let cfg = shallow("deit_small_patch16_224");
    let loaded =
        VitWeights::from_tensors(random_vit(&cfg, 2), &ConfigOverrides::default()).expect("infer");
    assert_eq!(loaded.config, VitConfig { architecture: "vit".into(), ..cfg });
}

#[test]
fn distilled_deit_has_two_prefix_tokens() {
    let cfg = shallow("deit_tiny_distilled_patch16_224");
    assert_eq!(cfg.prefix_tokens, 2);
    let overrides = ConfigOverrides {
        architecture: Some("deit_tiny_distilled_patch16_224".into()),
        ..ConfigOverrides::default()
    };
    let loaded = VitWeights::from_tensors(random_vit(&cfg, 3), &overrides).expect("infer");
    assert_eq!(loaded.config, cfg);
    assert_eq!(loaded.config.num_tokens(), 198);
}

#[test]
fn layer_scale_and_missing_qkv_bias_are_detected() {
    let cfg =
        VitConfig { layer_scale: true, qkv_bias: false, ..shallow("deit3_small_patch16_224") };
    let overrides = ConfigOverrides {
        heads: Some(6),
        architecture: Some(cfg.architecture.clone()),
        ..Default::default()
    };
    let loaded = VitWeights::from_tensors(random_vit(&cfg, 4), &overrides).expect("infer");
    assert_eq!(loaded.config, cfg);
}

#[test]
fn heads_come_from_override_then_sidecar_then_name_then_dim() {
    // dim 96: dim / 64 is no answer, so each source must be the one that decides.
    let cfg = VitConfig { dim: 96, heads: 4, mlp_hidden: 64, ..deit_config("vit_micro").unwrap() };
    let tensors = random_vit(&cfg, 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let path =
        save(dir.path(), &tensors, Some(r#"{"architecture": "my_tiny_vit", "num_heads": 8}"#));

    let sidecar = VitWeights::load(&path, &ConfigOverrides::default()).expect("sidecar heads");
    assert_eq!((sidecar.config.heads, sidecar.config.architecture.as_str()), (8, "my_tiny_vit"));

    let explicit = ConfigOverrides { heads: Some(2), ..Default::default() };
    assert_eq!(VitWeights::load(&path, &explicit).expect("override").config.heads, 2);

    std::fs::write(dir.path().join("config.json"), r#"{"architecture": "my_tiny_vit"}"#).unwrap();
    let named = VitWeights::load(&path, &ConfigOverrides::default()).expect("name heads");
    assert_eq!(named.config.heads, 3, "`tiny` in the name means 3 heads");

    std::fs::write(dir.path().join("config.json"), r#"{"model_args": {"num_heads": 12}}"#).unwrap();
    let args = VitWeights::load(&path, &ConfigOverrides::default()).expect("model_args heads");
    assert_eq!((args.config.heads, args.config.architecture.as_str()), (12, "vit"));

    let err = VitWeights::from_tensors(tensors, &ConfigOverrides::default()).unwrap_err();
    assert!(err.to_string().contains("attention heads"), "{err}");
}

#[test]
fn overrides_set_architecture_and_eps() {
    let cfg = deit_config("vit_micro").unwrap();
    let overrides =
        ConfigOverrides { heads: Some(4), architecture: Some("micro".into()), ln_eps: Some(1e-5) };
    let loaded = VitWeights::from_tensors(random_vit(&cfg, 6), &overrides).expect("infer");
    assert_eq!(loaded.config, VitConfig { architecture: "micro".into(), ln_eps: 1e-5, ..cfg });
}

#[test]
fn non_square_images_need_a_size_in_the_sidecar() {
    let cfg = VitConfig { img_size: [16, 32], ..deit_config("vit_micro").unwrap() };
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = r#"{"architecture": "wide", "num_heads": 4, "pretrained_cfg": {"input_size": [3, 16, 32]}}"#;
    let path = save(dir.path(), &random_vit(&cfg, 7), Some(sidecar));
    let loaded = VitWeights::load(&path, &ConfigOverrides::default()).expect("load");
    assert_eq!(loaded.config, VitConfig { architecture: "wide".into(), ..cfg });
}

#[test]
fn pos_embed_without_class_position_is_padded() {
    // timm's no_embed_class (DeiT-3, recognised by its layer scale): no prefix positions.
    let cfg = VitConfig { layer_scale: true, ..deit_config("vit_micro").unwrap() };
    let mut tensors = random_vit(&cfg, 8);
    let (shape, data) = tensors.get_mut("pos_embed").unwrap();
    let original = data.clone();
    data.drain(..cfg.dim);
    *shape = vec![1, cfg.num_patches(), cfg.dim];
    let overrides = ConfigOverrides { heads: Some(4), ..Default::default() };
    let loaded = VitWeights::from_tensors(tensors, &overrides).expect("infer");
    assert_eq!(loaded.config.img_size, [32, 32]);
    let (shape, data) = loaded.tensor("pos_embed").unwrap();
    assert_eq!(shape, [1, cfg.num_tokens(), cfg.dim]);
    assert!(data[..cfg.dim].iter().all(|&v| v == 0.0));
    assert_eq!(data[cfg.dim..], original[cfg.dim..]);
}

#[test]
fn half_precision_files_load_like_f32() {
    let cfg = deit_config("vit_micro").unwrap();
    let tensors = random_vit(&cfg, 9);
    let overrides = ConfigOverrides { heads: Some(4), ..Default::default() };
    // Relative rounding error of each format, plus f16's subnormal step.
    for (dtype, rel, abs) in
        [(StoreDtype::F16, 2f32.powi(-11), 6e-8), (StoreDtype::Bf16, 2f32.powi(-8), 1e-30)]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.safetensors");
        save_safetensors_as(&path, &tensors, dtype).expect("save");
        let loaded = VitWeights::load(&path, &overrides).expect("load");
        assert_eq!(loaded.config.dim, cfg.dim);
        assert_eq!(loaded.config.depth, cfg.depth);
        for (name, (shape, data)) in &tensors {
            let (got_shape, got) = loaded.tensor(name).expect("tensor");
            assert_eq!(got_shape, shape.as_slice(), "{name}");
            for (a, b) in data.iter().zip(got) {
                assert!((a - b).abs() <= a.abs() * rel + abs, "{dtype:?} {name}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn classifier_heads_are_ignored() {
    let cfg = deit_config("vit_micro").unwrap();
    let mut tensors = random_vit(&cfg, 10);
    tensors.insert("head_dist.weight".into(), (vec![10, cfg.dim], vec![0.0; 10 * cfg.dim]));
    let overrides = ConfigOverrides { heads: Some(4), ..Default::default() };
    let loaded = VitWeights::from_tensors(tensors, &overrides).expect("infer");
    assert_eq!(loaded.config.prefix_tokens, 1);
    assert!(loaded.tensor("head.weight").is_some());
}

#[test]
fn pos_embed_without_class_position_needs_deit3_or_a_size() {
    let cfg = deit_config("vit_micro").unwrap();
    let mut tensors = random_vit(&cfg, 11);
    let (shape, data) = tensors.get_mut("pos_embed").unwrap();
    data.drain(..cfg.dim);
    *shape = vec![1, cfg.num_patches(), cfg.dim];
    let heads = ConfigOverrides { heads: Some(4), ..Default::default() };
    // 16 positions minus a class token is not a square: refused, not guessed.
    assert!(VitWeights::from_tensors(tensors.clone(), &heads).is_err());
    let named = ConfigOverrides { architecture: Some("deit3_micro".into()), ..heads.clone() };
    assert_eq!(
        VitWeights::from_tensors(tensors.clone(), &named).unwrap().config.img_size,
        [32, 32]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path =
        save(dir.path(), &tensors, Some(r#"{"pretrained_cfg": {"input_size": [3, 32, 32]}}"#));
    let loaded = VitWeights::load(&path, &heads).expect("size from the sidecar");
    assert_eq!(loaded.tensor("pos_embed").unwrap().0, [1, 17, 32]);
}

/// DINOv2 checkpoints as timm saves them: without registers `pos_embed` has a class-token row;
/// with registers (`no_embed_class`) it has patch rows only, and the config says so.
#[test]
fn dinov2_checkpoints_are_recognised() {
    for name in ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"] {
        let cfg = VitConfig { depth: 1, ..deit_config(name).expect("preset") };
        let tensors = random_vit(&cfg, 21);
        let positions = tensors["pos_embed"].0[1];
        assert_eq!(positions, if cfg.reg_tokens > 0 { 37 * 37 } else { 1 + 37 * 37 }, "{name}");
        let overrides = ConfigOverrides { architecture: Some(name.into()), ..Default::default() };
        let loaded = VitWeights::from_tensors(tensors, &overrides).expect(name);
        assert_eq!(loaded.config, cfg, "{name}");
        assert_eq!(loaded.config.img_size, [518, 518]);
        // In memory the position embedding has a row for every token (zeros for the prefix)...
        assert_eq!(loaded.tensor("pos_embed").unwrap().0, [1, cfg.num_tokens(), 384]);
        // ...and comes back in timm's layout for saving.
        assert_eq!(loaded.timm_pos_embed().unwrap().0[1], positions);
    }
}

#[test]
fn average_pooled_vit_uses_fc_norm() {
    let cfg = VitConfig { fc_norm: true, ..deit_config("vit_micro").unwrap() };
    let heads = ConfigOverrides { heads: Some(4), ..Default::default() };
    let loaded = VitWeights::from_tensors(random_vit(&cfg, 22), &heads).expect("fc_norm");
    assert_eq!(loaded.config, VitConfig { architecture: "vit".into(), ..cfg.clone() });
    // Both norms: not a timm ViT.
    let mut both = random_vit(&cfg, 22);
    both.insert("norm.weight".into(), (vec![32], vec![1.0; 32]));
    both.insert("norm.bias".into(), (vec![32], vec![0.0; 32]));
    let err = VitWeights::from_tensors(both, &heads).unwrap_err().to_string();
    assert!(err.contains("both `norm` and `fc_norm`"), "{err}");
    // No class token (timm class_token=False): refused with the reason.
    let mut no_cls = random_vit(&cfg, 22);
    no_cls.remove("cls_token");
    let err = VitWeights::from_tensors(no_cls, &heads).unwrap_err().to_string();
    assert!(err.contains("class_token=False"), "{err}");
}
