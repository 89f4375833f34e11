//! Beyond one machine: `irtdb index --shard I/N` and `--files-from`, `irtdb merge`, the Spark
//! job (examples/spark/irtdb_spark.py with pyspark in local mode and the machine's Java) and
//! `irtdb export --parquet` (read back with pyarrow). Every merged collection is compared with a
//! single-machine `irtdb index` of the same folder, read independently through irtdb-store and
//! asked the same queries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use irtdb_store::{Status, Store};

use crate::util::*;

/// The shared fixture (class folders of JPEGs and a micro random ViT) plus one picture in the
/// root (no label); databases are named per test.
struct Gallery(Fixture);

impl std::ops::Deref for Gallery {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.0
    }
}

impl Gallery {
    fn new(classes: usize, per_class: usize) -> Self {
        let f = Fixture::new(classes, per_class);
        write_picture(&f.gallery.join("loose.jpg"), PICTURE_W, PICTURE_H, 424_242);
        Gallery(f)
    }

    /// Every image file of the gallery, relative to it.
    fn files(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![self.gallery.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&self.gallery).unwrap();
                    out.insert(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        out
    }

    fn db(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `irtdb index GALLERY --db DB --model M --dim 16 --json EXTRA…`
    fn index_cmd(&self, db: &Path, extra: &[&str]) -> Command {
        let mut c = irtdb();
        c.arg("index").arg(&self.gallery).arg("--db").arg(db).arg("--model").arg(&self.model);
        c.arg("--json").args(extra);
        if !extra.contains(&"--dim") {
            c.args(["--dim", "16"]);
        }
        c
    }

    fn index(&self, db: &Path, extra: &[&str]) -> serde_json::Value {
        json(&run_expect(&mut self.index_cmd(db, extra), 0))
    }

    /// The shards `0..n` of the gallery, descriptors only, as `shard-I.db`.
    fn shards(&self, n: u32) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let db = self.db(&format!("shard-{i}.db"));
                let r = self.index(&db, &["--shard", &format!("{i}/{n}"), "--descriptors-only"]);
                assert_eq!(r["shard"], format!("{i}/{n}"), "{r:#}");
                assert_eq!(r["index_skipped"], true, "{r:#}");
                db
            })
            .collect()
    }

    fn merge_cmd(&self, shards: &[PathBuf], out: &Path) -> Command {
        let mut c = irtdb();
        c.arg("merge").args(shards).arg("--db").arg(out).args(["--json", "--dim", "16"]);
        c
    }

    fn merge(&self, shards: &[PathBuf], out: &Path) -> serde_json::Value {
        json(&run_expect(&mut self.merge_cmd(shards, out), 0))
    }
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// A collection as its database holds it, keyed by path: (label, content hash, status) and the
/// stored descriptor.
struct Snapshot {
    rows: BTreeMap<String, (Option<String>, String, Status)>,
    descriptors: BTreeMap<String, Vec<f32>>,
    weights_hash: String,
}

fn snapshot(db: &Path) -> Snapshot {
    let store = Store::open_existing(db).unwrap();
    let images = store.images().unwrap();
    let models = store.models().unwrap();
    assert_eq!(models.len(), 1, "{}: one model", db.display());
    let d = store.descriptors(models[0].id).unwrap();
    let path_of: BTreeMap<i64, &str> = images.iter().map(|r| (r.id, r.path.as_str())).collect();
    Snapshot {
        rows: images
            .iter()
            .map(|r| (r.path.clone(), (r.label.clone(), r.hash.clone(), r.status)))
            .collect(),
        descriptors: d.iter().map(|(id, v)| (path_of[&id].to_string(), v.to_vec())).collect(),
        weights_hash: models[0].weights_hash.clone(),
    }
}

