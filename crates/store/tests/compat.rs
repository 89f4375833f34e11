//! Databases written by earlier irtdb builds keep opening, migrated, with their data intact.
//!
//! As tantivy does with its index formats: `tests/compat_data/schema_vN.sqlite` is a small
//! collection written by the build whose schema version was N. When the current version's fixture
//! is missing this test writes it (commit it with the migration that introduced the version);
//! fixtures of older versions must never be regenerated or deleted.

use std::path::{Path, PathBuf};

use irtdb_store::{
    ImageUpdate, NewGeneration, NewModel, Outcome, PcaRecord, Status, Store, SCHEMA_VERSION,
};
use serde_json::json;

fn fixture(version: usize) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat_data")
        .join(format!("schema_v{version}.sqlite"))
}

const DIM: usize = 8;

fn vector(seed: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|j| ((seed * DIM + j) as f32 * 0.37).sin()).collect();
    v[0] = -0.0;
    v[1] = f32::from_bits(seed as u32 + 1); // subnormal
    v
}

fn fixture_model() -> NewModel {
    NewModel {
        plugin: "ort-tensorrt".into(),
        backbone: "vit_small_patch16_224".into(),
        weights_path: Some("weights/vit_small.safetensors".into()),
        weights_hash: "0f".repeat(32),
        config: json!({"pooling": "cls", "preprocess": {"size": 224, "mean": [0.5, 0.5, 0.5]}}),
        dim: DIM,
        random_weights: false,
    }
}

fn fixture_pca() -> PcaRecord {
    PcaRecord {
        in_dim: DIM,
        out_dim: 2,
        whiten: false,
        mean: vector(100),
        components: [vector(101), vector(102)].concat(),
        explained_variance: vec![2.0, 1.0],
        total_variance: 4.5,
        n_samples: 2,
    }
}

/// Writes the current schema's fixture as one self-contained file (rollback journal, vacuumed).
fn write_fixture(dest: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fixture.db");
    {
        let mut store = Store::open(&p).unwrap();
        store.set_collection_root(Path::new("/collection")).unwrap();
        let m = store.upsert_model(&fixture_model()).unwrap();
        let image = |i: usize, outcome| ImageUpdate {
            path: format!("class{}/img{i}.jpg", i % 2),
            size: 1000 + i as i64,
            mtime_ns: 1_700_000_000_000_000_000 + i as i64,
            hash: format!("{i:064x}"),
            width: Some(64),
            height: Some(48),
            label: Some(format!("class{}", i % 2)),
            outcome,
        };
        store
            .commit_batch(
                m,
                &[
                    image(0, Outcome::Embedded(vector(0))),
                    image(1, Outcome::Embedded(vector(1))),
                    image(2, Outcome::Failed("cannot decode: truncated file".into())),
                ],
            )
            .unwrap();
        let pca = store.save_pca(m, &fixture_pca()).unwrap();
        store
            .record_generation(&NewGeneration {
                model_id: m,
                pca_id: Some(pca),
                kind: "hnsw".into(),
                params: json!({"m": 16, "ef_construction": 200}),
                files: vec!["irtdb.g1.hnsw.graph".into(), "irtdb.g1.hnsw.data".into()],
                count: 2,
            })
            .unwrap();
    }
    let conn = rusqlite::Connection::open(&p).unwrap();
    conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    conn.execute_batch("VACUUM").unwrap();
    drop(conn);
    fs_err::create_dir_all(dest.parent().unwrap()).unwrap();
    fs_err::copy(&p, dest).unwrap();
}

fn check_contents(store: &Store) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(store.collection_root().unwrap().as_deref(), Some(Path::new("/collection")));
    let models = store.models().unwrap();
    assert_eq!(models.len(), 1);
    let m = &models[0];
    let expected = fixture_model();
    assert_eq!(
        (&m.plugin, &m.backbone, &m.weights_hash, &m.config, m.dim),
        (&expected.plugin, &expected.backbone, &expected.weights_hash, &expected.config, DIM)
    );
    let images = store.images().unwrap();
    assert_eq!(images.len(), 3);
    assert_eq!(images[2].path, "class0/img2.jpg");
    assert_eq!(images[2].status, Status::Failed);
    assert_eq!(images[2].error.as_deref(), Some("cannot decode: truncated file"));
    let d = store.descriptors(m.id).unwrap();
    assert_eq!(d.ids, [images[0].id, images[1].id]);
    assert_eq!(bits(d.row(0)), bits(&vector(0)));
    assert_eq!(bits(d.row(1)), bits(&vector(1)));
    let g = store.current_generation(m.id).unwrap().unwrap();
    assert_eq!(g.files, ["irtdb.g1.hnsw.graph", "irtdb.g1.hnsw.data"]);
    assert_eq!(g.params, json!({"m": 16, "ef_construction": 200}));
    let pca = store.pca(g.pca_id.unwrap()).unwrap().unwrap();
    assert_eq!(pca, fixture_pca());
    store.integrity_check().unwrap();
}

#[test]
fn every_schema_version_still_opens() {
    let current = fixture(SCHEMA_VERSION);
    if !current.exists() {
        write_fixture(&current);
    }
    for version in 1..=SCHEMA_VERSION {
        let src = fixture(version);
        assert!(src.exists(), "{} is missing: fixtures of old schemas are kept", src.display());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("irtdb.db");
        fs_err::copy(&src, &p).unwrap();
        let store = Store::open_existing(&p).unwrap();
        let v: usize =
            store.connection().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION, "schema {version} was migrated");
        check_contents(&store);
    }
}
