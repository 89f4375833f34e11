//! The figures: each chart is described once ([`Chart`]) and drawn by the same plotters code on
//! an SVG backend and on a bitmap backend (saved as PNG), so the two files show the same title,
//! axis labels, ticks, grid, series and legend.
//!
//! Text in the PNG is set in DejaVu Sans, bundled in `fonts/` (with its licence) and embedded
//! in the binary, so no system font or fontconfig is needed; the SVG names the generic
//! `sans-serif` family and leaves the glyphs to the viewer.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::CollectionAnalysis;

/// DejaVu Sans 2.37 (Bitstream Vera licence: `fonts/LICENSE-DejaVuSans.txt`).
const FONT: &[u8] = include_bytes!("../../fonts/DejaVuSans.ttf");
/// The family the font is registered under, and the one the SVG names.
const FAMILY: &str = "sans-serif";

/// Colour-blind-safe colours (Okabe–Ito), one per collection.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x00, 0x00),
];
const GRID: RGBColor = RGBColor(0xE6, 0xE6, 0xE6);

/// Figure size in pixels (the legend column is part of it).
const WIDTH: u32 = 760;
const HEIGHT: u32 = 460;
/// Dash and gap lengths of dashed series, in pixels.
const DASH: (u32, u32) = (7, 5);
/// Legend column: swatch length, gap, and the narrowest and widest column.
const SWATCH: i32 = 30;
const LEGEND_WIDTH: (u32, u32) = (150, 320);

/// One line of a chart.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub name: String,
    pub color: RGBColor,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

/// A line chart, whatever it is drawn on.
#[derive(Clone, Debug)]
pub(crate) struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    /// A logarithmic x axis (`x_range` then starts above 0).
    pub x_log: bool,
    pub series: Vec<Series>,
}

/// The cumulative-energy chart of the collections that have a curve; `None` when none has.
/// `log`: the component axis is logarithmic, which spreads out the first few components where
/// a collapsed embedding puts most of its energy.
pub(crate) fn energy_chart(collections: &[CollectionAnalysis], log: bool) -> Option<Chart> {
    let series: Vec<Series> = collections
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.cumulative_energy.is_empty())
        .map(|(i, c)| {
            let curve = c.cumulative_energy.iter().enumerate().map(|(j, &e)| ((j + 1) as f64, e));
            Series {
                name: c.name.clone(),
                color: PALETTE[i % PALETTE.len()],
                dashed: false,
                // On a linear axis the curve starts at the origin; a log axis has no 0.
                points: if log {
                    curve.collect()
                } else {
                    std::iter::once((0.0, 0.0)).chain(curve).collect()
                },
            }
        })
        .collect();
    if series.is_empty() {
        return None;
    }
    let max_dim = collections.iter().map(|c| c.dim).max().unwrap_or(1) as f64;
    Some(Chart {
        title: "Cumulative energy of the principal components".into(),
        x_label: if log {
            "number of principal components (log scale)".into()
        } else {
            "number of principal components".into()
        },
        y_label: "fraction of the variance".into(),
        x_range: if log { (1.0, max_dim.max(2.0)) } else { (0.0, max_dim) },
        y_range: (0.0, 1.0),
        x_log: log,
        series,
    })
}

/// The similarity histograms (positive pairs solid, negative dashed) of the collections that
/// have them; `None` when none has.
pub(crate) fn similarity_chart(collections: &[CollectionAnalysis]) -> Option<Chart> {
    let mut series = Vec::new();
    let mut y_max: f64 = 0.0;
    let mut x_range = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, c) in collections.iter().enumerate() {
        let Some(s) = &c.similarity else { continue };
        x_range = (x_range.0.min(s.hist_range[0]), x_range.1.max(s.hist_range[1]));
        for (hist, kind, dashed) in
            [(&s.positive_hist, "positive", false), (&s.negative_hist, "negative", true)]
        {
            y_max = y_max.max(hist.iter().copied().fold(0.0, f64::max));
            series.push(Series {
                name: format!("{} {kind}", c.name),
                color: PALETTE[i % PALETTE.len()],
                dashed,
                points: step_points(hist, s.hist_range),
            });
        }
    }
    if series.is_empty() {
        return None;
    }
    Some(Chart {
        title: "Cosine similarity of positive (solid) and negative (dashed) pairs".into(),
        x_label: "cosine similarity".into(),
        y_label: "fraction of pairs".into(),
        x_range,
        y_range: (0.0, nice_ceil(y_max * 1.05)),
        x_log: false,
        series,
    })
}