/// Asserts that two collections hold the same images (paths, labels, content, status) and the
/// same descriptors within 1e-5, and answer the same queries (exact and HNSW; by stored image
/// and by an outside file embedded on the fly) with the same images and scores.
fn assert_same_collection(g: &Gallery, single: &Path, merged: &Path) {
    let (a, b) = (snapshot(single), snapshot(merged));
    assert_eq!(a.weights_hash, b.weights_hash);
    assert_eq!(a.rows, b.rows, "images of {} vs {}", single.display(), merged.display());
    assert_eq!(a.descriptors.keys().collect::<Vec<_>>(), b.descriptors.keys().collect::<Vec<_>>());
    for (path, va) in &a.descriptors {
        let vb = &b.descriptors[path];
        assert_eq!(va.len(), vb.len());
        let worst = va.iter().zip(vb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{path}: descriptors differ by {worst}");
    }

    let outside = g.dir.join("outside.jpg");
    if !outside.exists() {
        write_picture(&outside, 64, 48, 5);
    }
    let mut queries: Vec<String> = a.descriptors.keys().step_by(3).cloned().collect();
    queries.push(outside.display().to_string());
    for mode in [&["--exact"][..], &["--ef", "64"][..]] {
        let ask = |db: &Path| {
            let mut c = irtdb();
            c.args(["query", "--json", "--k", "5", "--db"]).arg(db).args(mode).args(&queries);
            json(&run_expect(&mut c, 0))
        };
        let (qa, qb) = (ask(single), ask(merged));
        let (ra, rb) = (qa["results"].as_array().unwrap(), qb["results"].as_array().unwrap());
        assert_eq!(ra.len(), queries.len());
        assert_eq!(ra.len(), rb.len());
        for (q, (x, y)) in queries.iter().zip(ra.iter().zip(rb)) {
            let hits = |r: &serde_json::Value| -> Vec<(String, f64)> {
                r["hits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (h["path"].as_str().unwrap().to_string(), h["score"].as_f64().unwrap())
                    })
                    .collect()
            };
            let (hx, hy) = (hits(x), hits(y));
            assert_eq!(hx.len(), 5, "query {q} {mode:?}: {x}");
            let px: Vec<&str> = hx.iter().map(|h| h.0.as_str()).collect();
            let py: Vec<&str> = hy.iter().map(|h| h.0.as_str()).collect();
            assert_eq!(px, py, "query {q} {mode:?}: single {hx:?}, merged {hy:?}");
            for ((_, sx), (_, sy)) in hx.iter().zip(&hy) {
                assert!((sx - sy).abs() < 1e-4, "query {q} {mode:?}: {hx:?} vs {hy:?}");
            }
        }
    }
}

fn paths_of(db: &Path) -> BTreeSet<String> {
    Store::open_existing(db).unwrap().images().unwrap().into_iter().map(|r| r.path).collect()
}

