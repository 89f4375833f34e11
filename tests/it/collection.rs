//! `irtdb index` / `query` / `info` / `reindex` on generated galleries through the real ort
//! plugin and a tiny random ViT.

use crate::util::*;

/// The shared fixture, with this module's commands.
type Collection = Fixture;

impl Fixture {
    fn index(&self, extra: &[&str]) -> serde_json::Value {
        let mut c = self.cmd(&["index", "--json"]);
        if !extra.contains(&"--dim") {
            c.args(["--dim", "16"]);
        }
        c.arg(&self.gallery).arg("--model").arg(&self.model).args(extra);
        json(&run_expect(&mut c, 0))
    }

    fn query(&self, queries: &[String], extra: &[&str]) -> serde_json::Value {
        let mut c = self.cmd(&["query", "--json"]);
        c.args(queries).args(extra);
        json(&run_expect(&mut c, 0))
    }

    fn ids(&self) -> Vec<i64> {
        let store = irtdb_store::Store::open_existing(&self.db).unwrap();
        store
            .images()
            .unwrap()
            .iter()
            .filter(|r| r.status == irtdb_store::Status::Ok)
            .map(|r| r.id)
            .collect()
    }
}

fn hits(result: &serde_json::Value) -> Vec<(i64, f32)> {
    result["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].as_i64().unwrap(), h["score"].as_f64().unwrap() as f32))
        .collect()
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn every_image_finds_itself_and_hnsw_agrees_with_exact_search() {
    let c = Collection::new(15, 20); // 300 images
    let r = c.index(&[]);
    assert_eq!(n(&r["added"]), 300);
    assert_eq!(n(&r["indexed"]), 300);
    assert_eq!(r["pca"]["out_dim"], 16);
    assert_eq!(r["random_weights"], true);

    let queries: Vec<String> = c.ids().iter().map(|id| format!("id:{id}")).collect();
    let approx = c.query(&queries, &["--k", "10"]);
    let exact = c.query(&queries, &["--k", "10", "--exact"]);
    let (mut found, mut total) = (0usize, 0usize);
    for (a, e) in
        approx["results"].as_array().unwrap().iter().zip(exact["results"].as_array().unwrap())
    {
        let id = a["collection_id"].as_i64().unwrap();
        let (ah, eh) = (hits(a), hits(e));
        // Itself first, score ≈ 1 (a tie with an identical vector would also have score ≈ 1).
        assert!(ah[0].1 > 0.9999, "query {id}: top score {}", ah[0].1);
        assert!(ah.iter().any(|h| h.0 == id && h.1 > 0.9999), "query {id} not found: {ah:?}");
        assert!((eh[0].1 - 1.0).abs() < 1e-4 && eh.iter().any(|h| h.0 == id));
        // Recall@10 of HNSW against exact.
        let truth: std::collections::HashSet<i64> = eh.iter().map(|h| h.0).collect();
        found += ah.iter().filter(|h| truth.contains(&h.0)).count();
        total += truth.len();
    }
    let recall = found as f64 / total as f64;
    assert!(recall >= 0.95, "HNSW recall@10 {recall:.3} < 0.95");
}

#[test]
fn reruns_are_incremental_and_reflect_added_changed_and_deleted_files() {
    let c = Collection::new(4, 10);
    assert_eq!(n(&c.index(&[])["added"]), 40);
    let again = c.index(&[]);
    assert_eq!((n(&again["embedded"]), n(&again["unchanged"])), (0, 40), "{again:#}");

    // Touch without changing content: not re-embedded.
    let touched = c.gallery.join("class00/000.jpg");
    let bytes = std::fs::read(&touched).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&touched, &bytes).unwrap();
    // Add one, change one, delete one.
    write_picture(&c.gallery.join("class03/new.jpg"), 64, 48, 99_999);
    write_picture(&c.gallery.join("class01/005.jpg"), 64, 48, 77_777);
    std::fs::remove_file(c.gallery.join("class02/009.jpg")).unwrap();
    let r = c.index(&[]);
    assert_eq!(
        (n(&r["added"]), n(&r["changed"]), n(&r["removed"]), n(&r["embedded"]), n(&r["unchanged"])),
        (1, 1, 1, 2, 38),
        "{r:#}"
    );
    let info = c.info();
    assert_eq!((n(&info["images"]), n(&info["embedded"]), n(&info["descriptors"])), (40, 40, 40));
    assert_eq!(n(&info["index"]["count"]), 40);
    // The new image is found, the deleted one is gone.
    let q = c.query(&["class03/new.jpg".to_string()], &["--k", "40", "--exact"]);
    let paths: Vec<&str> = q["results"][0]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths[0], "class03/new.jpg");
    assert!(!paths.contains(&"class02/009.jpg"));
}

