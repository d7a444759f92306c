//! `fanout-plot CSV SVG`: draws what `bench/fanout.sh` measured, the median wall-clock time of
//! each tool against the number of hosts (both axes logarithmic, so that a tool ten times slower
//! sits a fixed distance above the next and how each grows reads as its slope), with the
//! fastest and slowest run as a bar. Reads only the script's CSV; it never measures anything.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use plotters::prelude::*;

/// One run: a row of `fanout.csv`.
struct Run {
    hosts: u32,
    tool: String,
    wall_s: f64,
}

/// Median, least and most wall-clock seconds of one tool at one host count.
struct Point {
    hosts: f64,
    median: f64,
    least: f64,
    most: f64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [csv, svg] = args.as_slice() else {
        bail!("usage: fanout-plot FANOUT.CSV OUT.SVG (the CSV bench/fanout.sh writes)");
    };
    let text = std::fs::read_to_string(csv).with_context(|| format!("reading {csv}"))?;
    let runs = parse(&text).with_context(|| format!("reading {csv}"))?;
    let series = summarise(&runs);
    draw(Path::new(svg), &series).with_context(|| format!("drawing {svg}"))?;
    eprintln!("wrote {svg}");
    Ok(())
}

fn parse(text: &str) -> anyhow::Result<Vec<Run>> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.starts_with("hosts,tool,run,wall_s") => {}
        _ => bail!("the first line is not bench/fanout.sh's header (hosts,tool,run,wall_s,...)"),
    }
    let mut runs = Vec::new();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let [hosts, tool, _run, wall, ..] = fields.as_slice() else {
            bail!("line {}: expected at least 4 comma-separated fields, got `{line}`", i + 1);
        };
        let hosts = hosts.parse().with_context(|| format!("line {}: hosts `{hosts}`", i + 1))?;
        let wall_s: f64 = wall.parse().with_context(|| format!("line {}: wall_s `{wall}`", i + 1))?;
        if !(wall_s.is_finite() && wall_s >= 0.0) {
            bail!("line {}: wall_s `{wall}` is not a time", i + 1);
        }
        runs.push(Run { hosts, tool: (*tool).to_owned(), wall_s });
    }
    if runs.is_empty() {
        bail!("no runs after the header");
    }
    Ok(runs)
}

fn summarise(runs: &[Run]) -> BTreeMap<String, Vec<Point>> {
    let mut walls: BTreeMap<(&str, u32), Vec<f64>> = BTreeMap::new();
    for run in runs {
        walls.entry((run.tool.as_str(), run.hosts)).or_default().push(run.wall_s);
    }
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for ((tool, hosts), mut times) in walls {
        times.sort_by(f64::total_cmp);
        let k = times.len();
        let median = if k % 2 == 1 { times[k / 2] } else { (times[k / 2 - 1] + times[k / 2]) / 2.0 };
        let point = Point { hosts: f64::from(hosts), median, least: times[0], most: times[k - 1] };
        series.entry(tool.to_owned()).or_default().push(point);
    }
    series
}

fn draw(path: &Path, series: &BTreeMap<String, Vec<Point>>) -> anyhow::Result<()> {
    let points = || series.values().flatten();
    let x_max = points().map(|p| p.hosts).fold(1.0, f64::max) * 1.5;
    let x_min = points().map(|p| p.hosts).fold(f64::INFINITY, f64::min) / 1.5;
    // A floor below the fastest run, so that even a 0 s run has somewhere to sit.
    let y_min = points().map(|p| p.least).fold(f64::INFINITY, f64::min).max(0.001) / 2.0;
    let y_max = points().map(|p| p.most).fold(0.0, f64::max) * 2.0;

    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("one trivial command on N hosts, fan-out 64", ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min..x_max).log_scale(), (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("hosts")
        .y_desc("wall-clock seconds (median; bar: fastest to slowest run)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    for (i, (tool, line)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(line.iter().map(|p| (p.hosts, p.median)), color.stroke_width(2)))?
            .label(tool.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(line.iter().map(|p| Circle::new((p.hosts, p.median), 4, color.filled())))?;
        chart.draw_series(
            line.iter().map(|p| PathElement::new(vec![(p.hosts, p.least), (p.hosts, p.most)], color)),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "hosts,tool,run,wall_s,client_cpu_s,server_cpu_s,hosts_counted,exit\n\
        50,floor,1,0.10,0.1,0,50,0\n50,floor,2,0.30,0.1,0,50,0\n50,floor,3,0.20,0.1,0,50,0\n\
        200,floor,1,0.5,0.1,0,200,0\n";

    #[test]
    fn the_median_and_the_range_of_each_tool_at_each_size() {
        let series = summarise(&parse(CSV).expect("parses"));
        let floor = &series["floor"];
        assert_eq!(floor.len(), 2);
        assert_eq!((floor[0].hosts, floor[0].median, floor[0].least, floor[0].most), (50.0, 0.2, 0.1, 0.3));
        assert_eq!(floor[1].median, 0.5);
    }

    #[test]
    fn a_file_that_is_not_the_scripts_says_what_is_wrong() {
        let err = parse("a,b\n").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("header"), "{err}");
        let err = parse("hosts,tool,run,wall_s\n50,floor,1,soon\n").err().map(|e| format!("{e:#}"));
        assert!(err.is_some_and(|e| e.contains("line 2: wall_s `soon`")));
        let err = parse("hosts,tool,run,wall_s\n50,floor,1,-1\n").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("not a time")));
    }

    #[test]
    fn the_chart_is_written_as_svg() {
        let dir = std::env::temp_dir().join(format!("fanout-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let svg = dir.join("fanout.svg");
        draw(&svg, &summarise(&parse(CSV).expect("parses"))).expect("drawn");
        let text = std::fs::read_to_string(&svg).expect("written");
        assert!(text.starts_with("<svg") && text.contains("floor"), "{}", &text[..text.len().min(200)]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