/// A histogram of `[lo, hi]` as a step line.
fn step_points(hist: &[f64], [lo, hi]: [f64; 2]) -> Vec<(f64, f64)> {
    let w = (hi - lo) / hist.len() as f64;
    let mut pts = vec![(lo, 0.0)];
    for (b, &v) in hist.iter().enumerate() {
        let x0 = lo + b as f64 * w;
        pts.push((x0, v));
        pts.push((x0 + w, v));
    }
    pts.push((hi, 0.0));
    pts
}

/// The smallest 1, 2, 5 × 10^k (or a multiple of its tenth) at least `v`.
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= v)
        .unwrap_or(10.0 * mag)
}

/// A tick value with at most three decimals and no trailing zeros.
fn tick_label(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Registers the bundled font with plotters (once per process).
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    ok.then_some(()).ok_or_else(|| Error::Internal {
        what: "the bundled font DejaVu Sans could not be read".into(),
    })
}

/// Draws `chart` on `root`: the one description both backends share.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let body = root.titled(&chart.title, (FAMILY, 18))?;
    let label_style = TextStyle::from((FAMILY, 13));
    let widest = chart
        .series
        .iter()
        .map(|s| body.estimate_text_size(&s.name, &label_style).map(|(w, _)| w))
        .try_fold(0, |m, w| w.map(|w| m.max(w)))?;
    let legend_width = (widest + SWATCH as u32 + 30).clamp(LEGEND_WIDTH.0, LEGEND_WIDTH.1);
    let (plot, legend) = body.split_horizontally(body.dim_in_pixel().0 - legend_width);
    if chart.x_log {
        plot_area(&plot, chart, (chart.x_range.0..chart.x_range.1).log_scale())?;
    } else {
        plot_area(&plot, chart, chart.x_range.0..chart.x_range.1)?;
    }
    for (i, s) in chart.series.iter().enumerate() {
        let y = 20 + 20 * i as i32;
        let swatch = vec![(5, y), (5 + SWATCH, y)];
        let style = s.color.stroke_width(2);
        if s.dashed {
            legend.draw(&DashedPathElement::new(swatch, DASH.0, DASH.1, style))?;
        } else {
            legend.draw(&PathElement::new(swatch, style))?;
        }
        let text = label_style.pos(Pos::new(HPos::Left, VPos::Center));
        legend.draw(&Text::new(s.name.clone(), (12 + SWATCH, y), text))?;
    }
    root.present()
}

/// The axes, grid, ticks, labels and series on `area`, with `x` as the x coordinate (linear or
/// logarithmic).
fn plot_area<DB, X>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
    x: X,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut c = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x, chart.y_range.0..chart.y_range.1)?;
    let label = |v: &f64| tick_label(*v);
    c.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&label)
        .y_label_formatter(&label)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .draw()?;
    for s in &chart.series {
        let style = s.color.stroke_width(2);
        let points = s.points.iter().copied();
        if s.dashed {
            c.draw_series(DashedLineSeries::new(points, DASH.0, DASH.1, style))?;
        } else {
            c.draw_series(LineSeries::new(points, style))?;
        }
    }
    // The frame on top of the series' ends.
    c.plotting_area().draw(&Rectangle::new(
        [(chart.x_range.0, chart.y_range.0), (chart.x_range.1, chart.y_range.1)],
        BLACK.stroke_width(1),
    ))?;
    Ok(())
}

