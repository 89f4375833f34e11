//! Behaviour of the collection database through its public API, on real files in a temp dir.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use irtdb_store::{
    blob_to_f32s, Error, ImageUpdate, NewGeneration, NewModel, Outcome, PcaRecord, StatUpdate,
    Status, Store, SCHEMA_VERSION,
};
use serde_json::json;

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("irtdb.db")
}

fn model(dim: usize) -> NewModel {
    NewModel {
        plugin: "ort-tensorrt".into(),
        backbone: "vit_small_patch16_224".into(),
        weights_path: Some("/weights/vit_s.safetensors".into()),
        weights_hash: "abc123".into(),
        config: json!({"pooling": "cls", "preprocess": {"size": 224, "mean": [0.5, 0.5, 0.5]}}),
        dim,
        random_weights: false,
    }
}

fn embedded(path: &str, hash: &str, v: Vec<f32>) -> ImageUpdate {
    ImageUpdate {
        path: path.into(),
        size: 1000,
        mtime_ns: 1_700_000_000_000_000_000,
        hash: hash.into(),
        width: Some(640),
        height: Some(480),
        label: Some("cat".into()),
        outcome: Outcome::Embedded(v),
    }
}

fn failed(path: &str, hash: &str, error: &str) -> ImageUpdate {
    ImageUpdate {
        width: None,
        height: None,
        outcome: Outcome::Failed(error.into()),
        ..embedded(path, hash, vec![])
    }
}

fn scalar(store: &Store, sql: &str) -> i64 {
    store.connection().query_row(sql, [], |r| r.get(0)).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn orphans(store: &Store) -> i64 {
    scalar(store, "SELECT count(*) FROM descriptors WHERE image_id NOT IN (SELECT id FROM images)")
}

#[test]
fn open_creates_migrates_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let id = {
        let store = Store::open(&p).unwrap();
        assert_eq!(store.path(), p);
        assert_eq!(scalar(&store, "PRAGMA user_version"), SCHEMA_VERSION as i64);
        let mode: String =
            store.connection().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(scalar(&store, "PRAGMA foreign_keys"), 1);
        assert_eq!(scalar(&store, "PRAGMA busy_timeout"), 5000);
        assert_eq!(store.meta("created_by").unwrap().as_deref(), Some(irtdb_store::APP_VERSION));
        assert_eq!(store.meta("app_version").unwrap().as_deref(), Some(irtdb_store::APP_VERSION));
        store.set_collection_root(dir.path()).unwrap();
        store.upsert_model(&model(4)).unwrap()
    };
    for _ in 0..2 {
        let store = Store::open(&p).unwrap();
        assert_eq!(scalar(&store, "PRAGMA user_version"), SCHEMA_VERSION as i64);
        assert_eq!(store.models().unwrap().len(), 1);
        assert_eq!(store.model(id).unwrap().dim, 4);
        assert_eq!(store.collection_root().unwrap().as_deref(), Some(dir.path()));
        store.integrity_check().unwrap();
    }
    let store = Store::open_existing(&p).unwrap();
    assert_eq!(store.counts().unwrap().models, 1);
}

#[test]
fn open_existing_needs_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let err = Store::open_existing(&p).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "no collection database at {}: run `irtdb index DIR` first (or pass --db)",
            p.display()
        )
    );
    assert!(!p.exists(), "open_existing must not create the file");
}

#[test]
fn concurrent_first_opens_all_succeed() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let p = db(&dir);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (p, barrier) = (p.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Store::open(&p).map(|s| s.counts().unwrap())
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        let store = Store::open_existing(&p).unwrap();
        assert_eq!(scalar(&store, "PRAGMA user_version"), SCHEMA_VERSION as i64);
        store.integrity_check().unwrap();
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    drop(Store::open(&p).unwrap());
    let newer = SCHEMA_VERSION + 1;
    {
        let conn = rusqlite::Connection::open(&p).unwrap();
        conn.pragma_update(None, "user_version", newer).unwrap();
    }
    for err in [Store::open(&p).unwrap_err(), Store::open_existing(&p).unwrap_err()] {
        assert!(matches!(err, Error::TooNew { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "{} was written by a newer irtdb (schema {newer}, this build knows up to \
                 {SCHEMA_VERSION}): upgrade irtdb",
                p.display()
            )
        );
    }
}

#[test]
fn foreign_database_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("other.sqlite");
    {
        let conn = rusqlite::Connection::open(&p).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT)").unwrap();
    }
    let err = Store::open(&p).unwrap_err();
    assert!(matches!(err, Error::NotIrtdb { .. }), "{err:?}");
    assert!(err.to_string().contains("not an irtdb collection"), "{err}");
    let conn = rusqlite::Connection::open(&p).unwrap();
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 1, "no irtdb tables may be added to a foreign database");
}