#[test]
fn shards_partition_the_folder_and_lists_index_exactly_what_they_name() {
    let g = Gallery::new(4, 6); // 25 images
    let all = g.files();
    let shards = g.shards(3);
    let mut seen = BTreeSet::new();
    for db in &shards {
        let held = paths_of(db);
        assert!(!held.is_empty(), "{} is empty", db.display());
        for p in held {
            assert!(seen.insert(p.clone()), "{p} is in two shards");
        }
        // Descriptors only: no PCA, no HNSW generation.
        let info = json(&run_expect(irtdb().args(["info", "--json", "--db"]).arg(db), 0));
        assert!(info["index"].is_null(), "{info:#}");
    }
    assert_eq!(seen, all, "the shards together hold every image exactly once");

    // A shard database keeps its shard: another shard or the whole folder is refused.
    let out = run_expect(&mut g.index_cmd(&shards[0], &["--shard", "1/3"]), 2);
    let err = stderr(&out);
    assert!(err.contains("holds shard 0/3") && err.contains("asks for shard 1/3"), "{err}");
    let out = run_expect(&mut g.index_cmd(&shards[0], &[]), 2);
    assert!(stderr(&out).contains("the whole folder"), "{}", stderr(&out));
    // Bad specs are refused before anything is written.
    for bad in ["3/2", "0/0", "1", "a/3", "-1/3"] {
        let db = g.db("bad.db");
        let out = run_expect(&mut g.index_cmd(&db, &[&format!("--shard={bad}")]), 2);
        assert!(stderr(&out).contains("is not a shard: write I/N"), "{bad}: {}", stderr(&out));
        assert!(!db.exists(), "{bad}: a database was created");
    }

    // --files-from a file: exactly the listed images (blank lines, `./`, CRLF and an absolute
    // path inside the folder are fine).
    let listed = ["class00/000.jpg", "class01/003.jpg", "loose.jpg", "class03/005.jpg"];
    let list = g.dir.join("list.txt");
    let abs = g.gallery.join(listed[3]);
    let text = format!("{}\n\n./{}\r\n{}\n{}\n", listed[0], listed[1], listed[2], abs.display());
    std::fs::write(&list, text).unwrap();
    let db = g.db("listed.db");
    let r = g.index(&db, &["--files-from", list.to_str().unwrap(), "--dim", "0"]);
    assert_eq!((n(&r["added"]), n(&r["embedded"])), (4, 4), "{r:#}");
    assert_eq!(paths_of(&db), listed.iter().map(|s| s.to_string()).collect());
    // ... and from stdin: a shorter list leaves exactly its images (the others are removed).
    let mut c = g.index_cmd(&db, &["--files-from", "-", "--dim", "0"]);
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"loose.jpg\nclass00/000.jpg\n")
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json(&out);
    assert_eq!((n(&r["removed"]), n(&r["embedded"]), n(&r["unchanged"])), (2, 0, 2), "{r:#}");
    assert_eq!(paths_of(&db), ["class00/000.jpg", "loose.jpg"].map(String::from).into());

    // A listed path outside the folder is an error naming it, and nothing is written.
    let outside = g.dir.join("outside.jpg");
    write_picture(&outside, 64, 48, 1);
    for bad in ["../outside.jpg", outside.to_str().unwrap(), "class00/../../outside.jpg"] {
        std::fs::write(&list, format!("class00/000.jpg\n{bad}\n")).unwrap();
        let db = g.db("bad-list.db");
        let out = run_expect(&mut g.index_cmd(&db, &["--files-from", list.to_str().unwrap()]), 2);
        let err = stderr(&out);
        assert!(err.contains("line 2") && err.contains("not inside"), "{bad}: {err}");
        assert!(!db.exists(), "{bad}: a database was created");
    }
    // A missing list file is said plainly.
    let out = run_expect(&mut g.index_cmd(&g.db("x.db"), &["--files-from", "/nonexistent/l"]), 2);
    assert!(stderr(&out).contains("cannot read the file list"), "{}", stderr(&out));
}

