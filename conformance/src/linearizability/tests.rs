//! The checker must say "not linearizable" when it is so: each broken history here is one
//! a real fault produces, planted by hand.

use super::model::{Input, Output, State, step};
use super::search::Outcome;
use super::*;

/// An operation of client `client` on key `k`, called at `from` ms and returning at `to`
/// ms (`None`: unknown).
fn op(client: usize, input: Input, output: Output, from: u64, to: Option<u64>) -> Operation {
    Operation {
        client,
        key: "k".into(),
        input,
        output,
        invoked: from * 1000,
        completed: to.map(|t| t * 1000),
    }
}

fn create(v: &str) -> Input {
    Input::Create(v.into())
}

fn update(from: &str, to: &str) -> Input {
    Input::Update {
        from: from.into(),
        to: to.into(),
    }
}

fn seen(v: &str) -> Output {
    Output::Value(Some(v.into()))
}

#[test]
fn a_sequential_history_the_model_accepts_is_linearizable() {
    let history = [
        op(0, create("a"), Output::Created, 0, Some(1)),
        op(1, Input::Read, seen("a"), 2, Some(3)),
        op(0, update("a", "b"), Output::Updated, 4, Some(5)),
        op(1, update("a", "c"), Output::Conflict, 6, Some(7)),
        op(0, Input::Delete, Output::Deleted, 8, Some(9)),
        op(1, Input::Read, Output::Value(None), 10, Some(11)),
    ];
    let verdict = check(&history);
    assert!(verdict.is_linearizable(), "{verdict:?}");
    assert_eq!(verdict.operations(), 6);
}

#[test]
fn overlapping_operations_may_take_effect_in_either_order() {
    // The read overlaps the update and sees its value before the update returned.
    let history = [
        op(0, create("a"), Output::Created, 0, Some(1)),
        op(0, update("a", "b"), Output::Updated, 2, Some(10)),
        op(1, Input::Read, seen("b"), 3, Some(4)),
        op(2, Input::Read, seen("a"), 3, Some(5)),
    ];
    let verdict = check(&history);
    let Outcome::Linearizable(order) = &verdict.keys[0].outcome else {
        panic!("expected an order: {verdict:?}");
    };
    // The read of "a" must come before the update, the read of "b" after it.
    let position = |i| order.iter().position(|&o| o == i).expect("placed");
    let ops = &verdict.keys[0].operations;
    let index = |client, input: &Input| {
        ops.iter()
            .position(|o| o.client == client && &o.input == input)
            .expect("operation")
    };
    assert!(position(index(2, &Input::Read)) < position(index(0, &update("a", "b"))));
    assert!(position(index(1, &Input::Read)) > position(index(0, &update("a", "b"))));
}

#[test]
fn a_stale_read_after_a_leader_change_is_caught() {
    // The update was acknowledged (by the old leader); a read that starts after it
    // returned (served by a new leader that had not caught up) still sees the old value.
    let history = [
        op(0, create("a"), Output::Created, 0, Some(1)),
        op(0, update("a", "b"), Output::Updated, 2, Some(3)),
        op(1, Input::Read, seen("a"), 5, Some(6)),
    ];
    let verdict = check(&history);
    assert!(!verdict.is_linearizable());
    let Outcome::Violation { longest, stuck } = &verdict.keys[0].outcome else {
        panic!("expected a violation: {verdict:?}");
    };
    assert_eq!(
        longest,
        &vec![0, 1],
        "create then update is the longest order"
    );
    assert_eq!(verdict.keys[0].operations[*stuck].input, Input::Read);
}

#[test]
fn a_lost_update_is_caught() {
    // Two clients read "a" and both compare-and-set from it; both are told they won.
    let history = [
        op(0, create("a"), Output::Created, 0, Some(1)),
        op(1, Input::Read, seen("a"), 2, Some(3)),
        op(2, Input::Read, seen("a"), 2, Some(3)),
        op(1, update("a", "b"), Output::Updated, 4, Some(6)),
        op(2, update("a", "c"), Output::Updated, 5, Some(7)),
    ];
    assert!(!check(&history).is_linearizable());
}

