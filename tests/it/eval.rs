//! `irtdb eval` and `irtdb analyze`: the official dataset layouts, written small by the tests
//! (generated images, the list files in their distributed formats, the revisited ground truth
//! pickled by python3's stdlib), scored through the real ort plugin and the micro ViT, and
//! checked against independent brute-force computations.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// The shared fixture (the micro ViT; galleries are written by each test), with this module's
/// commands.
type Setup = Fixture;

impl Fixture {
    /// `irtdb eval --protocol P --data DIR --model M --batch 16 --json`.
    fn eval(&self, protocol: &str, data: &Path) -> serde_json::Value {
        let mut c = self.eval_cmd(protocol, data);
        json(&run_expect(c.arg("--json"), 0))
    }

    fn eval_cmd(&self, protocol: &str, data: &Path) -> Command {
        let mut c = irtdb();
        c.args(["eval", "--protocol", protocol, "--data"])
            .arg(data)
            .arg("--model")
            .arg(&self.model)
            .args(["--batch", "16"]);
        c
    }

    /// Descriptors of `images` through `irtdb embed` (an independent path to the same numbers).
    fn embed(&self, images: &[PathBuf]) -> Vec<Vec<f32>> {
        let mut c = irtdb();
        c.args(["embed", "--json", "--batch", "16", "--model"]).arg(&self.model).args(images);
        json(&run_expect(&mut c, 0))["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| serde_json::from_value(i["descriptor"].clone()).unwrap())
            .collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Recall@k in percent, by sorting every query's scores against every gallery item: the
/// definition, with no blocking and no shared code with irtdb. `loo`: queries are the gallery
/// and each skips itself. Queries without a positive are left out.
fn brute_force_recall(
    queries: &[Vec<f32>],
    q_labels: &[u32],
    gallery: &[Vec<f32>],
    g_labels: &[u32],
    loo: bool,
    ks: &[usize],
) -> Vec<f64> {
    let mut hits = vec![0usize; ks.len()];
    let mut scored = 0;
    for (qi, q) in queries.iter().enumerate() {
        let mut order: Vec<(f32, usize)> = gallery
            .iter()
            .enumerate()
            .filter(|&(gi, _)| !(loo && gi == qi))
            .map(|(gi, g)| (dot(q, g), gi))
            .collect();
        if !order.iter().any(|&(_, gi)| g_labels[gi] == q_labels[qi]) {
            continue;
        }
        scored += 1;
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (h, &k) in hits.iter_mut().zip(ks) {
            if order.iter().take(k).any(|&(_, gi)| g_labels[gi] == q_labels[qi]) {
                *h += 1;
            }
        }
    }
    hits.iter().map(|&h| 100.0 * h as f64 / scored as f64).collect()
}

fn recall_of(variant: &serde_json::Value) -> Vec<(u64, f64)> {
    variant["recall"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["k"].as_u64().unwrap(), a["percent"].as_f64().unwrap()))
        .collect()
}

fn notes(r: &serde_json::Value) -> String {
    r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `classes × per_class` pictures under `root/<folder(c)>/<i>.jpg`; returns
/// `(relative path, class)` in order. Images of one class share a hue (seeds close together).
fn write_images(
    root: &Path,
    classes: &[u32],
    per_class: usize,
    folder: impl Fn(u32) -> String,
) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for &c in classes {
        let dir = folder(c);
        std::fs::create_dir_all(root.join(&dir)).unwrap();
        for i in 0..per_class {
            let rel = format!("{dir}/{i:02}.jpg");
            write_picture(&root.join(&rel), 48, 40, c * 100 + i as u32);
            out.push((rel, c));
        }
    }
    out
}

#[test]
fn sop_layout_matches_a_brute_force_recall() {
    let s = Setup::model_only();
    let data = s.dir.join("Stanford_Online_Products");
    let images = write_images(&data, &[3, 7, 8, 11, 20, 21], 4, |c| format!("cat_final/{c}"));
    let mut list = String::from("image_id class_id super_class_id path\n");
    for (i, (rel, c)) in images.iter().enumerate() {
        list.push_str(&format!("{} {} {} {rel}\n", i + 1, c, c % 3 + 1));
    }
    std::fs::write(data.join("Ebay_test.txt"), list).unwrap();

    // --data may be the folder above Stanford_Online_Products too.
    let r = s.eval("sop", &s.dir);
    assert_eq!(r["protocol"], "sop");
    assert_eq!((r["images"].as_u64(), r["classes"].as_u64()), (Some(24), Some(6)));
    let variants = r["variants"].as_array().unwrap();
    // The micro ViT is 32-d: PCA-128 is skipped, and the report says why.
    assert_eq!(variants.len(), 1, "{r:#}");
    assert!(notes(&r).contains("PCA-128 skipped: the descriptor has only 32 dimensions"), "{r:#}");
    let recall = recall_of(&variants[0]);
    assert_eq!(recall.iter().map(|a| a.0).collect::<Vec<_>>(), vec![1, 10, 100, 1000]);

    let paths: Vec<PathBuf> = images.iter().map(|(rel, _)| data.join(rel)).collect();
    let labels: Vec<u32> = images.iter().map(|(_, c)| *c).collect();
    let desc = s.embed(&paths);
    let expected = brute_force_recall(&desc, &labels, &desc, &labels, true, &[1, 10, 100, 1000]);
    for ((k, got), want) in recall.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-9, "R@{k}: irtdb {got}, brute force {want}");
    }
    assert_eq!(recall[3].1, 100.0); // 23 others < 1000: every query finds a positive.
    let map_r = variants[0]["map_at_r"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&map_r));

    // The table names the protocol and the columns.
    let out = run_expect(&mut s.eval_cmd("sop", &data), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("R@1000") && text.contains("MAP@R") && text.contains("full (32-d)"),
        "{text}"
    );
}