/// The chart as an SVG document.
pub(crate) fn svg(chart: &Chart) -> Result<String> {
    register_font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, chart)
            .map_err(|e| Error::Internal { what: format!("drawing the SVG chart: {e}") })?;
    }
    Ok(out)
}

/// The chart as an RGB picture.
pub(crate) fn png(chart: &Chart) -> Result<image::RgbImage> {
    register_font()?;
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, chart)
            .map_err(|e| Error::Internal { what: format!("drawing the PNG chart: {e}") })?;
    }
    Ok(image::RgbImage::from_raw(WIDTH, HEIGHT, buf).expect("the buffer is WIDTH × HEIGHT × 3"))
}

/// Writes `<base>.svg` and `<base>.png`; returns their paths.
pub(crate) fn write_chart(chart: &Chart, base: &Path) -> Result<Vec<PathBuf>> {
    let svg_path = base.with_extension("svg");
    std::fs::write(&svg_path, svg(chart)?).map_err(Error::io("write", &svg_path))?;
    let png_path = base.with_extension("png");
    png(chart)?.save(&png_path).map_err(|e| match e {
        image::ImageError::IoError(cause) => {
            Error::Io { action: "write", path: png_path.clone(), cause }
        }
        other => Error::Internal { what: format!("encoding {}: {other}", png_path.display()) },
    })?;
    Ok(vec![svg_path, png_path])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(x_log: bool) -> Chart {
        Chart {
            title: "t".into(),
            x_label: "x <axis>".into(),
            y_label: "y".into(),
            x_range: (if x_log { 1.0 } else { 0.0 }, 384.0),
            y_range: (0.0, 1.0),
            x_log,
            series: vec![
                Series {
                    name: "a & b".into(),
                    color: PALETTE[0],
                    dashed: true,
                    points: vec![(1.0, 0.0), (384.0, 1.0)],
                },
                Series {
                    name: "solid".into(),
                    color: PALETTE[1],
                    dashed: false,
                    points: vec![(1.0, 0.5), (384.0, 0.5)],
                },
            ],
        }
    }

    /// The text elements of an SVG, in order (plotters writes `<text …>\nTEXT\n</text>`).
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text ")
            .skip(1)
            .filter_map(|t| t.split_once(">\n")?.1.split_once("\n</text>").map(|(s, _)| s.into()))
            .collect()
    }

    #[test]
    fn charts_have_title_axes_ticks_and_legend() {
        let s = svg(&chart(false)).unwrap();
        let t = texts(&s);
        // Title, axis descriptions and legend entries are text, escaped.
        for want in ["t", "x &lt;axis&gt;", "y", "a &amp; b", "solid"] {
            assert!(t.iter().any(|x| x == want), "{want} missing: {t:?}");
        }
        // Ticks at round numbers, labelled without trailing zeros.
        for tick in ["0", "0.2", "0.4", "1", "100", "300"] {
            assert!(t.iter().any(|x| x == tick), "tick {tick} missing: {t:?}");
        }
        assert_eq!(tick_label(0.6000000000000001), "0.6");
        assert_eq!(nice_ceil(0.23), 0.25);

        let img = png(&chart(false)).unwrap();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        let colour = |c: RGBColor| image::Rgb([c.0, c.1, c.2]);
        assert!(img.pixels().any(|p| *p == colour(PALETTE[0])));
        assert!(img.pixels().any(|p| *p == colour(PALETTE[1])));
        // Text is drawn: the title row, above the plot, holds dark antialiased pixels.
        let dark_in_title = (0..WIDTH)
            .flat_map(|x| (0..24).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&v| v < 100))
            .count();
        assert!(dark_in_title > 10, "no title text in the PNG");
    }

    #[test]
    fn a_log_axis_ticks_powers_of_ten() {
        let t = texts(&svg(&chart(true)).unwrap());
        for tick in ["1", "10", "100"] {
            assert!(t.iter().any(|x| x == tick), "tick {tick} missing: {t:?}");
        }
        png(&chart(true)).unwrap();
    }
}
