//! The spectrum of a set of descriptors: the cumulative energy of their principal components.

use crate::error::Result;
use irtdb_index::Pca;
use serde::Serialize;

/// The energy fractions whose component counts are reported.
pub const ENERGY_LEVELS: [f64; 3] = [0.5, 0.9, 0.99];

/// How many components reach an energy level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnergyLevel {
    pub energy: f64,
    pub components: usize,
}

/// Cumulative energy of the principal components of `n` rows of `dim` values (see
/// [`super::CollectionAnalysis::cumulative_energy`]); `None` with fewer than 2 rows or no variance.
///
/// With `n ≤ dim` the covariance has rank at most `n − 1`; the remaining eigenvalues are zero
/// and the curve is 1 from there on.
pub fn cumulative_energy(data: &[f32], n: usize, dim: usize) -> Result<Option<Vec<f64>>> {
    if n < 2 || dim == 0 {
        return Ok(None);
    }
    let k = dim.min(n - 1);
    let pca = Pca::fit(data, n, dim, k, false)?;
    let values: Vec<f64> = pca.explained_variance.iter().map(|&v| v.max(0.0) as f64).collect();
    let total: f64 = values.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return Ok(None);
    }
    let mut sum = 0.0;
    let mut out: Vec<f64> = values
        .iter()
        .map(|v| {
            sum += v;
            (sum / total).min(1.0)
        })
        .collect();
    out.resize(dim, 1.0);
    *out.last_mut().expect("dim > 0") = 1.0;
    Ok(Some(out))
}

/// The number of components whose cumulative energy first reaches each of `levels`.
pub fn components_for(cumulative: &[f64], levels: &[f64]) -> Vec<EnergyLevel> {
    levels
        .iter()
        .map(|&e| EnergyLevel {
            energy: e,
            components: cumulative
                .iter()
                .position(|&c| c >= e - 1e-12)
                .map_or(cumulative.len(), |i| i + 1),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_of_data_on_a_line_is_all_in_one_component() {
        // Points along (1, 1, 0): one component carries everything.
        let data: Vec<f32> = (0..10).flat_map(|i| [i as f32, i as f32, 0.0]).collect();
        let e = cumulative_energy(&data, 10, 3).unwrap().unwrap();
        assert_eq!(e.len(), 3);
        assert!((e[0] - 1.0).abs() < 1e-6, "{e:?}");
        assert_eq!(e[2], 1.0);
        assert_eq!(
            components_for(&e, &[0.5, 0.99]).iter().map(|l| l.components).collect::<Vec<_>>(),
            vec![1, 1]
        );
        // No variance, or one row: no curve.
        assert!(cumulative_energy(&[1.0, 2.0, 1.0, 2.0], 2, 2).unwrap().is_none());
        assert!(cumulative_energy(&[1.0, 2.0], 1, 2).unwrap().is_none());
    }

    #[test]
    fn energy_with_fewer_rows_than_dimensions_ends_at_one() {
        let data: Vec<f32> = (0..4 * 6).map(|i| ((i * 37) % 11) as f32).collect();
        let e = cumulative_energy(&data, 4, 6).unwrap().unwrap();
        assert_eq!(e.len(), 6);
        assert!(e.windows(2).all(|w| w[0] <= w[1]), "{e:?}");
        assert_eq!(&e[2..], &[1.0, 1.0, 1.0, 1.0]); // rank ≤ 3
    }
}
