//! Which part of a collection a list returns, and as of when.
//!
//! - `limit=N` cuts a list after N objects; the list's `metadata.continue` is then a
//!   token for the rest, and `remainingItemCount` says how many objects follow (when no
//!   selector filters them, as Kubernetes does). `continue=TOKEN` returns the next page.
//! - Every page of one list shows the collection as it was when the first page was read:
//!   the token holds that revision and the last key returned, and a later page is read
//!   at that revision, the changes made since undone from the store's history
//!   ([`crate::store::Store::list_at`]). A token older than the history answers 410
//!   Expired, and the client starts the list again.
//! - `resourceVersion` and `resourceVersionMatch` say which revision: none, the newest;
//!   `NotOlderThan` (or a `resourceVersion` alone), the newest, which must have reached
//!   it; `Exact`, that revision itself (as is a `resourceVersion` with a `limit`, as in
//!   Kubernetes). `resourceVersion=0` means any, and the newest is served.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::resources::Query;
use super::status::ApiError;

/// The part of a collection a list asks for.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Window {
    /// Read at exactly this revision (else the newest).
    pub exact: Option<u64>,
    /// The newest revision must be at least this.
    pub not_older_than: Option<u64>,
    /// Start after this key (a continued list).
    pub after: Option<String>,
    /// At most this many objects.
    pub limit: Option<usize>,
}

/// A continue token's contents.
#[derive(serde::Serialize, serde::Deserialize)]
struct Token {
    /// The revision the list is read at.
    rv: u64,
    /// The last key returned.
    start: String,
}

/// Reads the window from a list's query; `prefix` is the collection's key prefix, which
/// a continue token must be within.
pub(super) fn window(query: &Query, prefix: &str) -> Result<Window, ApiError> {
    // A parameter given empty is one not given.
    let param = |key: &str| query.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let limit = match param("limit") {
        None | Some("0") => None,
        Some(n) => match n.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => return bad(format!("limit: invalid value {n:?}: must be a count")),
        },
    };
    let (rv, matching) = (param("resourceVersion"), param("resourceVersionMatch"));
    if let Some(token) = param("continue") {
        if rv.is_some() || matching.is_some() {
            return bad("specifying resource version is not allowed when using continue".into());
        }
        let token: Token = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(|t: &Token| t.start.starts_with(prefix))
            .ok_or_else(|| {
                ApiError::BadRequest("continue key is not valid: not a token of this list".into())
            })?;
        return Ok(Window {
            exact: Some(token.rv),
            after: Some(token.start),
            limit,
            ..Window::default()
        });
    }
    let revision = match rv {
        None | Some("0") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return bad(format!("invalid resourceVersion {v:?}")),
        },
    };
    let (exact, not_older_than) = match (matching, revision, rv) {
        (Some(m), _, None) => bad(format!(
            "resourceVersionMatch {m:?} is forbidden unless resourceVersion is provided"
        )),
        (Some("Exact"), None, _) => {
            bad("resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"".into())
        }
        (Some("Exact"), at, _) => Ok((at, None)),
        (Some("NotOlderThan"), at, _) => Ok((None, at)),
        (Some(m), _, _) => bad(format!(
            "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\""
        )),
        (None, Some(at), _) if limit.is_some() => Ok((Some(at), None)),
        (None, at, _) => Ok((None, at)),
    }?;
    Ok(Window {
        exact,
        not_older_than,
        after: None,
        limit,
    })
}

/// A 400 Bad Request saying `why`.
fn bad<T>(why: String) -> Result<T, ApiError> {
    Err(ApiError::BadRequest(why))
}

/// What a list says about itself besides its items.
#[derive(Debug, Default)]
pub(super) struct Listed {
    /// The revision it shows.
    pub revision: u64,
    /// The token for the next page, when a limit cut the list short.
    pub next: Option<String>,
    /// How many objects the next pages hold, when known.
    pub remaining: Option<usize>,
}

impl Listed {
    /// A page of the list read at `revision` that ended at `last_key`.
    pub fn cut(revision: u64, last_key: &str, remaining: Option<usize>) -> Listed {
        let token = serde_json::to_vec(&Token {
            rv: revision,
            start: last_key.to_owned(),
        })
        .unwrap_or_default();
        Listed {
            revision,
            next: Some(URL_SAFE_NO_PAD.encode(token)),
            remaining,
        }
    }

    /// The list's `metadata`.
    pub fn metadata(&self) -> Value {
        let mut meta = json!({"resourceVersion": self.revision.to_string()});
        if let Some(next) = &self.next {
            meta["continue"] = json!(next);
        }
        if let Some(remaining) = self.remaining {
            meta["remainingItemCount"] = json!(remaining);
        }
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_token_continues_at_its_revision_after_its_key() {
        let listed = Listed::cut(42, "/registry/pods/default/web-3", Some(7));
        let token = listed.next.clone().expect("a token");
        let window = window(
            &query(&[("continue", &token), ("limit", "5")]),
            "/registry/pods/",
        )
        .expect("a valid token");
        assert_eq!(window.exact, Some(42));
        assert_eq!(
            window.after.as_deref(),
            Some("/registry/pods/default/web-3")
        );
        assert_eq!(window.limit, Some(5));
        assert_eq!(listed.metadata()["remainingItemCount"], 7);
    }

    #[test]
    fn bad_tokens_and_mixed_versions_are_refused() {
        let other = Listed::cut(1, "/registry/secrets/default/a", None)
            .next
            .expect("a token");
        for bad in [
            query(&[("continue", "not-a-token")]),
            query(&[("continue", &other)]),
            query(&[("continue", &other), ("resourceVersion", "3")]),
            query(&[("limit", "-1")]),
            query(&[("resourceVersionMatch", "Exact")]),
            query(&[("resourceVersionMatch", "Exact"), ("resourceVersion", "0")]),
            query(&[("resourceVersionMatch", "Newest"), ("resourceVersion", "3")]),
            query(&[("resourceVersion", "x")]),
        ] {
            assert!(
                matches!(
                    window(&bad, "/registry/pods/"),
                    Err(ApiError::BadRequest(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn which_revision_a_list_reads() {
        let w = |pairs: &[(&str, &str)]| window(&query(pairs), "/p/").expect("valid");
        assert_eq!(w(&[]), Window::default());
        assert_eq!(w(&[("resourceVersion", "0")]), Window::default());
        assert_eq!(w(&[("resourceVersion", "9")]).not_older_than, Some(9));
        assert_eq!(
            w(&[("resourceVersion", "9"), ("resourceVersionMatch", "Exact")]).exact,
            Some(9)
        );
        // A resourceVersion with a limit is an exact one, as in Kubernetes.
        assert_eq!(
            w(&[("resourceVersion", "9"), ("limit", "2")]).exact,
            Some(9)
        );
    }
}