#[test]
fn a_run_killed_mid_way_resumes_without_duplicates_or_orphans() {
    let c = Collection::new(5, 10); // 50 images, batches of 8
    let out = c
        .cmd(&["index", "--dim", "16", "--batch", "8"])
        .arg(&c.gallery)
        .arg("--model")
        .arg(&c.model)
        .env("IRTDB_FAILPOINT", "abort-after-batch:3")
        .output()
        .unwrap();
    assert!(out.status.code().is_none(), "expected a crash, got {:?}", out.status);
    let info = c.info();
    assert_eq!(n(&info["embedded"]), 24, "three batches of 8 were committed: {info:#}");
    assert!(info["index"].is_null(), "no index generation before the run completed");

    let r = c.index(&["--batch", "8"]);
    assert_eq!((n(&r["added"]), n(&r["unchanged"]), n(&r["embedded"])), (26, 24, 26), "{r:#}");
    let info = c.info();
    assert_eq!((n(&info["images"]), n(&info["embedded"]), n(&info["descriptors"])), (50, 50, 50));
    assert_eq!(n(&info["index"]["count"]), 50);
    irtdb_store::Store::open_existing(&c.db).unwrap().integrity_check().unwrap();
}

#[test]
fn corrupt_files_are_recorded_and_skipped() {
    let c = Collection::new(2, 5);
    std::fs::write(c.gallery.join("class00/broken.jpg"), b"\xff\xd8\xff\xe0 definitely not a jpeg")
        .unwrap();
    std::fs::write(c.gallery.join("class01/empty.png"), b"").unwrap();
    let r = c.index(&[]);
    assert_eq!((n(&r["embedded"]), n(&r["failed"])), (10, 2), "{r:#}");
    let info = c.info();
    let failures = info_failures(&info);
    assert_eq!(failures.len(), 2, "{info:#}");
    assert!(
        failures.iter().any(|(p, e)| p == "class00/broken.jpg" && e.contains("broken.jpg")),
        "{failures:?}"
    );
    assert!(failures.iter().any(|(p, _)| p == "class01/empty.png"));
    // A rerun does not retry unchanged failures, and the text summary points at `irtdb info`.
    let again = c.index(&[]);
    assert_eq!((n(&again["embedded"]), n(&again["failed"])), (0, 2));
}

