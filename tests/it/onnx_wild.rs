//! ONNX files as people export them: NHWC or NCHW, float32 / float16 / uint8 (normalising
//! themselves), fixed or dynamic size, batch-1, several outputs, external data. Each variant of
//! `PixelModel` computes the same function, so each must give the descriptors of the plain
//! NCHW float32 model, which irtdb has always fed (and whose preprocessing is checked against
//! timm elsewhere); the external-data model is checked against that times its weights.

use std::path::{Path, PathBuf};

use irtdb_onnx::testing::{PixelModel, PixelType};

use crate::util::{irtdb, json, run_expect, stderr, write_picture};

fn write_model(dir: &Path, name: &str, m: &PixelModel) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, m.build(dir).unwrap()).unwrap();
    p
}

/// `irtdb embed --json` of `images`: the backbone description and one descriptor per image.
fn embed(model: &Path, images: &[PathBuf], extra: &[&str]) -> (serde_json::Value, Vec<Vec<f64>>) {
    let out = run_expect(
        irtdb()
            .args(["embed", "--json", "--providers", "cpu", "--model"])
            .arg(model)
            .args(extra)
            .args(images),
        0,
    );
    let v = json(&out);
    let descs = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["descriptor"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    (v["model"]["backbone"].clone(), descs)
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn images(dir: &Path) -> Vec<PathBuf> {
    (0..3)
        .map(|i| {
            let p = dir.join(format!("img{i}.png"));
            write_picture(&p, 80, 70, i * 3 + 1);
            p
        })
        .collect()
}

#[test]
fn every_input_layout_gives_the_plain_models_descriptors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let imgs = images(dir);
    let plain = write_model(dir, "plain.onnx", &PixelModel::plain(64));
    let (info, want) = embed(&plain, &imgs, &[]);
    assert_eq!(want[0].len(), 48);
    assert_eq!(info["input"]["layout"], "nchw", "{info}");
    let close = |got: &[Vec<f64>], min_cos: f64, what: &str| {
        for (g, w) in got.iter().zip(&want) {
            let c = cosine(g, w);
            assert!(c >= min_cos, "{what}: cosine {c} < {min_cos}");
        }
    };

    // SSCD-style: uint8 [B, H, W, 3], dynamic everything, normalising itself.
    let sscd = PixelModel {
        nhwc: true,
        pixels: PixelType::U8,
        size: None,
        normalises: true,
        ..PixelModel::plain(64)
    };
    let sscd = write_model(dir, "sscd.onnx", &sscd);
    let (info, got) = embed(&sscd, &imgs, &["--input-size", "64"]);
    close(&got, 0.9999, "nhwc uint8 dynamic");
    assert_eq!(info["input"]["layout"], "nhwc", "{info}");
    assert_eq!(info["input"]["dtype"], "uint8", "{info}");
    assert_eq!(info["input"]["dynamic_size"], true, "{info}");
    assert_eq!(info["input"]["raw_pixels"], true, "{info}");
    assert_eq!(info["preprocess"]["mean"], serde_json::json!([0.0, 0.0, 0.0]), "{info}");
    assert_eq!(info["preprocess"]["size"], serde_json::json!([64, 64]), "{info}");
    // Without --input-size (and no sidecar): 224 × 224, so 3 · 14 · 14 values.
    let (info, got) = embed(&sscd, &imgs[..1], &[]);
    assert_eq!(got[0].len(), 3 * 14 * 14, "{info}");
    // A fixed-size model refuses another size.
    let out = run_expect(
        irtdb().args(["embed", "--model"]).arg(&plain).args(["--input-size", "96"]).arg(&imgs[0]),
        2,
    );
    assert!(stderr(&out).contains("fixed at 64x64"), "{}", stderr(&out));

    // A float NHWC model that normalises itself, told so.
    let raw = PixelModel { nhwc: true, normalises: true, ..PixelModel::plain(64) };
    let raw = write_model(dir, "raw.onnx", &raw);
    let (_, got) = embed(&raw, &imgs, &["--plugin-config", r#"{"raw_pixels": true}"#]);
    close(&got, 0.999999, "nhwc float raw pixels");

    // float16 in and out.
    let f16 = write_model(
        dir,
        "f16.onnx",
        &PixelModel { pixels: PixelType::F16, ..PixelModel::plain(64) },
    );
    let (info, got) = embed(&f16, &imgs, &[]);
    close(&got, 0.9999, "nchw float16");
    assert_eq!(info["input"]["dtype"], "float16");

    // A batch-1 model, given three images at once.
    let b1 = write_model(dir, "b1.onnx", &PixelModel { batch: Some(1), ..PixelModel::plain(64) });
    let (info, got) = embed(&b1, &imgs, &[]);
    close(&got, 0.999999, "batch 1");
    assert_eq!(info["input"]["fixed_batch"], 1);

    // Two outputs: the rank-4 map first; the embedding is picked, or named.
    let two =
        write_model(dir, "two.onnx", &PixelModel { two_outputs: true, ..PixelModel::plain(64) });
    let (info, got) = embed(&two, &imgs, &[]);
    close(&got, 0.999999, "two outputs");
    assert_eq!(info["input"]["output"], "embedding");
    let out = run_expect(
        irtdb()
            .args(["embed", "--model"])
            .arg(&two)
            .args(["--plugin-config", r#"{"output": "nope"}"#])
            .arg(&imgs[0]),
        2,
    );
    assert!(stderr(&out).contains("feature_map, embedding"), "{}", stderr(&out));

    // External data: the weights in a file beside the model.
    let weights: Vec<f32> = (0..48).map(|i| 0.5 + (i as f32 * 0.37).sin().abs()).collect();
    let ext = PixelModel {
        weights: Some(weights.clone()),
        external: Some("ext.weights".into()),
        ..PixelModel::plain(64)
    };
    let ext = write_model(dir, "ext.onnx", &ext);
    assert!(dir.join("ext.weights").is_file());
    let (_, got) = embed(&ext, &imgs, &[]);
    for (g, w) in got.iter().zip(&want) {
        let scaled: Vec<f64> = w.iter().zip(&weights).map(|(x, s)| x * *s as f64).collect();
        assert!(cosine(g, &scaled) >= 0.999999);
    }
}

#[test]
fn an_nhwc_uint8_dynamic_size_model_indexes_and_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let gallery = dir.join("gallery");
    std::fs::create_dir_all(&gallery).unwrap();
    for i in 0..6 {
        write_picture(&gallery.join(format!("g{i}.png")), 90, 60, i * 5 + 2);
    }
    let m = PixelModel {
        nhwc: true,
        pixels: PixelType::U8,
        size: None,
        batch: None,
        normalises: true,
        ..PixelModel::plain(64)
    };
    let model = write_model(dir, "sscd.onnx", &m);
    let db = dir.join("c.db");
    run_expect(
        irtdb().arg("index").arg(&gallery).arg("--db").arg(&db).arg("--model").arg(&model).args([
            "--input-size",
            "64",
            "--dim",
            "0",
        ]),
        0,
    );
    let q = dir.join("q.png");
    write_picture(&q, 90, 60, 3 * 5 + 2); // the same picture as g3, another file
    let hits = json(&run_expect(
        irtdb().arg("query").arg(&q).arg("--db").arg(&db).args(["--k", "1", "--json"]),
        0,
    ));
    assert!(hits.to_string().contains("g3.png"), "{hits}");
    let info = json(&run_expect(irtdb().args(["info", "--json", "--db"]).arg(&db), 0));
    assert!(info.to_string().contains("nhwc"), "{info}");
    // Another size is another model: refused, not mixed.
    let out = run_expect(
        irtdb()
            .arg("index")
            .arg(&gallery)
            .arg("--db")
            .arg(&db)
            .arg("--model")
            .arg(&model)
            .args(["--input-size", "96"]),
        2,
    );
    assert!(stderr(&out).contains("never"), "{}", stderr(&out));
}

/// `--input-size` on a timm safetensors ViT: the position embedding is resampled (checked
/// against libtorch and across both plugins in the tch plugin's tests); here the CLI path.
#[test]
fn a_safetensors_vit_runs_at_another_input_size() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = crate::util::write_micro_vit(tmp.path(), false);
    let imgs = images(tmp.path());
    let (info, native) = embed(&model, &imgs, &[]);
    assert_eq!(info["preprocess"]["size"], serde_json::json!([32, 32]), "{info}");
    let (info, big) = embed(&model, &imgs, &["--input-size", "48x40"]);
    assert_eq!(info["preprocess"]["size"], serde_json::json!([48, 40]), "{info}");
    assert_eq!(big[0].len(), native[0].len());
    assert!(big.iter().zip(&native).any(|(a, b)| cosine(a, b) < 0.999999), "the size matters");
    let out = run_expect(
        irtdb().args(["embed", "--model"]).arg(&model).args(["--input-size", "30"]).arg(&imgs[0]),
        2,
    );
    assert!(stderr(&out).contains("multiple of the patch size 8"), "{}", stderr(&out));
}
