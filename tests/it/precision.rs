//! `--precision`: int8 descriptors against fp32 and the reference forward, for irtdb's own ViT
//! graphs and for a given .onnx file (rewritten by `irtdb_onnx::quantize`), precision as part of
//! a collection's model identity, the model cache, and the refusals (fp16/bf16, an .onnx file
//! with nothing to quantise or with external data).

use std::path::Path;
use std::process::Command;

use crate::embed::reference_cls;
use irtdb_onnx::testing::PixelModel;

use crate::util::*;

/// The documented agreement of int8 with fp32 descriptors (README, ARCHITECTURE.md): mean cosine
/// at least this. Measured here ≈ 0.9999 on the micro ViT's pictures.
const MIN_MEAN_COSINE: f64 = 0.99;

fn embed(model: &Path, images: &[&Path], extra: &[&str]) -> Vec<Vec<f32>> {
    let mut c = irtdb();
    c.args(["embed", "--plugin", "ort-tensorrt", "--json", "--model"]).arg(model).args(extra);
    c.args(images);
    let j = json(&run_expect(&mut c, 0));
    (0..images.len())
        .map(|i| serde_json::from_value(j["images"][i]["descriptor"].clone()).unwrap())
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

/// Runs `c`, expects failure, returns stderr.
fn refused(c: &mut Command) -> String {
    let out = c.output().expect("run irtdb");
    assert!(!out.status.success(), "expected a refusal, got success: {}", stderr(&out));
    stderr(&out)
}

#[test]
fn int8_embeddings_agree_with_fp32_and_the_reference_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, weights) = write_micro_vit(tmp.path(), false);
    let paths: Vec<_> = (0..6).map(|i| tmp.path().join(format!("p{i}.jpg"))).collect();
    for (i, p) in paths.iter().enumerate() {
        write_picture(p, 64, 48, 40 + i as u32);
    }
    let images: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let fp32 = embed(&model, &images, &[]);
    let explicit = embed(&model, &images, &["--precision", "fp32"]);
    assert_eq!(fp32, explicit, "--precision fp32 is the default");
    let int8 = embed(&model, &images, &["--precision", "int8"]);
    let mut sum = 0.0;
    for ((p, a), b) in images.iter().zip(&int8).zip(&fp32) {
        let reference = reference_cls(&weights, p);
        let c = cosine(a, &reference);
        assert!(c > 0.98, "{}: int8 vs reference cosine {c}", p.display());
        sum += cosine(a, b);
    }
    let mean = sum / images.len() as f64;
    println!("int8 vs fp32 mean cosine {mean:.6}");
    assert!(mean >= MIN_MEAN_COSINE, "int8 vs fp32 mean cosine {mean}");
    assert_ne!(int8, fp32, "int8 must not be the fp32 graph");
}

#[test]
fn a_collection_never_mixes_precisions() {
    let f = Fixture::new(2, 3);
    let index = |extra: &[&str]| {
        let mut c = f.cmd(&["index", "--json", "--dim", "4"]);
        c.arg(&f.gallery).arg("--model").arg(&f.model).args(extra);
        c
    };
    run_expect(&mut index(&["--precision", "int8"]), 0);
    let info = f.info();
    assert_eq!(info["model"]["options"]["precision"], "int8", "{info:#}");
    // Same precision again: accepted (nothing new to embed).
    run_expect(&mut index(&["--precision", "int8"]), 0);
    // fp32 (explicit or by default) into the int8 collection: refused, naming the difference.
    for extra in [&["--precision", "fp32"][..], &[]] {
        let e = refused(&mut index(extra));
        assert!(
            e.contains("precision int8") && e.contains("precision fp32"),
            "message names both precisions: {e}"
        );
        assert!(e.contains("--precision int8"), "says what to do: {e}");
    }
    // Queries embed at the collection's precision; asking for another is refused.
    let query = |extra: &[&str]| {
        let mut c = f.cmd(&["query", "--json", "class00/000.jpg", "--k", "2"]);
        c.args(extra);
        c
    };
    let j = json(&run_expect(&mut query(&[]), 0));
    assert_eq!(j["results"][0]["hits"][0]["path"], "class00/000.jpg", "{j:#}");
    run_expect(&mut query(&["--precision", "int8"]), 0);
    let e = refused(&mut query(&["--precision", "fp32"]));
    assert!(e.contains("indexed at precision int8") && e.contains("asks for fp32"), "{e}");
    // `eval --db` evaluates the stored descriptors; a --precision other than theirs is refused.
    run_expect(&mut f.cmd(&["eval", "--json", "--precision", "int8"]), 0);
    let e = refused(&mut f.cmd(&["eval", "--json", "--precision", "fp32"]));
    assert!(e.contains("indexed at precision int8"), "{e}");
}