#[test]
fn an_acknowledged_write_lost_in_a_restart_is_caught() {
    let history = [
        op(0, create("a"), Output::Created, 0, Some(1)),
        op(1, Input::Read, Output::Value(None), 5, Some(6)),
    ];
    assert!(!check(&history).is_linearizable());
}

#[test]
fn a_write_with_an_unknown_outcome_may_have_happened_or_not() {
    let maybe = op(0, create("a"), Output::Unknown, 0, None);
    let happened = [maybe.clone(), op(1, Input::Read, seen("a"), 5, Some(6))];
    let did_not = [
        maybe.clone(),
        op(1, Input::Read, Output::Value(None), 5, Some(6)),
    ];
    let both = [
        maybe,
        op(1, Input::Read, Output::Value(None), 5, Some(6)),
        op(1, Input::Read, seen("a"), 7, Some(8)),
    ];
    assert!(check(&happened).is_linearizable());
    assert!(check(&did_not).is_linearizable());
    assert!(check(&both).is_linearizable(), "it may take effect late");
    // But it cannot take effect before it was called.
    let early = [
        op(1, Input::Read, seen("a"), 0, Some(1)),
        op(0, create("a"), Output::Unknown, 2, None),
    ];
    assert!(!check(&early).is_linearizable());
}

#[test]
fn keys_are_judged_apart() {
    let mut good = op(0, create("a"), Output::Created, 0, Some(1));
    good.key = "good".into();
    let mut bad = op(1, Input::Read, seen("never written"), 0, Some(1));
    bad.key = "bad".into();
    let verdict = check(&[good, bad]);
    let failed: Vec<&str> = verdict.failures().map(|k| k.key.as_str()).collect();
    assert_eq!(failed, ["bad"]);
}

#[test]
fn the_search_says_when_it_gave_up() {
    let history: Vec<Operation> = (0..8)
        .map(|i| op(i, Input::Read, Output::Value(None), 0, Some(10)))
        .chain([op(9, Input::Read, seen("x"), 20, Some(21))])
        .collect();
    assert!(matches!(
        check_with_budget(&history, 3).keys[0].outcome,
        Outcome::GaveUp(3)
    ));
}

/// A small deterministic generator, so the random histories are the same on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A history made by running random operations on the model at chosen instants and
/// widening each instant into an interval: linearizable by construction.
fn random_history(rng: &mut Lcg, length: usize) -> Vec<Operation> {
    let mut state: State = None;
    let mut fresh = 0;
    let mut history = Vec::new();
    for i in 0..length {
        let point = 100 + 10 * i as u64;
        fresh += 1;
        let input = match rng.below(4) {
            0 => create(&format!("v{fresh}")),
            1 => Input::Read,
            2 => update(
                state
                    .as_deref()
                    .filter(|_| rng.below(3) > 0)
                    .unwrap_or("v0"),
                &format!("v{fresh}"),
            ),
            _ => Input::Delete,
        };
        let output = [
            Output::Created,
            Output::AlreadyExists,
            Output::Value(state.clone()),
            Output::Updated,
            Output::Conflict,
            Output::NotFound,
            Output::Deleted,
        ]
        .into_iter()
        .find(|output| step(&state, &input, output).is_some())
        .expect("every input has an answer in every state");
        state = step(&state, &input, &output).expect("accepted");
        let before = rng.below(40);
        let after = rng.below(40);
        history.push(Operation {
            client: rng.below(4) as usize,
            key: "k".into(),
            input,
            output,
            invoked: point - before,
            completed: Some(point + after),
        });
    }
    history
}

#[test]
fn random_histories_made_from_the_model_are_linearizable_and_a_forged_read_is_not() {
    let mut rng = Lcg(7);
    for round in 0..200 {
        let mut history = random_history(&mut rng, 12);
        let verdict = check(&history);
        assert!(verdict.is_linearizable(), "round {round}: {verdict:?}");
        // A read answering a value nobody ever wrote cannot be explained.
        if let Some(read) = history.iter_mut().find(|op| op.input == Input::Read) {
            read.output = seen("forged");
            assert!(!check(&history).is_linearizable(), "round {round}");
        }
    }
}
