//! Traffic graphs as SVG laid out on the server: one panel per link, a line for bytes received
//! and one for bytes sent, a rate axis and a time axis. The same markup is served alone
//! (`/graph.svg`) and inline in a page; without data a panel says "no data yet".
//!
//! The caller gives rates per interval ([`Step`]); this module only scales and draws them.
//! Received is a solid line, sent a dashed one, and a legend names both: the two are told apart
//! without colour.

use askama::Template;

use crate::format;

/// A rate held over one interval, e.g. between two counter samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Unix time the interval starts.
    pub start: u64,
    /// Unix time the interval ends (after `start`).
    pub end: u64,
    pub bytes_per_second: f64,
}

/// One link's traffic: the data of one panel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Panel {
    /// What the panel shows, e.g. `inside (protected computer): lan0`.
    pub title: String,
    /// Oldest first.
    pub received: Vec<Step>,
    /// Oldest first.
    pub sent: Vec<Step>,
}

/// An SVG traffic graph, laid out and ready to render (`render()`, or `{{ graph|safe }}` in a
/// template: the graph's own text is escaped when it renders).
#[derive(Debug, Clone, Template)]
#[template(path = "graph.svg")]
pub struct TrafficGraph {
    id: String,
    title: String,
    description: String,
    height: f64,
    panels: Vec<PanelLayout>,
}

#[derive(Debug, Clone)]
struct PanelLayout {
    title: Option<String>,
    /// The plot's top edge; everything else in the panel is placed relative to it.
    top: f64,
    ticks: Vec<Tick>,
    start_label: String,
    end_label: String,
    lines: Vec<Line>,
}

#[derive(Debug, Clone)]
struct Tick {
    y: f64,
    label: String,
}

#[derive(Debug, Clone)]
struct Line {
    /// `rx` or `tx`: the page's stylesheet recolours by class (dark mode).
    class: &'static str,
    points: String,
}

// Geometry, in SVG user units. 360 wide: on a phone the graph is drawn about 1:1, so 12-unit
// text stays readable.
// The template reads these as `crate::graph::NAME`.
pub(crate) const WIDTH: f64 = 360.0;
pub(crate) const PLOT_LEFT: f64 = 72.0;
pub(crate) const PLOT_RIGHT: f64 = 352.0;
const TITLE_HEIGHT: f64 = 24.0;
pub(crate) const LEGEND_HEIGHT: f64 = 24.0;
pub(crate) const PLOT_HEIGHT: f64 = 96.0;
const AXIS_HEIGHT: f64 = 24.0;
const PANEL_GAP: f64 = 14.0;
/// The rate axis never tops out below this, so an idle link draws a flat line at the bottom
/// rather than noise blown up to full height.
const MIN_SCALE: f64 = 1000.0;

impl TrafficGraph {
    /// Lays out `panels` one under another on a shared time axis. `id` prefixes the element ids
    /// (unique per page); `title` is the accessible name; `titled` draws each panel's title
    /// (leave it off where the page already heads the graph).
    pub fn new(id: &str, title: &str, panels: &[Panel], titled: bool) -> TrafficGraph {
        // Nothing to show is still a graph: one empty panel.
        let placeholder = [Panel::default()];
        let panels = if panels.is_empty() {
            &placeholder[..]
        } else {
            panels
        };
        let steps = || panels.iter().flat_map(|p| p.received.iter().chain(&p.sent));
        let span = steps()
            .map(|s| s.start)
            .min()
            .zip(steps().map(|s| s.end).max());
        let mut top = 0.0;
        let mut layouts = Vec::with_capacity(panels.len());
        let mut descriptions = Vec::with_capacity(panels.len());
        for panel in panels {
            let title_height = if titled { TITLE_HEIGHT } else { 0.0 };
            let plot_top = top + title_height + LEGEND_HEIGHT;
            layouts.push(PanelLayout {
                title: Some(panel.title.clone()).filter(|t| titled && !t.is_empty()),
                top: plot_top,
                ..lay_out(panel, span)
            });
            descriptions.push(describe(panel));
            top = plot_top + PLOT_HEIGHT + AXIS_HEIGHT + PANEL_GAP;
        }
        let when = match span {
            Some((start, end)) => {
                format!(", {} to {} UTC", format::clock(start), format::clock(end))
            }
            None => String::new(),
        };
        TrafficGraph {
            id: id.to_owned(),
            title: format!("{title}{when}"),
            description: descriptions.join(" "),
            height: (top - PANEL_GAP).max(0.0),
            panels: layouts,
        }
    }
}

