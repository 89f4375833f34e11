//! `irtdb embed` through the real ort plugin and real ONNX Runtime, on tiny random ViTs.

use std::path::{Path, PathBuf};

use irtdb_core::Preprocess;

use crate::util::*;

fn embed_json(model: &Path, images: &[&Path], extra: &[&str]) -> serde_json::Value {
    let mut c = irtdb();
    c.args(["embed", "--plugin", "ort-tensorrt", "--json", "--model"]).arg(model).args(extra);
    c.args(images);
    json(&run_expect(&mut c, 0))
}

fn descriptor(j: &serde_json::Value, i: usize) -> Vec<f32> {
    serde_json::from_value(j["images"][i]["descriptor"].clone())
        .unwrap_or_else(|_| panic!("no descriptor {i} in {j:#}"))
}

pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The CLS descriptor computed without ONNX Runtime or the plugin: irtdb-image's preprocessing
/// and irtdb-onnx's plain-Rust reference forward.
pub(crate) fn reference_cls(weights: &irtdb_onnx::VitWeights, image: &Path) -> Vec<f32> {
    let [h, w] = weights.config.img_size;
    let mut p = Preprocess::imagenet(h as u32);
    p.size = [h as u32, w as u32];
    reference_cls_with(weights, image, &p)
}

fn reference_cls_with(weights: &irtdb_onnx::VitWeights, image: &Path, p: &Preprocess) -> Vec<f32> {
    let p = p.clone();
    let img = irtdb_image::decode_file(image, &irtdb_image::DecodeLimits::default()).unwrap();
    let x = irtdb_image::preprocess_to_array(&img.rgb, &p);
    let tokens = irtdb_onnx::reference::forward(weights, x.as_slice().unwrap(), 1);
    let d = weights.config.dim;
    let prefix = weights.config.prefix_tokens;
    let mut cls: Vec<f32> = (0..d)
        .map(|j| (0..prefix).map(|t| tokens[t * d + j]).sum::<f32>() / prefix as f32)
        .collect();
    let n = cls.iter().map(|v| v * v).sum::<f32>().sqrt();
    cls.iter_mut().for_each(|v| *v /= n);
    cls
}

#[test]
fn safetensors_model_embeds_like_the_reference_forward() {
    let tmp = tempfile::tempdir().unwrap();
    for distilled in [false, true] {
        let (model, weights) = write_micro_vit(tmp.path(), distilled);
        let a = tmp.path().join("a.png");
        let b = tmp.path().join("b.jpg");
        write_picture(&a, 96, 64, 1);
        write_picture(&b, 50, 80, 2);
        let j = embed_json(&model, &[&a, &b, &a], &[]);
        assert_eq!(j["model"]["backbone"]["dim"], 32);
        assert_eq!(j["model"]["backbone"]["provider"], "CPUExecutionProvider");
        let (da, db, da2) = (descriptor(&j, 0), descriptor(&j, 1), descriptor(&j, 2));
        let norm = da.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not unit norm: {norm}");
        assert_eq!(da, da2, "same image twice must give the same descriptor");
        assert!(max_abs_diff(&da, &db) > 1e-3, "different images gave the same descriptor");
        for (img, got) in [(&a, &da), (&b, &db)] {
            let want = reference_cls(&weights, img);
            let diff = max_abs_diff(got, &want);
            assert!(diff <= 1e-4, "distilled={distilled}: plugin vs reference differ by {diff}");
        }
    }
}

#[test]
fn token_and_pooled_onnx_files_agree_with_the_safetensors_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, weights) = write_micro_vit(tmp.path(), false);
    let tokens_onnx = tmp.path().join("tokens.onnx");
    let pooled_onnx = tmp.path().join("pooled.onnx");
    std::fs::write(
        &tokens_onnx,
        irtdb_onnx::build_vit_onnx(&weights, irtdb_onnx::GraphOutput::Tokens).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &pooled_onnx,
        irtdb_onnx::build_vit_onnx(&weights, irtdb_onnx::GraphOutput::Pooled).unwrap(),
    )
    .unwrap();
    let img = tmp.path().join("x.png");
    write_picture(&img, 40, 40, 3);
    let from_st = descriptor(&embed_json(&model, &[&img], &[]), 0);
    let jt = embed_json(&tokens_onnx, &[&img], &[]);
    assert_eq!(
        jt["model"]["backbone"]["output"],
        serde_json::json!({"kind": "tokens", "prefix": 1})
    );
    let jp = embed_json(&pooled_onnx, &[&img], &[]);
    assert_eq!(jp["model"]["backbone"]["output"], serde_json::json!({"kind": "pooled"}));
    assert!(max_abs_diff(&from_st, &descriptor(&jt, 0)) < 1e-5);
    assert!(max_abs_diff(&from_st, &descriptor(&jp, 0)) < 1e-5);

    // Every token pooling works on the token model and gives distinct descriptors.
    let mut seen: Vec<Vec<f32>> = Vec::new();
    for pooling in ["mean", "max", "gem"] {
        let d = descriptor(&embed_json(&tokens_onnx, &[&img], &["--pooling", pooling]), 0);
        assert!(
            seen.iter().all(|s| max_abs_diff(s, &d) > 1e-4),
            "{pooling} equals another pooling"
        );
        seen.push(d);
    }
    // A pooled model cannot be mean-pooled: said plainly.
    let out = run_expect(
        irtdb().args(["embed", "--pooling", "mean", "--model"]).arg(&pooled_onnx).arg(&img),
        2,
    );
    assert!(stderr(&out).contains("already pooled"), "{}", stderr(&out));
}