#[test]
fn merged_shards_equal_a_single_machine_index_and_remerges_write_only_changes() {
    let g = Gallery::new(4, 8); // 33 images
    let single = g.db("single.db");
    g.index(&single, &[]);
    let shards = g.shards(3);
    let merged = g.db("merged.db");
    let r = g.merge(&shards, &merged);
    assert_eq!((n(&r["images"]), n(&r["added"]), n(&r["indexed"])), (33, 33, 33), "{r:#}");
    assert!(r["warnings"].as_array().unwrap().is_empty(), "{r:#}");
    assert_eq!(r["pca"]["out_dim"], 16);
    assert_same_collection(&g, &single, &merged);

    // Merged again with nothing changed: nothing is written, the index is kept.
    let again = g.merge(&shards, &merged);
    assert_eq!(
        (n(&again["added"]), n(&again["changed"]), n(&again["removed"]), n(&again["unchanged"])),
        (0, 0, 0, 33),
        "{again:#}"
    );
    assert_eq!(again["index_rebuilt"], false);
    assert!(again["index_update"].is_null(), "{again:#}");

    // The folder changes (one added, one changed, one removed); the shards are indexed again and
    // the merge writes only the three changes.
    write_picture(&g.gallery.join("class02/new.jpg"), 64, 48, 99_999);
    write_picture(&g.gallery.join("class01/004.jpg"), 64, 48, 77_777);
    std::fs::remove_file(g.gallery.join("class03/007.jpg")).unwrap();
    let embedded: u64 = (0..3)
        .map(|i| {
            let r = g.index(&shards[i], &["--shard", &format!("{i}/3"), "--descriptors-only"]);
            n(&r["embedded"])
        })
        .sum();
    assert_eq!(embedded, 2, "only the new and the changed image are embedded");
    let r = g.merge(&shards, &merged);
    assert_eq!(
        (n(&r["added"]), n(&r["changed"]), n(&r["removed"]), n(&r["unchanged"])),
        (1, 1, 1, 31),
        "{r:#}"
    );
    assert!(r["index_update"].is_object(), "a small change updates the index in place: {r:#}");
    g.index(&single, &[]);
    assert_same_collection(&g, &single, &merged);

    // A merge killed after the first shard's rows are written is finished by the next merge.
    // (Compared with a single index whose PCA is fitted on today's folder, as the new merge's is;
    // the two above kept the PCA of the first run.)
    run_expect(irtdb().args(["reindex", "--json", "--dim", "16", "--db"]).arg(&single), 0);
    let crashed = g.db("crashed.db");
    let out = g
        .merge_cmd(&shards, &crashed)
        .env("IRTDB_FAILPOINT", "merge-abort-after-shard:1")
        .output()
        .unwrap();
    assert!(out.status.code().is_none(), "expected a crash, got {:?}", out.status);
    let first = paths_of(&shards[0]).len() as u64;
    assert_eq!(paths_of(&crashed).len() as u64, first, "the first shard's rows were committed");
    let info = json(&run_expect(irtdb().args(["info", "--json", "--db"]).arg(&crashed), 0));
    assert!(info["index"].is_null(), "no index before the merge completed: {info:#}");
    let r = g.merge(&shards, &crashed);
    assert_eq!((n(&r["added"]), n(&r["unchanged"])), (33 - first, first), "{r:#}");
    assert_same_collection(&g, &single, &crashed);
    Store::open_existing(&crashed).unwrap().integrity_check().unwrap();

    // Rows only (for a vector store, when one machine's index is not the goal): no PCA, no
    // HNSW; a later merge without the flag builds them.
    let rows_only = g.db("rows-only.db");
    let r = json(&run_expect(g.merge_cmd(&shards, &rows_only).arg("--descriptors-only"), 0));
    assert_eq!((n(&r["added"]), r["index_skipped"].as_bool()), (33, Some(true)), "{r:#}");
    let info = json(&run_expect(irtdb().args(["info", "--json", "--db"]).arg(&rows_only), 0));
    assert!(info["index"].is_null(), "{info:#}");
    let r = g.merge(&shards, &rows_only);
    assert_eq!((n(&r["unchanged"]), n(&r["indexed"])), (33, 33), "{r:#}");
    assert_same_collection(&g, &single, &rows_only);

    // An incomplete set of shards merges with a warning naming what is missing.
    let partial = g.db("partial.db");
    let r = g.merge(&shards[..2], &partial);
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("2/3") && warnings.contains("not among the inputs"), "{r:#}");
}

#[test]
fn shards_of_different_models_are_refused_naming_the_difference() {
    let g = Gallery::new(3, 4);
    let a = g.db("a.db");
    g.index(&a, &["--shard", "0/2", "--descriptors-only"]);
    // Other weights (a distilled twin), then the same weights with another pooling.
    let other_dir = g.dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let (other, _) = write_micro_vit(&other_dir, true);
    let b = g.db("b.db");
    let mut c = irtdb();
    c.arg("index").arg(&g.gallery).arg("--db").arg(&b).arg("--model").arg(&other);
    run_expect(c.args(["--shard", "1/2", "--descriptors-only", "--json"]), 0);
    let pooled = g.db("pooled.db");
    g.index(&pooled, &["--shard", "1/2", "--descriptors-only", "--pooling", "mean"]);

    let out_db = g.db("out.db");
    let out = run_expect(&mut g.merge_cmd(&[a.clone(), b.clone()], &out_db), 2);
    let err = stderr(&out);
    assert!(err.contains("different models") && err.contains("weights"), "{err}");
    assert!(err.contains("micro.safetensors") && err.contains("micro_distilled"), "{err}");
    assert!(!out_db.exists(), "a refused merge writes nothing");
    let out = run_expect(&mut g.merge_cmd(&[a.clone(), pooled.clone()], &out_db), 2);
    assert!(stderr(&out).contains("pooling cls vs mean"), "{}", stderr(&out));
    assert!(!out_db.exists(), "a refused merge writes nothing");

    // An existing merged collection is left as it was when a shard of another model comes.
    g.merge(std::slice::from_ref(&a), &out_db);
    let before = snapshot(&out_db);
    let out = run_expect(&mut g.merge_cmd(std::slice::from_ref(&b), &out_db), 2);
    assert!(stderr(&out).contains("another model than the shards"), "{}", stderr(&out));
    let after = snapshot(&out_db);
    assert_eq!(before.rows, after.rows);
    assert_eq!(before.descriptors, after.descriptors);
    // A shard cannot be its own output, nor a merged collection a shard of another merge.
    let out = run_expect(&mut g.merge_cmd(std::slice::from_ref(&a), &a), 2);
    assert!(stderr(&out).contains("both a shard and the output"), "{}", stderr(&out));
}

