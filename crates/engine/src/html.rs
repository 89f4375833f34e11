//! `irtdb query --html FILE`: one self-contained page (thumbnails inlined as data: URLs).

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use base64::Engine as _;

use crate::query::QueryReport;

const THUMB: u32 = 160;

/// A JPEG thumbnail as a data: URL, or None if the file cannot be read.
fn thumbnail(path: &Path) -> Option<String> {
    let img = irtdb_image::decode_file(path, &irtdb_image::DecodeLimits::default()).ok()?;
    let jpeg = irtdb_image::thumbnail_jpeg(&img, THUMB).ok()?;
    Some(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(jpeg)
    ))
}

/// Text for HTML and SVG (element content and double-quoted attributes).
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn figure(out: &mut String, src: Option<String>, caption: &str) {
    let img = match src {
        Some(s) => format!("<img src=\"{s}\" alt=\"\">"),
        None => "<div class=\"missing\">unreadable</div>".into(),
    };
    let _ = write!(out, "<figure>{img}<figcaption>{}</figcaption></figure>", escape(caption));
}

/// Writes the page for `report` to `out`.
pub fn write(report: &QueryReport, out: &Path) -> Result<()> {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>irtdb query</title><style>\
         body{font-family:sans-serif;margin:1.5em;background:#fafafa}\
         section{margin-bottom:2em}.row{display:flex;flex-wrap:wrap;gap:10px}\
         figure{margin:0;width:170px;background:#fff;padding:5px;border:1px solid #ddd}\
         figure.query{border:2px solid #c33}img{max-width:160px;max-height:160px;display:block;margin:auto}\
         figcaption{font-size:12px;word-break:break-all}.missing{height:160px;color:#999}\
         </style></head><body>",
    );
    let _ = write!(
        page,
        "<h1>irtdb query</h1><p>{} · {} · {}{}</p>",
        escape(&report.db.display().to_string()),
        escape(&report.model),
        escape(&report.method),
        if report.random_weights { " · <b>random-weight model</b>" } else { "" }
    );
    for r in &report.results {
        let _ = write!(page, "<section><h2>{}</h2><div class=\"row\">", escape(&r.query));
        let query_file = r.file.clone().or_else(|| {
            r.collection_id.and_then(|id| {
                r.hits.iter().find(|h| h.id == id).map(|h| report.root.join(&h.path))
            })
        });
        page.push_str("<figure class=\"query\">");
        page.push_str(&match query_file.as_deref().and_then(thumbnail) {
            Some(s) => format!("<img src=\"{s}\" alt=\"\">"),
            None => "<div class=\"missing\">query</div>".into(),
        });
        page.push_str("<figcaption>query</figcaption></figure>");
        if let Some(e) = &r.error {
            let _ = write!(page, "<p>{}</p>", escape(e));
        }
        for h in &r.hits {
            let caption = format!("#{} {:.4} {}", h.rank, h.score, h.path);
            figure(&mut page, thumbnail(&report.root.join(&h.path)), &caption);
        }
        page.push_str("</div></section>");
    }
    page.push_str("</body></html>\n");
    std::fs::write(out, page).map_err(Error::io("write", out))
}

/// `irtdb dups --html FILE`: every group in a row, thumbnails inlined, each with its score and
/// path, for a person to review before deleting anything.
pub fn write_dups(report: &crate::dups::DupsReport, out: &Path) -> Result<()> {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>irtdb dups</title><style>\
         body{font-family:sans-serif;margin:1.5em;background:#fafafa}\
         section{margin-bottom:2em}.row{display:flex;flex-wrap:wrap;gap:10px}\
         figure{margin:0;width:170px;background:#fff;padding:5px;border:1px solid #ddd}\
         figure.first{border:2px solid #393}img{max-width:160px;max-height:160px;display:block;margin:auto}\
         figcaption{font-size:12px;word-break:break-all}.missing{height:160px;color:#999}\
         </style></head><body>",
    );
    let _ = write!(
        page,
        "<h1>irtdb dups</h1><p>{} · {} groups, {} of {} images · cosine ≥ {} · {} search{}</p>",
        escape(&report.db.display().to_string()),
        report.groups.len(),
        report.grouped,
        report.images,
        report.threshold,
        escape(&report.method),
        if report.random_weights { " · <b>random-weight model</b>" } else { "" }
    );
    for (i, g) in report.groups.iter().enumerate() {
        let _ = write!(
            page,
            "<section><h2>Group {} · {} images</h2><div class=\"row\">",
            i + 1,
            g.images.len()
        );
        for (j, m) in g.images.iter().enumerate() {
            let caption = format!("{:.4} {}", m.score, m.path);
            if j == 0 {
                page.push_str("<figure class=\"first\">");
                page.push_str(&match thumbnail(&report.root.join(&m.path)) {
                    Some(s) => format!("<img src=\"{s}\" alt=\"\">"),
                    None => "<div class=\"missing\">unreadable</div>".into(),
                });
                let _ = write!(page, "<figcaption>{}</figcaption></figure>", escape(&caption));
            } else {
                figure(&mut page, thumbnail(&report.root.join(&m.path)), &caption);
            }
        }
        page.push_str("</div></section>");
    }
    page.push_str("</body></html>\n");
    std::fs::write(out, page).map_err(Error::io("write", out))
}
