//! How the policy master's history is shown for `cohort status --global --history`: the syncs of a
//! span as two plain-text tables (one row per sync by local server; the fleet's figures by platform
//! as they stood after each sync), and the same span drawn as an SVG (compliance and threats over
//! time, one line per local, nested ones included, and one for the whole fleet). It owns only the wording, the layout and
//! the drawing: the points come already fetched and in time order, and it never talks to the
//! master, never filters or reorders points, and writes no file but the plot it is asked for.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use anyhow::{Context, bail};
use cohort_core::exec::audit_view::utc_text;
use cohort_core::policy::report::PlatformCounts;
use cohort_core::policy::wire::HistoryPoint;
use plotters::coord::Shift;
use plotters::prelude::*;

/// What is said, in the table and in the plot's error, when a span holds no sync.
const NOTHING: &str = "no syncs were recorded in that span";

/// The syncs of a span as text: a table by local server, then the fleet by platform over time.
pub fn render_history(points: &[HistoryPoint]) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return format!("{NOTHING}\n");
    };
    let mut out = format!(
        "{} sync{} from {} to {}\n",
        points.len(),
        if points.len() == 1 { "" } else { "s" },
        utc_text(first.at.0),
        utc_text(last.at.0)
    );

    out.push_str("\nby local server (a nested local's agents under its own name)\n");
    let rows: Vec<Vec<String>> = points
        .iter()
        .flat_map(HistoryPoint::by_reporting_local)
        .map(|p| {
            vec![
                utc_text(p.at.0),
                p.local.clone(),
                p.counts.agents.to_string(),
                p.counts.compliant.to_string(),
                compliance_text(&p.counts),
                p.counts.threats.to_string(),
                p.silent.to_string(),
            ]
        })
        .collect();
    use Align::{Left, Right};
    table(
        &mut out,
        &[
            ("time", Left),
            ("local", Left),
            ("agents", Right),
            ("clean", Right),
            ("compliance", Right),
            ("threats", Right),
            ("silent", Right),
        ],
        &rows,
    );

    out.push_str("\nby platform (every local's latest sync, summed)\n");
    let mut fleet = Fleet::default();
    let mut rows = Vec::new();
    for p in points {
        fleet.record(p);
        let when = utc_text(p.at.0);
        for (platform, c) in fleet.by_platform() {
            rows.push(vec![
                when.clone(),
                platform.to_owned(),
                c.agents.to_string(),
                c.compliant.to_string(),
                compliance_text(&c),
                c.threats.to_string(),
            ]);
        }
    }
    if rows.is_empty() {
        out.push_str("  no sync in that span reported figures by platform\n");
    } else {
        table(
            &mut out,
            &[
                ("time", Left),
                ("platform", Left),
                ("agents", Right),
                ("clean", Right),
                ("compliance", Right),
                ("threats", Right),
            ],
            &rows,
        );
    }
    out
}

/// Draws the span as an SVG at `path`: compliance (top) and threats (bottom) over time, one line
/// per local, and the whole fleet's compliance as "all locals". Syncs that measured no check leave
/// no compliance mark (they still count in the threats panel).
pub fn plot_history(points: &[HistoryPoint], path: &Path) -> anyhow::Result<()> {
    let Some(first) = points.first() else {
        bail!("nothing to plot in {}: {NOTHING}", path.display());
    };
    let start = first.at.0;
    let span_ms = points.iter().map(|p| p.at.0.saturating_sub(start)).max().unwrap_or(0);
    let (unit_ms, unit) = time_unit(span_ms);
    let x = |p: &HistoryPoint| p.at.0.saturating_sub(start) as f64 / unit_ms;

    let split: Vec<HistoryPoint> = points.iter().flat_map(HistoryPoint::by_reporting_local).collect();
    let mut by_local: BTreeMap<&str, Vec<&HistoryPoint>> = BTreeMap::new();
    for p in &split {
        by_local.entry(p.local.as_str()).or_default().push(p);
    }
    let mut compliance = Vec::new();
    let mut threats = Vec::new();
    for (i, (local, syncs)) in by_local.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        compliance.push(Series {
            name: (*local).to_owned(),
            color,
            width: 2,
            points: syncs
                .iter()
                .filter(|p| p.counts.checks > 0)
                .map(|p| (x(p), p.counts.compliance_pct()))
                .collect(),
        });
        threats.push(Series {
            name: (*local).to_owned(),
            color,
            width: 2,
            points: syncs.iter().map(|p| (x(p), p.counts.threats as f64)).collect(),
        });
    }
    let mut fleet = Fleet::default();
    let mut all = Vec::new();
    for p in points {
        fleet.record(p);
        let total = fleet.total();
        if total.checks > 0 {
            all.push((x(p), total.compliance_pct()));
        }
    }
    compliance.push(Series { name: "all locals".to_owned(), color: BLACK.to_rgba(), width: 3, points: all });

    let x_max = (span_ms as f64 / unit_ms).max(1.0);
    let threat_max = threats.iter().flat_map(|s| s.points.iter().map(|&(_, y)| y)).fold(0.0, f64::max);
    let x_desc = format!("{unit} since {}", utc_text(start));
    draw(path, &x_desc, x_max, &compliance, &threats, (threat_max * 1.1).max(1.0))
        .with_context(|| format!("drawing the history plot {}", path.display()))
}

