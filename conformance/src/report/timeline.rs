//! A scenario's timeline: what happened to a deployment and its traffic while the scenario
//! changed the system, drawn as an inline SVG picture.
//!
//! The picture has two bands over one time axis (seconds from the scenario's start):
//!
//! - on top, the replicas of the monitored deployment that were *available*, sampled a few
//!   times a second, as a step line, with the number of versions running at once beneath
//!   it when that was more than one;
//! - below, the requests of the traffic generator, in bins of equal width: a bar per bin,
//!   its answered requests stacked by the version that answered, its failed requests in
//!   red on top;
//! - every change the scenario made (its `When` steps) is a dashed vertical line across
//!   both, numbered; a fault's line is red. The page lists the numbers with what each was.
//!
//! It is plain SVG (no script, no external style), so the report stays one file that
//! opens offline; the same data is in `summary.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// The most bins the requests are put in; the width of a bin follows from the span.
const MAX_BINS: f64 = 160.0;

/// The narrowest bin, in seconds.
const MIN_BIN_SECONDS: f64 = 0.25;

/// Width of the picture, in pixels.
const WIDTH: f64 = 760.0;

/// Left margin (axis labels).
const LEFT: f64 = 46.0;

/// Right margin.
const RIGHT: f64 = 12.0;

/// Height of the availability band.
const AVAILABILITY_HEIGHT: f64 = 70.0;

/// Height of the requests band.
const REQUESTS_HEIGHT: f64 = 60.0;

/// The colour of failed requests and faults.
const FAILED: &str = "#c62828";

/// Colours for the versions that answered, in order of first appearance.
const VERSION_COLOURS: [&str; 5] = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f"];

/// One look at the deployment's replicas.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AvailabilityPoint {
    /// Seconds from the scenario's start.
    pub at: f64,
    /// Replicas available (ready long enough, not being deleted).
    pub available: usize,
    /// Distinct versions (templates) running at that moment.
    pub versions: usize,
}

/// The requests of one bin of time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RequestBin {
    /// Seconds from the scenario's start to the bin's start.
    pub from: f64,
    /// Answered requests, by the version that answered.
    pub answered: BTreeMap<String, u32>,
    /// Requests that failed.
    pub failed: u32,
}

/// A change the scenario made to the system: an action of a `When` step, or a fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mark {
    /// Seconds from the scenario's start.
    pub at: f64,
    /// What it was.
    pub what: String,
    /// Whether it was a fault.
    pub fault: bool,
}

/// What a scenario's monitor, traffic and faults saw, over time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timeline {
    /// Seconds the timeline covers, from the scenario's start.
    pub seconds: f64,
    /// The deployment whose replicas were sampled.
    pub deployment: Option<String>,
    /// Its samples, in order.
    pub availability: Vec<AvailabilityPoint>,
    /// The service the traffic went to.
    pub service: Option<String>,
    /// Width of a request bin, in seconds.
    pub bin_seconds: f64,
    /// The requests, binned.
    pub requests: Vec<RequestBin>,
    /// Each failed request's time and error, in order.
    pub failures: Vec<(f64, String)>,
    /// The changes made, faults included, in order.
    pub marks: Vec<Mark>,
}

impl Timeline {
    /// A timeline over `seconds`, with requests binned from `(at, version or None for a
    /// failure, error)` triples.
    pub fn new(
        seconds: f64,
        requests: impl IntoIterator<Item = (f64, Result<String, String>)>,
    ) -> Self {
        let bin_seconds = (seconds / MAX_BINS).max(MIN_BIN_SECONDS);
        let mut bins: Vec<RequestBin> = Vec::new();
        let mut failures = Vec::new();
        for (at, outcome) in requests {
            let index = (at.max(0.0) / bin_seconds) as usize;
            while bins.len() <= index {
                let from = bins.len() as f64 * bin_seconds;
                bins.push(RequestBin {
                    from,
                    ..RequestBin::default()
                });
            }
            let bin = &mut bins[index];
            match outcome {
                Ok(version) => *bin.answered.entry(version).or_default() += 1,
                Err(error) => {
                    bin.failed += 1;
                    failures.push((at, error));
                }
            }
        }
        Self {
            seconds,
            bin_seconds,
            requests: bins,
            failures,
            ..Self::default()
        }
    }

    /// Whether there is anything to draw: marks alone are not worth a picture.
    pub fn is_empty(&self) -> bool {
        self.availability.is_empty() && self.requests.is_empty()
    }

    /// Adds a change, keeping the marks in time order.
    pub fn mark(&mut self, mark: Mark) {
        let at = self.marks.partition_point(|other| other.at <= mark.at);
        self.marks.insert(at, mark);
    }

