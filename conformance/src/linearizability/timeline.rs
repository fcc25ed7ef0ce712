//! A key's history drawn: one row per operation, a bar from its call to its return on a
//! shared time axis, what it asked and what it was answered; then the longest order the
//! model accepts and the operation that could not come next. [`draw`] writes it as text,
//! which a step prints when a history is not linearizable; [`svg`] draws the same as a
//! picture for the report, the accepted order numbered on the bars and the operation that
//! could not come next in red.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::search::Outcome;
use super::{KeyVerdict, Operation, Output};
use crate::report::timeline::escape;

/// Width of the time axis, in characters.
const WIDTH: usize = 48;

/// How many operations called before the one that could not come next are drawn.
const BEFORE: usize = 24;

/// How many operations called after it are drawn.
const AFTER: usize = 8;

/// How many steps of the longest order are written out (the last ones).
const ORDER_SHOWN: usize = 16;

/// The operations drawn of a key's history, and the time they span.
struct Window {
    /// The first and the last drawn.
    first: usize,
    last: usize,
    /// Their indices.
    shown: Vec<usize>,
    /// The earliest call and the latest return among them, in microseconds.
    start: u64,
    end: u64,
    /// The operation that could not come next, if the history is not linearizable.
    stuck: Option<usize>,
}

/// The operations drawn of `verdict`: around the one that could not come next, if there
/// is one, else the first.
fn window(verdict: &KeyVerdict) -> Window {
    let all = &verdict.operations;
    let stuck = match &verdict.outcome {
        Outcome::Violation { stuck, .. } => Some(*stuck),
        _ => None,
    };
    let centre = stuck.unwrap_or(0);
    let first = centre.saturating_sub(BEFORE);
    let last = (centre + AFTER)
        .max(BEFORE + AFTER)
        .min(all.len().saturating_sub(1));
    let shown: Vec<usize> = (first..=last).filter(|&i| i < all.len()).collect();
    let start = shown.iter().map(|&i| all[i].invoked).min().unwrap_or(0);
    let end = shown
        .iter()
        .map(|&i| all[i].completed.unwrap_or(all[i].invoked))
        .max()
        .unwrap_or(start)
        .max(start + 1);
    Window {
        first,
        last,
        shown,
        start,
        end,
        stuck,
    }
}

/// Draws one key's verdict as text: around the operation that could not come next, if
/// there is one, else the first operations.
pub fn draw(verdict: &KeyVerdict) -> String {
    let all = &verdict.operations;
    let Window {
        first,
        last,
        shown,
        start,
        end,
        stuck,
    } = window(verdict);
    let mut out = String::new();
    let column = |t: u64| {
        ((t.saturating_sub(start)) as u128 * (WIDTH as u128 - 1) / (end - start) as u128) as usize
    };
    let _ = writeln!(
        out,
        "key {:?}: {} operations; #{first} to #{last} drawn, from {:.3} s to {:.3} s; \
         # marks the operation that could not come next, ~ an unknown outcome",
        verdict.key,
        all.len(),
        start as f64 / 1e6,
        end as f64 / 1e6,
    );
    for &i in &shown {
        let op = &all[i];
        let from = column(op.invoked);
        let to = op.completed.map_or(WIDTH - 1, column).max(from);
        let fill = if stuck == Some(i) { '#' } else { '=' };
        let bar: String = (0..WIDTH)
            .map(|c| match (c, op.completed) {
                (c, _) if c < from || c > to => ' ',
                (_, None) if c > from => '~',
                _ => fill,
            })
            .collect();
        let _ = writeln!(
            out,
            "  #{i:<3} client {} |{bar}| {}",
            op.client,
            describe(op)
        );
    }
    match &verdict.outcome {
        Outcome::Linearizable(order) => {
            let _ = writeln!(out, "  an order that explains it: {}", numbers(order));
        }
        Outcome::Violation { longest, stuck } => {
            let _ = writeln!(
                out,
                "  longest order the model accepts: {}",
                if longest.is_empty() {
                    "none".to_owned()
                } else {
                    numbers(longest)
                }
            );
            let _ = writeln!(
                out,
                "  after it, #{stuck} ({}) had to come next and cannot: no order explains every answer",
                describe(&all[*stuck])
            );
        }
        Outcome::GaveUp(budget) => {
            let _ = writeln!(
                out,
                "  the search gave up after {budget} states: neither an order nor its absence was shown"
            );
        }
    }
    out
}

fn describe(op: &Operation) -> String {
    format!("{} → {}", op.input, op.output)
}

