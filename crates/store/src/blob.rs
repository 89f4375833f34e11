//! Vectors as BLOBs of little-endian f32.
//!
//! The byte order is written out explicitly (never a native-endian cast) so a database moves
//! between machines unchanged and any client can read it: `numpy.frombuffer(blob, '<f4')`.
//! Conversion goes through the bit pattern, so every value, `-0.0` and subnormals included,
//! reads back bit for bit.

use crate::error::{Error, Result};

/// Encodes `values` as consecutive 4-byte little-endian IEEE-754 singles.
pub fn f32s_to_blob(values: &[f32]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(values.len() * 4);
    for v in values {
        blob.extend_from_slice(&v.to_le_bytes());
    }
    blob
}

/// Decodes a blob written by [`f32s_to_blob`]; fails when its length is not a multiple of 4.
pub fn blob_to_f32s(blob: &[u8]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(blob.len() / 4);
    extend_f32s(&mut out, blob)?;
    Ok(out)
}

/// Appends the values of `blob` to `out` (no intermediate vector when reading many rows).
pub(crate) fn extend_f32s(out: &mut Vec<f32>, blob: &[u8]) -> Result<()> {
    if !blob.len().is_multiple_of(4) {
        return Err(Error::BlobLength { len: blob.len() });
    }
    out.extend(blob.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_bit_exact() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.5,
            f32::MIN_POSITIVE,
            f32::from_bits(1),           // smallest subnormal
            f32::from_bits(0x8000_0001), // negative subnormal
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            std::f32::consts::PI,
        ];
        let blob = f32s_to_blob(&values);
        assert_eq!(blob.len(), values.len() * 4);
        let back = blob_to_f32s(&blob).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&values));
    }

    #[test]
    fn layout_is_little_endian() {
        assert_eq!(f32s_to_blob(&[1.0, -2.0]), [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]);
        assert_eq!(blob_to_f32s(&[0x00, 0x00, 0x80, 0x3f]).unwrap(), [1.0]);
    }

    #[test]
    fn empty_and_ragged_blobs() {
        assert!(blob_to_f32s(&[]).unwrap().is_empty());
        let err = blob_to_f32s(&[0, 0, 128]).unwrap_err();
        assert!(matches!(err, Error::BlobLength { len: 3 }), "{err}");
        assert!(err.to_string().contains("3 bytes"), "{err}");
    }
}