#[test]
fn an_fp32_collection_refuses_int8() {
    let f = Fixture::new(1, 2);
    let index = |extra: &[&str]| {
        let mut c = f.cmd(&["index", "--json", "--dim", "2"]);
        c.arg(&f.gallery).arg("--model").arg(&f.model).args(extra);
        c
    };
    run_expect(&mut index(&[]), 0);
    assert!(f.info()["model"]["options"].is_null(), "fp32 is not recorded: old collections match");
    run_expect(&mut index(&["--precision", "fp32"]), 0);
    run_expect(&mut index(&["--plugin-config", r#"{"precision":"fp32"}"#]), 0);
    let e = refused(&mut index(&["--precision", "int8"]));
    assert!(e.contains("precision fp32") && e.contains("precision int8"), "{e}");
    assert!(e.contains("--precision fp32"), "says what to do: {e}");
}

#[test]
fn unsupported_precisions_and_models_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = write_micro_vit(tmp.path(), false);
    let img = tmp.path().join("x.png");
    write_picture(&img, 40, 40, 3);
    let embed_cmd = |model: &Path, precision: &str| {
        let mut c = irtdb();
        c.args(["embed", "--plugin", "ort-tensorrt", "--precision", precision, "--model"]);
        c.arg(model).arg(&img);
        c
    };
    for p in ["fp16", "bf16"] {
        let e = refused(&mut embed_cmd(&model, p));
        assert!(e.contains(&format!("--precision {p} is not supported")), "{e}");
        assert!(e.contains("no fast") && e.contains("int8"), "says why and what works: {e}");
    }
    // bf16 runs in the tch-cuda plugin, and the ort plugin's refusal says so.
    let e = refused(&mut embed_cmd(&model, "bf16"));
    assert!(e.contains("tch-cuda"), "{e}");
    let e = refused(&mut embed_cmd(&model, "int4"));
    assert!(e.contains("unknown precision 'int4'"), "{e}");
    // An .onnx file with no MatMul/Gemm to rewrite, and one with external data: refused at
    // int8, saying what to do; both still run at fp32.
    let plain = tmp.path().join("pixels.onnx");
    std::fs::write(&plain, PixelModel::plain(32).build(tmp.path()).unwrap()).unwrap();
    let e = refused(&mut embed_cmd(&plain, "int8"));
    assert!(e.contains("cannot quantise this ONNX model to int8"), "{e}");
    assert!(e.contains("no MatMul or Gemm node") && e.contains("pixels.onnx"), "{e}");
    assert!(e.contains("--precision fp32") && e.contains("quantize_dynamic"), "{e}");
    run_expect(&mut embed_cmd(&plain, "fp32"), 0);
    let ext = PixelModel {
        weights: Some((0..12).map(|i| 1.0 + i as f32).collect()),
        external: Some("ext.weights".into()),
        ..PixelModel::plain(32)
    };
    let ext_path = tmp.path().join("ext.onnx");
    std::fs::write(&ext_path, ext.build(tmp.path()).unwrap()).unwrap();
    let e = refused(&mut embed_cmd(&ext_path, "int8"));
    assert!(e.contains("stored as external data") && e.contains("quantize_dynamic"), "{e}");
    run_expect(&mut embed_cmd(&ext_path, "fp32"), 0);
}

/// The micro ViT's fp32 graph written as a plain .onnx file, as a user would give one.
fn write_micro_onnx(dir: &Path, weights: &irtdb_onnx::VitWeights) -> std::path::PathBuf {
    let onnx = dir.join("micro.onnx");
    let bytes = irtdb_onnx::build_vit_onnx(weights, irtdb_onnx::GraphOutput::Tokens).unwrap();
    std::fs::write(&onnx, bytes).unwrap();
    onnx
}

#[test]
fn int8_of_a_given_onnx_file_agrees_with_fp32_and_the_built_int8_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let (safetensors, weights) = write_micro_vit(tmp.path(), false);
    let onnx = write_micro_onnx(tmp.path(), &weights);
    let paths: Vec<_> = (0..5).map(|i| tmp.path().join(format!("p{i}.jpg"))).collect();
    for (i, p) in paths.iter().enumerate() {
        write_picture(p, 64, 48, 70 + i as u32);
    }
    let images: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let fp32 = embed(&onnx, &images, &[]);
    let int8 = embed(&onnx, &images, &["--precision", "int8"]);
    for (i, (a, b)) in int8.iter().zip(&fp32).enumerate() {
        let c = cosine(a, b);
        println!("image {i}: int8 (rewritten .onnx) vs fp32 cosine {c:.6}");
        assert!(c >= MIN_MEAN_COSINE, "image {i}: cosine {c}");
    }
    assert_ne!(int8, fp32, "int8 must not be the fp32 graph");
    // The rewrite quantises as the int8 build of the same weights does: the same descriptors.
    let built = embed(&safetensors, &images, &["--precision", "int8"]);
    assert_eq!(embed(&safetensors, &images, &[]), fp32, "the .onnx is the same model");
    for (a, b) in int8.iter().zip(&built) {
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(diff <= 1e-4, "rewritten vs built int8: max |diff| {diff}");
    }
    // What was rewritten is said on stderr.
    let mut c = irtdb();
    c.args(["embed", "--plugin", "ort-tensorrt", "--precision", "int8", "--model"])
        .arg(&onnx)
        .arg(images[0])
        .env("IRTDB_NO_MODEL_CACHE", "1");
    let e = stderr(&run_expect(&mut c, 0));
    assert!(e.contains("8 of 12 MatMul/Gemm nodes quantised to int8"), "{e}");
    assert!(e.contains("4 left fp32") && e.contains("computed"), "{e}");
}

#[test]
fn an_onnx_collection_at_int8_queries_and_never_mixes_precisions() {
    let f = Fixture::new(2, 3);
    let (_, weights) = write_micro_vit_seeded(&f.dir, 11);
    let onnx = write_micro_onnx(&f.dir, &weights);
    let index = |extra: &[&str]| {
        let mut c = f.cmd(&["index", "--json", "--dim", "4"]);
        c.arg(&f.gallery).arg("--model").arg(&onnx).args(extra);
        c
    };
    let j = json(&run_expect(&mut index(&["--precision", "int8"]), 0));
    assert_eq!(j["failed"], 0, "{j:#}");
    let info = f.info();
    assert_eq!(info["model"]["options"]["precision"], "int8", "{info:#}");
    let j = json(&run_expect(&mut f.cmd(&["query", "--json", "class01/002.jpg", "--k", "2"]), 0));
    assert_eq!(j["results"][0]["hits"][0]["path"], "class01/002.jpg", "{j:#}");
    for extra in [&["--precision", "fp32"][..], &[]] {
        let e = refused(&mut index(extra));
        assert!(e.contains("precision int8") && e.contains("precision fp32"), "{e}");
        assert!(e.contains("--precision int8"), "says what to do: {e}");
    }
    let e = refused(&mut f.cmd(&["query", "--json", "class00/000.jpg", "--precision", "fp32"]));
    assert!(e.contains("indexed at precision int8"), "{e}");
}

#[test]
fn the_model_cache_keeps_precisions_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (safetensors, weights) = write_micro_vit(tmp.path(), false);
    let onnx = write_micro_onnx(tmp.path(), &weights);
    let img = tmp.path().join("x.jpg");
    write_picture(&img, 64, 48, 9);
    for model in [&safetensors, &onnx] {
        let cache = tmp.path().join("cache").join(model.file_name().unwrap());
        let run = |precision: &str| {
            let mut c = irtdb();
            c.args(["embed", "--plugin", "ort-tensorrt", "--json", "--precision", precision])
                .arg("--model")
                .arg(model)
                .arg(&img)
                .env("XDG_CACHE_HOME", &cache)
                .env("IRTDB_MODEL_CACHE_LOG", "1")
                .env_remove("IRTDB_NO_MODEL_CACHE");
            let out = run_expect(&mut c, 0);
            let d: Vec<f32> = serde_json::from_value(json(&out)["images"][0]["descriptor"].clone())
                .expect("descriptor");
            (d, stderr(&out))
        };
        let m = model.display();
        let (fp32, log) = run("fp32");
        assert!(log.contains("model cache: miss"), "{m}: {log}");
        // int8 after fp32 is a miss of its own (precision is in the key), then a hit.
        let (int8, log) = run("int8");
        assert!(log.contains("model cache: miss"), "{m}: int8 must not reuse fp32: {log}");
        let (again, log) = run("int8");
        assert!(log.contains("model cache: hit"), "{m}: {log}");
        assert_eq!(int8, again, "{m}: the cached int8 graph gives the same descriptor");
        assert_ne!(int8, fp32);
        assert!(cosine(&int8, &fp32) >= MIN_MEAN_COSINE);
        let (fp32_again, log) = run("fp32");
        assert!(log.contains("model cache: hit"), "{m}: {log}");
        assert_eq!(fp32, fp32_again, "{m}");
    }
}