#[test]
fn stored_descriptors_equal_the_embed_command_bit_for_bit() {
    let c = Collection::new(2, 4);
    c.index(&["--dim", "0"]);
    let img = c.gallery.join("class01/002.jpg");
    let out = run_expect(irtdb().args(["embed", "--json", "--model"]).arg(&c.model).arg(&img), 0);
    let fresh: Vec<f32> =
        serde_json::from_value(json(&out)["images"][0]["descriptor"].clone()).unwrap();
    let store = irtdb_store::Store::open_existing(&c.db).unwrap();
    let row = store.image_by_path("class01/002.jpg").unwrap().unwrap();
    let model_id = store.models().unwrap()[0].id;
    let stored = store.descriptor(row.id, model_id).unwrap().unwrap();
    assert_eq!(
        stored.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        fresh.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // And a file outside the collection is embedded on the fly and finds its twin.
    let copy = c.dir.join("outside.jpg");
    std::fs::copy(&img, &copy).unwrap();
    let q = c.query(&[copy.display().to_string()], &["--k", "1"]);
    assert!(q["results"][0]["file"].is_string());
    assert_eq!(q["results"][0]["hits"][0]["path"], "class01/002.jpg");
    assert!(q["results"][0]["hits"][0]["score"].as_f64().unwrap() > 0.9999);
}

#[test]
fn lost_index_files_are_rebuilt_from_the_database() {
    let c = Collection::new(3, 8);
    c.index(&[]);
    let files: Vec<String> = serde_json::from_value(c.info()["index"]["files"].clone()).unwrap();
    assert!(!files.is_empty());
    for f in &files {
        std::fs::remove_file(c.dir.join(f)).unwrap();
    }
    let q = c.query(&["class00/000.jpg".into()], &["--k", "3"]);
    assert_eq!(q["results"][0]["hits"][0]["path"], "class00/000.jpg");
    assert!(q["notes"][0].as_str().unwrap().contains("rebuilt"), "{q:#}");
    assert_eq!(c.info()["index"]["files_present"], true);
    // Damaged files too.
    let files: Vec<String> = serde_json::from_value(c.info()["index"]["files"].clone()).unwrap();
    let graph = files.iter().find(|f| f.ends_with(".irtdb-hnsw")).unwrap();
    std::fs::write(c.dir.join(graph), b"garbage").unwrap();
    let q = c.query(&["class00/000.jpg".into()], &["--k", "3"]);
    assert_eq!(q["results"][0]["hits"][0]["path"], "class00/000.jpg");
    // And `reindex` rebuilds on demand.
    let r = json(&run_expect(&mut c.cmd(&["reindex", "--json", "--dim", "8"]), 0));
    assert_eq!((r["pca"]["out_dim"].as_u64(), n(&r["indexed"])), (Some(8), 24));
    // An index re-run with nothing to embed rebuilds missing files (and only then loads them).
    let same = c.index(&["--dim", "8"]);
    assert_eq!((same["index_rebuilt"].as_bool(), n(&same["indexed"])), (Some(false), 24));
    let files: Vec<String> = serde_json::from_value(c.info()["index"]["files"].clone()).unwrap();
    std::fs::remove_file(c.dir.join(&files[0])).unwrap();
    let again = c.index(&["--dim", "8"]);
    assert_eq!((again["index_rebuilt"].as_bool(), n(&again["indexed"])), (Some(true), 24));
    assert_eq!(c.info()["index"]["files_present"], true);
}

#[test]
fn model_mismatches_and_changed_weights_are_refused() {
    let c = Collection::new(2, 4);
    c.index(&[]);
    // Another model for the same database: refused, nothing mixed.
    let other = c.dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (other_model, _) = write_micro_vit(&other, true);
    let out = run_expect(c.cmd(&["index"]).arg(&c.gallery).arg("--model").arg(&other_model), 2);
    assert!(stderr(&out).contains("never mixed"), "{}", stderr(&out));
    let out = run_expect(
        c.cmd(&["index", "--pooling", "mean"]).arg(&c.gallery).arg("--model").arg(&c.model),
        2,
    );
    assert!(stderr(&out).contains("pooling mean"), "{}", stderr(&out));

    // The weights file changes behind the collection's back: queries that need the model refuse.
    let img = c.dir.join("q.jpg");
    write_picture(&img, 50, 50, 4242);
    std::fs::copy(&other_model, &c.model).unwrap();
    let out = run_expect(c.cmd(&["query"]).arg(&img), 2);
    assert!(stderr(&out).contains("changed since the collection was indexed"), "{}", stderr(&out));
    // Queries by collection image need no model and still work.
    c.query(&["id:1".into()], &[]);
}

#[test]
fn too_few_images_for_pca_is_said_plainly() {
    let c = Collection::new(1, 6);
    let r = c.index(&["--dim", "16"]);
    assert!(r["pca"].is_null());
    assert!(
        r["pca_skipped"]
            .as_str()
            .unwrap()
            .contains("needs more than 16 images, the collection has 6"),
        "{r:#}"
    );
    assert_eq!(n(&r["index_dim"]), 32);
    let q = c.query(&["class00/001.jpg".into()], &["--k", "2"]);
    assert_eq!(q["results"][0]["hits"][0]["path"], "class00/001.jpg");
}

#[test]
fn html_page_is_self_contained() {
    let c = Collection::new(2, 4);
    c.index(&[]);
    let page = c.dir.join("r.html");
    run_expect(c.cmd(&["query", "class00/000.jpg", "--k", "3", "--html"]).arg(&page), 0);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("data:image/jpeg;base64,").count(), 4, "query + 3 results");
    assert!(!html.contains("src=\"/") && !html.contains("src=\"http"));
    assert!(html.contains("random-weight model"));
}