#[test]
fn cub_layout_keeps_classes_101_to_200() {
    let s = Setup::model_only();
    let data = s.dir.join("CUB_200_2011");
    let classes = [99, 100, 101, 150, 200];
    let images = write_images(&data.join("images"), &classes, 3, |c| format!("{c:03}.Bird_{c}"));
    let (mut names, mut labels) = (String::new(), String::new());
    for (i, (rel, c)) in images.iter().enumerate() {
        names.push_str(&format!("{} {rel}\n", i + 1));
        labels.push_str(&format!("{} {c}\n", i + 1));
    }
    std::fs::write(data.join("images.txt"), names).unwrap();
    std::fs::write(data.join("image_class_labels.txt"), labels).unwrap();
    // Train images need not be present: remove class 99's files.
    std::fs::remove_dir_all(data.join("images/099.Bird_99")).unwrap();

    let r = s.eval("cub", &data);
    assert_eq!((r["images"].as_u64(), r["classes"].as_u64()), (Some(9), Some(3)), "{r:#}");
    let v = &r["variants"][0];
    let recall = recall_of(v);
    assert_eq!(recall.iter().map(|a| a.0).collect::<Vec<_>>(), vec![1, 2, 4, 8]);
    assert!(recall.windows(2).all(|w| w[0].1 <= w[1].1), "{recall:?}");
    assert_eq!(recall[3].1, 100.0); // 8 others: every positive is within the top 8.
    assert_eq!(v["scored_queries"], 9);
}

