//! The latency chart: cumulative distributions of request round trips,
//! direct (data channel) vs relay (signal-api) vs plain HTTP, on a log time
//! axis. Plain SVG text, no plotting dependency.

use std::fmt::Write as _;

use serde_json::Value;

const PANEL_W: f64 = 380.0;
const PANEL_H: f64 = 260.0;
const MARGIN_L: f64 = 50.0;
const MARGIN_T: f64 = 56.0;
const MARGIN_B: f64 = 100.0;
const GAP: f64 = 40.0;

const DIRECT: &str = "#d9480f";
const RELAY: &str = "#1c7ed6";
const HTTP: &str = "#2b8a3e";

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    dashed: bool,
    samples: Vec<f64>,
}

fn samples(v: &Value, path: &str) -> Vec<f64> {
    let mut out: Vec<f64> = path
        .split('.')
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .filter(|x| x.is_finite() && *x > 0.0)
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

pub(crate) fn latency_svg(
    rust: &Value,
    chromium: &Value,
    far_rust: &Value,
    far_chromium: &Value,
    far_delay: &str,
) -> String {
    let panels = [
        (
            "Loopback, Rust client".to_owned(),
            vec![
                Series {
                    name: "direct (channel)",
                    color: DIRECT,
                    dashed: false,
                    samples: samples(rust, "rtt.samples.channel"),
                },
                Series {
                    name: "relay (signal-api)",
                    color: RELAY,
                    dashed: false,
                    samples: samples(rust, "rtt.samples.relay"),
                },
                Series {
                    name: "plain HTTP",
                    color: HTTP,
                    dashed: false,
                    samples: samples(rust, "rtt.samples.http"),
                },
            ],
        ),
        (
            "Loopback, Chromium".to_owned(),
            vec![
                Series {
                    name: "direct (channel)",
                    color: DIRECT,
                    dashed: false,
                    samples: samples(chromium, "rtt.samples.channel"),
                },
                Series {
                    name: "relay (signal-api)",
                    color: RELAY,
                    dashed: false,
                    samples: samples(chromium, "rtt.samples.relay"),
                },
                Series {
                    name: "plain HTTP",
                    color: HTTP,
                    dashed: false,
                    samples: samples(chromium, "rtt.samples.http"),
                },
            ],
        ),
        (
            format!(
                "Near vs far (relay link +125 ms each way{})",
                if far_delay == "proxy" { ", proxy" } else { "" }
            ),
            vec![
                Series {
                    name: "direct, Rust",
                    color: DIRECT,
                    dashed: false,
                    samples: samples(far_rust, "rtt.samples.direct"),
                },
                Series {
                    name: "relay, Rust",
                    color: RELAY,
                    dashed: false,
                    samples: samples(far_rust, "rtt.samples.relay"),
                },
                Series {
                    name: "direct, Chromium",
                    color: DIRECT,
                    dashed: true,
                    samples: samples(far_chromium, "rtt.samples.direct"),
                },
                Series {
                    name: "relay, Chromium",
                    color: RELAY,
                    dashed: true,
                    samples: samples(far_chromium, "rtt.samples.relay"),
                },
            ],
        ),
    ];

    let width = MARGIN_L + panels.len() as f64 * (PANEL_W + GAP);
    let height = MARGIN_T + PANEL_H + MARGIN_B;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{MARGIN_L}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">Request round trip (small GET): cumulative distribution</text>\n"
    );
    for (i, (title, series)) in panels.iter().enumerate() {
        let x0 = MARGIN_L + i as f64 * (PANEL_W + GAP);
        panel(&mut s, x0, MARGIN_T, title, series);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, x0: f64, y0: f64, title: &str, series: &[Series<'_>]) {
    let all: Vec<f64> = series
        .iter()
        .flat_map(|x| x.samples.iter().copied())
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if all.is_empty() {
        (0.1, 10.0)
    } else {
        (lo, hi)
    };
    let (dlo, dhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let xs = |v: f64| x0 + (v.log10() - dlo) / (dhi - dlo) * PANEL_W;
    let ys = |p: f64| y0 + PANEL_H - p * PANEL_H;

    let _ = writeln!(
        s,
        "<text x=\"{x0}\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">{}</text>",
        y0 - 8.0,
        esc(title)
    );
    let _ = writeln!(s, "<rect x=\"{x0}\" y=\"{y0}\" width=\"{PANEL_W}\" height=\"{PANEL_H}\" fill=\"none\" stroke=\"#999\"/>");
    // Decades on x, quartiles on y.
    let mut d = dlo;
    while d <= dhi + 1e-9 {
        let x = xs(10f64.powf(d));
        let label = if d >= 0.0 {
            format!("{:.0}", 10f64.powf(d))
        } else {
            format!("{:.*}", (-d) as usize, 10f64.powf(d))
        };
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            y0 + PANEL_H,
            y0 + PANEL_H + 14.0
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">ms (log scale)</text>",
        x0 + PANEL_W / 2.0,
        y0 + PANEL_H + 28.0
    );
    for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let y = ys(q);
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            x0 + PANEL_W,
            x0 - 4.0,
            y + 4.0,
            (q * 100.0) as u32
        );
    }
    for (i, se) in series.iter().enumerate() {
        let n = se.samples.len();
        let ly = y0 + PANEL_H + 44.0 + i as f64 * 14.0;
        let lx = x0;
        let dash = if se.dashed {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        let label = if n == 0 {
            format!("{} (not measured)", se.name)
        } else {
            format!("{} (n={n}, p50 {:.3} ms)", se.name, se.samples[(n - 1) / 2])
        };
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{}</text>",
            lx + 18.0,
            se.color,
            lx + 22.0,
            ly + 4.0,
            esc(&label)
        );
        if n == 0 {
            continue;
        }
        // At most ~300 points per curve.
        let step = (n / 300).max(1);
        let mut path = String::new();
        for (k, v) in se
            .samples
            .iter()
            .enumerate()
            .filter(|(k, _)| k % step == 0 || *k == n - 1)
        {
            let p = (k + 1) as f64 / n as f64;
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if path.is_empty() { "M" } else { "L" },
                xs(*v),
                ys(p)
            );
        }
        let _ = writeln!(
            s,
            "<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"{dash}/>",
            path.trim_end(),
            se.color
        );
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