#[test]
fn queries_without_a_collection_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out =
        run_expect(irtdb().args(["query", "x.jpg", "--db"]).arg(tmp.path().join("none.db")), 2);
    assert!(stderr(&out).contains("irtdb index"), "{}", stderr(&out));
    let c = Collection::new(1, 2);
    let out = run_expect(c.cmd(&["index"]).arg(&c.gallery), 2);
    // No --model: the default model, which the tests' dead hub endpoint cannot deliver.
    let err = stderr(&out);
    assert!(err.contains("default model hf-hub:timm/deit_small_patch16_224.fb_in1k"), "{err}");
    assert!(err.contains("cannot reach the hub"), "{err}");
}

/// Path → (image id, descriptor) from the database itself.
fn stored(c: &Collection) -> std::collections::HashMap<String, (i64, Vec<f32>)> {
    let store = irtdb_store::Store::open_existing(&c.db).unwrap();
    let model = store.models().unwrap()[0].id;
    store
        .images()
        .unwrap()
        .into_iter()
        .filter_map(|r| Some((r.path, (r.id, store.descriptor(r.id, model).unwrap()?))))
        .collect()
}

#[test]
fn renamed_folders_and_duplicate_files_keep_their_descriptors() {
    let c = Collection::new(3, 6);
    c.index(&[]);
    let before = stored(&c);
    // A folder renamed, a file copied into another folder, two new files with the same bytes.
    std::fs::rename(c.gallery.join("class01"), c.gallery.join("renamed")).unwrap();
    std::fs::copy(c.gallery.join("class00/000.jpg"), c.gallery.join("class02/dup.jpg")).unwrap();
    std::fs::create_dir_all(c.gallery.join("twins")).unwrap();
    write_picture(&c.gallery.join("twins/a.jpg"), 64, 48, 5555);
    std::fs::copy(c.gallery.join("twins/a.jpg"), c.gallery.join("twins/b.jpg")).unwrap();
    let r = c.index(&[]);
    let counts =
        ["added", "removed", "moved", "same_content", "embedded", "unchanged"].map(|k| n(&r[k]));
    assert_eq!(counts, [1, 0, 6, 2, 1, 12], "{r:#}");

    let after = stored(&c);
    assert_eq!(after.len(), 21);
    for i in 0..6 {
        let (old, new) = (format!("class01/{i:03}.jpg"), format!("renamed/{i:03}.jpg"));
        assert_eq!(after[&new], before[&old], "{new}: same row id, same descriptor");
    }
    assert_eq!(after["class02/dup.jpg"].1, before["class00/000.jpg"].1);
    assert_ne!(after["class02/dup.jpg"].0, after["class00/000.jpg"].0, "its own row");
    assert_eq!(after["twins/b.jpg"].1, after["twins/a.jpg"].1);
    // Labels follow the folder; the index serves the new paths.
    let store = irtdb_store::Store::open_existing(&c.db).unwrap();
    assert_eq!(
        store.image_by_path("renamed/000.jpg").unwrap().unwrap().label.as_deref(),
        Some("renamed")
    );
    let q = c.query(&["renamed/003.jpg".to_string()], &["--k", "1"]);
    assert_eq!(q["results"][0]["hits"][0]["path"], "renamed/003.jpg", "{q}");
    assert_eq!(n(&c.info()["index"]["count"]), 21);
    let again = c.index(&[]);
    assert_eq!((n(&again["embedded"]), n(&again["unchanged"])), (0, 21), "{again:#}");

    // A crash after the moves: the rerun finishes the job, nothing lost or doubled.
    std::fs::rename(c.gallery.join("renamed"), c.gallery.join("again")).unwrap();
    for i in 0..10 {
        write_picture(&c.gallery.join(format!("class00/new{i}.jpg")), 64, 48, 9000 + i);
    }
    let crashed = c
        .cmd(&["index", "--dim", "16", "--batch", "4"])
        .arg(&c.gallery)
        .arg("--model")
        .arg(&c.model)
        .env("IRTDB_FAILPOINT", "abort-after-batch:1")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let r = c.index(&["--batch", "4"]);
    assert_eq!((n(&r["removed"]), n(&r["embedded"])), (0, 6), "{r:#}");
    let end = stored(&c);
    assert_eq!(end.len(), 31);
    for i in 0..6 {
        assert_eq!(end[&format!("again/{i:03}.jpg")], before[&format!("class01/{i:03}.jpg")]);
    }
}