/// Width of the labels' column of the picture, in pixels.
const LABELS: f64 = 300.0;

/// Width of its time axis, in pixels.
const AXIS: f64 = 560.0;

/// Height of one operation's row, in pixels.
const ROW: f64 = 18.0;

/// Where the first row starts, below the caption and the axis.
const TOP: f64 = 58.0;

/// Draws one key's verdict as an SVG picture, the same operations as [`draw`]: a bar
/// from each call to its return (an unknown outcome runs on, dashed, to the right edge:
/// it may take effect at any time), green for an answer, grey for a refusal; on each bar
/// its place in the longest order the model accepts; the operation that could not come
/// next in red.
pub fn svg(verdict: &KeyVerdict) -> String {
    let all = &verdict.operations;
    let drawn = window(verdict);
    let (start, end, stuck) = (drawn.start, drawn.end, drawn.stuck);
    let shown = &drawn.shown;
    let order: &[usize] = match &verdict.outcome {
        Outcome::Violation { longest, .. } => longest,
        Outcome::Linearizable(order) => order,
        Outcome::GaveUp(_) => &[],
    };
    let place: BTreeMap<usize, usize> =
        order.iter().enumerate().map(|(p, &i)| (i, p + 1)).collect();
    let width = LABELS + AXIS + 16.0;
    let height = TOP + shown.len() as f64 * ROW + 28.0;
    let x = |t: u64| LABELS + t.saturating_sub(start) as f64 * AXIS / (end - start) as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"history\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" font-family=\"monospace\" font-size=\"11\" role=\"img\">"
    );
    let _ = write!(
        out,
        "<text x=\"4\" y=\"14\" font-weight=\"bold\">key {}: {} operations, #{first} to #{last} drawn</text>\
         <text x=\"4\" y=\"28\" fill=\"#555\">bars from call to return; numbers: the longest order the model accepts; red: the operation that could not come next</text>",
        escape(&format!("{:?}", verdict.key)),
        all.len(),
        first = drawn.first,
        last = drawn.last,
    );
    let axis_y = TOP - 6.0;
    let _ = write!(
        out,
        "<line x1=\"{LABELS}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"#999\"/>\
         <text x=\"{LABELS}\" y=\"{}\" fill=\"#555\">{:.3} s</text>\
         <text x=\"{}\" y=\"{}\" fill=\"#555\" text-anchor=\"end\">{:.3} s</text>",
        LABELS + AXIS,
        axis_y - 3.0,
        start as f64 / 1e6,
        LABELS + AXIS,
        axis_y - 3.0,
        end as f64 / 1e6
    );
    for (row, &i) in shown.iter().enumerate() {
        let op = &all[i];
        let y = TOP + row as f64 * ROW;
        let is_stuck = stuck == Some(i);
        let (fill, stroke) = match (is_stuck, &op.output) {
            (true, _) => ("#d33", "#900"),
            (false, Output::Unknown) => ("#fff", "#888"),
            (false, Output::Conflict | Output::AlreadyExists | Output::NotFound) => {
                ("#bbb", "#888")
            }
            (false, _) => ("#7b5", "#484"),
        };
        let from = x(op.invoked);
        let to = match op.completed {
            Some(t) => x(t).max(from + 2.0),
            None => LABELS + AXIS,
        };
        let dash = if op.completed.is_none() {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<g class=\"operation{}\"><title>#{i}, client {}: {}</title>\
             <text x=\"4\" y=\"{}\"{}>#{i} c{} {}</text>\
             <rect x=\"{from:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"{fill}\" stroke=\"{stroke}\"{dash}/>",
            if is_stuck { " stuck" } else { "" },
            op.client,
            escape(&describe(op)),
            y + 12.0,
            if is_stuck {
                " fill=\"#c00\" font-weight=\"bold\""
            } else {
                ""
            },
            op.client,
            escape(&describe(op)),
            y + 3.0,
            to - from,
            ROW - 6.0,
        );
        if let Some(place) = place.get(&i) {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"9\">{place}</text>",
                from + 2.0,
                y + 12.0
            );
        }
        out.push_str("</g>");
    }
    let verdict_line = match &verdict.outcome {
        Outcome::Linearizable(_) => "an order explains every answer".to_owned(),
        Outcome::Violation { stuck, .. } => format!(
            "after the numbered order, #{stuck} ({}) had to come next and cannot: no order explains every answer",
            describe(&all[*stuck])
        ),
        Outcome::GaveUp(budget) => {
            format!("the search gave up after {budget} states")
        }
    };
    let _ = write!(
        out,
        "<text x=\"4\" y=\"{}\">{}</text></svg>",
        height - 10.0,
        escape(&verdict_line)
    );
    out
}

