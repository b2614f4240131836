//! Hand-written SVG charts: panels of horizontal bars, one labelled bar per row, each panel
//! scaled to its own largest value (no plotting dependency).

use std::fmt::Write as _;

/// One bar: its label, colour and value (`None` leaves the label without a bar).
pub struct Bar {
    pub label: String,
    pub colour: &'static str,
    pub value: Option<f64>,
}

/// A titled panel of bars whose values are in `unit`.
pub struct Panel {
    pub title: &'static str,
    pub unit: &'static str,
    pub bars: Vec<Bar>,
}

/// The panels one above the other, as an SVG document.
pub fn bars(panels: &[Panel]) -> String {
    let (label_width, bar_width, line, top) = (260.0, 360.0, 22.0, 56.0);
    let height = |panel: &Panel| top + line * panel.bars.len() as f64 + 16.0;
    let width = label_width + bar_width + 120.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        panels.iter().map(height).sum::<f64>()
    );
    let mut y0 = 0.0;
    for panel in panels {
        let max = panel.bars.iter().filter_map(|bar| bar.value).fold(0.0, f64::max).max(1e-9);
        let _ = writeln!(svg, "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>", y0 + 28.0, escape(panel.title));
        for (i, bar) in panel.bars.iter().enumerate() {
            let y = y0 + top + line * i as f64;
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                label_width - 8.0,
                y + 14.0,
                escape(&bar.label)
            );
            let Some(v) = bar.value else { continue };
            let w = (v / max * bar_width).max(1.0);
            let _ = writeln!(
                svg,
                "<rect x=\"{label_width}\" y=\"{}\" width=\"{w:.1}\" height=\"16\" fill=\"{}\"/>\n\
                 <text x=\"{:.1}\" y=\"{}\">{v:.1} {}</text>",
                y + 2.0,
                bar.colour,
                label_width + w + 6.0,
                y + 14.0,
                panel.unit
            );
        }
        y0 += height(panel);
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