/// Identical broken files: one is tried, the other gets the same failure without a decode.
#[test]
fn identical_broken_files_share_their_failure() {
    let c = Collection::new(2, 3);
    c.index(&[]);
    std::fs::write(c.gallery.join("class00/bad1.jpg"), b"not a jpeg at all").unwrap();
    std::fs::write(c.gallery.join("class01/bad2.jpg"), b"not a jpeg at all").unwrap();
    let r = c.index(&[]);
    assert_eq!((n(&r["failed"]), n(&r["same_content"]), n(&r["embedded"])), (2, 1, 0), "{r:#}");
    let store = irtdb_store::Store::open_existing(&c.db).unwrap();
    let errors: Vec<_> = store.failures().unwrap().into_iter().map(|f| f.error).collect();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0], errors[1], "the same failure");
}

/// A small change to the collection updates the index in place (the current PCA kept, new
/// images inserted into the graph, removed ones tombstoned); once the changes since the PCA fit
/// pass a fifth of the collection, the PCA is refitted and the index rebuilt.
#[test]
fn small_changes_update_the_index_in_place() {
    let c = Collection::new(4, 20);
    let first = c.index(&[]);
    assert!(first["index_update"].is_null(), "{first:#}");
    let explained = first["pca"]["explained"].as_f64().unwrap();
    write_picture(&c.gallery.join("class00/new-a.jpg"), 64, 48, 90_001);
    write_picture(&c.gallery.join("class01/new-b.jpg"), 64, 48, 90_002);
    std::fs::remove_file(c.gallery.join("class02/005.jpg")).unwrap();
    let r = c.index(&[]);
    let u = &r["index_update"];
    assert_eq!((n(&u["added"]), n(&u["removed"]), n(&u["changed"])), (2, 1, 0), "{r:#}");
    assert_eq!(u["compacted"], false);
    assert_eq!(r["pca"]["explained"].as_f64(), Some(explained), "the PCA was refitted: {r:#}");
    assert_eq!(n(&r["indexed"]), 81);
    // Every image finds itself through the updated graph, the removed one is gone, and the
    // answers agree with exact search.
    let queries: Vec<String> = c.ids().iter().map(|id| format!("id:{id}")).collect();
    let approx = c.query(&queries, &["--k", "5"]);
    let exact = c.query(&queries, &["--k", "5", "--exact"]);
    for (a, e) in
        approx["results"].as_array().unwrap().iter().zip(exact["results"].as_array().unwrap())
    {
        assert_eq!(hits(a)[0].0, hits(e)[0].0, "{a:#}");
        assert!(a["hits"].as_array().unwrap().iter().all(|h| h["path"] != "class02/005.jpg"));
    }
    let new = c.query(&[c.gallery.join("class01/new-b.jpg").display().to_string()], &["--k", "1"]);
    assert_eq!(new["results"][0]["hits"][0]["path"], "class01/new-b.jpg");
    // Many more changes: past the refit fraction, a full refit and rebuild.
    for i in 0..16 {
        write_picture(&c.gallery.join(format!("class03/more-{i}.jpg")), 64, 48, 91_000 + i);
    }
    let big = c.index(&[]);
    assert!(big["index_update"].is_null(), "{big:#}");
    assert_ne!(big["pca"]["explained"].as_f64(), Some(explained));
    assert_eq!(n(&big["indexed"]), 97);
}