#[test]
fn descriptors_round_trip_bit_exact_and_plain_le() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    let m = store.upsert_model(&model(6)).unwrap();
    let a = vec![-0.0, f32::from_bits(1), f32::from_bits(0x8000_0003), 1.0, f32::MAX, -1e-30];
    let b = vec![0.1, 0.2, 0.3, 0.4, 0.5, f32::MIN_POSITIVE];
    store
        .commit_batch(m, &[embedded("b.jpg", "h1", b.clone()), embedded("a.jpg", "h2", a.clone())])
        .unwrap();

    let d = store.descriptors(m).unwrap();
    assert_eq!(d.dim, 6);
    assert_eq!(d.len(), 2);
    let id_a = store.image_by_path("a.jpg").unwrap().unwrap().id;
    let id_b = store.image_by_path("b.jpg").unwrap().unwrap().id;
    assert!(id_b < id_a);
    assert_eq!(d.ids, [id_b, id_a], "ordered by image id");
    assert_eq!(bits(d.row(0)), bits(&b));
    assert_eq!(bits(d.row(1)), bits(&a));
    let pairs: Vec<_> = d.iter().map(|(id, v)| (id, bits(v))).collect();
    assert_eq!(pairs, [(id_b, bits(&b)), (id_a, bits(&a))]);
    assert_eq!(bits(&store.descriptor(id_a, m).unwrap().unwrap()), bits(&a));
    assert_eq!(store.descriptor(id_a + 100, m).unwrap(), None);

    // What any SQLite client sees: 4 bytes per value, little-endian IEEE-754.
    let blob: Vec<u8> = store
        .connection()
        .query_row("SELECT vector FROM descriptors WHERE image_id = ?1", [id_a], |r| r.get(0))
        .unwrap();
    assert_eq!(blob.len(), 24);
    let plain: Vec<u32> =
        blob.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(plain, bits(&a));
    assert_eq!(&blob[..4], &[0, 0, 0, 0x80], "-0.0 keeps its sign bit");
    assert_eq!(bits(&blob_to_f32s(&blob).unwrap()), bits(&a));

    let row = store.image_by_id(id_a).unwrap().unwrap();
    assert_eq!(row.path, "a.jpg");
    assert_eq!((row.width, row.height), (Some(640), Some(480)));
    assert_eq!(row.label.as_deref(), Some("cat"));
    assert_eq!(row.status, Status::Ok);
    assert_eq!(row.error, None);
    assert!(row.updated_at.ends_with('Z'), "{}", row.updated_at);
}

#[test]
fn commit_batch_upserts_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    let m = store.upsert_model(&model(2)).unwrap();
    store.commit_batch(m, &[embedded("x/a.jpg", "h1", vec![1.0, 0.0])]).unwrap();
    let first = store.image_by_path("x/a.jpg").unwrap().unwrap();

    // The file changed: re-embedding replaces the row's facts and the descriptor, same id.
    let mut changed = embedded("x/a.jpg", "h2", vec![0.0, 1.0]);
    changed.size = 2000;
    changed.label = None;
    store.commit_batch(m, &[changed]).unwrap();
    let second = store.image_by_path("x/a.jpg").unwrap().unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!((second.size, second.hash.as_str(), second.label.as_deref()), (2000, "h2", None));
    assert_eq!(store.descriptor(first.id, m).unwrap().unwrap(), [0.0, 1.0]);
    let counts = store.counts().unwrap();
    assert_eq!((counts.images, counts.ok, counts.descriptors), (1, 1, 1));
    assert_eq!(scalar(&store, "SELECT count(*) FROM descriptors"), 1);

    // An unchanged file touched on disk: only its stats move.
    store.update_stats(&[StatUpdate { id: first.id, size: 2000, mtime_ns: 42 }]).unwrap();
    let touched = store.image_by_path("x/a.jpg").unwrap().unwrap();
    assert_eq!((touched.mtime_ns, touched.hash.as_str()), (42, "h2"));
    assert_eq!(store.descriptor(first.id, m).unwrap().unwrap(), [0.0, 1.0]);
}