    /// The versions that answered, in order of first appearance.
    pub fn versions(&self) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        for bin in &self.requests {
            for version in bin.answered.keys() {
                if !versions.contains(version) {
                    versions.push(version.clone());
                }
            }
        }
        versions
    }

    /// The picture, as an `<svg>` element to put inline in a page.
    pub fn svg(&self) -> String {
        let span = self.seconds.max(1.0);
        let plot = WIDTH - LEFT - RIGHT;
        let x = |at: f64| LEFT + (at.clamp(0.0, span) / span) * plot;
        let has_requests = !self.requests.is_empty();
        let top = 18.0;
        let requests_top = top + AVAILABILITY_HEIGHT + 16.0;
        let axis_y = if has_requests {
            requests_top + REQUESTS_HEIGHT
        } else {
            top + AVAILABILITY_HEIGHT
        };
        let height = axis_y + 34.0;
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="10">"#
        );
        // The availability band.
        let most = self
            .availability
            .iter()
            .map(|point| point.available)
            .max()
            .unwrap_or(0)
            .max(1);
        let y_available = |available: usize| {
            top + AVAILABILITY_HEIGHT - (available as f64 / most as f64) * AVAILABILITY_HEIGHT
        };
        let _ = write!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{plot}" height="{AVAILABILITY_HEIGHT}" fill="#f5f7fa"/>"##
        );
        let label = match &self.deployment {
            Some(deployment) => format!("available replicas of {}", escape(deployment)),
            None => "no deployment monitored".to_owned(),
        };
        let _ = write!(
            svg,
            r##"<text x="{LEFT}" y="{}" fill="#333">{label}</text>"##,
            top - 5.0
        );
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#555">{most}</text><text x="{}" y="{}" text-anchor="end" fill="#555">0</text>"##,
            LEFT - 4.0,
            top + 8.0,
            LEFT - 4.0,
            top + AVAILABILITY_HEIGHT
        );
        if !self.availability.is_empty() {
            let mut path = String::new();
            let mut last_y = None;
            for point in &self.availability {
                let (px, py) = (x(point.at), y_available(point.available));
                match last_y {
                    None => {
                        let _ = write!(path, "M{px:.1},{py:.1}");
                    }
                    Some(previous) => {
                        let _ = write!(path, " L{px:.1},{previous:.1} L{px:.1},{py:.1}");
                    }
                }
                last_y = Some(py);
            }
            if let (Some(last), Some(py)) = (self.availability.last(), last_y) {
                let _ = write!(path, " L{:.1},{py:.1}", x(last.at.max(self.seconds)));
            }
            let _ = write!(
                svg,
                r##"<path d="{path}" fill="none" stroke="#1565c0" stroke-width="2"/>"##
            );
            // Moments when more than one version ran at once.
            for point in self.availability.iter().filter(|point| point.versions > 1) {
                let _ = write!(
                    svg,
                    r##"<rect x="{:.1}" y="{:.1}" width="2" height="4" fill="#ef6c00"><title>{} versions running at {:.1} s</title></rect>"##,
                    x(point.at),
                    top + AVAILABILITY_HEIGHT - 4.0,
                    point.versions,
                    point.at
                );
            }
        }
        // The requests band.
        let versions = self.versions();
        if has_requests {
            let most = self
                .requests
                .iter()
                .map(|bin| bin.answered.values().sum::<u32>() + bin.failed)
                .max()
                .unwrap_or(0)
                .max(1);
            let _ = write!(
                svg,
                r##"<rect x="{LEFT}" y="{requests_top}" width="{plot}" height="{REQUESTS_HEIGHT}" fill="#f5f7fa"/>"##
            );
            let service = self
                .service
                .as_deref()
                .map_or_else(|| "a service".to_owned(), escape);
            let _ = write!(
                svg,
                r##"<text x="{LEFT}" y="{}" fill="#333">requests to {service} per {:.2} s</text>"##,
                requests_top - 5.0,
                self.bin_seconds
            );
            let _ = write!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="end" fill="#555">{most}</text>"##,
                LEFT - 4.0,
                requests_top + 8.0
            );
            let bar = (self.bin_seconds / span * plot).max(1.0);
            let scale = REQUESTS_HEIGHT / f64::from(most);
            for bin in &self.requests {
                let mut bottom = requests_top + REQUESTS_HEIGHT;
                let left = x(bin.from);
                for (index, version) in versions.iter().enumerate() {
                    let count = bin.answered.get(version).copied().unwrap_or(0);
                    if count == 0 {
                        continue;
                    }
                    let h = f64::from(count) * scale;
                    bottom -= h;
                    let _ = write!(
                        svg,
                        r#"<rect x="{left:.1}" y="{bottom:.1}" width="{bar:.1}" height="{h:.1}" fill="{}"/>"#,
                        VERSION_COLOURS[index % VERSION_COLOURS.len()]
                    );
                }
                if bin.failed > 0 {
                    let h = (f64::from(bin.failed) * scale).max(2.0);
                    bottom -= h;
                    let _ = write!(
                        svg,
                        r#"<rect x="{left:.1}" y="{bottom:.1}" width="{bar:.1}" height="{h:.1}" fill="{FAILED}"><title>{} failed at {:.1} s</title></rect>"#,
                        bin.failed, bin.from
                    );
                }
            }
        }
        // Changes across both bands, numbered; faults in red.
        for (index, mark) in self.marks.iter().enumerate() {
            let mx = x(mark.at);
            let colour = if mark.fault { FAILED } else { "#555" };
            let _ = write!(
                svg,
                r#"<line x1="{mx:.1}" y1="{top}" x2="{mx:.1}" y2="{axis_y}" stroke="{colour}" stroke-width="1.2" stroke-dasharray="4 3"><title>{}</title></line><text x="{:.1}" y="{}" fill="{colour}" font-weight="bold">{}</text>"#,
                escape(&mark.what),
                mx + 2.0,
                top + 10.0,
                index + 1
            );
        }
        // The time axis.
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#888"/>"##,
            LEFT + plot
        );
        let step = tick_step(span);
        let mut tick = 0.0;
        while tick <= span + 1e-9 {
            let tx = x(tick);
            let _ = write!(
                svg,
                r##"<line x1="{tx:.1}" y1="{axis_y}" x2="{tx:.1}" y2="{}" stroke="#888"/><text x="{tx:.1}" y="{}" text-anchor="middle" fill="#555">{tick:.0} s</text>"##,
                axis_y + 4.0,
                axis_y + 14.0
            );
            tick += step;
        }
        // The legend.
        let mut lx = LEFT;
        let ly = axis_y + 28.0;
        let mut legend = |colour: &str, text: &str, svg: &mut String| {
            let _ = write!(
                svg,
                r##"<rect x="{lx:.1}" y="{:.1}" width="9" height="9" fill="{colour}"/><text x="{:.1}" y="{ly:.1}" fill="#333">{}</text>"##,
                ly - 8.0,
                lx + 12.0,
                escape(text)
            );
            lx += 22.0 + 6.0 * text.chars().count() as f64;
        };
        if !self.availability.is_empty() {
            legend("#1565c0", "available", &mut svg);
        }
        if self.availability.iter().any(|point| point.versions > 1) {
            legend("#ef6c00", "two versions running", &mut svg);
        }
        for (index, version) in versions.iter().enumerate() {
            legend(
                VERSION_COLOURS[index % VERSION_COLOURS.len()],
                &format!("answered by {version}"),
                &mut svg,
            );
        }
        if has_requests {
            legend(FAILED, "failed", &mut svg);
        }
        svg.push_str("</svg>");
        svg
    }
}