#[test]
fn bad_images_are_skipped_with_their_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = write_micro_vit(tmp.path(), false);
    let good = tmp.path().join("good.png");
    write_picture(&good, 40, 30, 4);
    let text = tmp.path().join("notes.jpg");
    std::fs::write(&text, "not an image at all").unwrap();
    let truncated = tmp.path().join("truncated.png");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let j = embed_json(&model, &[&text, &good, &truncated], &[]);
    let imgs = j["images"].as_array().unwrap();
    assert!(imgs[1]["descriptor"].is_array());
    for (i, name) in [(0, "notes.jpg"), (2, "truncated.png")] {
        let err = imgs[i]["error"].as_str().unwrap_or_else(|| panic!("no error for {name}: {j:#}"));
        assert!(err.contains(name), "{err}");
    }
    // All inputs bad: a failure exit.
    let out = run_expect(irtdb().args(["embed", "--model"]).arg(&model).arg(&text), 2);
    assert!(stderr(&out).contains("notes.jpg"), "{}", stderr(&out));
}

#[test]
fn bad_models_are_refused_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.png");
    write_picture(&img, 32, 32, 5);

    let missing: PathBuf = tmp.path().join("missing.safetensors");
    let out = run_expect(irtdb().args(["embed", "--model"]).arg(&missing).arg(&img), 2);
    assert!(
        stderr(&out).contains("missing.safetensors") && stderr(&out).contains("does not exist")
    );

    let garbage = tmp.path().join("garbage.onnx");
    std::fs::write(&garbage, b"\x08\x01garbage").unwrap();
    let out = run_expect(irtdb().args(["embed", "--model"]).arg(&garbage).arg(&img), 2);
    assert!(stderr(&out).contains("garbage.onnx"), "{}", stderr(&out));

    // An ONNX model whose input is [batch, 3, 32] (rank 3): a clear refusal naming the file.
    let rank3 = tmp.path().join("rank3.onnx");
    std::fs::write(&rank3, irtdb_onnx::testing::identity_model(&[-1, 3, 32])).unwrap();
    let out = run_expect(irtdb().args(["embed", "--model"]).arg(&rank3).arg(&img), 2);
    let err = stderr(&out);
    assert!(err.contains("rank3.onnx") && err.contains("rank 3"), "{err}");

    let unknown = tmp.path().join("weights.bin");
    std::fs::write(&unknown, b"1234").unwrap();
    let out = run_expect(irtdb().args(["embed", "--model"]).arg(&unknown).arg(&img), 2);
    assert!(
        stderr(&out).contains("weights.bin") && stderr(&out).contains(".onnx"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_explicit_provider_that_cannot_register_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = write_micro_vit(tmp.path(), false);
    let img = tmp.path().join("x.png");
    write_picture(&img, 32, 32, 6);
    // The CPU wheel of ONNX Runtime has no CUDA: asked for explicitly, that is an error...
    let out = run_expect(
        irtdb().args(["embed", "--providers", "cuda", "--model"]).arg(&model).arg(&img),
        2,
    );
    assert!(
        stderr(&out).contains("'cuda' was asked for but could not be registered"),
        "{}",
        stderr(&out)
    );
    // ...while the default chain falls through to the CPU and says so.
    let j = embed_json(&model, &[&img], &[]);
    assert_eq!(j["model"]["backbone"]["provider"], "CPUExecutionProvider");
}

#[test]
fn preprocessing_overrides_are_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, weights) = write_micro_vit(tmp.path(), false);
    let img = tmp.path().join("wide.png");
    write_picture(&img, 90, 40, 8);
    let j = embed_json(
        &model,
        &[&img],
        &["--preprocess", r#"{"crop_pct": 1.0, "interpolation": "bilinear"}"#],
    );
    assert_eq!(j["model"]["backbone"]["preprocess"]["crop_pct"], 1.0);
    let mut p = Preprocess::imagenet(32);
    p.crop_pct = 1.0;
    p.interpolation = irtdb_core::Interpolation::Bilinear;
    let want = reference_cls_with(&weights, &img, &p);
    assert!(max_abs_diff(&descriptor(&j, 0), &want) <= 1e-4);
    let default = descriptor(&embed_json(&model, &[&img], &[]), 0);
    assert!(max_abs_diff(&default, &want) > 1e-3, "the override changed nothing");
    let out = run_expect(
        irtdb().args(["embed", "--preprocess", "[1]", "--model"]).arg(&model).arg(&img),
        2,
    );
    assert!(stderr(&out).contains("JSON object"), "{}", stderr(&out));
}