#[test]
fn inshop_layout_scores_queries_against_the_gallery() {
    let s = Setup::model_only();
    let data = s.dir.join("inshop");
    let items = [1, 2, 3, 4];
    let images = write_images(&data.join("img/WOMEN"), &items, 4, |c| format!("id_{c:08}"));
    let mut rows = Vec::new();
    for (rel, c) in &images {
        let i: usize = rel[rel.len() - 6..rel.len() - 4].parse().unwrap();
        let status = match (c, i) {
            (4, _) => "train",
            (_, 0) => "query",
            _ => "gallery",
        };
        rows.push(format!("img/WOMEN/{rel}      id_{c:08}   {status}"));
    }
    let list =
        format!("{}\nimage_name item_id evaluation_status\n{}\n", rows.len(), rows.join("\n"));
    std::fs::create_dir_all(data.join("Eval")).unwrap();
    std::fs::write(data.join("Eval/list_eval_partition.txt"), list).unwrap();

    let r = s.eval("inshop", &data);
    assert_eq!((r["queries"].as_u64(), r["gallery"].as_u64()), (Some(3), Some(9)), "{r:#}");
    let recall = recall_of(&r["variants"][0]);
    assert_eq!(recall.iter().map(|a| a.0).collect::<Vec<_>>(), vec![1, 10, 20, 30]);

    let path = |rel: &String| data.join("img/WOMEN").join(rel);
    let q: Vec<&(String, u32)> =
        images.iter().filter(|(rel, c)| *c != 4 && rel.ends_with("00.jpg")).collect();
    let g: Vec<&(String, u32)> =
        images.iter().filter(|(rel, c)| *c != 4 && !rel.ends_with("00.jpg")).collect();
    let qd = s.embed(&q.iter().map(|(rel, _)| path(rel)).collect::<Vec<_>>());
    let gd = s.embed(&g.iter().map(|(rel, _)| path(rel)).collect::<Vec<_>>());
    let ql: Vec<u32> = q.iter().map(|x| x.1).collect();
    let gl: Vec<u32> = g.iter().map(|x| x.1).collect();
    let expected = brute_force_recall(&qd, &ql, &gd, &gl, false, &[1, 10, 20, 30]);
    for ((k, got), want) in recall.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-9, "R@{k}: irtdb {got}, brute force {want}");
    }

    // A declared count that disagrees with the rows is refused, naming the file.
    let bad = format!("99\nimage_name item_id evaluation_status\n{}\n", rows.join("\n"));
    std::fs::write(data.join("Eval/list_eval_partition.txt"), bad).unwrap();
    let err = stderr(&run_expect(&mut s.eval_cmd("inshop", &data), 2));
    assert!(err.contains("list_eval_partition.txt declares 99 images"), "{err}");
}

/// Writes `gnd_<name>.pkl` with python3's stdlib pickle at `protocol`.
fn write_gnd_pickle(path: &Path, gnd: &serde_json::Value, protocol: u32) {
    let script = format!(
        "import json, pickle, sys\n\
         d = json.loads(sys.argv[1])\n\
         for g in d['gnd']:\n    g['bbx'] = [float(v) for v in g['bbx']]\n\
         open(sys.argv[2], 'wb').write(pickle.dumps(d, protocol={protocol}))\n"
    );
    let status = Command::new("python3")
        .args(["-c", &script, &gnd.to_string()])
        .arg(path)
        .status()
        .expect("python3 must be installed to write the pickle fixture");
    assert!(status.success(), "python3 failed to write {}", path.display());
}

