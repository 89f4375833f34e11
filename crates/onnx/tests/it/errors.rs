//! Every failure names the file and the offending tensor or value, and says what to do.

use std::path::{Path, PathBuf};

use irtdb_onnx::testing::{deit_config, random_vit, save_safetensors};
use irtdb_onnx::{ConfigOverrides, Error, Tensors, VitConfig, VitWeights};

fn micro() -> VitConfig {
    deit_config("vit_micro").unwrap()
}

fn heads4() -> ConfigOverrides {
    ConfigOverrides { heads: Some(4), ..ConfigOverrides::default() }
}

fn save(dir: &Path, tensors: &Tensors) -> PathBuf {
    let path = dir.join("broken.safetensors");
    save_safetensors(&path, tensors).expect("save");
    path
}

/// Loads and returns the error message, checking it names the file.
fn load_err(path: &Path) -> (Error, String) {
    let err = VitWeights::load(path, &heads4()).expect_err("loading should fail");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "message does not name the file: {msg}");
    (err, msg)
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = random_vit(&micro(), 1);
    tensors.remove("blocks.1.mlp.fc2.bias");
    let (err, msg) = load_err(&save(dir.path(), &tensors));
    assert!(matches!(err, Error::MissingTensor { .. }), "{err:?}");
    assert!(msg.contains("`blocks.1.mlp.fc2.bias` is missing"), "{msg}");
    assert!(msg.contains("timm VisionTransformer"), "says what to do: {msg}");
}

#[test]
fn missing_patch_embedding_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = random_vit(&micro(), 2);
    tensors.remove("patch_embed.proj.weight");
    let (_, msg) = load_err(&save(dir.path(), &tensors));
    assert!(msg.contains("patch_embed.proj.weight"), "{msg}");
}

#[test]
fn wrong_shape_gives_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = random_vit(&micro(), 3);
    tensors.insert("blocks.0.attn.proj.weight".into(), (vec![32, 31], vec![0.0; 32 * 31]));
    let (err, msg) = load_err(&save(dir.path(), &tensors));
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
    assert!(msg.contains("`blocks.0.attn.proj.weight`"), "{msg}");
    assert!(msg.contains("[32, 31]") && msg.contains("[32, 32]"), "{msg}");
}

#[test]
fn non_square_pos_embed_without_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wide = VitConfig { img_size: [16, 32], ..micro() }; // 8 patch positions
    let (err, msg) = load_err(&save(dir.path(), &random_vit(&wide, 4)));
    assert!(matches!(err, Error::PosEmbed { positions: 8, .. }), "{err:?}");
    assert!(msg.contains("`pos_embed`") && msg.contains("not a square"), "{msg}");
    assert!(msg.contains("input_size"), "says what to do: {msg}");
}

#[test]
fn sidecar_size_disagreeing_with_pos_embed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(dir.path(), &random_vit(&micro(), 5));
    let sidecar = r#"{"pretrained_cfg": {"input_size": [3, 64, 64]}}"#;
    std::fs::write(dir.path().join("config.json"), sidecar).unwrap();
    let (_, msg) = load_err(&path);
    assert!(msg.contains("64x64") && msg.contains("config.json"), "{msg}");
}

#[test]
fn not_a_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, b"this is not a checkpoint").unwrap();
    let (err, msg) = load_err(&path);
    assert!(matches!(err, Error::NotSafetensors { .. }), "{err:?}");
    assert!(msg.contains("not a valid safetensors file"), "{msg}");
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (err, _) = load_err(&dir.path().join("nowhere.safetensors"));
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[test]
fn broken_sidecar_names_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(dir.path(), &random_vit(&micro(), 6));
    std::fs::write(dir.path().join("config.json"), r#"{"num_heads": "four"}"#).unwrap();
    let err = VitWeights::load(&path, &heads4()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Sidecar { .. }), "{err:?}");
    assert!(msg.contains("config.json") && msg.contains("num_heads"), "{msg}");
}

#[test]
fn integer_weight_is_an_unsupported_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(dir.path(), &random_vit(&micro(), 7));
    // Rewrite one needed tensor as I64.
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = vec![0u8; 8 * 32];
    let mut views = Vec::new();
    for (name, view) in file.iter() {
        if name == "norm.bias" {
            views.push((
                name,
                safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![32], &ints)
                    .unwrap(),
            ));
        } else {
            views.push((name, view));
        }
    }
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let (err, msg) = load_err(&path);
    assert!(matches!(err, Error::UnsupportedDtype { .. }), "{err:?}");
    assert!(msg.contains("`norm.bias`") && msg.contains("I64"), "{msg}");
}

#[test]
fn unsupported_variants_are_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = random_vit(&micro(), 8);
    tensors.insert("blocks.0.attn.q_norm.weight".into(), (vec![8], vec![1.0; 8]));
    let (err, msg) = load_err(&save(dir.path(), &tensors));
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(msg.contains("blocks.0.attn.q_norm.weight"), "{msg}");
}

#[test]
fn heads_that_do_not_divide_dim() {
    let overrides = ConfigOverrides { heads: Some(5), ..ConfigOverrides::default() };
    let err = VitWeights::from_tensors(random_vit(&micro(), 9), &overrides).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("5 attention heads") && msg.contains("dim 32"), "{msg}");
    assert!(msg.contains("in-memory weights"), "{msg}");
}

#[test]
fn config_edited_after_loading_is_checked_before_building() {
    let mut weights = VitWeights::from_tensors(random_vit(&micro(), 10), &heads4()).unwrap();
    weights.config.mlp_hidden = 64;
    let err = irtdb_onnx::build_vit_onnx(&weights, irtdb_onnx::GraphOutput::Tokens).unwrap_err();
    assert!(err.to_string().contains("blocks.0.mlp.fc1.weight"), "{err}");
}
