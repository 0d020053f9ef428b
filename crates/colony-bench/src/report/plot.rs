//! A hand-written SVG chart: latency percentiles (log scale) against offered
//! load. Small enough that a plotting library would cost more than it saves.

use std::fmt::Write;

/// One open-loop step.
#[derive(Debug, Clone)]
pub struct Point {
    pub offered: f64,
    pub achieved: f64,
    /// p50, p90, p99, p99.9 in microseconds.
    pub latency_us: [u64; 4],
}

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const SERIES: [(&str, &str); 4] = [
    ("p50", "#1f77b4"),
    ("p90", "#2ca02c"),
    ("p99", "#ff7f0e"),
    ("p99.9", "#d62728"),
];

struct Axes {
    x_max: f64,
    y_min_log: f64,
    y_max_log: f64,
}

impl Axes {
    fn new(points: &[Point]) -> Self {
        let x_max = points.iter().map(|p| p.offered).fold(1.0, f64::max) * 1.05;
        let lat = points
            .iter()
            .flat_map(|p| p.latency_us)
            .map(|v| v.max(1) as f64);
        let lo = lat.clone().fold(f64::INFINITY, f64::min);
        let hi = lat.fold(1.0, f64::max);
        let y_min_log = if lo.is_finite() {
            lo.log10().floor()
        } else {
            0.0
        };
        let y_max_log = hi.log10().ceil().max(y_min_log + 1.0);
        Axes {
            x_max,
            y_min_log,
            y_max_log,
        }
    }

    fn x(&self, v: f64) -> f64 {
        LEFT + (v / self.x_max) * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, micros: u64) -> f64 {
        let l = (micros.max(1) as f64).log10();
        let frac = (l - self.y_min_log) / (self.y_max_log - self.y_min_log);
        HEIGHT - BOTTOM - frac * (HEIGHT - TOP - BOTTOM)
    }
}

/// Renders the chart; with no points it still renders empty axes.
pub fn render(title: &str, points: &[Point]) -> String {
    let axes = Axes::new(points);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="25" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    draw_grid(&mut svg, &axes);
    for (i, (name, color)) in SERIES.iter().enumerate() {
        let coords: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", axes.x(p.offered), axes.y(p.latency_us[i])))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            coords.join(" ")
        );
        for c in &coords {
            let (x, y) = c.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
        }
        let ly = TOP + 20.0 * i as f64;
        let lx = WIDTH - RIGHT + 20.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0
        );
    }
    for p in points {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" font-size="10" fill="#555">got {:.0}</text>"##,
            axes.x(p.offered),
            TOP - 5.0,
            p.achieved
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_grid(svg: &mut String, axes: &Axes) {
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (y0, y1) = (HEIGHT - BOTTOM, TOP);
    let _ = writeln!(
        svg,
        r#"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        x1 - x0,
        y0 - y1
    );
    let mut e = axes.y_min_log as i32;
    while f64::from(e) <= axes.y_max_log {
        let v = 10u64.saturating_pow(e.max(0) as u32);
        let y = axes.y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            micros_label(v)
        );
        e += 1;
    }
    for i in 0..=5 {
        let v = axes.x_max * f64::from(i) / 5.0;
        let x = axes.x(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y0 + 18.0,
            human(v)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">offered load (ops/s)</text>"#,
        (x0 + x1) / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{}" text-anchor="middle" transform="rotate(-90 20 {})">latency (log scale)</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn micros_label(v: u64) -> String {
    match v {
        0..=999 => format!("{v} µs"),
        1_000..=999_999 => format!("{} ms", v / 1_000),
        _ => format!("{} s", v / 1_000_000),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_has_one_line_per_percentile_and_a_marker_per_step() {
        let points = vec![
            Point {
                offered: 10_000.0,
                achieved: 9_990.0,
                latency_us: [100, 200, 400, 900],
            },
            Point {
                offered: 20_000.0,
                achieved: 19_900.0,
                latency_us: [120, 260, 800, 5_000],
            },
        ];
        let svg = render("a <b>", &points);
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 8);
        assert!(svg.contains("a &lt;b&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn higher_latency_is_drawn_higher_on_the_page() {
        let axes = Axes::new(&[Point {
            offered: 1.0,
            achieved: 1.0,
            latency_us: [10, 100, 1_000, 10_000],
        }]);
        assert!(axes.y(10_000) < axes.y(10));
        assert!(axes.x(1.0) > axes.x(0.0));
    }
}
