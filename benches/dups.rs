//! Choosing `irtdb dups`' default threshold: precision and recall of near-duplicate pairs on a
//! generated set — originals, each with four edits (resize to half, JPEG recompression at quality
//! 40, a 6 % crop, a colour shift) — mixed with distinct photo-like images; side by side in one run
//! with imagededup's PHash (Hamming distance thresholds) on the same files.
//!
//!     scripts/setup-onnxruntime.sh; cargo build --release -p irtdb-plugin-ort-tensorrt
//!     python3 -m venv /work/venv-bench && /work/venv-bench/bin/pip install imagededup==0.3.3.post2
//!     IRTDB_BENCH_PYTHON=/work/venv-bench/bin/python cargo bench --bench dups [-- ARCH | MODEL]
//!
//! (MODEL: a weights file or `hf-hub:` reference, to measure trained weights instead of a
//! random preset.)
//!
//! Pairs are counted after grouping (two files are "found" when they land in one group, for
//! irtdb through its union-find, for PHash through the same union-find over its pairs), so both
//! are judged as a user reviewing groups would see them. No realistic model is available offline:
//! the descriptors come from a random-weight ViT preset (default deit_small_patch16_224), which
//! sees colour and layout only; with trained weights the separation can only be better.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use common::{num, Table};
use image::codecs::jpeg::JpegEncoder;
use image::RgbImage;
use irtdb_engine::collection;
use irtdb_engine::dups::{find_groups, NEIGHBOURS};
use irtdb_engine::model::{write_random_model, RandomModel};

const ORIGINALS: usize = 40;
const DISTINCT: usize = 200;
const THRESHOLDS: &[f32] = &[0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99];
const PHASH_DISTANCES: &[u32] = &[0, 2, 4, 6, 8, 10, 12, 16];

fn jpeg(img: &RgbImage, q: u8, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, q).encode_image(img)?;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Writes the set; returns each file's group (its original's index) or None for distinct ones.
fn make_set(dir: &Path) -> Result<HashMap<String, Option<usize>>> {
    std::fs::create_dir_all(dir)?;
    let mut truth = HashMap::new();
    for i in 0..ORIGINALS {
        let img = common::photo(640, 480, 7_000 + i as u64);
        let name = |v: &str| format!("o{i:03}-{v}.jpg");
        jpeg(&img, 92, &dir.join(name("orig")))?;
        let half = image::imageops::resize(&img, 320, 240, image::imageops::FilterType::Triangle);
        jpeg(&half, 92, &dir.join(name("half")))?;
        jpeg(&img, 40, &dir.join(name("q40")))?;
        let crop = image::imageops::crop_imm(&img, 19, 14, 602, 452).to_image();
        jpeg(&crop, 92, &dir.join(name("crop")))?;
        let mut shifted = img.clone();
        for p in shifted.pixels_mut() {
            p.0 = [p.0[0].saturating_add(12), p.0[1], p.0[2].saturating_sub(8)];
        }
        jpeg(&shifted, 92, &dir.join(name("colour")))?;
        for v in ["orig", "half", "q40", "crop", "colour"] {
            truth.insert(name(v), Some(i));
        }
    }
    for j in 0..DISTINCT {
        let name = format!("d{j:04}.jpg");
        jpeg(&common::photo(640, 480, 50_000 + j as u64), 92, &dir.join(&name))?;
        truth.insert(name, None);
    }
    Ok(truth)
}

/// Pairs of files in one group, from groups.
fn group_pairs(groups: &[Vec<String>]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for g in groups {
        for a in g {
            for b in g {
                if a < b {
                    out.insert((a.clone(), b.clone()));
                }
            }
        }
    }
    out
}

/// Groups from pairs (union-find, as irtdb does).
fn groups_of_pairs(pairs: &[(String, String)]) -> Vec<Vec<String>> {
    let mut parent: HashMap<String, String> = HashMap::new();
    fn find(p: &mut HashMap<String, String>, x: &str) -> String {
        let mut x = x.to_string();
        while let Some(up) = p.get(&x).cloned() {
            if up == x {
                break;
            }
            x = up;
        }
        x
    }
    for (a, b) in pairs {
        parent.entry(a.clone()).or_insert_with(|| a.clone());
        parent.entry(b.clone()).or_insert_with(|| b.clone());
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra != rb {
            parent.insert(ra, rb);
        }
    }
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    let keys: Vec<String> = parent.keys().cloned().collect();
    for k in keys {
        let r = find(&mut parent, &k);
        groups.entry(r).or_default().push(k);
    }
    groups.into_values().collect()
}