#[test]
fn changed_content_drops_other_models_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    let a = store.upsert_model(&model(2)).unwrap();
    let b = store.upsert_model(&NewModel { weights_hash: "other".into(), ..model(3) }).unwrap();
    assert_ne!(a, b);
    store.commit_batch(a, &[embedded("p.jpg", "h1", vec![1.0, 0.0])]).unwrap();
    store.commit_batch(b, &[embedded("p.jpg", "h1", vec![1.0, 0.0, 0.0])]).unwrap();
    let id = store.image_by_path("p.jpg").unwrap().unwrap().id;
    assert!(store.descriptor(id, a).unwrap().is_some(), "same content keeps model a");
    assert_eq!(store.descriptors(b).unwrap().len(), 1);

    store.commit_batch(a, &[embedded("p.jpg", "h2", vec![0.0, 1.0])]).unwrap();
    assert_eq!(store.descriptor(id, a).unwrap().unwrap(), [0.0, 1.0]);
    assert_eq!(store.descriptor(id, b).unwrap(), None, "model b described the old content");
    assert!(store.descriptors(b).unwrap().is_empty());
}

#[test]
fn failed_outcome_removes_descriptor_and_records_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    let m = store.upsert_model(&model(2)).unwrap();
    store
        .commit_batch(
            m,
            &[embedded("ok.jpg", "h", vec![1.0, 0.0]), embedded("bad.jpg", "h1", vec![0.0, 1.0])],
        )
        .unwrap();
    // Same content, but this time decoding failed (e.g. a codec went missing).
    store.commit_batch(m, &[failed("bad.jpg", "h1", "unexpected EOF in JPEG")]).unwrap();
    let bad = store.image_by_path("bad.jpg").unwrap().unwrap();
    assert_eq!(bad.status, Status::Failed);
    assert_eq!(bad.error.as_deref(), Some("unexpected EOF in JPEG"));
    assert_eq!(store.descriptor(bad.id, m).unwrap(), None);
    let d = store.descriptors(m).unwrap();
    assert_eq!(d.ids, [store.image_by_path("ok.jpg").unwrap().unwrap().id]);
    let failures = store.failures().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].path, "bad.jpg");
    let c = store.counts().unwrap();
    assert_eq!((c.images, c.ok, c.failed, c.descriptors), (2, 1, 1, 1));

    // Fixed later: back to ok.
    store.commit_batch(m, &[embedded("bad.jpg", "h3", vec![0.5, 0.5])]).unwrap();
    let fixed = store.image_by_path("bad.jpg").unwrap().unwrap();
    assert_eq!((fixed.status, fixed.error), (Status::Ok, None));
    assert!(store.failures().unwrap().is_empty());
}

#[test]
fn invalid_batches_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    let m = store.upsert_model(&model(2)).unwrap();
    let err = store
        .commit_batch(
            m,
            &[embedded("a.jpg", "h", vec![1.0, 0.0]), embedded("b.jpg", "h", vec![1.0])],
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert!(err.to_string().contains("b.jpg has 1 values but model"), "{err}");
    let err = store.commit_batch(m, &[embedded("/abs/a.jpg", "h", vec![1.0, 0.0])]).unwrap_err();
    assert!(err.to_string().contains("is absolute"), "{err}");
    let err = store.commit_batch(m + 7, &[]).unwrap_err();
    assert!(matches!(err, Error::NoSuchModel { .. }), "{err:?}");
    assert_eq!(store.counts().unwrap().images, 0);
}

#[test]
fn delete_cascades_to_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    let a = store.upsert_model(&model(2)).unwrap();
    let b = store.upsert_model(&NewModel { weights_hash: "b".into(), ..model(2) }).unwrap();
    let batch: Vec<_> =
        (0..10).map(|i| embedded(&format!("{i}.jpg"), "h", vec![i as f32, 1.0])).collect();
    store.commit_batch(a, &batch).unwrap();
    store.commit_batch(b, &batch).unwrap();
    assert_eq!(store.counts().unwrap().descriptors, 20);
    let ids: Vec<i64> = store.images().unwrap().iter().take(4).map(|r| r.id).collect();
    assert_eq!(store.delete_images(&[ids[0], ids[1], ids[2], ids[3], 999_999]).unwrap(), 4);
    assert_eq!(orphans(&store), 0);
    let c = store.counts().unwrap();
    assert_eq!((c.images, c.descriptors), (6, 12));
    assert!(store.image_by_id(ids[0]).unwrap().is_none());
    assert_eq!(store.descriptors(a).unwrap().len(), 6);
    assert_eq!(store.delete_images(&[]).unwrap(), 0);
    store.integrity_check().unwrap();
}