/// A tick spacing that gives between 5 and 12 ticks over `span` seconds.
fn tick_step(span: f64) -> f64 {
    [1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|step| span / step <= 12.0)
        .unwrap_or(600.0)
}

/// Escapes text for XML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_binned_by_time_and_version() {
        let requests = vec![
            (0.1, Ok("v1".to_owned())),
            (0.2, Ok("v1".to_owned())),
            (1.1, Err("refused".to_owned())),
            (1.2, Ok("v2".to_owned())),
        ];
        let timeline = Timeline::new(2.0, requests);
        assert_eq!(timeline.bin_seconds, MIN_BIN_SECONDS);
        assert_eq!(timeline.requests.len(), 5);
        assert_eq!(timeline.requests[0].answered.get("v1"), Some(&2));
        assert_eq!(timeline.requests[4].failed, 1);
        assert_eq!(timeline.requests[4].answered.get("v2"), Some(&1));
        assert_eq!(timeline.failures, [(1.1, "refused".to_owned())]);
        assert_eq!(timeline.versions(), ["v1", "v2"]);
        // A long scenario gets wider bins, never more than MAX_BINS of them.
        let long = Timeline::new(
            400.0,
            (0..4000).map(|i| (f64::from(i) / 10.0, Ok("v1".into()))),
        );
        assert!(long.requests.len() as f64 <= MAX_BINS + 1.0);
    }

    #[test]
    fn the_picture_shows_availability_requests_faults_and_a_legend() {
        let mut timeline = Timeline::new(
            10.0,
            vec![(1.0, Ok("v1".to_owned())), (6.0, Err("reset".to_owned()))],
        );
        timeline.deployment = Some("web".to_owned());
        timeline.service = Some("web<1>".to_owned());
        timeline.availability = vec![
            AvailabilityPoint {
                at: 0.5,
                available: 3,
                versions: 1,
            },
            AvailabilityPoint {
                at: 5.0,
                available: 2,
                versions: 2,
            },
        ];
        timeline.mark(Mark {
            at: 5.5,
            what: "lose node node-2".to_owned(),
            fault: true,
        });
        timeline.mark(Mark {
            at: 0.2,
            what: "When the deployment is scaled".to_owned(),
            fault: false,
        });
        assert_eq!(timeline.marks[0].at, 0.2);
        let svg = timeline.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(svg.contains("available replicas of web"));
        assert!(svg.contains("requests to web&lt;1&gt;"), "escaped: {svg}");
        assert!(svg.contains("lose node node-2"));
        assert!(svg.contains("answered by v1"));
        assert!(svg.contains("1 failed at"));
        assert!(svg.contains("2 versions running at 5.0 s"));
        assert!(svg.contains("two versions running"));
    }

    #[test]
    fn ticks_stay_few() {
        assert_eq!(tick_step(10.0), 1.0);
        assert_eq!(tick_step(60.0), 5.0);
        assert_eq!(tick_step(3000.0), 300.0);
    }
}