/// Runs `script` with the test Python (which must import pyarrow) and parses its stdout as JSON.
fn python_json(python: &Path, script: &str, args: &[&Path]) -> serde_json::Value {
    let out = Command::new(python).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "python failed:\n{}", stderr(&out));
    json(&out)
}

const READ_PARQUET: &str = r#"
import json, sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
meta = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items()}
print(json.dumps({
    "columns": [(f.name, str(f.type)) for f in t.schema],
    "row_groups": pq.ParquetFile(sys.argv[1]).num_row_groups,
    "metadata": meta,
    "rows": t.to_pylist(),
}))
"#;

#[test]
fn parquet_export_reads_back_with_pyarrow_as_the_database_holds_it() {
    let Some(python) = test_python_with("pyarrow") else { return };
    let g = Gallery::new(3, 8); // 25 images
    let db = g.db("c.db");
    g.index(&db, &[]);
    let file = g.dir.join("c.parquet");
    // Row groups of 10: the 25 rows come from three pages of the database.
    let r = json(&run_expect(
        irtdb()
            .args(["export", "--json", "--row-group", "10", "--db"])
            .arg(&db)
            .arg("--parquet")
            .arg(&file),
        0,
    ));
    assert_eq!((n(&r["rows"]), n(&r["dim"]), r["vectors"].as_str()), (25, 16, Some("indexed")));
    let t = python_json(&python, READ_PARQUET, &[&file]);
    let columns: Vec<(String, String)> = serde_json::from_value(t["columns"].clone()).unwrap();
    assert_eq!(t["row_groups"], 3);
    let names: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["id", "path", "label", "descriptor"], "{columns:?}");
    assert!(columns[3].1.starts_with("list<") && columns[3].1.contains("float"), "{columns:?}");

    // Rows: every embedded image once, with the database's id, path and label.
    let store = Store::open_existing(&db).unwrap();
    let model = store.models().unwrap().remove(0);
    let raw = store.descriptors(model.id).unwrap();
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), raw.len());
    let mut exported: BTreeMap<i64, Vec<f32>> = BTreeMap::new();
    for row in rows {
        let id = row["id"].as_i64().unwrap();
        let img = store.image_by_id(id).unwrap().unwrap();
        assert_eq!(row["path"].as_str(), Some(img.path.as_str()));
        assert_eq!(row["label"].as_str(), img.label.as_deref(), "{row}");
        let v: Vec<f32> = serde_json::from_value(row["descriptor"].clone()).unwrap();
        exported.insert(id, v);
    }
    assert_eq!(exported.len(), raw.len(), "every image once");
    assert!(rows.iter().any(|r| r["path"] == "loose.jpg" && r["label"].is_null()));

    // Metadata: the model identity and the PCA; the exported vectors are the stored descriptors
    // through that PCA (computed here from the metadata alone), L2-normalised.
    let meta = &t["metadata"];
    let model_meta: serde_json::Value =
        serde_json::from_str(meta["irtdb.model"].as_str().unwrap()).unwrap();
    assert_eq!(model_meta["weights_hash"].as_str(), Some(model.weights_hash.as_str()));
    assert_eq!(model_meta["dim"], 32);
    assert_eq!(
        (meta["irtdb.vectors"].as_str(), meta["irtdb.dim"].as_str()),
        (Some("indexed"), Some("16"))
    );
    let pca: serde_json::Value = serde_json::from_str(meta["irtdb.pca"].as_str().unwrap()).unwrap();
    let (in_dim, out_dim) = (n(&pca["in_dim"]) as usize, n(&pca["out_dim"]) as usize);
    assert_eq!((in_dim, out_dim), (32, 16));
    let mean: Vec<f32> = serde_json::from_value(pca["mean"].clone()).unwrap();
    let comps: Vec<f32> = serde_json::from_value(pca["components"].clone()).unwrap();
    assert_eq!(comps.len(), in_dim * out_dim);
    for (id, x) in raw.iter() {
        let mut y: Vec<f32> = comps
            .chunks(in_dim)
            .map(|c| c.iter().zip(x.iter().zip(&mean)).map(|(c, (x, m))| c * (x - m)).sum())
            .collect();
        let norm = y.iter().map(|v| v * v).sum::<f32>().sqrt();
        y.iter_mut().for_each(|v| *v /= norm);
        let e = &exported[&id];
        let worst = y.iter().zip(e).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "image {id}: exported vector differs by {worst}");
    }
    // ... and they score as the index does: `query --exact` scores are their inner products.
    let q = json(&run_expect(
        irtdb().args(["query", "--json", "--exact", "--k", "3", "--db"]).arg(&db).arg("id:3"),
        0,
    ));
    for h in q["results"][0]["hits"].as_array().unwrap() {
        let dot: f32 = exported[&3]
            .iter()
            .zip(&exported[&h["id"].as_i64().unwrap()])
            .map(|(a, b)| a * b)
            .sum();
        assert!((dot as f64 - h["score"].as_f64().unwrap()).abs() < 1e-4, "{h}: {dot}");
    }

    // --raw: the model's descriptors, bit for bit; no PCA in the metadata.
    let raw_file = g.dir.join("raw.parquet");
    run_expect(
        irtdb().args(["export", "--raw", "--db"]).arg(&db).arg("--parquet").arg(&raw_file),
        0,
    );
    let t = python_json(&python, READ_PARQUET, &[&raw_file]);
    assert_eq!(t["metadata"]["irtdb.vectors"], "raw");
    assert!(t["metadata"]["irtdb.pca"].is_null());
    for row in t["rows"].as_array().unwrap() {
        let v: Vec<f32> = serde_json::from_value(row["descriptor"].clone()).unwrap();
        let stored = store.descriptor(row["id"].as_i64().unwrap(), model.id).unwrap().unwrap();
        assert_eq!(v, stored);
    }

    // A collection without an index has no indexed vectors: said plainly, nothing written.
    let shard = g.db("shard.db");
    g.index(&shard, &["--shard", "0/2", "--descriptors-only"]);
    let none = g.dir.join("none.parquet");
    let out =
        run_expect(irtdb().args(["export", "--db"]).arg(&shard).arg("--parquet").arg(&none), 2);
    assert!(stderr(&out).contains("--raw"), "{}", stderr(&out));
    assert!(!none.exists());
}