#[test]
fn models_are_identified_by_plugin_backbone_weights_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db(&dir)).unwrap();
    let id = store.upsert_model(&model(384)).unwrap();
    // Same config with keys in another order, weights moved: same model, path updated.
    let moved = NewModel {
        weights_path: Some("/elsewhere/vit_s.safetensors".into()),
        config: json!({"preprocess": {"mean": [0.5, 0.5, 0.5], "size": 224}, "pooling": "cls"}),
        ..model(384)
    };
    assert_eq!(store.upsert_model(&moved).unwrap(), id);
    let row = store.model(id).unwrap();
    assert_eq!(row.weights_path.as_deref(), Some("/elsewhere/vit_s.safetensors"));
    assert_eq!(row.config, model(384).config);
    assert_eq!((row.dim, row.random_weights), (384, false));
    assert_eq!(store.models().unwrap().len(), 1);

    let gem = NewModel { config: json!({"pooling": "gem", "p": 3.0}), ..model(384) };
    assert_ne!(store.upsert_model(&gem).unwrap(), id);
    let random = NewModel {
        weights_path: None,
        weights_hash: "random:seed=0".into(),
        random_weights: true,
        ..model(384)
    };
    let rid = store.upsert_model(&random).unwrap();
    assert!(store.model(rid).unwrap().random_weights);
    assert_eq!(store.models().unwrap().len(), 3);

    let err = store.upsert_model(&model(768)).unwrap_err();
    assert!(matches!(err, Error::ModelConflict { id: i, .. } if i == id), "{err:?}");
    let err = store.model(12345).unwrap_err();
    assert!(err.to_string().contains("has no model 12345"), "{err}");
}

fn pca(in_dim: usize, out_dim: usize, seed: f32) -> PcaRecord {
    PcaRecord {
        in_dim,
        out_dim,
        whiten: true,
        mean: (0..in_dim).map(|i| seed + i as f32).collect(),
        components: (0..in_dim * out_dim).map(|i| -(i as f32) / 7.0).collect(),
        explained_variance: (0..out_dim).map(|i| 1.0 / (i as f32 + 1.0)).collect(),
        total_variance: 12.5,
        n_samples: 1000,
    }
}

#[test]
fn pca_round_trips_and_checks_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    let m = store.upsert_model(&model(8)).unwrap();
    assert_eq!(store.latest_pca(m).unwrap(), None);
    let first = store.save_pca(m, &pca(8, 3, 0.0)).unwrap();
    let second = store.save_pca(m, &pca(8, 3, 1.0)).unwrap();
    assert_eq!(store.latest_pca(m).unwrap(), Some((second, pca(8, 3, 1.0))));
    assert_eq!(store.pca(first).unwrap(), Some(pca(8, 3, 0.0)));
    assert_eq!(store.pca(999).unwrap(), None);

    let mut bad = pca(8, 3, 0.0);
    bad.components.pop();
    assert!(store.save_pca(m, &bad).unwrap_err().to_string().contains("components"));
    assert!(store.save_pca(m, &pca(4, 2, 0.0)).unwrap_err().to_string().contains("dim 8"));
    assert_eq!(store.counts().unwrap().pca, 2);
}

fn generation(model_id: i64, pca_id: Option<i64>, n: usize) -> NewGeneration {
    NewGeneration {
        model_id,
        pca_id,
        kind: "hnsw".into(),
        params: json!({"m": 16, "ef_construction": 200}),
        files: vec![format!("irtdb.g{n}.hnsw.graph"), format!("irtdb.g{n}.hnsw.data")],
        count: 10 * n,
    }
}