/// Each local's latest sync, as the points are walked in order: the fleet as the master saw it.
#[derive(Debug, Default)]
struct Fleet<'a> {
    latest: BTreeMap<&'a str, &'a HistoryPoint>,
}

impl<'a> Fleet<'a> {
    fn record(&mut self, p: &'a HistoryPoint) {
        self.latest.insert(p.local.as_str(), p);
    }

    /// Every platform summed over the locals' latest syncs.
    fn by_platform(&self) -> BTreeMap<&'a str, PlatformCounts> {
        let mut sums: BTreeMap<&'a str, PlatformCounts> = BTreeMap::new();
        for p in self.latest.values() {
            for (platform, c) in &p.platforms {
                add(sums.entry(platform.as_str()).or_default(), c);
            }
        }
        sums
    }

    /// The locals' latest totals summed.
    fn total(&self) -> PlatformCounts {
        let mut sum = PlatformCounts::default();
        for p in self.latest.values() {
            add(&mut sum, &p.counts);
        }
        sum
    }
}

fn add(into: &mut PlatformCounts, c: &PlatformCounts) {
    into.agents = into.agents.saturating_add(c.agents);
    into.compliant = into.compliant.saturating_add(c.compliant);
    into.threats = into.threats.saturating_add(c.threats);
    into.checks = into.checks.saturating_add(c.checks);
    into.passed = into.passed.saturating_add(c.passed);
}

/// "93% of 120", or "unmeasured" when no check ran. Rounding never shows 100% while a check failed,
/// nor 0% while one passed.
fn compliance_text(c: &PlatformCounts) -> String {
    if c.checks == 0 {
        return "unmeasured".to_owned();
    }
    let mut pct = c.compliance_pct().round();
    if c.passed < c.checks {
        pct = pct.min(99.0);
    }
    if c.passed > 0 {
        pct = pct.max(1.0);
    }
    format!("{pct:.0}% of {}", c.checks)
}