#[test]
fn doctor_says_which_precisions_this_cpu_runs_fast() {
    let out = irtdb().args(["doctor", "--json"]).output().expect("run irtdb doctor");
    let j = json(&out);
    let checks = j["checks"].as_array().expect("checks");
    let cpu = checks.iter().find(|c| c["what"] == "CPU").unwrap_or_else(|| panic!("{j:#}"));
    let found = cpu["found"].as_str().unwrap();
    let threads = std::thread::available_parallelism().unwrap().get();
    assert!(found.starts_with(&format!("{threads} threads")), "{found}");
    // Independently: the flags the kernel reports.
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let flags: std::collections::HashSet<&str> = info
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let vnni = flags.contains("avx512_vnni") || flags.contains("avx_vnni");
        assert_eq!(found.contains("int8 fast"), vnni, "{found}");
        assert_eq!(found.contains("bf16 fast"), flags.contains("avx512_bf16"), "{found}");
    }
    // And which JPEG decoder large photos get: libjpeg-turbo exactly when the loader knows it.
    let jpeg = checks.iter().find(|c| c["what"] == "JPEG decoding").expect("a JPEG check");
    let found = jpeg["found"].as_str().unwrap();
    if let Ok(out) = Command::new("ldconfig").arg("-p").output() {
        let listed = String::from_utf8_lossy(&out.stdout).contains("libturbojpeg.so.0");
        assert_eq!(found.starts_with("libjpeg-turbo"), listed, "{found}");
    }
}