/// Database images db0..db7 (distinct pictures); query files are copies of database images, so
/// that each query's own twin ranks first: the expected scores follow from the ground truth.
fn revisited_dataset(s: &Setup, name: &str, protocol: u32) -> PathBuf {
    let data = s.dir.join(name);
    let jpg = data.join("jpg");
    std::fs::create_dir_all(&jpg).unwrap();
    for i in 0..8 {
        write_picture(&jpg.join(format!("db{i}.jpg")), 64, 48, 7 * i + 1);
    }
    std::fs::copy(jpg.join("db0.jpg"), jpg.join("q0.jpg")).unwrap();
    std::fs::copy(jpg.join("db2.jpg"), jpg.join("q1.jpg")).unwrap();
    std::fs::copy(jpg.join("db5.jpg"), jpg.join("q2.jpg")).unwrap();
    let gnd = serde_json::json!({
        "imlist": (0..8).map(|i| format!("db{i}")).collect::<Vec<_>>(),
        "qimlist": ["q0", "q1", "q2"],
        "gnd": [
            // q0's twin db0 is easy; db1 junk. Easy and Medium: AP 1. Hard: no positives.
            {"bbx": [0, 0, 64, 48], "easy": [0], "hard": [], "junk": [1]},
            // q1's twin db2 is hard. Easy: no positives; Medium and Hard: AP 1.
            {"bbx": [-5, -5, 80, 60], "easy": [], "hard": [2], "junk": []},
            // q2 is cropped (a box inside the image): no positives anywhere, left out.
            {"bbx": [10.4, 8.6, 40.2, 30], "easy": [], "hard": [], "junk": [5]},
        ],
    });
    write_gnd_pickle(&data.join(format!("gnd_{name}.pkl")), &gnd, protocol);
    data
}

#[test]
fn revisited_oxford_and_paris_read_the_pickle_and_score_easy_medium_hard() {
    let s = Setup::model_only();
    for (name, protocol) in [("roxford5k", 2), ("rparis6k", 4)] {
        let data = revisited_dataset(&s, name, protocol);
        let r = s.eval(name, &data);
        assert_eq!((r["gallery"].as_u64(), r["queries"].as_u64()), (Some(8), Some(3)), "{r:#}");
        let rv = &r["variants"][0]["revisited"];
        for (setting, queries) in [("easy", 1), ("medium", 2), ("hard", 1)] {
            assert_eq!(rv[setting]["queries"], queries, "{name} {setting}: {r:#}");
            assert!(
                (rv[setting]["map"].as_f64().unwrap() - 100.0).abs() < 1e-9,
                "{name} {setting}: {r:#}"
            );
            let mp: Vec<f64> = rv[setting]["mp"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["percent"].as_f64().unwrap())
                .collect();
            // revisitop's P@k: kq = min(last positive's rank, k) = 1 → 100 at every k.
            assert_eq!(mp, vec![100.0, 100.0, 100.0], "{name} {setting}");
        }
        assert!(notes(&r).contains("cropped to their box"), "{r:#}");
    }
    // The text table lists the three settings.
    let out = run_expect(&mut s.eval_cmd("roxford5k", &s.dir.join("roxford5k")), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("medium") && text.contains("mP@10"), "{text}");
}

#[test]
fn missing_files_say_what_was_expected() {
    let s = Setup::model_only();
    let empty = s.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = stderr(&run_expect(&mut s.eval_cmd("sop", &empty), 2));
    assert!(
        err.contains("Ebay_test.txt") && err.contains("Stanford_Online_Products/Ebay_test.txt"),
        "{err}"
    );
    let err = stderr(&run_expect(&mut s.eval_cmd("roxford5k", &empty), 2));
    assert!(err.contains("gnd_roxford5k.pkl"), "{err}");

    // A listed image that is not there is named.
    std::fs::write(
        empty.join("Ebay_test.txt"),
        "image_id class_id super_class_id path\n1 1 1 a/x.JPG\n",
    )
    .unwrap();
    let err = stderr(&run_expect(&mut s.eval_cmd("sop", &empty), 2));
    assert!(err.contains("1 of the 1 images listed") && err.contains("a/x.JPG"), "{err}");
    // A malformed line is quoted with its line number.
    std::fs::write(
        empty.join("Ebay_test.txt"),
        "image_id class_id super_class_id path\n1 1 a/x.JPG\n",
    )
    .unwrap();
    let err = stderr(&run_expect(&mut s.eval_cmd("sop", &empty), 2));
    assert!(
        err.contains("Ebay_test.txt:2") && err.contains("image_id class_id super_class_id path"),
        "{err}"
    );
    // A pickle that is not the ground truth.
    let data = empty.join("rparis6k");
    std::fs::create_dir_all(&data).unwrap();
    write_gnd_pickle_raw(&data.join("gnd_rparis6k.pkl"), "{'imlist': ['a']}");
    let err = stderr(&run_expect(&mut s.eval_cmd("rparis6k", &empty), 2));
    assert!(err.contains("gnd_rparis6k.pkl") && err.contains("qimlist"), "{err}");
    // Neither --protocol nor --db.
    let err = stderr(&run_expect(irtdb().arg("eval"), 2));
    assert!(err.contains("--db"), "{err}");
}

