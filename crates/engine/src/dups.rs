//! `irtdb dups`: groups of near-duplicate images.
//!
//! Every indexed vector's nearest neighbours (exact blocked search for collections up to
//! [`EXACT_LIMIT`] images, the current HNSW generation beyond) give edges with cosine ≥ the
//! threshold; union-find joins them into groups. In each group the member with the most edges
//! (ties: the lowest id) comes first and every member's score is its cosine to that one, so a
//! group reads "this image, and these copies of it". Scores are in the indexed space (after PCA),
//! as `irtdb query` scores are.

use std::collections::HashMap;
use std::path::PathBuf;

use irtdb_index::{dot, exact_search, HnswIndex};
use irtdb_store::Store;
use serde::Serialize;

use crate::collection::{self, Vectors};
use crate::error::{Error, Result, Setting};

/// Cosine (after PCA) from which two images count as near-duplicates unless the caller says
/// otherwise. Measured by `benches/dups.rs` on 40 originals × 4 edits (half size, JPEG q40, 6 %
/// crop, colour shift) among 200 distinct photo-like images, with a random-weight DeiT-S (no
/// trained weights can be fetched where it was measured): 0.98 gave the best balance (pairs
/// precision 0.77, recall 0.68; 0.95: 0.13 / 0.84; 0.99: 0.98 / 0.58). README has the table and
/// imagededup's PHash beside it; re-measure with trained weights (`-- MODEL`).
pub const DEFAULT_THRESHOLD: f32 = 0.98;

/// Up to this many images the neighbours are found by exact search; beyond, with the HNSW index.
pub const EXACT_LIMIT: usize = 5000;

/// Neighbours looked at per image (a group larger than this still forms through chains).
pub const NEIGHBOURS: usize = 10;

