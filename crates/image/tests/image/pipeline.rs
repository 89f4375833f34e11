//! Parallel batch preparation.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use irtdb_core::Preprocess;
use irtdb_image::{prepare_batch, prepare_file, BatchPipeline, DecodeLimits, Error};

use crate::util::{encode_jpeg, smooth, write};

/// Ten small JPEGs of different sizes; number 5 is not an image.
fn files(dir: &std::path::Path) -> Vec<PathBuf> {
    (0..10)
        .map(|i| {
            if i == 5 {
                write(dir, "05.jpg", b"definitely not a jpeg")
            } else {
                write(
                    dir,
                    &format!("{i:02}.jpg"),
                    &encode_jpeg(&smooth(40 + 7 * i, 30 + 3 * i), 90),
                )
            }
        })
        .collect()
}

fn small() -> Preprocess {
    Preprocess::imagenet(32)
}

#[test]
fn order_is_kept_and_failures_are_reported_in_their_batch() {
    let dir = tempfile::tempdir().unwrap();
    let paths = files(dir.path());
    let items: Vec<(usize, PathBuf)> = paths.iter().cloned().enumerate().collect();
    let batches: Vec<_> = BatchPipeline::new(items, 4, small(), DecodeLimits::default()).collect();

    assert_eq!(batches.len(), 3);
    let ids: Vec<Vec<usize>> =
        batches.iter().map(|b| b.items.iter().map(|(id, _)| *id).collect()).collect();
    assert_eq!(ids, [vec![0, 1, 2, 3], vec![4, 6, 7], vec![8, 9]]);
    assert_eq!(batches[1].failed.len(), 1);
    let (id, path, err) = &batches[1].failed[0];
    assert_eq!((*id, path), (5, &paths[5]));
    assert!(matches!(err, Error::NotAnImage { .. }));
    assert!(batches[0].failed.is_empty() && batches[2].failed.is_empty());

    for batch in &batches {
        assert_eq!(batch.tensor.dim(), (batch.items.len(), 3, 32, 32));
        for (row, (id, meta)) in batch.items.iter().enumerate() {
            let (expected, expected_meta) =
                prepare_file(&paths[*id], &small(), &DecodeLimits::default()).unwrap();
            assert_eq!(batch.tensor.index_axis(ndarray::Axis(0), row), expected, "image {id}");
            assert_eq!(*meta, expected_meta);
            assert_eq!((meta.width, meta.height), (40 + 7 * *id as u32, 30 + 3 * *id as u32));
        }
    }
}

#[test]
fn a_batch_where_everything_failed_still_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.png", b"nope");
    let items = vec![("a", bad.clone()), ("b", bad)];
    let batches: Vec<_> = BatchPipeline::new(items, 8, small(), DecodeLimits::default()).collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].tensor.dim(), (0, 3, 32, 32));
    assert_eq!(batches[0].failed.iter().map(|f| f.0).collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn nothing_in_nothing_out() {
    let items: Vec<(u8, PathBuf)> = vec![];
    assert_eq!(BatchPipeline::new(items, 4, small(), DecodeLimits::default()).count(), 0);
}

#[test]
fn dropping_the_pipeline_stops_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.jpg", &encode_jpeg(&smooth(200, 150), 90));
    let items: Vec<(usize, PathBuf)> = (0..5000).map(|i| (i, path.clone())).collect();
    let mut pipeline = BatchPipeline::new(items, 16, small(), DecodeLimits::default());
    let first = pipeline.next().unwrap();
    assert_eq!(first.items.len(), 16);
    let started = Instant::now();
    drop(pipeline);
    // 5000 images would take far longer than this; the worker must stop after the batch in flight.
    assert!(started.elapsed() < Duration::from_secs(5), "drop took {:?}", started.elapsed());
}

#[test]
fn prepare_batch_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths = files(dir.path());
    let results = prepare_batch(&paths, &small(), &DecodeLimits::default());
    assert_eq!(results.len(), 10);
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(t) => {
                assert_ne!(i, 5);
                assert_eq!(
                    *t,
                    prepare_file(&paths[i], &small(), &DecodeLimits::default()).unwrap().0
                );
            }
            Err(e) => {
                assert_eq!(i, 5);
                assert_eq!(e.path(), paths[5]);
            }
        }
    }
}

#[test]
fn invalid_settings_fail_per_file_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let paths = files(dir.path());
    let mut p = small();
    p.crop_pct = 2.0;
    let results = prepare_batch(&paths[..2], &p, &DecodeLimits::default());
    assert!(results.iter().all(|r| matches!(r, Err(Error::Preprocess { .. }))));
}