fn write_gnd_pickle_raw(path: &Path, expr: &str) {
    let script = format!(
        "import pickle, sys\nopen(sys.argv[1], 'wb').write(pickle.dumps({expr}, protocol=2))\n"
    );
    let status = Command::new("python3").args(["-c", &script]).arg(path).status().expect("python3");
    assert!(status.success());
}

/// A labelled gallery (plus unlabelled images at its root) indexed with the micro ViT.
fn indexed_gallery(dir: &Path, db_name: &str, model: &Path) -> PathBuf {
    let gallery = dir.join("gallery");
    if !gallery.exists() {
        write_images(&gallery, &[1, 2, 3, 4, 5, 6], 6, |c| format!("class{c}"));
        write_picture(&gallery.join("loose_a.jpg"), 48, 40, 9001);
        write_picture(&gallery.join("loose_b.jpg"), 48, 40, 9002);
        // A class with one image: its query has no positive.
        std::fs::create_dir_all(gallery.join("single")).unwrap();
        write_picture(&gallery.join("single/only.jpg"), 48, 40, 9003);
    }
    let db = dir.join(db_name);
    let mut c = irtdb();
    c.args(["index", "--json", "--dim", "16", "--db"])
        .arg(&db)
        .arg(&gallery)
        .arg("--model")
        .arg(model);
    run_expect(&mut c, 0);
    db
}