#[derive(Clone, Debug, Serialize)]
pub struct DupImage {
    pub id: i64,
    /// Relative to the collection root.
    pub path: String,
    /// Cosine to the group's first image (1 for that image itself).
    pub score: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct DupGroup {
    pub images: Vec<DupImage>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DupsReport {
    #[serde(serialize_with = "crate::lossy::path")]
    pub db: PathBuf,
    #[serde(serialize_with = "crate::lossy::path")]
    pub root: PathBuf,
    pub threshold: f32,
    /// `exact` or `hnsw`.
    pub method: String,
    /// Images searched.
    pub images: usize,
    /// Images that are in some group.
    pub grouped: usize,
    pub random_weights: bool,
    /// Largest first.
    pub groups: Vec<DupGroup>,
}

/// Groups of rows of `v` whose vectors are joined by neighbour edges with score ≥ `threshold`:
/// each group is `(row, score to the group's first row)`, first row first, then by score; groups
/// largest first (then by their mean score, then by their first id). `hnsw` (over the same ids
/// and vectors) is used when given; otherwise exact search.
pub fn find_groups(
    v: &Vectors,
    threshold: f32,
    neighbours: usize,
    hnsw: Option<&HnswIndex>,
) -> Vec<Vec<(usize, f32)>> {
    let n = v.ids.len();
    if n < 2 || v.dim == 0 {
        return Vec::new();
    }
    let k = (neighbours + 1).min(n);
    let row_of: HashMap<i64, usize> = v.ids.iter().enumerate().map(|(r, &id)| (id, r)).collect();
    let lists: Vec<Vec<(usize, f32)>> = match hnsw {
        Some(index) => index
            .search_batch(&v.data, k, (2 * k).max(64))
            .into_iter()
            .map(|l| l.into_iter().filter_map(|(id, s)| Some((*row_of.get(&id)?, s))).collect())
            .collect(),
        None => exact_search(&v.data, v.dim, &v.data, k)
            .into_iter()
            .map(|l| l.into_iter().map(|(r, s)| (r as usize, s)).collect())
            .collect(),
    };
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut degree = vec![0usize; n];
    for (a, list) in lists.iter().enumerate() {
        for &(b, s) in list {
            if b == a || s < threshold || !s.is_finite() {
                continue;
            }
            degree[a] += 1;
            degree[b] += 1;
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            if ra != rb {
                parent[ra.max(rb)] = ra.min(rb);
            }
        }
    }
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for r in 0..n {
        let root = find(&mut parent, r);
        members.entry(root).or_default().push(r);
    }
    let row = |r: usize| &v.data[r * v.dim..(r + 1) * v.dim];
    let mut groups: Vec<Vec<(usize, f32)>> = members
        .into_values()
        .filter(|m| m.len() > 1)
        .map(|m| {
            let first = *m
                .iter()
                .max_by(|&&a, &&b| degree[a].cmp(&degree[b]).then(v.ids[b].cmp(&v.ids[a])))
                .expect("a group has members");
            let mut g: Vec<(usize, f32)> = m
                .iter()
                .map(|&r| (r, if r == first { 1.0 } else { dot(row(first), row(r)) }))
                .collect();
            g.sort_by(|a, b| {
                (b.0 == first)
                    .cmp(&(a.0 == first))
                    .then(b.1.total_cmp(&a.1))
                    .then(v.ids[a.0].cmp(&v.ids[b.0]))
            });
            g
        })
        .collect();
    let mean = |g: &[(usize, f32)]| g.iter().map(|m| m.1).sum::<f32>() / g.len() as f32;
    groups.sort_by(|a, b| {
        b.len()
            .cmp(&a.len())
            .then(mean(b).total_cmp(&mean(a)))
            .then(v.ids[a[0].0].cmp(&v.ids[b[0].0]))
    });
    groups
}

/// The near-duplicate groups of the collection at `db` (read only).
pub fn run(db: &std::path::Path, threshold: f32) -> Result<DupsReport> {
    if !(threshold.is_finite() && (-1.0..=1.0).contains(&threshold)) {
        let message = format!("the threshold must be a cosine between -1 and 1 (got {threshold})");
        return Err(Error::setting(&[Setting::Threshold], message));
    }
    let store = Store::open_existing(db)?;
    let root = store.collection_root()?.unwrap_or_default();
    let (row, _stored) = collection::searchable_model(&store)?;
    let generation = collection::searchable_generation(&store, row.id)?;
    let pca = collection::generation_pca(&store, &generation)?;
    let v = collection::indexed_vectors(&store, row.id, pca.as_ref())?;
    let hnsw = if v.ids.len() > EXACT_LIMIT {
        // A damaged or missing file: exact search still answers, only slower.
        HnswIndex::load(store.dir(), &collection::basename_of(&store, &generation)?)
            .ok()
            .filter(|i| i.dim() == v.dim)
    } else {
        None
    };
    let groups = find_groups(&v, threshold, NEIGHBOURS, hnsw.as_ref());
    report(&store, root, &v, threshold, hnsw.is_some(), row.random_weights, groups)
}

/// The report for `groups` (rows of `v`), with paths from the database.
pub fn report(
    store: &Store,
    root: PathBuf,
    v: &Vectors,
    threshold: f32,
    hnsw: bool,
    random_weights: bool,
    groups: Vec<Vec<(usize, f32)>>,
) -> Result<DupsReport> {
    let paths: HashMap<i64, String> = store.images()?.into_iter().map(|r| (r.id, r.path)).collect();
    let groups: Vec<DupGroup> = groups
        .into_iter()
        .map(|g| DupGroup {
            images: g
                .into_iter()
                .map(|(r, score)| {
                    let id = v.ids[r];
                    DupImage { id, path: paths.get(&id).cloned().unwrap_or_default(), score }
                })
                .collect(),
        })
        .collect();
    Ok(DupsReport {
        db: store.path().to_path_buf(),
        root,
        threshold,
        method: if hnsw { "hnsw" } else { "exact" }.into(),
        images: v.ids.len(),
        grouped: groups.iter().map(|g| g.images.len()).sum(),
        random_weights,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn chains_join_and_distinct_vectors_stay_alone() {
        // 10 ≈ 11 ≈ 12 (a chain: 10 and 12 are below the threshold), 13 ≈ 14, 15 alone.
        let rows = [
            unit(&[1.0, 0.0, 0.0]),
            unit(&[1.0, 0.05, 0.0]),
            unit(&[1.0, 0.1, 0.0]),
            unit(&[0.0, 1.0, 0.0]),
            unit(&[0.0, 1.0, 0.03]),
            unit(&[0.0, 0.0, 1.0]),
        ];
        let v = Vectors { ids: vec![10, 11, 12, 13, 14, 15], dim: 3, data: rows.concat() };
        let g = find_groups(&v, 0.997, 3, None);
        assert_eq!(g.len(), 2);
        let ids = |g: &[(usize, f32)]| g.iter().map(|m| v.ids[m.0]).collect::<Vec<_>>();
        // The middle of the chain has the most edges, so it leads.
        assert_eq!(ids(&g[0]), vec![11, 12, 10]);
        assert_eq!(g[0][0].1, 1.0);
        assert_eq!(ids(&g[1]), vec![13, 14]);
        let hnsw =
            HnswIndex::build(&v.data, 3, &v.ids, &irtdb_index::HnswParams::default()).unwrap();
        let by_graph = find_groups(&v, 0.997, 3, Some(&hnsw));
        assert_eq!(
            by_graph.iter().map(|g| ids(g)).collect::<Vec<_>>(),
            vec![ids(&g[0]), ids(&g[1])]
        );
        assert!(find_groups(&v, 1.01, 3, None).is_empty());
    }
}