#[test]
fn generation_switching_keeps_exactly_one_current() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&db(&dir)).unwrap();
    let a = store.upsert_model(&model(8)).unwrap();
    let b = store.upsert_model(&NewModel { weights_hash: "b".into(), ..model(8) }).unwrap();
    let pca_a = store.save_pca(a, &pca(8, 4, 0.0)).unwrap();
    assert_eq!(store.current_generation(a).unwrap(), None);

    let gb = store.record_generation(&generation(b, None, 1)).unwrap();
    let mut last = 0;
    for n in 1..=3 {
        last = store.record_generation(&generation(a, Some(pca_a), n)).unwrap();
        let current = store.current_generation(a).unwrap().unwrap();
        assert_eq!(current.id, last);
        assert_eq!(current.count, 10 * n);
        assert_eq!(
            scalar(
                &store,
                &format!(
                    "SELECT count(*) FROM index_generations WHERE model_id = {a} AND current = 1"
                )
            ),
            1
        );
    }
    let current = store.current_generation(a).unwrap().unwrap();
    assert_eq!(current.pca_id, Some(pca_a));
    assert_eq!(current.kind, "hnsw");
    assert_eq!(current.params, json!({"ef_construction": 200, "m": 16}));
    assert_eq!(current.files, ["irtdb.g3.hnsw.graph", "irtdb.g3.hnsw.data"]);
    assert!(current.current);
    let all = store.generations(a).unwrap();
    assert_eq!(all.iter().map(|g| g.current).collect::<Vec<_>>(), [false, false, true]);
    assert_eq!(all.last().unwrap().id, last);
    // Another model's current generation is untouched.
    assert_eq!(store.current_generation(b).unwrap().unwrap().id, gb);
    // synchronous is back to NORMAL (1) after the FULL commit.
    assert_eq!(scalar(&store, "PRAGMA synchronous"), 1);

    // The partial unique index backs the invariant even for raw SQL.
    let raw = store
        .connection()
        .execute(&format!("UPDATE index_generations SET current = 1 WHERE model_id = {a}"), []);
    assert!(raw.is_err());

    let err = store.record_generation(&generation(b, Some(pca_a), 9)).unwrap_err();
    assert!(err.to_string().contains("belongs to model"), "{err}");
    let mut escaping = generation(a, None, 9);
    escaping.files.push("../elsewhere.bin".into());
    assert!(matches!(store.record_generation(&escaping).unwrap_err(), Error::InvalidInput { .. }));
    assert_eq!(store.current_generation(a).unwrap().unwrap().id, last);
    assert_eq!(store.counts().unwrap().generations, 4);
}

#[test]
fn writer_lock_is_exclusive_and_waitable() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let first = Store::open(&p).unwrap();
    let second = Store::open(&p).unwrap();
    let lock = first.lock_writer(false).unwrap();
    assert_eq!(lock.lock_path(), irtdb_store::lock_path_for(&p));
    assert!(lock.lock_path().ends_with("irtdb.db.lock"));

    let err = second.lock_writer(false).unwrap_err();
    assert!(matches!(err, Error::Locked { pid: Some(pid), .. } if pid == std::process::id()));
    assert_eq!(
        err.to_string(),
        format!(
            "another irtdb is writing {} (pid {}); wait for it or pass --wait",
            p.display(),
            std::process::id()
        )
    );

    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut told = None;
        let lock = second.lock_writer_waiting(|pid| told = Some(pid)).unwrap();
        tx.send(Instant::now()).unwrap();
        drop(lock);
        let again = second.lock_writer(true).unwrap();
        drop(again);
        told
    });
    // The waiter must still be blocked.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    let released = Instant::now();
    drop(lock);
    let acquired = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(acquired >= released);
    assert_eq!(waiter.join().unwrap(), Some(Some(std::process::id())));
    // Free again for anyone.
    drop(first.lock_writer(false).unwrap());
}

#[test]
fn readers_see_whole_batches_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let mut writer = Store::open(&p).unwrap();
    let m = writer.upsert_model(&model(16)).unwrap();
    let reader = Store::open_existing(&p).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !done2.load(std::sync::atomic::Ordering::Relaxed) {
            let d = reader.descriptors(m).unwrap();
            assert_eq!(d.len() % 25, 0, "a partial batch became visible");
            seen.push(d.len());
        }
        seen
    });
    for batch in 0..20 {
        let updates: Vec<_> = (0..25)
            .map(|i| embedded(&format!("b{batch}/{i}.jpg"), "h", vec![i as f32; 16]))
            .collect();
        writer.commit_batch(m, &updates).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = handle.join().unwrap();
    assert!(!seen.is_empty());
    assert_eq!(writer.descriptors(m).unwrap().len(), 500);
}