fn score(
    found: &BTreeSet<(String, String)>,
    truth: &HashMap<String, Option<usize>>,
) -> (f64, f64, usize) {
    let true_pairs = ORIGINALS * 10; // C(5, 2) per original
    let correct = found.iter().filter(|(a, b)| truth[a].is_some() && truth[a] == truth[b]).count();
    let precision = if found.is_empty() { 1.0 } else { correct as f64 / found.len() as f64 };
    (precision, correct as f64 / true_pairs as f64, found.len())
}

fn main() -> Result<()> {
    let arch = common::first_arg().unwrap_or_else(|| "deit_small_patch16_224".into());
    let ort = common::setup_ort()?;
    let plugin = common::plugin_path()?;
    println!("# irtdb bench: dups (default threshold)");
    println!("machine: {}", common::machine());
    let tmp = tempfile::tempdir()?;
    let set = tmp.path().join("set");
    let truth = make_set(&set)?;
    println!(
        "{ORIGINALS} originals x 5 (original, half size, JPEG q40, 6 % crop, colour shift) + \
         {DISTINCT} distinct photo-like images = {} files; {} true pairs",
        truth.len(),
        ORIGINALS * 10
    );
    // A model file or hub reference measures that model; a preset name, random weights of it.
    let trained = Path::new(&arch).is_file() || arch.starts_with("hf-hub:");
    let model = if trained {
        std::path::PathBuf::from(&arch)
    } else {
        let model = tmp.path().join("model.safetensors");
        write_random_model(
            &RandomModel { arch: arch.clone(), depth: None, image_size: None, seed: 5 },
            &model,
        )?;
        model
    };
    let db = tmp.path().join("set.db");
    let out = common::irtdb(tmp.path(), &ort, &plugin)
        .args(["index", "--json", "--db"])
        .arg(&db)
        .arg(&set)
        .arg("--model")
        .arg(&model)
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "irtdb index failed");

    // irtdb: the same vectors and grouping as `irtdb dups`, at each threshold.
    let store = irtdb_store::Store::open_existing(&db)?;
    let (row, _) = collection::collection_model(&store)?.context("no model")?;
    let g = store.current_generation(row.id)?.context("no index")?;
    let pca = collection::generation_pca(&store, &g)?;
    let v = collection::indexed_vectors(&store, row.id, pca.as_ref())?;
    let paths: HashMap<i64, String> = store.images()?.into_iter().map(|r| (r.id, r.path)).collect();
    let mut t = Table::new(
        &format!(
            "irtdb dups ({} {arch}, PCA {}, exact {NEIGHBOURS}-NN): pairs after grouping",
            if trained { "model" } else { "random" },
            v.dim
        ),
        &["cosine >=", "precision", "recall", "pairs found"],
    );
    for &th in THRESHOLDS {
        let groups: Vec<Vec<String>> = find_groups(&v, th, NEIGHBOURS, None)
            .into_iter()
            .map(|g| g.into_iter().map(|(r, _)| paths[&v.ids[r]].clone()).collect())
            .collect();
        let (p, r, n) = score(&group_pairs(&groups), &truth);
        t.row(vec![format!("{th:.2}"), num(p), num(r), n.to_string()]);
    }
    t.print();

    // imagededup's PHash on the same files.
    match std::env::var_os("IRTDB_BENCH_PYTHON") {
        None => println!("\n(PHash skipped: set IRTDB_BENCH_PYTHON to a Python with imagededup)"),
        Some(python) => {
            let mut c = Command::new(python);
            c.arg(common::root().join("benches/dups_phash.py")).arg(&set);
            c.args(PHASH_DISTANCES.iter().map(|d| d.to_string()));
            let out = c.stderr(Stdio::inherit()).output()?;
            ensure!(out.status.success(), "dups_phash.py failed");
            let found: HashMap<String, Vec<(String, String)>> =
                serde_json::from_slice(&out.stdout)?;
            let mut t = Table::new(
                "imagededup 0.3.3 PHash on the same files: pairs after grouping",
                &["Hamming <=", "precision", "recall", "pairs found"],
            );
            for d in PHASH_DISTANCES {
                let pairs = &found[&d.to_string()];
                let (p, r, n) = score(&group_pairs(&groups_of_pairs(pairs)), &truth);
                t.row(vec![d.to_string(), num(p), num(r), n.to_string()]);
            }
            t.print();
        }
    }
    Ok(())
}
