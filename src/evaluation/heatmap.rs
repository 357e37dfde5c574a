//! A confusion matrix as an SVG heat map: rows are true classes, columns predictions, each
//! cell shaded by its share of the row (the row-normalised matrix), so classes with few
//! images are as visible as large ones.
//!
//! Hand-written SVG: cells shrink as classes grow so that about 100 classes still fit a
//! screen, column names are rotated, every cell has a tooltip with its count, and the
//! percentages are printed in the cells while there are few enough classes to read them.

use std::fmt::Write;

use super::metrics::ConfusionMatrix;

/// Up to this many classes, each cell shows its percentage.
pub const MAX_CLASSES_WITH_VALUES: usize = 20;
/// Longer class names are cut (with an ellipsis) on the axes; tooltips keep them whole.
const MAX_LABEL_CHARS: usize = 40;
/// The grid is about this wide, within the cell size limits below.
const GRID_TARGET: f64 = 720.0;
const MIN_CELL: f64 = 10.0;
const MAX_CELL: f64 = 48.0;
/// Darkest colour of the scale (a full row share); white is none.
const DARK: [f64; 3] = [8.0, 48.0, 107.0];

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0; a file name could hold one.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn shorten(label: &str) -> String {
    if label.chars().count() <= MAX_LABEL_CHARS {
        label.to_string()
    } else {
        let mut cut: String = label.chars().take(MAX_LABEL_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// The fill for a share in 0..=1: white to dark blue.
fn fill(share: f64) -> String {
    let s = share.clamp(0.0, 1.0);
    let [r, g, b] = DARK.map(|d| (255.0 + (d - 255.0) * s).round() as u8);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Renders the heat map of `matrix`, whose classes are named by `labels` (a name is left
/// empty when `labels` is short), under `title`.
pub fn render(labels: &[String], matrix: &ConfusionMatrix, title: &str) -> String {
    let n = matrix.classes();
    let name = |i: usize| labels.get(i).map_or("", String::as_str);
    let cell = (GRID_TARGET / n.max(1) as f64).clamp(MIN_CELL, MAX_CELL);
    let font = (cell * 0.6).clamp(7.0, 13.0);
    let longest = (0..n)
        .map(|i| shorten(name(i)).chars().count())
        .max()
        .unwrap_or(0);
    // An average glyph is about 0.6 em wide.
    let label_width = longest as f64 * font * 0.6 + 6.0;
    // Column names are slanted at 45°, or upright when the columns are too narrow for
    // slanted names not to touch.
    let upright = cell < 2.0 * font;
    let (angle, rise, slant) = if upright {
        (-90, label_width, 0.0)
    } else {
        let side = label_width * std::f64::consts::FRAC_1_SQRT_2;
        (-45, side, side)
    };
    let margin = 12.0;
    let grid = n as f64 * cell;
    let left = margin + 20.0 + label_width;
    let top = margin + 26.0 + 20.0 + rise + font;
    // The title is 15 px bold: about 0.62 em a glyph.
    let title_width = title.chars().count() as f64 * 15.0 * 0.62;
    let width = (left + grid + slant + margin)
        .max(left + 220.0)
        .max(2.0 * margin + title_width);
    let height = top + grid + 60.0;
    let shares = matrix.row_normalised();

    let mut svg = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{margin}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
        margin + 15.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">predicted class</text>"#,
        left + grid / 2.0,
        margin + 40.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate({:.1} {:.1}) rotate(-90)" font-size="12" text-anchor="middle">true class</text>"#,
        margin + 10.0,
        top + grid / 2.0
    );

    for i in 0..n {
        let label = escape(&shorten(name(i)));
        let full = escape(name(i));
        let middle = top + (i as f64 + 0.5) * cell;
        let _ = writeln!(
            svg,
            r#"<text class="row-label" x="{:.1}" y="{middle:.1}" font-size="{font:.1}" text-anchor="end" dominant-baseline="middle"><title>{full}</title>{label}</text>"#,
            left - 4.0
        );
        // Upright names sit on a baseline a third of an em right of the column's middle,
        // which centres their glyphs on it.
        let shift = if upright { font / 3.0 } else { 0.0 };
        let (x, y) = (left + (i as f64 + 0.5) * cell + shift, top - 4.0);
        let _ = writeln!(
            svg,
            r#"<text class="column-label" x="{x:.1}" y="{y:.1}" font-size="{font:.1}" transform="rotate({angle} {x:.1} {y:.1})"><title>{full}</title>{label}</text>"#
        );
    }

    let show_values = n <= MAX_CLASSES_WITH_VALUES;
    for (t, row) in shares.iter().enumerate() {
        for (p, &share) in row.iter().enumerate() {
            let (x, y) = (left + p as f64 * cell, top + t as f64 * cell);
            let count = matrix.count(t, p);
            let _ = writeln!(
                svg,
                r##"<rect class="cell" x="{x:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="{}" stroke="#e0e0e0" stroke-width="0.5"><title>true {} → predicted {}: {count} ({:.1}% of {})</title></rect>"##,
                fill(share),
                escape(name(t)),
                escape(name(p)),
                share * 100.0,
                escape(name(t))
            );
            if show_values && count > 0 {
                let colour = if share > 0.5 { "white" } else { "black" };
                let _ = writeln!(
                    svg,
                    r#"<text class="value" x="{:.1}" y="{:.1}" font-size="{:.1}" text-anchor="middle" dominant-baseline="middle" fill="{colour}">{:.0}%</text>"#,
                    x + cell / 2.0,
                    y + cell / 2.0,
                    (cell * 0.3).clamp(7.0, 12.0),
                    share * 100.0
                );
            }
        }
    }

    // Legend: the colour scale from 0% to 100% of a row.
    let legend_y = top + grid + 24.0;
    let legend_width = 200.0;
    let _ = writeln!(
        svg,
        r#"<defs><linearGradient id="scale"><stop offset="0" stop-color="{}"/><stop offset="1" stop-color="{}"/></linearGradient></defs>"#,
        fill(0.0),
        fill(1.0)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{left:.1}" y="{legend_y:.1}" width="{legend_width}" height="12" fill="url(#scale)" stroke="#999999" stroke-width="0.5"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{left:.1}" y="{:.1}" font-size="11">0%</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">100% of the true class</text>"#,
        legend_y + 26.0,
        left + legend_width,
        legend_y + 26.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every tag is closed in order: enough to catch broken markup.
    fn balanced(svg: &str) -> bool {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let Some(end) = rest[start..].find('>') else {
                return false;
            };
            let tag = &rest[start + 1..start + end];
            rest = &rest[start + end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop() != Some(name.trim()) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or(""));
            }
        }
        stack.is_empty()
    }

    fn matrix(n: usize) -> ConfusionMatrix {
        let mut m = ConfusionMatrix::new(n);
        for t in 0..n {
            m.add(t, t).unwrap();
            m.add(t, (t + 1) % n).unwrap();
        }
        m
    }

    #[test]
    fn names_are_escaped_and_every_cell_is_drawn() {
        let labels = ["a<b", "R&D", "say \"hi\""].map(String::from);
        let svg = render(&labels, &matrix(3), "zero-shot <test>");
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(balanced(&svg), "{svg}");
        assert_eq!(svg.matches(r#"class="cell""#).count(), 9);
        assert_eq!(svg.matches(r#"class="row-label""#).count(), 3);
        assert_eq!(svg.matches(r#"class="column-label""#).count(), 3);
        // Two non-zero cells per row, each 50% of it.
        assert_eq!(svg.matches(r#"class="value""#).count(), 6);
        assert!(svg.contains(">50%</text>"));
        for escaped in [
            "a&lt;b",
            "R&amp;D",
            "say &quot;hi&quot;",
            "zero-shot &lt;test&gt;",
        ] {
            assert!(svg.contains(escaped), "{escaped} missing");
        }
        assert!(!svg.contains("a<b") && !svg.contains("R&D"));
        assert!(svg.contains("true R&amp;D → predicted say &quot;hi&quot;: 1 (50.0% of R&amp;D)"));
    }

    #[test]
    fn many_classes_drop_the_values_but_keep_every_cell() {
        let labels: Vec<String> = (0..100).map(|i| format!("class {i}")).collect();
        let svg = render(&labels, &matrix(100), "many");
        assert!(balanced(&svg));
        assert_eq!(svg.matches(r#"class="cell""#).count(), 100 * 100);
        assert_eq!(svg.matches(r#"class="value""#).count(), 0);
        assert!(svg.contains(">class 99</text>"));
        let long = vec!["x".repeat(100)];
        let svg = render(&long, &matrix(1), "long");
        assert!(svg.contains(&format!(">{}…</text>", "x".repeat(39))));
        assert!(svg.contains(&format!("<title>{}</title>", "x".repeat(100))));
    }

    #[test]
    fn colours_run_from_white_to_dark() {
        assert_eq!(fill(0.0), "#ffffff");
        assert_eq!(fill(1.0), "#08306b");
        assert_eq!(escape("a\u{7}b"), "a b");
    }
}