#[test]
fn eval_db_is_leave_one_out_on_the_stored_descriptors() {
    let s = Setup::model_only();
    let db = indexed_gallery(&s.dir, "c.db", &s.model);
    let r = json(&run_expect(irtdb().args(["eval", "--json", "--db"]).arg(&db), 0));
    assert_eq!(r["protocol"], "db");
    assert_eq!((r["images"].as_u64(), r["classes"].as_u64()), (Some(37), Some(7)), "{r:#}");
    let n = notes(&r);
    assert!(n.contains("2 of 39 images have no label"), "{n}");
    assert!(n.contains("1 queries have no other image with their label"), "{n}");
    let variants = r["variants"].as_array().unwrap();
    assert_eq!(
        variants.iter().map(|v| v["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["full", "collection_pca"]
    );
    assert_eq!((variants[0]["dim"].as_u64(), variants[1]["dim"].as_u64()), (Some(32), Some(16)));
    assert_eq!(
        (variants[0]["scored_queries"].as_u64(), variants[0]["skipped_queries"].as_u64()),
        (Some(36), Some(1))
    );

    // Independently: the stored descriptors, labels, a full sort per query, and MAP@R.
    let store = irtdb_store::Store::open_existing(&db).unwrap();
    let model_id = store.models().unwrap()[0].id;
    let d = store.descriptors(model_id).unwrap();
    let labels: std::collections::HashMap<i64, Option<String>> =
        store.images().unwrap().into_iter().map(|r| (r.id, r.label)).collect();
    let mut names: Vec<String> = Vec::new();
    let (mut desc, mut lab) = (Vec::new(), Vec::new());
    for (i, id) in d.ids.iter().enumerate() {
        if let Some(l) = labels[id].clone() {
            if !names.contains(&l) {
                names.push(l.clone());
            }
            lab.push(names.iter().position(|x| *x == l).unwrap() as u32);
            desc.push(d.data[i * d.dim..(i + 1) * d.dim].to_vec());
        }
    }
    let ks = [1, 2, 4, 8, 10];
    let expected = brute_force_recall(&desc, &lab, &desc, &lab, true, &ks);
    for ((k, got), want) in recall_of(&variants[0]).iter().zip(&expected) {
        assert!((got - want).abs() < 1e-9, "R@{k}: irtdb {got}, brute force {want}");
    }
    let mut ap_sum = 0.0;
    let mut scored = 0;
    for (qi, q) in desc.iter().enumerate() {
        let mut order: Vec<(f32, usize)> = desc
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != qi)
            .map(|(j, g)| (dot(q, g), j))
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let r = order.iter().filter(|&&(_, j)| lab[j] == lab[qi]).count();
        if r == 0 {
            continue;
        }
        scored += 1;
        let mut tp = 0;
        let mut ap = 0.0;
        for (i, &(_, j)) in order.iter().take(r).enumerate() {
            if lab[j] == lab[qi] {
                tp += 1;
                ap += tp as f64 / (i + 1) as f64;
            }
        }
        ap_sum += ap / r as f64;
    }
    let want_map = 100.0 * ap_sum / scored as f64;
    let got_map = variants[0]["map_at_r"].as_f64().unwrap();
    assert!((got_map - want_map).abs() < 1e-9, "MAP@R: irtdb {got_map}, brute force {want_map}");

    // The text form.
    let out = run_expect(irtdb().args(["eval", "--db"]).arg(&db), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("R@10") && text.contains("collection_pca (16-d)"), "{text}");
}

#[test]
fn analyze_writes_figures_with_consistent_numbers() {
    let s = Setup::model_only();
    let db = indexed_gallery(&s.dir, "c.db", &s.model);
    let db2 = indexed_gallery(&s.dir, "d.db", &s.model);
    let out = s.dir.join("figures");
    let mut c = irtdb();
    c.args(["analyze", "--json", "--max-pairs", "300", "--db"])
        .arg(&db)
        .arg("--db")
        .arg(&db2)
        .arg("--out")
        .arg(&out);
    let r = json(&run_expect(&mut c, 0));
    for f in ["energy.svg", "energy.png", "similarity.svg", "similarity.png", "analysis.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(out.join("similarity.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("c.db positive") && svg.contains("d.db negative"),
        "{svg}"
    );
    let png = image::open(out.join("energy.png")).unwrap();
    assert!(png.width() > 100 && png.height() > 100);

    let col = &r["collections"][0];
    assert_eq!(
        (col["images"].as_u64(), col["dim"].as_u64(), col["labelled"].as_u64()),
        (Some(39), Some(32), Some(37))
    );
    let energy: Vec<f64> = serde_json::from_value(col["cumulative_energy"].clone()).unwrap();
    assert_eq!(energy.len(), 32);
    assert!(energy.windows(2).all(|w| w[0] <= w[1]), "not monotone: {energy:?}");
    assert!(energy[0] > 0.0 && *energy.last().unwrap() == 1.0, "{energy:?}");
    for level in col["components_for"].as_array().unwrap() {
        let (e, k) =
            (level["energy"].as_f64().unwrap(), level["components"].as_u64().unwrap() as usize);
        assert!(energy[k - 1] >= e - 1e-12 && (k == 1 || energy[k - 2] < e), "{level}: {energy:?}");
    }
    let sim = &col["similarity"];
    // 7 labels (6 × 6 images + 1 single): 6 × 15 positive pairs, C(37, 2) − 90 negative.
    assert_eq!(
        (sim["positive_pairs"].as_u64(), sim["negative_pairs"].as_u64()),
        (Some(90), Some(666 - 90))
    );
    assert_eq!(
        (sim["used_positive"].as_u64(), sim["used_negative"].as_u64()),
        (Some(90), Some(300))
    );
    let overlap = sim["overlap"].as_f64().unwrap();
    assert!((0.0..=1.0 + 1e-9).contains(&overlap));
    for h in ["positive_hist", "negative_hist"] {
        let hist: Vec<f64> = serde_json::from_value(sim[h].clone()).unwrap();
        assert!((hist.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{h}");
    }
    // Same descriptors in both databases: the same numbers.
    assert_eq!(r["collections"][1]["cumulative_energy"], col["cumulative_energy"]);

    // The text form prints the key numbers.
    let text = run_expect(irtdb().args(["analyze", "--db"]).arg(&db).arg("--out").arg(&out), 0);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("50% in")
            && text.contains("histogram overlap")
            && text.contains("energy.svg"),
        "{text}"
    );
}

/// The PCA-128 variant needs a descriptor wider than 128 and more than 128 images: a one-block
/// DeiT-Tiny (192-d) at 32 px, an In-Shop layout of 140 images and a revisited one of 130.
#[test]
fn pca_128_is_scored_on_query_gallery_and_revisited_layouts() {
    let s = Setup::model_only();
    let model = s.dir.join("tiny.safetensors");
    let mut c = irtdb();
    c.args(["model", "random", "--arch", "deit_tiny_patch16_224", "--depth", "1"])
        .args(["--image-size", "32", "--out"])
        .arg(&model);
    run_expect(&mut c, 0);
    let s = Setup { model, ..s };

    let data = s.dir.join("inshop");
    let images =
        write_images(&data.join("img"), &(1..=35).collect::<Vec<_>>(), 4, |c| format!("id_{c:08}"));
    let mut list = format!("{}\nimage_name item_id evaluation_status\n", images.len());
    for (rel, c) in &images {
        let status = if rel.ends_with("00.jpg") { "query" } else { "gallery" };
        list.push_str(&format!("img/{rel} id_{c:08} {status}\n"));
    }
    std::fs::write(data.join("list_eval_partition.txt"), list).unwrap();
    let r = s.eval("inshop", &data);
    let v = r["variants"].as_array().unwrap();
    assert_eq!(
        v.iter()
            .map(|v| (v["name"].as_str().unwrap(), v["dim"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        [("full", 192), ("pca128", 128)],
        "{r:#}"
    );
    assert!(notes(&r).contains("PCA-128 is fitted on the evaluated descriptors"), "{r:#}");
    for variant in v {
        let recall = recall_of(variant);
        assert!(recall.windows(2).all(|w| w[0].1 <= w[1].1), "{recall:?}");
    }

    let data = s.dir.join("rparis6k");
    let jpg = data.join("jpg");
    std::fs::create_dir_all(&jpg).unwrap();
    for i in 0..130 {
        write_picture(&jpg.join(format!("db{i}.jpg")), 40, 32, 11 * i + 3);
    }
    std::fs::copy(jpg.join("db4.jpg"), jpg.join("q0.jpg")).unwrap();
    let gnd = serde_json::json!({
        "imlist": (0..130).map(|i| format!("db{i}")).collect::<Vec<_>>(),
        "qimlist": ["q0"],
        "gnd": [{"bbx": [0, 0, 40, 32], "easy": [4], "hard": [], "junk": []}],
    });
    write_gnd_pickle(&data.join("gnd_rparis6k.pkl"), &gnd, 2);
    let r = s.eval("rparis6k", &data);
    let v = r["variants"].as_array().unwrap();
    assert_eq!(v.len(), 2, "{r:#}");
    assert_eq!(v[1]["dim"], 128);
    // The query's twin is found first with and without PCA.
    for variant in v {
        assert!(
            (variant["revisited"]["easy"]["map"].as_f64().unwrap() - 100.0).abs() < 1e-9,
            "{r:#}"
        );
    }
    assert!(notes(&r).contains("fitted on the database descriptors"), "{r:#}");
}