/// Java for Spark: `JAVA_HOME`, else the `java` on the PATH (links followed). Missing: the test
/// fails under the README's test command (IRTDB_TEST_STRICT), else it is skipped with a note.
fn java_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("JAVA_HOME").map(PathBuf::from) {
        if h.join("bin/java").is_file() {
            return Some(h);
        }
    }
    let java = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|d| d.join("java")).find(|p| p.is_file())
    });
    match java.and_then(|j| j.canonicalize().ok()) {
        Some(j) => Some(j.parent()?.parent()?.to_path_buf()),
        None => {
            let why = "no Java for Spark (JAVA_HOME or java on the PATH): install \
                       openjdk-17-jre-headless (scripts/setup-test-env.sh does)";
            assert!(std::env::var_os("IRTDB_TEST_STRICT").is_none(), "{why}");
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// `spark-submit --master local[2,2] examples/spark/irtdb_spark.py …` from the test venv's
/// pyspark, with the environment the tests give irtdb (its tasks run irtdb).
fn spark_job(python: &Path, java: &Path, g: &Gallery, irtdb_exe: &Path, out: &Path) -> Output {
    let bin = python.parent().unwrap();
    let mut c = irtdb_at(&bin.join("spark-submit"));
    let path = std::env::join_paths(
        std::iter::once(bin.to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    c.env("JAVA_HOME", java)
        .env("PATH", path)
        .env("PYSPARK_PYTHON", python)
        .env("PYSPARK_DRIVER_PYTHON", python)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env_remove("SPARK_HOME")
        .env_remove("SPARK_CONF_DIR")
        .env("SPARK_LOCAL_DIRS", g.dir.join("spark-local"))
        // Two cores, and a failed task is tried at most twice.
        .args(["--master", "local[2,2]", "--conf", "spark.ui.enabled=false"])
        .arg(root().join("examples/spark/irtdb_spark.py"))
        .arg("--images")
        .arg(&g.gallery)
        .arg("--model")
        .arg(&g.model)
        .args(["--shards", "3", "--dim", "16", "--index-arg=--batch=2", "--out"])
        .arg(out)
        .arg("--irtdb")
        .arg(irtdb_exe);
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "the Spark job failed: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    o
}

#[test]
fn the_spark_job_retries_a_crashed_task_equals_a_single_index_and_reruns_idempotently() {
    let python = test_python_with("pyspark");
    let java = java_home();
    let (Some(python), Some(java)) = (python, java) else { return };
    let g = Gallery::new(4, 6); // 25 images
    let single = g.db("single.db");
    g.index(&single, &[]);

    // The irtdb the executors run: the binary under test, except that the first attempt at
    // shard 1/3 crashes (abort) right after committing its first batch of 2 images.
    let marker = g.dir.join("crashed-once");
    let wrapper = g.dir.join("irtdb-crash-once.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = index ] && printf '%s\\n' \"$@\" | grep -qx 1/3 \
             && [ ! -e '{m}' ]; then\n  : > '{m}'\n  IRTDB_FAILPOINT=abort-after-batch:1 \
             exec '{exe}' \"$@\"\nfi\nexec '{exe}' \"$@\"\n",
            m = marker.display(),
            exe = env!("CARGO_BIN_EXE_irtdb")
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();

    let out = g.dir.join("spark.db");
    let first = spark_job(&python, &java, &g, &wrapper, &out);
    assert!(marker.exists(), "the injected crash did not happen");
    let s: serde_json::Value = json_last_line(&first);
    let shards = s["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    for sh in shards {
        let (i, attempt) = (n(&sh["shard"]), n(&sh["attempt"]));
        // Spark retried shard 1; the retry resumed after the crashed attempt's committed batch.
        assert_eq!(attempt, u64::from(i == 1), "{sh}");
        if i == 1 {
            assert_eq!(n(&sh["report"]["unchanged"]), 2, "the retry resumed: {sh}");
        }
    }
    let embedded: u64 = shards.iter().map(|sh| n(&sh["report"]["embedded"])).sum();
    assert_eq!(embedded + 2, 25, "{s:#}");
    assert_eq!((n(&s["merge"]["images"]), n(&s["merge"]["added"])), (25, 25), "{s:#}");
    assert_same_collection(&g, &single, &out);

    // Run again: nothing is embedded, the merge writes nothing, the result is the same.
    let second = spark_job(&python, &java, &g, &wrapper, &out);
    let s = json_last_line(&second);
    for sh in s["shards"].as_array().unwrap() {
        assert_eq!((n(&sh["attempt"]), n(&sh["report"]["embedded"])), (0, 0), "{sh}");
    }
    let m = &s["merge"];
    assert_eq!(
        (n(&m["added"]), n(&m["changed"]), n(&m["removed"]), n(&m["unchanged"])),
        (0, 0, 0, 25),
        "{m:#}"
    );
    assert_eq!(m["index_rebuilt"], false);
    assert!(m["index_update"].is_null(), "{m:#}");
    assert_same_collection(&g, &single, &out);
}

/// The last line of stdout as JSON (the Spark job's summary).
fn json_last_line(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let line =
        text.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
            panic!("no JSON summary on stdout:\n{text}\n--- stderr\n{}", stderr(o))
        });
    serde_json::from_str(line).unwrap()
}
