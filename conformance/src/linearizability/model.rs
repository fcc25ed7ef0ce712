//! The sequential model the histories are checked against: one key of a key-value store
//! that can be created, read, updated with a compare-and-set, and deleted — what a client
//! of the Kubernetes API does to one object.
//!
//! A state is what the key holds: nothing, or a value. The compare-and-set is expressed in
//! values, not resourceVersions: the workload writes a fresh value each time, so "the
//! object is still at the version I read" and "the object still holds the value I read"
//! say the same thing, and the model need not guess the versions the server will pick.

use std::fmt;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Create the key with a value; refused if it exists.
    Create(String),
    /// Read the key.
    Read,
    /// Replace the value, on condition that the key still holds `from` (the value the client
    /// read, and whose version it sends along).
    Update {
        /// The value the client read and based the update on.
        from: String,
        /// The new value.
        to: String,
    },
    /// Delete the key; refused if it does not exist.
    Delete,
}

/// What the system answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The create took effect.
    Created,
    /// The create was refused: the key exists.
    AlreadyExists,
    /// A read answered: the value, or `None` when the key does not exist.
    Value(Option<String>),
    /// The update took effect on the object that was read.
    Updated,
    /// The update took effect, but on a new object of the same name: the key did not exist
    /// and the system created it from the update (Kubernetes does so for some kinds).
    CreatedByUpdate,
    /// The update was refused: the key holds another version than the one read.
    Conflict,
    /// The update or delete was refused: the key does not exist.
    NotFound,
    /// The delete took effect.
    Deleted,
    /// No answer, or an answer that does not tell whether the operation took effect (a
    /// timeout, a reset connection, a server error): it may take effect at any time after
    /// it was invoked, or never.
    Unknown,
}

/// What the key holds.
pub type State = Option<String>;

/// The state after `input` answered with `output` in state `state`, or `None` when the
/// answer is impossible in that state.
pub fn step(state: &State, input: &Input, output: &Output) -> Option<State> {
    use Output as O;
    match (input, output) {
        (Input::Create(value), O::Created) => state.is_none().then(|| Some(value.clone())),
        (Input::Create(_), O::AlreadyExists) => state.is_some().then(|| state.clone()),
        (Input::Create(value), O::Unknown) => Some(state.clone().or_else(|| Some(value.clone()))),
        (Input::Read, O::Value(seen)) => (seen == state).then(|| state.clone()),
        (Input::Read, O::Unknown) => Some(state.clone()),
        (Input::Update { from, to }, O::Updated) => {
            (state.as_ref() == Some(from)).then(|| Some(to.clone()))
        }
        (Input::Update { to, .. }, O::CreatedByUpdate) => state.is_none().then(|| Some(to.clone())),
        (Input::Update { from, .. }, O::Conflict) => state
            .as_ref()
            .is_some_and(|value| value != from)
            .then(|| state.clone()),
        (Input::Update { .. } | Input::Delete, O::NotFound) => {
            state.is_none().then(|| state.clone())
        }
        (Input::Update { from, to }, O::Unknown) => Some(if state.as_ref() == Some(from) {
            Some(to.clone())
        } else {
            state.clone()
        }),
        (Input::Delete, O::Deleted) => state.is_some().then_some(None),
        (Input::Delete, O::Unknown) => Some(None),
        _ => None,
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Create(value) => write!(f, "create {value:?}"),
            Input::Read => write!(f, "read"),
            Input::Update { from, to } => write!(f, "update {from:?} → {to:?}"),
            Input::Delete => write!(f, "delete"),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Created => write!(f, "created"),
            Output::AlreadyExists => write!(f, "already exists"),
            Output::Value(Some(value)) => write!(f, "{value:?}"),
            Output::Value(None) => write!(f, "not found"),
            Output::Updated => write!(f, "updated"),
            Output::CreatedByUpdate => write!(f, "created by the update"),
            Output::Conflict => write!(f, "conflict"),
            Output::NotFound => write!(f, "not found"),
            Output::Deleted => write!(f, "deleted"),
            Output::Unknown => write!(f, "unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(value: &str) -> State {
        Some(value.to_owned())
    }

    #[test]
    fn compare_and_set_takes_effect_only_on_the_value_read() {
        let update = Input::Update {
            from: "a".into(),
            to: "b".into(),
        };
        assert_eq!(step(&some("a"), &update, &Output::Updated), Some(some("b")));
        assert_eq!(step(&some("c"), &update, &Output::Updated), None);
        assert_eq!(
            step(&some("c"), &update, &Output::Conflict),
            Some(some("c"))
        );
        assert_eq!(step(&some("a"), &update, &Output::Conflict), None);
        assert_eq!(step(&None, &update, &Output::Conflict), None);
        assert_eq!(step(&None, &update, &Output::NotFound), Some(None));
    }

    #[test]
    fn an_unknown_outcome_is_whatever_the_state_makes_of_it() {
        let create = Input::Create("a".into());
        assert_eq!(step(&None, &create, &Output::Unknown), Some(some("a")));
        assert_eq!(step(&some("x"), &create, &Output::Unknown), Some(some("x")));
        assert_eq!(
            step(&some("x"), &Input::Delete, &Output::Unknown),
            Some(None)
        );
    }

    #[test]
    fn a_read_must_see_the_state() {
        assert_eq!(
            step(&some("a"), &Input::Read, &Output::Value(Some("a".into()))),
            Some(some("a"))
        );
        assert_eq!(step(&some("a"), &Input::Read, &Output::Value(None)), None);
        assert_eq!(step(&None, &Input::Read, &Output::Value(None)), Some(None));
    }
}