/// A database with enough rows to span many pages, closed so the WAL is checkpointed into it.
fn populated(p: &Path) {
    let mut store = Store::open(p).unwrap();
    let m = store.upsert_model(&model(64)).unwrap();
    for batch in 0..8 {
        let updates: Vec<_> = (0..50)
            .map(|i| {
                let v = (0..64).map(|j| ((batch * 50 + i) * 64 + j) as f32).collect();
                embedded(&format!("d{batch}/img{i:03}.jpg"), &format!("{batch}-{i}"), v)
            })
            .collect();
        store.commit_batch(m, &updates).unwrap();
    }
    store.integrity_check().unwrap();
    drop(store);
    assert!(!p.with_extension("db-wal").exists(), "closing checkpoints the WAL");
}

fn overwrite(p: &Path, offset: u64, len: usize) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 0xA5) as u8).collect();
    f.write_all(&garbage).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn damaged_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine.db");
    populated(&pristine);
    let len = std::fs::metadata(&pristine).unwrap().len();
    assert!(len > 40 * 4096, "{len}");
    // Three pages of garbage at a quarter, half and three quarters of the file.
    for quarter in 1..=3 {
        let p = dir.path().join(format!("damaged{quarter}.db"));
        std::fs::copy(&pristine, &p).unwrap();
        overwrite(&p, (len * quarter / 4) / 4096 * 4096, 3 * 4096);
        let err = Store::open(&p).and_then(|s| s.integrity_check()).unwrap_err();
        assert!(matches!(err, Error::Damaged { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("database {} is damaged: ", p.display())), "{msg}");
        assert!(
            msg.ends_with("; restore from backup or delete it and re-run `irtdb index`"),
            "{msg}"
        );
    }
}

#[test]
fn damaged_header_is_detected_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    populated(&p);
    overwrite(&p, 0, 100);
    for err in [Store::open(&p).unwrap_err(), Store::open_existing(&p).unwrap_err()] {
        assert!(matches!(err, Error::NotADatabase { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{} is not an SQLite database", p.display())), "{msg}");
        assert!(msg.contains("restore it from backup"), "{msg}");
    }
}

#[test]
fn sqlite_errors_name_the_database_and_the_operation() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/folder/irtdb.db");
    let err = Store::open(&missing).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("cannot open database {}: ", missing.display())), "{msg}");
    assert!(msg.ends_with("check that the file and its folder exist and are writable"), "{msg}");
}

#[test]
fn descriptor_pages_cover_all_once_and_a_snapshot_ignores_later_commits() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let mut writer = Store::open(&p).unwrap();
    let m = writer.upsert_model(&model(2)).unwrap();
    let batch: Vec<ImageUpdate> = (0..7)
        .map(|i| embedded(&format!("a/{i}.jpg"), &format!("h{i}"), vec![i as f32, -(i as f32)]))
        .chain([failed("a/bad.jpg", "hbad", "broken")])
        .collect();
    writer.commit_batch(m, &batch).unwrap();

    let reader = Store::open_existing(&p).unwrap();
    let all = reader.descriptors(m).unwrap();
    let snapshot = reader.read_snapshot().unwrap();
    let (mut ids, mut data, mut after) = (Vec::new(), Vec::new(), i64::MIN);
    let mut pages = 0;
    loop {
        let page = reader.descriptors_page(m, after, 3).unwrap();
        let Some(&last) = page.ids.last() else { break };
        assert!(page.ids.len() <= 3);
        if pages == 0 {
            // Another process commits while the reader is between pages.
            writer.commit_batch(m, &[embedded("b/late.jpg", "hlate", vec![9.0, 9.0])]).unwrap();
        }
        pages += 1;
        let rows = reader.images_in_range(page.ids[0], last).unwrap();
        assert!(page.ids.iter().all(|id| rows.iter().any(|r| r.id == *id)));
        ids.extend(page.ids);
        data.extend(page.data);
        after = last;
    }
    assert_eq!(pages, 3, "7 descriptors (the failed image has none) in pages of 3");
    assert_eq!((ids, bits(&data)), (all.ids.clone(), bits(&all.data)), "the snapshot's state");
    drop(snapshot);
    assert_eq!(reader.descriptors(m).unwrap().len(), 8, "after the snapshot: the late image");
}
