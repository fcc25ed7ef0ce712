//! A key's history drawn as text: one row per operation, a bar from its call to its
//! return on a shared time axis, what it asked and what it was answered. Under it, the
//! longest order the model accepts and the operation that could not come next. It is
//! what a step prints when a history is not linearizable, so the report shows it as is.

use std::fmt::Write as _;

use super::search::Outcome;
use super::{KeyVerdict, Operation};

/// Width of the time axis, in characters.
const WIDTH: usize = 48;

/// How many operations called before the one that could not come next are drawn.
const BEFORE: usize = 24;

/// How many operations called after it are drawn.
const AFTER: usize = 8;

/// How many steps of the longest order are written out (the last ones).
const ORDER_SHOWN: usize = 16;

/// Draws one key's verdict: around the operation that could not come next, if there is
/// one, else the first operations.
pub fn draw(verdict: &KeyVerdict) -> String {
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
    let mut out = String::new();
    let start = shown.iter().map(|&i| all[i].invoked).min().unwrap_or(0);
    let end = shown
        .iter()
        .map(|&i| all[i].completed.unwrap_or(all[i].invoked))
        .max()
        .unwrap_or(start)
        .max(start + 1);
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
mod tests {
    use super::super::{Input, Output, check};
    use super::*;

    #[test]
    fn a_violation_is_drawn_with_the_operation_that_could_not_come_next() {
        let op = |client, input, output, from: u64, to: u64| Operation {
            client,
            key: "k".into(),
            input,
            output,
            invoked: from * 1000,
            completed: Some(to * 1000),
        };
        let history = [
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
        ];
        let verdict = check(&history);
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
