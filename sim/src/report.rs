//! What every experiment shares: statistics over runs, parallel runs combined in run order,
//! progress on stderr, and line plots.
//!
//! Output conventions (PROTOCOLS.md §9.6): progress and timings go to stderr; the result goes
//! to stdout, last, as one JSON line with `--json` or a readable table without. The same
//! binary and arguments print the same bytes on stdout.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use plotters::prelude::*;

/// Arithmetic mean; 0 for an empty slice.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 }
}

/// Standard error of the mean (sample standard deviation / √n); 0 below two values.
pub fn std_err(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    (var / xs.len() as f64).sqrt()
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values; 0 for an empty slice.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Round to `digits` decimals, so JSON output stays short and stable.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Worker threads to use: `requested`, or all cores when 0.
pub fn threads(requested: usize) -> usize {
    if requested > 0 { requested } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

/// Run `f(r)` for r in 0..runs on up to `threads` threads; results come back in run order, so
/// the output does not depend on scheduling. `progress` is told of each finished run.
pub fn parallel_runs<R: Send>(
    runs: u64,
    threads: usize,
    progress: &Progress,
    f: impl Fn(u64) -> R + Sync,
) -> Vec<R> {
    let next = AtomicU64::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..runs).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, runs.max(1) as usize) {
            scope.spawn(|| {
                loop {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    if r >= runs {
                        break;
                    }
                    let out = f(r);
                    results.lock().expect("no worker panicked")[r as usize] = Some(out);
                    progress.run_done();
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .map(|r| r.expect("every run finished"))
        .collect()
}

/// Progress lines on stderr: "label: run k/n (elapsed)". Silent when `quiet`.
pub struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    start: std::time::Instant,
    quiet: bool,
}

impl Progress {
    /// A progress reporter for `total` runs.
    pub fn new(label: impl Into<String>, total: u64, quiet: bool) -> Self {
        Progress {
            label: label.into(),
            total,
            done: AtomicU64::new(0),
            start: std::time::Instant::now(),
            quiet,
        }
    }

    /// A silent reporter (tests).
    pub fn silent() -> Self {
        Progress::new("", 0, true)
    }

    /// One run finished.
    pub fn run_done(&self) {
        let k = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.quiet {
            let _ = writeln!(
                std::io::stderr(),
                "{}: run {k}/{} done ({:.1} s)",
                self.label,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }

    /// Seconds since the reporter was made.
    pub fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Print a free-form line on stderr (unless quiet).
    pub fn note(&self, line: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "{}: {line}", self.label);
        }
    }
}

/// One line of a plot.
pub struct Series {
    /// Legend text; empty for no legend entry.
    pub name: String,
    /// (x, y) points in order.
    pub points: Vec<(f64, f64)>,
    /// Drawn thick and dark (means) rather than thin and light (single runs).
    pub emphasized: bool,
}

/// Draw `series` as lines into an SVG file.
pub fn plot_lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    draw_lines(&root, title, x_label, y_label, series)?;
    root.present().map_err(|e| e.to_string())
}

/// One histogram panel: bars per bin for one or more series, overlaid.
pub struct HistPanel {
    /// Panel title.
    pub title: String,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// Bin edges, ascending: one more than the bins (> 0 everywhere with `log_x`).
    pub edges: Vec<f64>,
    /// (legend, count per bin) for each series.
    pub series: Vec<(String, Vec<f64>)>,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis (bins with a zero count are not drawn).
    pub log_y: bool,
}

/// Draw histogram panels side by side into an SVG file. Log axes are drawn in log10
/// coordinates with ticks labelled in the original values.
pub fn plot_histograms(path: &Path, title: &str, panels: &[HistPanel]) -> Result<(), String> {
    if panels.is_empty() {
        return Err("nothing to plot".into());
    }
    let root = SVGBackend::new(path, (560 * panels.len() as u32, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, panel) in areas.iter().zip(panels) {
        draw_histogram(area, panel)?;
    }
    root.present().map_err(|e| e.to_string())
}

fn draw_histogram(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    h: &HistPanel,
) -> Result<(), String> {
    let fx = |x: f64| if h.log_x { x.max(1e-12).log10() } else { x };
    let fy = |y: f64| if h.log_y { y.log10() } else { y };
    let unfx = move |v: f64| if h.log_x { 10f64.powf(v) } else { v };
    let unfy = move |v: f64| if h.log_y { 10f64.powf(v) } else { v };
    if h.edges.len() < 2 {
        return Err("a histogram needs at least one bin".into());
    }
    let (x0, x1) = (fx(h.edges[0]), fx(h.edges[h.edges.len() - 1]));
    let top = h.series.iter().flat_map(|(_, c)| c.iter().copied()).fold(0.0f64, f64::max).max(1.0);
    // Bars start at the axis floor: 0, or 0.5 on a log axis so that a count of 1 shows.
    let floor = if h.log_y { fy(0.5) } else { 0.0 };
    let ceil = if h.log_y { fy(top * 2.0) } else { top * 1.05 };
    let mut chart = ChartBuilder::on(area)
        .caption(&h.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, floor..ceil)
        .map_err(|e| e.to_string())?;
    let label = |v: f64| {
        if v >= 100.0 || v == v.round() {
            format!("{v:.0}")
        } else if v >= 1.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    };
    let xfmt = move |v: &f64| label(unfx(*v));
    let yfmt = move |v: &f64| label(unfy(*v));
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(h.x_label.as_str())
        .y_desc(h.y_label.as_str())
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt);
    // On a log axis, one tick per decade.
    if h.log_x {
        mesh.x_labels((x1 - x0).ceil() as usize + 1);
    }
    if h.log_y {
        mesh.y_labels((ceil - floor).ceil() as usize + 1);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    let palette = [BLUE, RED, GREEN, MAGENTA];
    for (k, (name, counts)) in h.series.iter().enumerate() {
        let color = palette[k % palette.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = counts
            .iter()
            .enumerate()
            .filter(|(i, c)| **c > 0.0 && i + 1 < h.edges.len())
            .map(|(i, c)| {
                Rectangle::new(
                    [(fx(h.edges[i]), floor), (fx(h.edges[i + 1]), fy(*c))],
                    color.mix(0.55).filled(),
                )
            })
            .collect();
        let drawn = chart.draw_series(bars).map_err(|e| e.to_string())?;
        if h.series.len() > 1 {
            drawn.label(name.clone()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.mix(0.55).filled())
            });
        }
    }
    if h.series.len() < 2 {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())
}

/// One chart of a multi-panel plot.
pub struct Panel {
    /// Caption.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

/// Draw `panels` side by side into one SVG file (each as [`plot_lines`] draws one chart).
pub fn plot_panels(path: &Path, panels: &[Panel]) -> Result<(), String> {
    if panels.is_empty() {
        return Err("nothing to plot".into());
    }
    let width = 900 * panels.len() as u32;
    let root = SVGBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(|e| e.to_string())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    draw_lines(area, &panel.title, &panel.x_label, &panel.y_label, &panel.series)
}

/// One line chart into `area`: thin light lines for single runs, thick coloured ones for
/// emphasized series, a legend when any series is named.
fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in series.iter().flat_map(|s| s.points.iter()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err("nothing to plot".into());
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1 * 1.02)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|e| e.to_string())?;
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let mut k = 0;
    let mut legend = false;
    for s in series {
        let color = if s.emphasized {
            k += 1;
            palette[(k - 1) % palette.len()]
        } else {
            RGBColor(170, 170, 200)
        };
        let style = if s.emphasized { color.stroke_width(3) } else { color.stroke_width(1) };
        let drawn =
            chart.draw_series(LineSeries::new(s.points.iter().copied(), style)).map_err(|e| e.to_string())?;
        if !s.name.is_empty() {
            legend = true;
            drawn
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        let xs = [3.0, 1.0, 2.0, 4.0];
        assert_eq!(mean(&xs), 2.5);
        assert_eq!(percentile(&xs, 50.0), 2.0);
        assert_eq!(percentile(&xs, 99.0), 4.0);
        assert_eq!(percentile(&xs, 0.0), 1.0);
        assert!((std_err(&xs) - (1.6667f64 / 4.0).sqrt()).abs() < 1e-3);
        assert_eq!(round(1.23456, 2), 1.23);
    }

    #[test]
    fn parallel_runs_keep_run_order() {
        let out = parallel_runs(17, 4, &Progress::silent(), |r| r * r);
        assert_eq!(out, (0..17).map(|r| r * r).collect::<Vec<_>>());
    }
}
