//! Small image edits the commands need around the model: a query's bounding-box crop (the
//! revisited Oxford/Paris protocol) and thumbnails for pages.

use image::RgbImage;
use irtdb_core::AlphaBackground;

use crate::decode::DecodedImage;

/// Crops `img` to `[x1, y1, x2, y2]` (rounded, as PIL's `crop`, and clamped to the image);
/// `None` when the box does not overlap the image.
pub fn crop_to_box(img: &RgbImage, bbx: [f64; 4]) -> Option<RgbImage> {
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let x1 = bbx[0].round().clamp(0.0, w);
    let y1 = bbx[1].round().clamp(0.0, h);
    let x2 = bbx[2].round().clamp(0.0, w);
    let y2 = bbx[3].round().clamp(0.0, h);
    (x2 > x1 && y2 > y1).then(|| {
        image::imageops::crop_imm(img, x1 as u32, y1 as u32, (x2 - x1) as u32, (y2 - y1) as u32)
            .to_image()
    })
}

/// A JPEG thumbnail that fits in `max` × `max` (aspect kept), transparency on white.
pub fn thumbnail_jpeg(img: &DecodedImage, max: u32) -> image::ImageResult<Vec<u8>> {
    let rgb = img.flattened(AlphaBackground::Color([255; 3])).into_owned();
    let thumb = image::DynamicImage::ImageRgb8(rgb).thumbnail(max, max);
    let mut bytes = std::io::Cursor::new(Vec::new());
    thumb.write_to(&mut bytes, image::ImageFormat::Jpeg)?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_rounds_and_clamps() {
        let img = RgbImage::from_fn(10, 8, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = crop_to_box(&img, [1.4, 2.6, 5.5, 20.0]).unwrap();
        assert_eq!((c.width(), c.height()), (5, 5)); // x 1..6, y 3..8
        assert_eq!(c.get_pixel(0, 0).0, [1, 3, 0]);
        assert!(crop_to_box(&img, [20.0, 0.0, 30.0, 5.0]).is_none());
    }

    #[test]
    fn thumbnails_fit_and_decode() {
        let rgb = RgbImage::from_pixel(300, 100, image::Rgb([10, 200, 30]));
        let img = DecodedImage::full(rgb, None);
        let jpeg = thumbnail_jpeg(&img, 60).unwrap();
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (60, 20));
    }
}