/// An order as `#0 → #2 → #1`, its last [`ORDER_SHOWN`] steps only.
fn numbers(order: &[usize]) -> String {
    let skipped = order.len().saturating_sub(ORDER_SHOWN);
    let steps: Vec<String> = order[skipped..].iter().map(|i| format!("#{i}")).collect();
    if skipped == 0 {
        steps.join(" → ")
    } else {
        format!("({skipped} earlier) → {}", steps.join(" → "))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{Input, Output, check};
    use super::*;

    /// A stale read: "a" created, updated to "b", then "a" read, each call after the one
    /// before returned.
    pub(crate) fn stale_read_after_an_update() -> Vec<Operation> {
        let op = |client, input, output, from: u64, to: u64| Operation {
            client,
            key: "k".into(),
            input,
            output,
            invoked: from * 1000,
            completed: Some(to * 1000),
        };
        vec![
            op(0, Input::Create("a".into()), Output::Created, 0, 10),
            op(
                0,
                Input::Update {
                    from: "a".into(),
                    to: "b".into(),
                },
                Output::Updated,
                20,
                30,
            ),
            op(1, Input::Read, Output::Value(Some("a".into())), 40, 50),
        ]
    }

    #[test]
    fn a_violation_is_drawn_with_the_operation_that_could_not_come_next() {
        let verdict = check(&stale_read_after_an_update());
        let text = draw(&verdict.keys[0]);
        assert!(
            text.contains("longest order the model accepts: #0 → #1"),
            "{text}"
        );
        assert!(
            text.contains("#2 (read → \"a\") had to come next"),
            "{text}"
        );
        let stuck_row = text.lines().find(|l| l.starts_with("  #2 ")).expect("row");
        assert!(
            stuck_row.contains('#') && stuck_row.contains("###"),
            "{text}"
        );
    }

    #[test]
    fn a_violation_is_pictured_with_the_accepted_order_and_the_operation_in_red() {
        let mut history = stale_read_after_an_update();
        history.insert(
            2,
            Operation {
                client: 2,
                key: "k".into(),
                input: Input::Delete,
                output: Output::Unknown,
                invoked: 25_000,
                completed: None,
            },
        );
        let verdict = check(&history);
        let picture = svg(&verdict.keys[0]);
        assert!(picture.starts_with("<svg") && picture.ends_with("</svg>"));
        assert_eq!(picture.matches("<rect").count(), 4, "{picture}");
        assert_eq!(picture.matches("class=\"operation stuck\"").count(), 1);
        let stuck = picture
            .split("<g class=")
            .find(|g| g.starts_with("\"operation stuck\""))
            .expect("the stuck operation");
        assert!(stuck.contains("#3 c1 read → &quot;a&quot;"), "{stuck}");
        assert!(stuck.contains("fill=\"#d33\""), "{stuck}");
        let unknown = picture
            .split("<g class=")
            .find(|g| g.contains("#2 c2"))
            .expect("the unknown delete");
        assert!(unknown.contains("stroke-dasharray"), "{unknown}");
        assert!(
            picture.contains("#3 (read → &quot;a&quot;) had to come next"),
            "{picture}"
        );
    }

    #[test]
    fn a_long_history_is_drawn_around_the_violation() {
        let mut history: Vec<Operation> = vec![Operation {
            client: 0,
            key: "k".into(),
            input: Input::Create("a".into()),
            output: Output::Created,
            invoked: 0,
            completed: Some(1),
        }];
        for i in 1..100u64 {
            let output = Output::Value(Some(if i == 80 { "b" } else { "a" }.into()));
            history.push(Operation {
                client: 1,
                key: "k".into(),
                input: Input::Read,
                output,
                invoked: i * 10,
                completed: Some(i * 10 + 5),
            });
        }
        let verdict = check(&history);
        let text = draw(&verdict.keys[0]);
        assert!(text.contains("100 operations; #56 to #88 drawn"), "{text}");
        assert_eq!(
            text.lines().filter(|l| l.contains(" client ")).count(),
            33,
            "{text}"
        );
        assert!(text.contains("(64 earlier) → #64"), "{text}");
        assert!(
            text.contains("#80 (read → \"b\") had to come next"),
            "{text}"
        );
    }
}