/// Ticks, labels and polylines of one panel, positioned relative to its plot's top edge.
fn lay_out(panel: &Panel, span: Option<(u64, u64)>) -> PanelLayout {
    let empty = PanelLayout {
        title: None,
        top: 0.0,
        ticks: Vec::new(),
        start_label: String::new(),
        end_label: String::new(),
        lines: Vec::new(),
    };
    let Some((start, end)) = span.filter(|(start, end)| end > start) else {
        return empty;
    };
    if panel.received.is_empty() && panel.sent.is_empty() {
        return empty;
    }
    let peak = panel
        .received
        .iter()
        .chain(&panel.sent)
        .map(|s| s.bytes_per_second)
        .fold(0.0, f64::max);
    let scale = nice_ceiling(peak.max(MIN_SCALE));
    let x =
        |t: u64| PLOT_LEFT + (t - start) as f64 / (end - start) as f64 * (PLOT_RIGHT - PLOT_LEFT);
    let y = |rate: f64| PLOT_HEIGHT - (rate.max(0.0) / scale).min(1.0) * PLOT_HEIGHT;
    let line = |class, steps: &[Step]| Line {
        class,
        points: steps
            .iter()
            .flat_map(|s| [(s.start, s.bytes_per_second), (s.end, s.bytes_per_second)])
            .map(|(t, rate)| format!("{:.1},{:.1}", x(t.clamp(start, end)), y(rate)))
            .collect::<Vec<_>>()
            .join(" "),
    };
    PanelLayout {
        ticks: [0.0, 0.5, 1.0]
            .into_iter()
            .map(|f| Tick {
                y: y(scale * f),
                label: tick_label(scale * f),
            })
            .collect(),
        start_label: format::clock(start),
        end_label: format!("{} UTC", format::clock(end)),
        lines: vec![line("rx", &panel.received), line("tx", &panel.sent)],
        ..empty
    }
}

/// A round rate without trailing zeros: `2 MB/s`, `2.5 MB/s`.
fn tick_label(rate: f64) -> String {
    let text = format::rate(rate);
    let (number, unit) = text.split_once(' ').unwrap_or((&text, ""));
    let number = if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    };
    format!("{number} {unit}")
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&v| v >= value)
        .unwrap_or(10.0 * magnitude)
}

/// The panel in words, for screen readers: latest and peak rate each way.
fn describe(panel: &Panel) -> String {
    let direction = |name: &str, steps: &[Step]| match steps.last() {
        None => format!("{name}: no data yet"),
        Some(last) => {
            let peak = steps.iter().map(|s| s.bytes_per_second).fold(0.0, f64::max);
            format!(
                "{name} {} now, peak {}",
                format::rate(last.bytes_per_second),
                format::rate(peak)
            )
        }
    };
    format!(
        "{}: {}; {}.",
        panel.title,
        direction("received", &panel.received),
        direction("sent", &panel.sent)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(title: &str, rates: &[f64]) -> Panel {
        let steps: Vec<Step> = rates
            .iter()
            .enumerate()
            .map(|(i, &r)| Step {
                start: 1000 + 5 * i as u64,
                end: 1005 + 5 * i as u64,
                bytes_per_second: r,
            })
            .collect();
        Panel {
            title: title.to_owned(),
            received: steps.clone(),
            sent: steps
                .iter()
                .map(|s| Step {
                    bytes_per_second: s.bytes_per_second / 2.0,
                    ..*s
                })
                .collect(),
        }
    }

    #[test]
    fn scale_rounds_up_to_1_2_5() {
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(nice_ceiling(1001.0), 2000.0);
        assert_eq!(nice_ceiling(3_500.0), 5000.0);
        assert_eq!(nice_ceiling(7_000_000.0), 10_000_000.0);
    }

    #[test]
    fn one_polyline_per_direction_and_panel_in_the_plot() {
        let panels = [panel("a", &[0.0, 4000.0]), panel("b", &[1.0])];
        let svg = TrafficGraph::new("g", "Traffic", &panels, true)
            .render()
            .unwrap();
        assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
        assert!(
            svg.contains(">5 kB/s<") && svg.contains(">2.5 kB/s<"),
            "the scale tops at 5 kB/s: {svg}"
        );
        // Steps: 0 over the first interval, then 4 kB/s (of 5) to the right edge.
        assert!(
            svg.contains("points=\"72.0,96.0 212.0,96.0 212.0,19.2 352.0,19.2\""),
            "{svg}"
        );
        // Panel b shares the time axis: its one interval ends half way.
        assert!(svg.contains("points=\"72.0,95.9 212.0,95.9\""), "{svg}");
    }

    #[test]
    fn no_data_is_a_graph_that_says_so() {
        let svg = TrafficGraph::new("g", "Traffic", &[panel("a", &[])], true)
            .render()
            .unwrap();
        assert!(svg.contains("no data yet"), "{svg}");
        assert!(!svg.contains("<polyline"), "{svg}");
        let none = TrafficGraph::new("g", "Traffic", &[], true)
            .render()
            .unwrap();
        assert!(none.contains("no data yet"), "{none}");
    }

    #[test]
    fn titles_are_escaped() {
        let svg = TrafficGraph::new("g", "<b>", &[panel("<script>", &[1.0])], true)
            .render()
            .unwrap();
        assert!(!svg.contains("<script>") && !svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&#60;script&#62;"), "{svg}");
    }
}