#[derive(Debug, Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Appends a table: a header line, then the rows, each column as wide as its widest cell.
fn table(out: &mut String, columns: &[(&str, Align)], rows: &[Vec<String>]) {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (head, _))| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|cell| cell.chars().count())
                .fold(head.chars().count(), usize::max)
        })
        .collect();
    let header: Vec<String> = columns.iter().map(|(head, _)| (*head).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for ((cell, (_, align)), width) in row.iter().zip(columns).zip(&widths) {
            line.push_str(if line.is_empty() { "  " } else { " " });
            match align {
                Align::Left => line.push_str(&format!("{cell:<width$}")),
                Align::Right => line.push_str(&format!("{cell:>width$}")),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The x axis unit for a span: milliseconds per unit and its name.
fn time_unit(span_ms: u64) -> (f64, &'static str) {
    const MINUTE: u64 = 60_000;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    if span_ms <= 2 * MINUTE {
        (1_000.0, "seconds")
    } else if span_ms <= 2 * HOUR {
        (MINUTE as f64, "minutes")
    } else if span_ms <= 2 * DAY {
        (HOUR as f64, "hours")
    } else {
        (DAY as f64, "days")
    }
}

/// One labelled line of a panel.
#[derive(Debug)]
struct Series {
    name: String,
    color: RGBAColor,
    width: u32,
    points: Vec<(f64, f64)>,
}

fn draw(
    path: &Path,
    x_desc: &str,
    x_max: f64,
    compliance: &[Series],
    threats: &[Series],
    threat_max: f64,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    panel(
        &top,
        "compliance %",
        "compliance (% of checks passed)",
        x_desc,
        0.0..x_max,
        0.0..100.0,
        compliance,
    )?;
    panel(
        &bottom,
        "threats",
        "threats (failed high-severity checks)",
        x_desc,
        0.0..x_max,
        0.0..threat_max,
        threats,
    )?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    y_desc: &str,
    x_desc: &str,
    x: Range<f64>,
    y: Range<f64>,
    series: &[Series],
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&whole)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(s.width)))?
            .label(s.name.as_str())
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], color.stroke_width(2)));
        // Marks too, so a local that synced once is still seen.
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// A y tick's label: whole numbers only (percent and threat counts have no useful fractions).
fn whole(v: &f64) -> String {
    if v.fract().abs() < 1e-9 { format!("{v:.0}") } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::WallClock;

    /// 2026-01-01 00:00:00 UTC.
    const T0: u64 = 1_767_225_600_000;
    const WEB: &str = "linux/12/web";
    const DB: &str = "linux/12/db";

    fn counts(agents: u64, compliant: u64, threats: u64, checks: u64, passed: u64) -> PlatformCounts {
        PlatformCounts { agents, compliant, threats, checks, passed }
    }

    fn point(minute: u64, local: &str, silent: u64, web: PlatformCounts, db: PlatformCounts) -> HistoryPoint {
        let mut total = PlatformCounts::default();
        add(&mut total, &web);
        add(&mut total, &db);
        HistoryPoint {
            at: WallClock(T0 + minute * 60_000),
            local: local.to_owned(),
            counts: total,
            silent,
            platforms: [(WEB.to_owned(), web), (DB.to_owned(), db)].into_iter().collect(),
            locals: BTreeMap::new(),
        }
    }

    #[test]
    fn a_nested_local_gets_a_line_and_rows_of_its_own() {
        let web = PlatformCounts { agents: 2, compliant: 1, threats: 1, checks: 4, passed: 3 };
        let mut synced = point(0, "local-00", 0, web, PlatformCounts::default());
        synced.locals = [("local-00".to_owned(), web), ("local-02".to_owned(), web)].into_iter().collect();
        let points: Vec<HistoryPoint> =
            (0..3).map(|m| HistoryPoint { at: WallClock(T0 + m * 60_000), ..synced.clone() }).collect();
        let text = render_history(&points);
        assert_eq!(text.lines().filter(|l| l.contains("local-02")).count(), 3, "{text}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested.svg");
        plot_history(&points, &path).expect("plots");
        let svg = std::fs::read_to_string(&path).expect("reads");
        let doc = roxmltree::Document::parse(&svg).expect("parses");
        assert!(doc.descendants().filter_map(|n| n.text()).any(|t| t.trim() == "local-02"), "{svg}");
    }

    fn points() -> Vec<HistoryPoint> {
        vec![
            // totals 15 agents, 13 clean, 1 threat, 112 of 120 checks passed
            point(0, "local-00", 2, counts(10, 8, 1, 100, 92), counts(5, 5, 0, 20, 20)),
            // totals 10, 7, 2, 85 of 100
            point(1, "local-01", 0, counts(4, 4, 0, 40, 40), counts(6, 3, 2, 60, 45)),
            // totals 15, 13, 0, 116 of 120
            point(2, "local-00", 1, counts(10, 9, 0, 100, 97), counts(5, 4, 0, 20, 19)),
            // nothing measured
            point(3, "local-01", 3, counts(4, 0, 0, 0, 0), counts(6, 0, 0, 0, 0)),
            // totals 16, 15, 1, 120 of 130
            point(4, "local-00", 0, counts(11, 10, 1, 110, 100), counts(5, 5, 0, 20, 20)),
            // totals 10, 10, 0, 100 of 100
            point(5, "local-01", 0, counts(4, 4, 0, 40, 40), counts(6, 6, 0, 60, 60)),
        ]
    }

    /// The text's lines with runs of blanks squeezed, so rows compare without column widths.
    fn squeezed(text: &str) -> Vec<String> {
        text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
    }

    fn section<'a>(text: &'a str, title: &str) -> &'a str {
        let start = text.find(title).expect("section present");
        let rest = &text[start..];
        rest.find("\n\n").map_or(rest, |end| &rest[..end])
    }

    #[test]
    fn tables_by_local_and_by_platform() {
        let text = render_history(&points());
        print!("{text}");
        assert!(text.starts_with("6 syncs from 2026-01-01T00:00:00Z to 2026-01-01T00:05:00Z\n"));

        let by_local = squeezed(section(&text, "by local server"));
        assert_eq!(by_local[1], "time local agents clean compliance threats silent");
        assert_eq!(by_local.len(), 2 + 6);
        for row in [
            "2026-01-01T00:00:00Z local-00 15 13 93% of 120 1 2",
            "2026-01-01T00:01:00Z local-01 10 7 85% of 100 2 0",
            "2026-01-01T00:02:00Z local-00 15 13 97% of 120 0 1",
            "2026-01-01T00:03:00Z local-01 10 0 unmeasured 0 3",
            "2026-01-01T00:04:00Z local-00 16 15 92% of 130 1 0",
            "2026-01-01T00:05:00Z local-01 10 10 100% of 100 0 0",
        ] {
            assert!(by_local.iter().any(|l| l == row), "missing {row:?} in {by_local:#?}");
        }

        let by_platform = squeezed(section(&text, "by platform"));
        assert_eq!(by_platform[1], "time platform agents clean compliance threats");
        // Two platforms after each of the six syncs.
        assert_eq!(by_platform.len(), 2 + 12);
        for row in [
            // only local-00 has synced
            "2026-01-01T00:00:00Z linux/12/web 10 8 92% of 100 1",
            "2026-01-01T00:00:00Z linux/12/db 5 5 100% of 20 0",
            // local-00's first sync plus local-01's
            "2026-01-01T00:01:00Z linux/12/db 11 8 81% of 80 2",
            // local-01 measured nothing: only local-00's checks count, all agents do
            "2026-01-01T00:03:00Z linux/12/web 14 9 97% of 100 0",
            // both locals' last syncs
            "2026-01-01T00:05:00Z linux/12/web 15 14 93% of 150 1",
            "2026-01-01T00:05:00Z linux/12/db 11 11 100% of 80 0",
        ] {
            assert!(by_platform.iter().any(|l| l == row), "missing {row:?} in {by_platform:#?}");
        }
    }

    #[test]
    fn columns_line_up() {
        let text = render_history(&points());
        let lines: Vec<&str> = section(&text, "by local server").lines().skip(1).collect();
        let width = lines[0].len();
        assert!(lines.iter().all(|l| l.len() == width), "{lines:#?}");
    }

    #[test]
    fn empty_span_says_so() {
        assert_eq!(render_history(&[]), "no syncs were recorded in that span\n");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("history.svg");
        let err = plot_history(&[], &path).expect_err("nothing to plot");
        assert!(err.to_string().contains("nothing to plot"), "{err:#}");
        assert!(!path.exists());
    }

    #[test]
    fn sums_saturate() {
        let big = counts(u64::MAX, u64::MAX, 1, u64::MAX, u64::MAX);
        let a = point(0, "local-00", 0, big, counts(0, 0, 0, 0, 0));
        let b = point(1, "local-01", 0, big, counts(0, 0, 0, 0, 0));
        let text = render_history(&[a, b]);
        let by_platform = squeezed(section(&text, "by platform"));
        let max = u64::MAX;
        let row = format!("2026-01-01T00:01:00Z linux/12/web {max} {max} 100% of {max} 2");
        assert!(by_platform.contains(&row), "{by_platform:#?}");
        assert!(by_platform.contains(&"2026-01-01T00:01:00Z linux/12/db 0 0 unmeasured 0".to_owned()));
    }

    #[test]
    fn plot_is_svg_naming_every_series() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("history.svg");
        plot_history(&points(), &path).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read plot");
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).map(str::trim).collect();
        for label in [
            "local-00",
            "local-01",
            "all locals",
            "compliance %",
            "threats",
            "minutes since 2026-01-01T00:00:00Z",
        ] {
            assert!(texts.contains(&label), "no text {label:?} in {texts:?}");
        }
        // A mark per sync: on top local-00's 3, local-01's 2 measured and the fleet's 6; below 3 + 3.
        assert_eq!(doc.descendants().filter(|n| n.has_tag_name("circle")).count(), 3 + 2 + 6 + 6);
    }

    #[test]
    fn plot_error_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("no-such-dir").join("history.svg");
        let err = plot_history(&points(), &path).expect_err("unwritable");
        assert!(format!("{err:#}").contains("no-such-dir"), "{err:#}");
    }

    #[test]
    fn one_sync_still_plots() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("one.svg");
        plot_history(&points()[..1], &path).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read plot");
        assert!(svg.contains("seconds since"));
        assert!(svg.contains("<circle"));
    }
}
