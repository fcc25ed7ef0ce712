//! Decoding of Kubernetes protobuf request bodies into Kubernetes JSON.
//!
//! # Why this exists
//!
//! shipshape's apiserver stores and reasons about objects in their Kubernetes
//! JSON form (`serde_json::Value`). Most clients send JSON, but the real
//! kubectl does not always: commands that build a *typed* Go object and post it
//! through a client-go typed clientset encode the request body as
//! `Content-Type: application/vnd.kubernetes.protobuf`, because kubectl
//! configures those clients to prefer protobuf for built-in API groups
//! (`Accept: application/vnd.kubernetes.protobuf,application/json`). Checked
//! against kubectl 1.32 with a throwaway listener, this covers:
//!
//! * `kubectl create deployment web --image=shipshape/probe:v1 --replicas=3`
//!   (posts an `apps/v1` Deployment),
//! * `kubectl create namespace x` (a `v1` Namespace),
//! * `kubectl create service nodeport|clusterip|...` (a `v1` Service),
//!
//! and the other typed `kubectl create <kind>` subcommands: configmap, secret and
//! serviceaccount are decoded here; the kinds not served yet (job, ...) are not. Evictions
//! (`policy/v1` Eviction posted to `pods/{name}/eviction`) are decoded too:
//! kubectl 1.32's `drain` was observed to post them as JSON, but client-go
//! programs configured for protobuf (as Kubernetes' own components are) send
//! them as protobuf.
//!
//! client-go does not retry such a request as JSON: if the server answers
//! `415 Unsupported Media Type`, the command simply fails. So the apiserver has
//! to understand protobuf request bodies for the kinds these commands send.
//! Responses are unaffected: kubectl accepts JSON replies.
//!
//! # The envelope
//!
//! A Kubernetes protobuf body is not a bare message. It is:
//!
//! ```text
//! +----------+----------------------------------------------------------+
//! | k8s\0    | runtime.Unknown (protobuf)                               |
//! | 4 bytes  |   1: typeMeta        { 1: apiVersion, 2: kind }          |
//! |          |   2: raw             the object's own protobuf encoding  |
//! |          |   3: contentEncoding always empty (anything else refused) |
//! |          |   4: contentType     ignored                             |
//! +----------+----------------------------------------------------------+
//! ```
//!
//! [`decode`] checks the magic bytes, decodes the `runtime.Unknown` with
//! [`k8s_pb`]'s generated message, picks the `k8s_pb` message type for
//! `(apiVersion, kind)`, decodes `raw` with it and renders the result as JSON,
//! with `apiVersion` and `kind` taken from the envelope (the protobuf object
//! itself carries no type meta).
//!
//! # Supported kinds
//!
//! `apps/v1` Deployment and ReplicaSet; `v1` Pod, Service, Namespace, Node,
//! Endpoints, Event, ConfigMap, Secret and ServiceAccount; `policy/v1` Eviction (including its `deleteOptions`);
//! and `DeleteOptions` under any apiVersion (every group version registers the
//! same `meta/v1` DeleteOptions). Anything else is
//! [`ProtobufError::UnsupportedKind`]; such clients must send JSON.
//!
//! # How the JSON is rendered
//!
//! The goal is the JSON that Kubernetes' own Go types would produce for the
//! same object, because that is what the rest of the server already handles.
//! Every proto2 field in `k8s_pb` is an `Option`, while Go's JSON encoding
//! depends on how the Go field is declared; and Go's protobuf encoder writes
//! every non-pointer field even when it holds its zero value (a real kubectl
//! body carries dozens of `""`, `0` and `false` fields). So each field is
//! converted by the rule of its Go declaration:
//!
//! * `omitempty` value fields (`string`, `int32`, `bool`, ...): omitted when
//!   absent *or* zero (`""`, `0`, `false`). This is why a real kubectl body's
//!   `workingDir: ""` or `hostNetwork: false` do not show up.
//! * pointer fields (`*int32 replicas`, `*bool privileged`, `*string`
//!   policies, ...): present whenever set, even when zero.
//! * required fields (`json:"name"` without `omitempty`, e.g. a container's
//!   `name`, a port's `containerPort`): always present, zero when absent.
//! * non-pointer struct fields (`spec`, `metadata`, `template`, a container's
//!   `resources`, a deployment's `strategy`) are always present, possibly as
//!   `{}`, exactly like `kubectl create deployment ... -o json` shows them.
//! * maps and lists are omitted when empty.
//!
//! Values: `int32`/`int64` become JSON numbers; `resource.Quantity` becomes its
//! string; `IntOrString` becomes a number (type 0) or a string (type 1);
//! `metav1.Time` becomes RFC 3339 with whole seconds in UTC
//! (`2024-05-01T12:00:00Z`), `metav1.MicroTime` the same with six fractional
//! digits. Field names are the Kubernetes API's camelCase JSON names.
//!
//! # What is not converted
//!
//! * `status` is never decoded: kubectl sends only an empty one on create, and
//!   the server owns it anyway. It is absent from the JSON (where Go would
//!   render `"status": {}`).
//! * `metadata.managedFields`, pod `affinity`, `ephemeralContainers`,
//!   `resourceClaims`, container `resizePolicy`/`volumeDevices`, Windows and
//!   SELinux-change details, and volume sources other than `emptyDir`,
//!   `hostPath`, `configMap`, `secret` and `persistentVolumeClaim` are dropped.
//!   None of them are set by the typed kubectl commands above.
//! * Zero timestamps, which Go renders as `null` (e.g. the
//!   `creationTimestamp: null` in a kubectl-built object), are omitted.
//! * A `ServicePort.targetPort` of integer 0 (Go's "unset") is omitted, so
//!   the server's "defaults to `port`" rule applies.
//! * Quantities are passed through verbatim, not validated or canonicalised.
//!
//! Malformed input never panics: bad magic, undecodable protobuf, an unknown
//! `IntOrString` type or a timestamp outside years 0000–9999 all come back as a
//! [`ProtobufError`].

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as appsv1;
use k8s_pb::api::core::v1 as corev1;
use k8s_pb::api::policy::v1 as policyv1;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as metav1;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value};

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf request body could not be turned into Kubernetes JSON.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with the `k8s\0` magic bytes.
    #[error("failed to decode protobuf body: it does not start with the k8s\\0 magic bytes")]
    MissingMagic,
    /// The `runtime.Unknown` envelope after the magic bytes is not valid protobuf.
    #[error("failed to decode the runtime.Unknown envelope of a protobuf body: {0}")]
    Envelope(#[source] prost::DecodeError),
    /// The envelope does not say which apiVersion and kind its object is.
    #[error(
        "failed to decode protobuf body: its envelope does not name the object's apiVersion and kind"
    )]
    MissingTypeMeta,
    /// The envelope declares a content encoding (such as gzip); none is supported.
    #[error(
        "unsupported contentEncoding {encoding:?} in a protobuf body (only unencoded objects are accepted)"
    )]
    UnsupportedContentEncoding {
        /// The encoding named by the envelope.
        encoding: String,
    },
    /// The object's kind has no protobuf decoder here; the client must send JSON.
    #[error(
        "unsupported kind {kind:?} (apiVersion {api_version:?}) in a protobuf body; send it as application/json"
    )]
    UnsupportedKind {
        /// The apiVersion named by the envelope.
        api_version: String,
        /// The kind named by the envelope.
        kind: String,
    },
    /// The object inside the envelope is not valid protobuf for its kind.
    #[error("failed to decode {kind} from protobuf: {source}")]
    Object {
        /// The object's apiVersion and kind, e.g. `apps/v1 Deployment`.
        kind: String,
        /// What prost found wrong.
        #[source]
        source: prost::DecodeError,
    },
    /// The object decoded, but one of its values has no JSON rendering.
    #[error("failed to convert {kind} to JSON: {path}: {problem}")]
    Value {
        /// The object's apiVersion and kind, e.g. `apps/v1 Deployment`.
        kind: String,
        /// Where the value sits, e.g. `spec.template.spec.containers[0].ports[0]`.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Decodes a Kubernetes protobuf request body (the `k8s\0` envelope around a runtime.Unknown)
/// into the object's Kubernetes JSON form, with apiVersion and kind set from the envelope.
///
/// See the [module documentation](self) for the supported kinds and the
/// rendering rules.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or(ProtobufError::MissingMagic)?;
    let unknown = Unknown::decode(envelope).map_err(ProtobufError::Envelope)?;

    if let Some(encoding) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(ProtobufError::UnsupportedContentEncoding { encoding });
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    let raw = unknown.raw.unwrap_or_default();

    let fields = match (api_version.as_str(), kind.as_str()) {
        ("apps/v1", "Deployment") => convert(&api_version, &kind, &raw, deployment),
        ("apps/v1", "ReplicaSet") => convert(&api_version, &kind, &raw, replica_set),
        ("v1", "Pod") => convert(&api_version, &kind, &raw, pod),
        ("v1", "Service") => convert(&api_version, &kind, &raw, service),
        ("v1", "Namespace") => convert(&api_version, &kind, &raw, namespace),
        ("v1", "Node") => convert(&api_version, &kind, &raw, node),
        ("v1", "Endpoints") => convert(&api_version, &kind, &raw, endpoints),
        ("v1", "Event") => convert(&api_version, &kind, &raw, event),
        ("v1", "ConfigMap") => convert(&api_version, &kind, &raw, config_map),
        ("v1", "Secret") => convert(&api_version, &kind, &raw, secret),
        ("v1", "ServiceAccount") => convert(&api_version, &kind, &raw, service_account),
        ("policy/v1", "Eviction") => convert(&api_version, &kind, &raw, eviction),
        (_, "DeleteOptions") => convert(&api_version, &kind, &raw, delete_options),
        _ => Err(ProtobufError::UnsupportedKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        }),
    }?;

    let mut object = Map::new();
    object.insert("apiVersion".to_owned(), Value::String(api_version));
    object.insert("kind".to_owned(), Value::String(kind));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// Decodes `raw` as the message `M` and renders it with `render`.
fn convert<M: Message + Default>(
    api_version: &str,
    kind: &str,
    raw: &[u8],
    render: Render<M>,
) -> Result<Map<String, Value>, ProtobufError> {
    let name = || format!("{api_version} {kind}");
    let message = M::decode(raw).map_err(|source| ProtobufError::Object {
        kind: name(),
        source,
    })?;
    match render(&message) {
        Ok(Value::Object(fields)) => Ok(fields),
        // Every renderer builds an object; nothing else can come back.
        Ok(_) => Ok(Map::new()),
        Err(invalid) => Err(ProtobufError::Value {
            kind: name(),
            path: invalid.path,
            problem: invalid.problem,
        }),
    }
}

// ---------------------------------------------------------------------------
// The JSON builder
// ---------------------------------------------------------------------------

/// A value found while rendering that has no JSON form, with where it was.
#[derive(Debug)]
struct Invalid {
    /// JSON path from the object root, built up while unwinding.
    path: String,
    problem: String,
}

impl Invalid {
    fn new(problem: String) -> Self {
        Self {
            path: String::new(),
            problem,
        }
    }

    /// Prefixes the path with `segment` (a field name or `[index]`).
    fn within(mut self, segment: &str) -> Self {
        self.path = if self.path.is_empty() || self.path.starts_with('[') {
            format!("{segment}{}", self.path)
        } else {
            format!("{segment}.{}", self.path)
        };
        self
    }
}

/// The outcome of rendering one message.
type Rendered = Result<Value, Invalid>;

/// Renders one protobuf message as a JSON value.
type Render<T> = fn(&T) -> Rendered;

/// Builds a JSON object field by field, inserting only what Go's JSON encoder
/// would write, and remembering the first error so conversions can be written
/// as one chain ending in [`Fields::build`].
///
/// Method names follow the Go declaration of the field: the plain name is an
/// `omitempty` value field, `_ptr` a pointer field, `_req` a field without
/// `omitempty`.
struct Fields {
    map: Map<String, Value>,
    error: Option<Invalid>,
}

impl Fields {
    fn new() -> Self {
        Self {
            map: Map::new(),
            error: None,
        }
    }

    fn put(mut self, key: &str, value: Value) -> Self {
        self.map.insert(key.to_owned(), value);
        self
    }

    fn put_rendered(mut self, key: &str, rendered: Rendered) -> Self {
        match rendered {
            Ok(value) => self.put(key, value),
            Err(invalid) => {
                self.error.get_or_insert(invalid.within(key));
                self
            }
        }
    }

    /// `string` with `omitempty`: skipped when absent or empty.
    fn string(self, key: &str, value: &Option<String>) -> Self {
        match value.as_deref() {
            Some(s) if !s.is_empty() => self.put(key, Value::from(s)),
            _ => self,
        }
    }

    /// `*string`: written whenever set, even when empty.
    fn string_ptr(self, key: &str, value: &Option<String>) -> Self {
        match value {
            Some(s) => self.put(key, Value::from(s.as_str())),
            None => self,
        }
    }

    /// `string` without `omitempty`: always written.
    fn string_req(self, key: &str, value: &Option<String>) -> Self {
        self.put(key, Value::from(value.as_deref().unwrap_or_default()))
    }

    /// `[]string` with `omitempty`.
    fn strings(self, key: &str, values: &[String]) -> Self {
        if values.is_empty() {
            return self;
        }
        self.put(key, Value::from(values.to_vec()))
    }

    /// `map[string]string` with `omitempty`.
    /// `map[string][]byte`, omitted when empty: each value in base64, as Go writes bytes.
    fn bytes_map(self, key: &str, values: &BTreeMap<String, Vec<u8>>) -> Self {
        use base64::prelude::{BASE64_STANDARD, Engine as _};
        if values.is_empty() {
            return self;
        }
        let map = values
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(BASE64_STANDARD.encode(v))))
            .collect();
        self.put(key, Value::Object(map))
    }

    fn string_map(self, key: &str, values: &BTreeMap<String, String>) -> Self {
        if values.is_empty() {
            return self;
        }
        let map = values
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        self.put(key, Value::Object(map))
    }

    /// `int32`/`int64` with `omitempty`: skipped when absent or zero.
    fn int<T: Into<i64>>(self, key: &str, value: Option<T>) -> Self {
        match value.map(Into::into) {
            Some(n) if n != 0 => self.put(key, Value::from(n)),
            _ => self,
        }
    }

    /// `*int32`/`*int64`: written whenever set, even when zero.
    fn int_ptr<T: Into<i64>>(self, key: &str, value: Option<T>) -> Self {
        match value {
            Some(n) => self.put(key, Value::from(n.into())),
            None => self,
        }
    }

    /// `int32`/`int64` without `omitempty`: always written.
    fn int_req<T: Into<i64>>(self, key: &str, value: Option<T>) -> Self {
        self.put(key, Value::from(value.map_or(0, Into::into)))
    }

    /// `[]int64` with `omitempty`.
    fn ints(self, key: &str, values: &[i64]) -> Self {
        if values.is_empty() {
            return self;
        }
        self.put(key, Value::from(values.to_vec()))
    }

    /// `bool` with `omitempty`: only `true` is written.
    fn boolean(self, key: &str, value: Option<bool>) -> Self {
        match value {
            Some(true) => self.put(key, Value::Bool(true)),
            _ => self,
        }
    }

    /// `*bool`: written whenever set.
    fn bool_ptr(self, key: &str, value: Option<bool>) -> Self {
        match value {
            Some(b) => self.put(key, Value::Bool(b)),
            None => self,
        }
    }

    /// `resource.Quantity` (value or pointer): its string, whenever present.
    fn quantity(self, key: &str, value: &Option<Quantity>) -> Self {
        match value {
            Some(q) => self.put(key, quantity(q)),
            None => self,
        }
    }

    /// `ResourceList` (`map[string]Quantity`) with `omitempty`.
    fn quantities(self, key: &str, values: &BTreeMap<String, Quantity>) -> Self {
        if values.is_empty() {
            return self;
        }
        let map = values
            .iter()
            .map(|(k, q)| (k.clone(), quantity(q)))
            .collect();
        self.put(key, Value::Object(map))
    }

    /// `*intstr.IntOrString`: written whenever set.
    fn int_or_string(self, key: &str, value: &Option<IntOrString>) -> Self {
        match value {
            Some(v) => self.put_rendered(key, int_or_string(v)),
            None => self,
        }
    }

    /// `intstr.IntOrString` without `omitempty`: always written (`0` when absent).
    fn int_or_string_req(self, key: &str, value: &Option<IntOrString>) -> Self {
        let value = value.clone().unwrap_or_default();
        self.put_rendered(key, int_or_string(&value))
    }

    /// `metav1.Time` or `*metav1.Time`: RFC 3339 seconds; zero times are omitted.
    fn time(self, key: &str, value: &Option<metav1::Time>) -> Self {
        match value.as_ref().and_then(|t| time(t).transpose()) {
            Some(rendered) => self.put_rendered(key, rendered),
            None => self,
        }
    }

    /// `metav1.MicroTime` or a pointer to it: RFC 3339 microseconds; zero times
    /// are omitted.
    fn micro_time(self, key: &str, value: &Option<metav1::MicroTime>) -> Self {
        match value.as_ref().and_then(|t| micro_time(t).transpose()) {
            Some(rendered) => self.put_rendered(key, rendered),
            None => self,
        }
    }

    /// A pointer to a struct: written whenever set, even as `{}`.
    fn object<T>(self, key: &str, value: &Option<T>, render: Render<T>) -> Self {
        match value {
            Some(v) => self.put_rendered(key, render(v)),
            None => self,
        }
    }

    /// A non-pointer struct: always written, `{}` (or its defaults) when absent.
    fn object_req<T: Default>(self, key: &str, value: &Option<T>, render: Render<T>) -> Self {
        let rendered = match value {
            Some(v) => render(v),
            None => render(&T::default()),
        };
        self.put_rendered(key, rendered)
    }

    /// A slice of structs with `omitempty`.
    fn list<T>(self, key: &str, values: &[T], render: Render<T>) -> Self {
        if values.is_empty() {
            return self;
        }
        self.list_req(key, values, render)
    }

    /// A slice of structs without `omitempty`: always written, `[]` when empty.
    fn list_req<T>(self, key: &str, values: &[T], render: Render<T>) -> Self {
        let items = values
            .iter()
            .enumerate()
            .map(|(i, v)| render(v).map_err(|e| e.within(&format!("[{i}]"))))
            .collect::<Result<Vec<_>, _>>();
        self.put_rendered(key, items.map(Value::Array))
    }

    /// An embedded struct whose fields Go inlines into this object (for
    /// example `LocalObjectReference` in a `configMapKeyRef`, or the
    /// `ProbeHandler` of a probe).
    fn inline<T>(mut self, value: &Option<T>, render: Render<T>) -> Self {
        let Some(value) = value else {
            return self;
        };
        match render(value) {
            Ok(Value::Object(fields)) => self.map.extend(fields),
            Ok(_) => {}
            Err(invalid) => {
                self.error.get_or_insert(invalid);
            }
        }
        self
    }

    /// Finishes the object, or reports the first value that could not be rendered.
    fn build(self) -> Rendered {
        match self.error {
            Some(invalid) => Err(invalid),
            None => Ok(Value::Object(self.map)),
        }
    }
}

// ---------------------------------------------------------------------------
// Scalars: quantities, int-or-strings, timestamps
// ---------------------------------------------------------------------------

fn quantity(q: &Quantity) -> Value {
    Value::from(q.string.as_deref().unwrap_or_default())
}

fn int_or_string(v: &IntOrString) -> Rendered {
    match v.r#type.unwrap_or(0) {
        0 => Ok(Value::from(v.int_val.unwrap_or(0))),
        1 => Ok(Value::from(v.str_val.as_deref().unwrap_or_default())),
        other => Err(Invalid::new(format!(
            "unsupported IntOrString type {other} (expected 0 for an int or 1 for a string)"
        ))),
    }
}

/// Seconds since the Unix epoch of Go's zero `time.Time` (0001-01-01T00:00:00Z),
/// which Kubernetes renders as `null`.
const GO_ZERO_TIME: i64 = -62_135_596_800;
/// 0000-01-01T00:00:00Z, the earliest instant with a four-digit RFC 3339 year.
const MIN_SECONDS: i64 = -62_167_219_200;
/// 9999-12-31T23:59:59Z, the latest instant with a four-digit RFC 3339 year.
const MAX_SECONDS: i64 = 253_402_300_799;
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// `metav1.Time`: whole seconds (Kubernetes ignores `nanos`); `None` for the
/// zero time.
fn time(t: &metav1::Time) -> Result<Option<Value>, Invalid> {
    if t.seconds.is_none() && t.nanos.is_none() {
        return Ok(None);
    }
    let seconds = t.seconds.unwrap_or(0);
    if seconds == GO_ZERO_TIME {
        return Ok(None);
    }
    Ok(Some(Value::from(rfc3339(seconds, None)?)))
}

/// `metav1.MicroTime`: seconds plus nanoseconds truncated to microseconds;
/// `None` for the zero time.
fn micro_time(t: &metav1::MicroTime) -> Result<Option<Value>, Invalid> {
    if t.seconds.is_none() && t.nanos.is_none() {
        return Ok(None);
    }
    let nanos = i64::from(t.nanos.unwrap_or(0));
    let seconds = t
        .seconds
        .unwrap_or(0)
        .checked_add(nanos.div_euclid(NANOS_PER_SECOND))
        .ok_or_else(|| out_of_range(i64::MAX))?;
    let micros = nanos.rem_euclid(NANOS_PER_SECOND) / 1_000;
    if seconds == GO_ZERO_TIME && micros == 0 {
        return Ok(None);
    }
    Ok(Some(Value::from(rfc3339(seconds, Some(micros))?)))
}

fn out_of_range(seconds: i64) -> Invalid {
    Invalid::new(format!(
        "unsupported timestamp: {seconds} seconds since the Unix epoch is outside the years 0000-9999"
    ))
}

/// Formats a UTC instant as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
fn rfc3339(seconds: i64, micros: Option<i64>) -> Result<String, Invalid> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        return Err(out_of_range(seconds));
    }
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60,
    );
    let fraction = micros.map_or(String::new(), |us| format!(".{us:06}"));
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z"
    ))
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`). Callers keep `days` within years
/// 0000-9999, so nothing here can overflow.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------
// meta/v1
// ---------------------------------------------------------------------------

fn object_meta(m: &metav1::ObjectMeta) -> Rendered {
    Fields::new()
        .string("name", &m.name)
        .string("generateName", &m.generate_name)
        .string("namespace", &m.namespace)
        .string("selfLink", &m.self_link)
        .string("uid", &m.uid)
        .string("resourceVersion", &m.resource_version)
        .int("generation", m.generation)
        .time("creationTimestamp", &m.creation_timestamp)
        .time("deletionTimestamp", &m.deletion_timestamp)
        .int_ptr(
            "deletionGracePeriodSeconds",
            m.deletion_grace_period_seconds,
        )
        .string_map("labels", &m.labels)
        .string_map("annotations", &m.annotations)
        .list("ownerReferences", &m.owner_references, owner_reference)
        .strings("finalizers", &m.finalizers)
        .build()
}

fn owner_reference(r: &metav1::OwnerReference) -> Rendered {
    Fields::new()
        .string_req("apiVersion", &r.api_version)
        .string_req("kind", &r.kind)
        .string_req("name", &r.name)
        .string_req("uid", &r.uid)
        .bool_ptr("controller", r.controller)
        .bool_ptr("blockOwnerDeletion", r.block_owner_deletion)
        .build()
}

fn label_selector(s: &metav1::LabelSelector) -> Rendered {
    Fields::new()
        .string_map("matchLabels", &s.match_labels)
        .list(
            "matchExpressions",
            &s.match_expressions,
            label_selector_requirement,
        )
        .build()
}

fn label_selector_requirement(r: &metav1::LabelSelectorRequirement) -> Rendered {
    Fields::new()
        .string_req("key", &r.key)
        .string_req("operator", &r.operator)
        .strings("values", &r.values)
        .build()
}

fn delete_options(o: &metav1::DeleteOptions) -> Rendered {
    Fields::new()
        .int_ptr("gracePeriodSeconds", o.grace_period_seconds)
        .object("preconditions", &o.preconditions, preconditions)
        .bool_ptr("orphanDependents", o.orphan_dependents)
        .string_ptr("propagationPolicy", &o.propagation_policy)
        .strings("dryRun", &o.dry_run)
        .bool_ptr(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            o.ignore_store_read_error_with_cluster_breaking_potential,
        )
        .build()
}

fn preconditions(p: &metav1::Preconditions) -> Rendered {
    Fields::new()
        .string_ptr("uid", &p.uid)
        .string_ptr("resourceVersion", &p.resource_version)
        .build()
}

// ---------------------------------------------------------------------------
// Top-level kinds (without status)
// ---------------------------------------------------------------------------

fn deployment(d: &appsv1::Deployment) -> Rendered {
    Fields::new()
        .object_req("metadata", &d.metadata, object_meta)
        .object_req("spec", &d.spec, deployment_spec)
        .build()
}

fn replica_set(r: &appsv1::ReplicaSet) -> Rendered {
    Fields::new()
        .object_req("metadata", &r.metadata, object_meta)
        .object_req("spec", &r.spec, replica_set_spec)
        .build()
}

fn pod(p: &corev1::Pod) -> Rendered {
    Fields::new()
        .object_req("metadata", &p.metadata, object_meta)
        .object_req("spec", &p.spec, pod_spec)
        .build()
}

fn service(s: &corev1::Service) -> Rendered {
    Fields::new()
        .object_req("metadata", &s.metadata, object_meta)
        .object_req("spec", &s.spec, service_spec)
        .build()
}

fn namespace(n: &corev1::Namespace) -> Rendered {
    Fields::new()
        .object_req("metadata", &n.metadata, object_meta)
        .object_req("spec", &n.spec, namespace_spec)
        .build()
}

fn node(n: &corev1::Node) -> Rendered {
    Fields::new()
        .object_req("metadata", &n.metadata, object_meta)
        .object_req("spec", &n.spec, node_spec)
        .build()
}

fn endpoints(e: &corev1::Endpoints) -> Rendered {
    Fields::new()
        .object_req("metadata", &e.metadata, object_meta)
        .list("subsets", &e.subsets, endpoint_subset)
        .build()
}

fn event(e: &corev1::Event) -> Rendered {
    Fields::new()
        .object_req("metadata", &e.metadata, object_meta)
        .object_req("involvedObject", &e.involved_object, object_reference)
        .string("reason", &e.reason)
        .string("message", &e.message)
        .object_req("source", &e.source, event_source)
        .time("firstTimestamp", &e.first_timestamp)
        .time("lastTimestamp", &e.last_timestamp)
        .int("count", e.count)
        .string("type", &e.r#type)
        .micro_time("eventTime", &e.event_time)
        .object("series", &e.series, event_series)
        .string("action", &e.action)
        .object("related", &e.related, object_reference)
        .string_req("reportingComponent", &e.reporting_component)
        .string_req("reportingInstance", &e.reporting_instance)
        .build()
}

fn config_map(c: &corev1::ConfigMap) -> Rendered {
    Fields::new()
        .object_req("metadata", &c.metadata, object_meta)
        .bool_ptr("immutable", c.immutable)
        .string_map("data", &c.data)
        .bytes_map("binaryData", &c.binary_data)
        .build()
}

fn secret(c: &corev1::Secret) -> Rendered {
    Fields::new()
        .object_req("metadata", &c.metadata, object_meta)
        .bool_ptr("immutable", c.immutable)
        .bytes_map("data", &c.data)
        .string_map("stringData", &c.string_data)
        .string("type", &c.r#type)
        .build()
}

fn service_account(a: &corev1::ServiceAccount) -> Rendered {
    Fields::new()
        .object_req("metadata", &a.metadata, object_meta)
        .list("secrets", &a.secrets, object_reference)
        .list(
            "imagePullSecrets",
            &a.image_pull_secrets,
            local_object_reference,
        )
        .bool_ptr(
            "automountServiceAccountToken",
            a.automount_service_account_token,
        )
        .build()
}

fn eviction(e: &policyv1::Eviction) -> Rendered {
    Fields::new()
        .object_req("metadata", &e.metadata, object_meta)
        .object("deleteOptions", &e.delete_options, delete_options)
        .build()
}

// ---------------------------------------------------------------------------
// apps/v1
// ---------------------------------------------------------------------------

fn deployment_spec(s: &appsv1::DeploymentSpec) -> Rendered {
    Fields::new()
        .int_ptr("replicas", s.replicas)
        .object("selector", &s.selector, label_selector)
        .object_req("template", &s.template, pod_template_spec)
        .object_req("strategy", &s.strategy, deployment_strategy)
        .int("minReadySeconds", s.min_ready_seconds)
        .int_ptr("revisionHistoryLimit", s.revision_history_limit)
        .boolean("paused", s.paused)
        .int_ptr("progressDeadlineSeconds", s.progress_deadline_seconds)
        .build()
}

fn deployment_strategy(s: &appsv1::DeploymentStrategy) -> Rendered {
    Fields::new()
        .string("type", &s.r#type)
        .object(
            "rollingUpdate",
            &s.rolling_update,
            rolling_update_deployment,
        )
        .build()
}

fn rolling_update_deployment(r: &appsv1::RollingUpdateDeployment) -> Rendered {
    Fields::new()
        .int_or_string("maxUnavailable", &r.max_unavailable)
        .int_or_string("maxSurge", &r.max_surge)
        .build()
}

fn replica_set_spec(s: &appsv1::ReplicaSetSpec) -> Rendered {
    Fields::new()
        .int_ptr("replicas", s.replicas)
        .int("minReadySeconds", s.min_ready_seconds)
        .object("selector", &s.selector, label_selector)
        .object_req("template", &s.template, pod_template_spec)
        .build()
}

// ---------------------------------------------------------------------------
// core/v1: pods and their parts
// ---------------------------------------------------------------------------

fn pod_template_spec(t: &corev1::PodTemplateSpec) -> Rendered {
    Fields::new()
        .object_req("metadata", &t.metadata, object_meta)
        .object_req("spec", &t.spec, pod_spec)
        .build()
}

fn pod_spec(s: &corev1::PodSpec) -> Rendered {
    Fields::new()
        .list("volumes", &s.volumes, volume)
        .list("initContainers", &s.init_containers, container)
        .list_req("containers", &s.containers, container)
        .string("restartPolicy", &s.restart_policy)
        .int_ptr(
            "terminationGracePeriodSeconds",
            s.termination_grace_period_seconds,
        )
        .int_ptr("activeDeadlineSeconds", s.active_deadline_seconds)
        .string("dnsPolicy", &s.dns_policy)
        .string_map("nodeSelector", &s.node_selector)
        .string("serviceAccountName", &s.service_account_name)
        .string("serviceAccount", &s.service_account)
        .bool_ptr(
            "automountServiceAccountToken",
            s.automount_service_account_token,
        )
        .string("nodeName", &s.node_name)
        .boolean("hostNetwork", s.host_network)
        .boolean("hostPID", s.host_pid)
        .boolean("hostIPC", s.host_ipc)
        .bool_ptr("shareProcessNamespace", s.share_process_namespace)
        .object("securityContext", &s.security_context, pod_security_context)
        .list(
            "imagePullSecrets",
            &s.image_pull_secrets,
            local_object_reference,
        )
        .string("hostname", &s.hostname)
        .string("subdomain", &s.subdomain)
        .string("schedulerName", &s.scheduler_name)
        .list("tolerations", &s.tolerations, toleration)
        .list("hostAliases", &s.host_aliases, host_alias)
        .string("priorityClassName", &s.priority_class_name)
        .int_ptr("priority", s.priority)
        .object("dnsConfig", &s.dns_config, pod_dns_config)
        .list("readinessGates", &s.readiness_gates, pod_readiness_gate)
        .string_ptr("runtimeClassName", &s.runtime_class_name)
        .bool_ptr("enableServiceLinks", s.enable_service_links)
        .string_ptr("preemptionPolicy", &s.preemption_policy)
        .quantities("overhead", &s.overhead)
        .list(
            "topologySpreadConstraints",
            &s.topology_spread_constraints,
            topology_spread_constraint,
        )
        .bool_ptr("setHostnameAsFQDN", s.set_hostname_as_fqdn)
        .object("os", &s.os, pod_os)
        .bool_ptr("hostUsers", s.host_users)
        .list("schedulingGates", &s.scheduling_gates, pod_scheduling_gate)
        .object("resources", &s.resources, resource_requirements)
        .build()
}

fn container(c: &corev1::Container) -> Rendered {
    Fields::new()
        .string_req("name", &c.name)
        .string("image", &c.image)
        .strings("command", &c.command)
        .strings("args", &c.args)
        .string("workingDir", &c.working_dir)
        .list("ports", &c.ports, container_port)
        .list("envFrom", &c.env_from, env_from_source)
        .list("env", &c.env, env_var)
        .object_req("resources", &c.resources, resource_requirements)
        .string_ptr("restartPolicy", &c.restart_policy)
        .list("volumeMounts", &c.volume_mounts, volume_mount)
        .object("livenessProbe", &c.liveness_probe, probe)
        .object("readinessProbe", &c.readiness_probe, probe)
        .object("startupProbe", &c.startup_probe, probe)
        .object("lifecycle", &c.lifecycle, lifecycle)
        .string("terminationMessagePath", &c.termination_message_path)
        .string("terminationMessagePolicy", &c.termination_message_policy)
        .string("imagePullPolicy", &c.image_pull_policy)
        .object("securityContext", &c.security_context, security_context)
        .boolean("stdin", c.stdin)
        .boolean("stdinOnce", c.stdin_once)
        .boolean("tty", c.tty)
        .build()
}

fn container_port(p: &corev1::ContainerPort) -> Rendered {
    Fields::new()
        .string("name", &p.name)
        .int("hostPort", p.host_port)
        .int_req("containerPort", p.container_port)
        .string("protocol", &p.protocol)
        .string("hostIP", &p.host_ip)
        .build()
}

fn env_var(e: &corev1::EnvVar) -> Rendered {
    Fields::new()
        .string_req("name", &e.name)
        .string("value", &e.value)
        .object("valueFrom", &e.value_from, env_var_source)
        .build()
}

fn env_var_source(s: &corev1::EnvVarSource) -> Rendered {
    Fields::new()
        .object("fieldRef", &s.field_ref, object_field_selector)
        .object(
            "resourceFieldRef",
            &s.resource_field_ref,
            resource_field_selector,
        )
        .object(
            "configMapKeyRef",
            &s.config_map_key_ref,
            config_map_key_selector,
        )
        .object("secretKeyRef", &s.secret_key_ref, secret_key_selector)
        .build()
}

fn object_field_selector(s: &corev1::ObjectFieldSelector) -> Rendered {
    Fields::new()
        .string("apiVersion", &s.api_version)
        .string_req("fieldPath", &s.field_path)
        .build()
}

fn resource_field_selector(s: &corev1::ResourceFieldSelector) -> Rendered {
    Fields::new()
        .string("containerName", &s.container_name)
        .string_req("resource", &s.resource)
        .quantity("divisor", &s.divisor)
        .build()
}

fn config_map_key_selector(s: &corev1::ConfigMapKeySelector) -> Rendered {
    Fields::new()
        .inline(&s.local_object_reference, local_object_reference)
        .string_req("key", &s.key)
        .bool_ptr("optional", s.optional)
        .build()
}

fn secret_key_selector(s: &corev1::SecretKeySelector) -> Rendered {
    Fields::new()
        .inline(&s.local_object_reference, local_object_reference)
        .string_req("key", &s.key)
        .bool_ptr("optional", s.optional)
        .build()
}

fn env_from_source(s: &corev1::EnvFromSource) -> Rendered {
    Fields::new()
        .string("prefix", &s.prefix)
        .object("configMapRef", &s.config_map_ref, config_map_env_source)
        .object("secretRef", &s.secret_ref, secret_env_source)
        .build()
}

fn config_map_env_source(s: &corev1::ConfigMapEnvSource) -> Rendered {
    Fields::new()
        .inline(&s.local_object_reference, local_object_reference)
        .bool_ptr("optional", s.optional)
        .build()
}

fn secret_env_source(s: &corev1::SecretEnvSource) -> Rendered {
    Fields::new()
        .inline(&s.local_object_reference, local_object_reference)
        .bool_ptr("optional", s.optional)
        .build()
}

fn local_object_reference(r: &corev1::LocalObjectReference) -> Rendered {
    Fields::new().string("name", &r.name).build()
}

fn resource_requirements(r: &corev1::ResourceRequirements) -> Rendered {
    Fields::new()
        .quantities("limits", &r.limits)
        .quantities("requests", &r.requests)
        .list("claims", &r.claims, resource_claim)
        .build()
}

fn resource_claim(c: &corev1::ResourceClaim) -> Rendered {
    Fields::new()
        .string_req("name", &c.name)
        .string("request", &c.request)
        .build()
}

fn volume_mount(m: &corev1::VolumeMount) -> Rendered {
    Fields::new()
        .string_req("name", &m.name)
        .boolean("readOnly", m.read_only)
        .string_ptr("recursiveReadOnly", &m.recursive_read_only)
        .string_req("mountPath", &m.mount_path)
        .string("subPath", &m.sub_path)
        .string_ptr("mountPropagation", &m.mount_propagation)
        .string("subPathExpr", &m.sub_path_expr)
        .build()
}

fn probe(p: &corev1::Probe) -> Rendered {
    Fields::new()
        .inline(&p.handler, probe_handler)
        .int("initialDelaySeconds", p.initial_delay_seconds)
        .int("timeoutSeconds", p.timeout_seconds)
        .int("periodSeconds", p.period_seconds)
        .int("successThreshold", p.success_threshold)
        .int("failureThreshold", p.failure_threshold)
        .int_ptr(
            "terminationGracePeriodSeconds",
            p.termination_grace_period_seconds,
        )
        .build()
}

fn probe_handler(h: &corev1::ProbeHandler) -> Rendered {
    Fields::new()
        .object("exec", &h.exec, exec_action)
        .object("httpGet", &h.http_get, http_get_action)
        .object("tcpSocket", &h.tcp_socket, tcp_socket_action)
        .object("grpc", &h.grpc, grpc_action)
        .build()
}

fn lifecycle(l: &corev1::Lifecycle) -> Rendered {
    Fields::new()
        .object("postStart", &l.post_start, lifecycle_handler)
        .object("preStop", &l.pre_stop, lifecycle_handler)
        .string_ptr("stopSignal", &l.stop_signal)
        .build()
}

fn lifecycle_handler(h: &corev1::LifecycleHandler) -> Rendered {
    Fields::new()
        .object("exec", &h.exec, exec_action)
        .object("httpGet", &h.http_get, http_get_action)
        .object("tcpSocket", &h.tcp_socket, tcp_socket_action)
        .object("sleep", &h.sleep, sleep_action)
        .build()
}

fn exec_action(a: &corev1::ExecAction) -> Rendered {
    Fields::new().strings("command", &a.command).build()
}

fn http_get_action(a: &corev1::HttpGetAction) -> Rendered {
    Fields::new()
        .string("path", &a.path)
        .int_or_string_req("port", &a.port)
        .string("host", &a.host)
        .string("scheme", &a.scheme)
        .list("httpHeaders", &a.http_headers, http_header)
        .build()
}

fn http_header(h: &corev1::HttpHeader) -> Rendered {
    Fields::new()
        .string_req("name", &h.name)
        .string_req("value", &h.value)
        .build()
}

fn tcp_socket_action(a: &corev1::TcpSocketAction) -> Rendered {
    Fields::new()
        .int_or_string_req("port", &a.port)
        .string("host", &a.host)
        .build()
}

fn grpc_action(a: &corev1::GrpcAction) -> Rendered {
    Fields::new()
        .int_req("port", a.port)
        .string_ptr("service", &a.service)
        .build()
}

fn sleep_action(a: &corev1::SleepAction) -> Rendered {
    Fields::new().int_req("seconds", a.seconds).build()
}

fn security_context(c: &corev1::SecurityContext) -> Rendered {
    Fields::new()
        .object("capabilities", &c.capabilities, capabilities)
        .bool_ptr("privileged", c.privileged)
        .object("seLinuxOptions", &c.se_linux_options, se_linux_options)
        .int_ptr("runAsUser", c.run_as_user)
        .int_ptr("runAsGroup", c.run_as_group)
        .bool_ptr("runAsNonRoot", c.run_as_non_root)
        .bool_ptr("readOnlyRootFilesystem", c.read_only_root_filesystem)
        .bool_ptr("allowPrivilegeEscalation", c.allow_privilege_escalation)
        .string_ptr("procMount", &c.proc_mount)
        .object("seccompProfile", &c.seccomp_profile, seccomp_profile)
        .object("appArmorProfile", &c.app_armor_profile, app_armor_profile)
        .build()
}

fn pod_security_context(c: &corev1::PodSecurityContext) -> Rendered {
    Fields::new()
        .object("seLinuxOptions", &c.se_linux_options, se_linux_options)
        .int_ptr("runAsUser", c.run_as_user)
        .int_ptr("runAsGroup", c.run_as_group)
        .bool_ptr("runAsNonRoot", c.run_as_non_root)
        .ints("supplementalGroups", &c.supplemental_groups)
        .string_ptr("supplementalGroupsPolicy", &c.supplemental_groups_policy)
        .int_ptr("fsGroup", c.fs_group)
        .list("sysctls", &c.sysctls, sysctl)
        .string_ptr("fsGroupChangePolicy", &c.fs_group_change_policy)
        .object("seccompProfile", &c.seccomp_profile, seccomp_profile)
        .object("appArmorProfile", &c.app_armor_profile, app_armor_profile)
        .build()
}

fn capabilities(c: &corev1::Capabilities) -> Rendered {
    Fields::new()
        .strings("add", &c.add)
        .strings("drop", &c.drop)
        .build()
}

fn se_linux_options(o: &corev1::SeLinuxOptions) -> Rendered {
    Fields::new()
        .string("user", &o.user)
        .string("role", &o.role)
        .string("type", &o.r#type)
        .string("level", &o.level)
        .build()
}

fn seccomp_profile(p: &corev1::SeccompProfile) -> Rendered {
    Fields::new()
        .string_req("type", &p.r#type)
        .string_ptr("localhostProfile", &p.localhost_profile)
        .build()
}

fn app_armor_profile(p: &corev1::AppArmorProfile) -> Rendered {
    Fields::new()
        .string_req("type", &p.r#type)
        .string_ptr("localhostProfile", &p.localhost_profile)
        .build()
}

fn sysctl(s: &corev1::Sysctl) -> Rendered {
    Fields::new()
        .string_req("name", &s.name)
        .string_req("value", &s.value)
        .build()
}

fn volume(v: &corev1::Volume) -> Rendered {
    Fields::new()
        .string_req("name", &v.name)
        .inline(&v.volume_source, volume_source)
        .build()
}

fn volume_source(s: &corev1::VolumeSource) -> Rendered {
    Fields::new()
        .object("hostPath", &s.host_path, host_path_volume_source)
        .object("emptyDir", &s.empty_dir, empty_dir_volume_source)
        .object("secret", &s.secret, secret_volume_source)
        .object(
            "persistentVolumeClaim",
            &s.persistent_volume_claim,
            persistent_volume_claim_volume_source,
        )
        .object("configMap", &s.config_map, config_map_volume_source)
        .build()
}

fn host_path_volume_source(s: &corev1::HostPathVolumeSource) -> Rendered {
    Fields::new()
        .string_req("path", &s.path)
        .string_ptr("type", &s.r#type)
        .build()
}

fn empty_dir_volume_source(s: &corev1::EmptyDirVolumeSource) -> Rendered {
    Fields::new()
        .string("medium", &s.medium)
        .quantity("sizeLimit", &s.size_limit)
        .build()
}

fn secret_volume_source(s: &corev1::SecretVolumeSource) -> Rendered {
    Fields::new()
        .string("secretName", &s.secret_name)
        .list("items", &s.items, key_to_path)
        .int_ptr("defaultMode", s.default_mode)
        .bool_ptr("optional", s.optional)
        .build()
}

fn config_map_volume_source(s: &corev1::ConfigMapVolumeSource) -> Rendered {
    Fields::new()
        .inline(&s.local_object_reference, local_object_reference)
        .list("items", &s.items, key_to_path)
        .int_ptr("defaultMode", s.default_mode)
        .bool_ptr("optional", s.optional)
        .build()
}

fn persistent_volume_claim_volume_source(
    s: &corev1::PersistentVolumeClaimVolumeSource,
) -> Rendered {
    Fields::new()
        .string_req("claimName", &s.claim_name)
        .boolean("readOnly", s.read_only)
        .build()
}

fn key_to_path(k: &corev1::KeyToPath) -> Rendered {
    Fields::new()
        .string_req("key", &k.key)
        .string_req("path", &k.path)
        .int_ptr("mode", k.mode)
        .build()
}

fn toleration(t: &corev1::Toleration) -> Rendered {
    Fields::new()
        .string("key", &t.key)
        .string("operator", &t.operator)
        .string("value", &t.value)
        .string("effect", &t.effect)
        .int_ptr("tolerationSeconds", t.toleration_seconds)
        .build()
}

fn host_alias(a: &corev1::HostAlias) -> Rendered {
    Fields::new()
        .string_req("ip", &a.ip)
        .strings("hostnames", &a.hostnames)
        .build()
}

fn pod_dns_config(c: &corev1::PodDnsConfig) -> Rendered {
    Fields::new()
        .strings("nameservers", &c.nameservers)
        .strings("searches", &c.searches)
        .list("options", &c.options, pod_dns_config_option)
        .build()
}

fn pod_dns_config_option(o: &corev1::PodDnsConfigOption) -> Rendered {
    Fields::new()
        .string("name", &o.name)
        .string_ptr("value", &o.value)
        .build()
}

fn pod_readiness_gate(g: &corev1::PodReadinessGate) -> Rendered {
    Fields::new()
        .string_req("conditionType", &g.condition_type)
        .build()
}

fn topology_spread_constraint(c: &corev1::TopologySpreadConstraint) -> Rendered {
    Fields::new()
        .int_req("maxSkew", c.max_skew)
        .string_req("topologyKey", &c.topology_key)
        .string_req("whenUnsatisfiable", &c.when_unsatisfiable)
        .object("labelSelector", &c.label_selector, label_selector)
        .int_ptr("minDomains", c.min_domains)
        .string_ptr("nodeAffinityPolicy", &c.node_affinity_policy)
        .string_ptr("nodeTaintsPolicy", &c.node_taints_policy)
        .strings("matchLabelKeys", &c.match_label_keys)
        .build()
}

fn pod_os(o: &corev1::PodOs) -> Rendered {
    Fields::new().string_req("name", &o.name).build()
}

fn pod_scheduling_gate(g: &corev1::PodSchedulingGate) -> Rendered {
    Fields::new().string_req("name", &g.name).build()
}

// ---------------------------------------------------------------------------
// core/v1: services, namespaces, nodes, endpoints, events
// ---------------------------------------------------------------------------

fn service_spec(s: &corev1::ServiceSpec) -> Rendered {
    Fields::new()
        .list("ports", &s.ports, service_port)
        .string_map("selector", &s.selector)
        .string("clusterIP", &s.cluster_ip)
        .strings("clusterIPs", &s.cluster_ips)
        .string("type", &s.r#type)
        .strings("externalIPs", &s.external_ips)
        .string("sessionAffinity", &s.session_affinity)
        .string("loadBalancerIP", &s.load_balancer_ip)
        .strings("loadBalancerSourceRanges", &s.load_balancer_source_ranges)
        .string("externalName", &s.external_name)
        .string("externalTrafficPolicy", &s.external_traffic_policy)
        .int("healthCheckNodePort", s.health_check_node_port)
        .boolean("publishNotReadyAddresses", s.publish_not_ready_addresses)
        .object(
            "sessionAffinityConfig",
            &s.session_affinity_config,
            session_affinity_config,
        )
        .strings("ipFamilies", &s.ip_families)
        .string_ptr("ipFamilyPolicy", &s.ip_family_policy)
        .bool_ptr(
            "allocateLoadBalancerNodePorts",
            s.allocate_load_balancer_node_ports,
        )
        .string_ptr("loadBalancerClass", &s.load_balancer_class)
        .string_ptr("internalTrafficPolicy", &s.internal_traffic_policy)
        .string_ptr("trafficDistribution", &s.traffic_distribution)
        .build()
}

fn service_port(p: &corev1::ServicePort) -> Rendered {
    // Go always writes targetPort, as 0 when unset; 0 means "same as port", so
    // it is left out to let the server's defaulting see an absent field.
    let target_port = p
        .target_port
        .clone()
        .filter(|t| t.r#type.unwrap_or(0) != 0 || t.int_val.unwrap_or(0) != 0);
    Fields::new()
        .string("name", &p.name)
        .string("protocol", &p.protocol)
        .string_ptr("appProtocol", &p.app_protocol)
        .int_req("port", p.port)
        .int_or_string("targetPort", &target_port)
        .int("nodePort", p.node_port)
        .build()
}

fn session_affinity_config(c: &corev1::SessionAffinityConfig) -> Rendered {
    Fields::new()
        .object("clientIP", &c.client_ip, client_ip_config)
        .build()
}

fn client_ip_config(c: &corev1::ClientIpConfig) -> Rendered {
    Fields::new()
        .int_ptr("timeoutSeconds", c.timeout_seconds)
        .build()
}

fn namespace_spec(s: &corev1::NamespaceSpec) -> Rendered {
    Fields::new().strings("finalizers", &s.finalizers).build()
}

fn node_spec(s: &corev1::NodeSpec) -> Rendered {
    Fields::new()
        .string("podCIDR", &s.pod_cidr)
        .strings("podCIDRs", &s.pod_cid_rs)
        .string("providerID", &s.provider_id)
        .boolean("unschedulable", s.unschedulable)
        .list("taints", &s.taints, taint)
        .string("externalID", &s.external_id)
        .build()
}

fn taint(t: &corev1::Taint) -> Rendered {
    Fields::new()
        .string_req("key", &t.key)
        .string("value", &t.value)
        .string_req("effect", &t.effect)
        .time("timeAdded", &t.time_added)
        .build()
}

fn endpoint_subset(s: &corev1::EndpointSubset) -> Rendered {
    Fields::new()
        .list("addresses", &s.addresses, endpoint_address)
        .list(
            "notReadyAddresses",
            &s.not_ready_addresses,
            endpoint_address,
        )
        .list("ports", &s.ports, endpoint_port)
        .build()
}

fn endpoint_address(a: &corev1::EndpointAddress) -> Rendered {
    Fields::new()
        .string_req("ip", &a.ip)
        .string("hostname", &a.hostname)
        .string_ptr("nodeName", &a.node_name)
        .object("targetRef", &a.target_ref, object_reference)
        .build()
}

fn endpoint_port(p: &corev1::EndpointPort) -> Rendered {
    Fields::new()
        .string("name", &p.name)
        .int_req("port", p.port)
        .string("protocol", &p.protocol)
        .string_ptr("appProtocol", &p.app_protocol)
        .build()
}

fn object_reference(r: &corev1::ObjectReference) -> Rendered {
    Fields::new()
        .string("kind", &r.kind)
        .string("namespace", &r.namespace)
        .string("name", &r.name)
        .string("uid", &r.uid)
        .string("apiVersion", &r.api_version)
        .string("resourceVersion", &r.resource_version)
        .string("fieldPath", &r.field_path)
        .build()
}

fn event_source(s: &corev1::EventSource) -> Rendered {
    Fields::new()
        .string("component", &s.component)
        .string("host", &s.host)
        .build()
}

fn event_series(s: &corev1::EventSeries) -> Rendered {
    Fields::new()
        .int("count", s.count)
        .micro_time("lastObservedTime", &s.last_observed_time)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;
    use serde_json::json;

    // -- helpers -------------------------------------------------------------

    /// Wraps `object` in a real envelope, the way client-go does.
    fn envelope(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
        envelope_raw(api_version, kind, object.encode_to_vec())
    }

    fn envelope_raw(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: s(api_version),
                kind: s(kind),
            }),
            raw: Some(raw),
            content_encoding: s(""),
            content_type: s(""),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn s(value: &str) -> Option<String> {
        Some(value.to_owned())
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity { string: s(v) }))
            .collect()
    }

    fn int(value: i32) -> Option<IntOrString> {
        Some(IntOrString {
            r#type: Some(0),
            int_val: Some(value),
            str_val: s(""),
        })
    }

    fn string(value: &str) -> Option<IntOrString> {
        Some(IntOrString {
            r#type: Some(1),
            int_val: Some(0),
            str_val: s(value),
        })
    }

    fn at_seconds(seconds: i64) -> Option<metav1::Time> {
        Some(metav1::Time {
            seconds: Some(seconds),
            nanos: Some(0),
        })
    }

    /// ObjectMeta as Go's protobuf encoder writes it: every non-pointer field
    /// present with its zero value, the zero creationTimestamp as an empty
    /// message.
    fn go_meta(name: &str, labels: &[(&str, &str)]) -> metav1::ObjectMeta {
        metav1::ObjectMeta {
            name: s(name),
            generate_name: s(""),
            namespace: s(""),
            self_link: s(""),
            uid: s(""),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(metav1::Time::default()),
            labels: map(labels),
            ..Default::default()
        }
    }

    fn decoded(body: &[u8]) -> Value {
        match decode(body) {
            Ok(value) => value,
            Err(err) => panic!("decode failed: {err}"),
        }
    }

    fn decode_error(body: &[u8]) -> ProtobufError {
        match decode(body) {
            Ok(value) => panic!("expected an error, decoded {value}"),
            Err(err) => err,
        }
    }

    // -- bodies captured from kubectl 1.32 ----------------------------------

    // Captured with a throwaway HTTP listener from
    //   kubectl create deployment web --image=shipshape/probe:v1 --replicas=3
    //   kubectl create namespace x
    //   kubectl create service nodeport web --tcp=80:8080 --node-port=30080
    //   kubectl create service clusterip api --tcp=443:https
    const KUBECTL_CREATE_DEPLOYMENT: &[u8] = b"\
        k8s\x00\x0a\x15\x0a\x07apps/v1\x12\x0aDeployment\x12\xb9\x01\x0a\x1f\x0a\x03web\
        \x12\x00\x1a\x00\x22\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12\x87\
        \x01\x08\x03\x12\x0c\x0a\x0a\x0a\x03app\x12\x03web\x1am\x0a\x1c\x0a\x00\x12\x00\
        \x1a\x00\x22\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12M\x12/\x0a\
        \x05probe\x12\x12shipshape/probe:v1*\x00B\x00j\x00r\x00\x80\x01\x00\x88\x01\x00\
        \x90\x01\x00\xa2\x01\x00\x1a\x002\x00B\x00J\x00R\x00X\x00`\x00h\x00\x82\x01\x00\
        \x8a\x01\x00\x9a\x01\x00\xc2\x01\x00\x22\x02\x0a\x00(\x008\x00\x1a\x0c\x08\x00\
        \x10\x00\x18\x00\x20\x00(\x008\x00\x1a\x00\x22\x00";

    const KUBECTL_CREATE_NAMESPACE: &[u8] = b"\
        k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x19\x0a\x11\x0a\x01x\x12\x00\x1a\
        \x00\x22\x00*\x002\x008\x00B\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00";

    const KUBECTL_CREATE_SERVICE_NODEPORT: &[u8] = b"\
        k8s\x00\x0a\x0d\x0a\x02v1\x12\x07Service\x12j\x0a\x1f\x0a\x03web\x12\x00\x1a\x00\
        \x22\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12C\x0a\x1d\x0a\x0780-8\
        080\x12\x03TCP\x18P\x22\x07\x08\x00\x10\x90?\x1a\x00(\x80\xeb\x01\x12\x0a\x0a\
        \x03app\x12\x03web\x1a\x00\x22\x08NodePort:\x00B\x00R\x00Z\x00`\x00h\x00\x1a\x02\
        \x0a\x00\x1a\x00\x22\x00";

    const KUBECTL_CREATE_SERVICE_CLUSTERIP: &[u8] = b"\
        k8s\x00\x0a\x0d\x0a\x02v1\x12\x07Service\x12p\x0a\x1f\x0a\x03api\x12\x00\x1a\x00\
        \x22\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03api\x12I\x0a\x22\x0a\x09443-\
        https\x12\x03TCP\x18\xbb\x03\x22\x0b\x08\x01\x10\x00\x1a\x05https(\x00\x12\x0a\
        \x0a\x03app\x12\x03api\x1a\x00\x22\x09ClusterIP:\x00B\x00R\x00Z\x00`\x00h\x00\
        \x1a\x02\x0a\x00\x1a\x00\x22\x00";

    /// What `kubectl create deployment web --image=shipshape/probe:v1
    /// --replicas=3 --dry-run=client -o json` prints, minus the
    /// `creationTimestamp: null`s and `status: {}`.
    fn web_deployment_json() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "probe", "image": "shipshape/probe:v1", "resources": {}}
                        ]
                    }
                },
                "strategy": {}
            }
        })
    }

    #[test]
    fn kubectl_create_deployment_body() {
        assert_eq!(decoded(KUBECTL_CREATE_DEPLOYMENT), web_deployment_json());
    }

    /// What `kubectl create secret generic s --from-literal=password=hunter2` and
    /// `kubectl create configmap c --from-literal=mode=fast` build: Go writes bytes in
    /// base64 and leaves out the empty maps.
    #[test]
    fn secrets_and_config_maps_keep_their_data() {
        let bytes = |pairs: &[(&str, &[u8])]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect()
        };
        let secret = corev1::Secret {
            metadata: Some(go_meta("s", &[])),
            immutable: None,
            data: bytes(&[("password", b"hunter2"), ("raw", &[0, 255])]),
            string_data: map(&[("user", "admin")]),
            r#type: s("Opaque"),
        };
        assert_eq!(
            decoded(&envelope("v1", "Secret", &secret)),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                   "data": {"password": "aHVudGVyMg==", "raw": "AP8="},
                   "stringData": {"user": "admin"}, "type": "Opaque"})
        );
        let config = corev1::ConfigMap {
            metadata: Some(go_meta("c", &[])),
            immutable: Some(true),
            data: map(&[("mode", "fast")]),
            binary_data: BTreeMap::new(),
        };
        assert_eq!(
            decoded(&envelope("v1", "ConfigMap", &config)),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                   "immutable": true, "data": {"mode": "fast"}})
        );
    }

    #[test]
    fn kubectl_create_namespace_body() {
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "x"},
            "spec": {}
        });
        assert_eq!(decoded(KUBECTL_CREATE_NAMESPACE), expected);
    }

    #[test]
    fn kubectl_create_service_nodeport_body() {
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "ports": [{
                    "name": "80-8080",
                    "protocol": "TCP",
                    "port": 80,
                    "targetPort": 8080,
                    "nodePort": 30080
                }],
                "selector": {"app": "web"},
                "type": "NodePort"
            }
        });
        assert_eq!(decoded(KUBECTL_CREATE_SERVICE_NODEPORT), expected);
    }

    #[test]
    fn kubectl_create_service_clusterip_body_with_named_target_port() {
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api", "labels": {"app": "api"}},
            "spec": {
                "ports": [{
                    "name": "443-https",
                    "protocol": "TCP",
                    "port": 443,
                    "targetPort": "https"
                }],
                "selector": {"app": "api"},
                "type": "ClusterIP"
            }
        });
        assert_eq!(decoded(KUBECTL_CREATE_SERVICE_CLUSTERIP), expected);
    }

    // -- messages built here -------------------------------------------------

    #[test]
    fn deployment_as_kubectl_create_builds_it() {
        let container = corev1::Container {
            name: s("probe"),
            image: s("shipshape/probe:v1"),
            working_dir: s(""),
            resources: Some(corev1::ResourceRequirements::default()),
            termination_message_path: s(""),
            termination_message_policy: s(""),
            image_pull_policy: s(""),
            stdin: Some(false),
            stdin_once: Some(false),
            tty: Some(false),
            ..Default::default()
        };
        let pod_spec = corev1::PodSpec {
            containers: vec![container],
            restart_policy: s(""),
            dns_policy: s(""),
            service_account_name: s(""),
            node_name: s(""),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            hostname: s(""),
            scheduler_name: s(""),
            ..Default::default()
        };
        let deployment = appsv1::Deployment {
            metadata: Some(go_meta("web", &[("app", "web")])),
            spec: Some(appsv1::DeploymentSpec {
                replicas: Some(3),
                selector: Some(metav1::LabelSelector {
                    match_labels: map(&[("app", "web")]),
                    match_expressions: vec![],
                }),
                template: Some(corev1::PodTemplateSpec {
                    metadata: Some(go_meta("", &[("app", "web")])),
                    spec: Some(pod_spec),
                }),
                strategy: Some(appsv1::DeploymentStrategy {
                    r#type: s(""),
                    rolling_update: None,
                }),
                min_ready_seconds: Some(0),
                paused: Some(false),
                ..Default::default()
            }),
            status: Some(appsv1::DeploymentStatus::default()),
        };
        let body = envelope("apps/v1", "Deployment", &deployment);
        assert_eq!(decoded(&body), web_deployment_json());
    }

    #[test]
    fn deployment_with_strategy_and_expressions() {
        let deployment = appsv1::Deployment {
            metadata: Some(metav1::ObjectMeta {
                name: s("web"),
                namespace: s("prod"),
                ..Default::default()
            }),
            spec: Some(appsv1::DeploymentSpec {
                replicas: Some(0),
                selector: Some(metav1::LabelSelector {
                    match_labels: BTreeMap::new(),
                    match_expressions: vec![metav1::LabelSelectorRequirement {
                        key: s("tier"),
                        operator: s("In"),
                        values: strings(&["web", "edge"]),
                    }],
                }),
                template: None,
                strategy: Some(appsv1::DeploymentStrategy {
                    r#type: s("RollingUpdate"),
                    rolling_update: Some(appsv1::RollingUpdateDeployment {
                        max_unavailable: int(0),
                        max_surge: string("25%"),
                    }),
                }),
                min_ready_seconds: Some(5),
                revision_history_limit: Some(0),
                paused: Some(true),
                progress_deadline_seconds: Some(600),
            }),
            status: None,
        };
        let expected = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {
                "replicas": 0,
                "selector": {
                    "matchExpressions": [
                        {"key": "tier", "operator": "In", "values": ["web", "edge"]}
                    ]
                },
                "template": {"metadata": {}, "spec": {"containers": []}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}
                },
                "minReadySeconds": 5,
                "revisionHistoryLimit": 0,
                "paused": true,
                "progressDeadlineSeconds": 600
            }
        });
        assert_eq!(
            decoded(&envelope("apps/v1", "Deployment", &deployment)),
            expected
        );
    }

    #[test]
    fn replica_set() {
        let replica_set = appsv1::ReplicaSet {
            metadata: Some(metav1::ObjectMeta {
                name: s("web-5d4f"),
                owner_references: vec![metav1::OwnerReference {
                    api_version: s("apps/v1"),
                    kind: s("Deployment"),
                    name: s("web"),
                    uid: s("d-1"),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }],
                ..Default::default()
            }),
            spec: Some(appsv1::ReplicaSetSpec {
                replicas: Some(2),
                min_ready_seconds: Some(0),
                selector: Some(metav1::LabelSelector {
                    match_labels: map(&[("app", "web"), ("pod-template-hash", "5d4f")]),
                    match_expressions: vec![],
                }),
                template: Some(corev1::PodTemplateSpec {
                    metadata: None,
                    spec: Some(corev1::PodSpec {
                        containers: vec![corev1::Container {
                            name: s("probe"),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
            }),
            status: None,
        };
        let expected = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "web-5d4f",
                "ownerReferences": [{
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "web",
                    "uid": "d-1",
                    "controller": true,
                    "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d4f"}},
                "template": {
                    "metadata": {},
                    "spec": {"containers": [{"name": "probe", "resources": {}}]}
                }
            }
        });
        assert_eq!(
            decoded(&envelope("apps/v1", "ReplicaSet", &replica_set)),
            expected
        );
    }

    #[test]
    fn object_meta_fields() {
        let namespace = corev1::Namespace {
            metadata: Some(metav1::ObjectMeta {
                name: s("x"),
                generate_name: s("x-"),
                uid: s("0b5e"),
                resource_version: s("42"),
                generation: Some(3),
                creation_timestamp: at_seconds(1_700_000_000),
                deletion_timestamp: at_seconds(1_700_000_030),
                deletion_grace_period_seconds: Some(0),
                labels: map(&[("team", "a")]),
                annotations: map(&[("note", "hi")]),
                finalizers: strings(&["shipshape.io/cleanup"]),
                ..Default::default()
            }),
            spec: Some(corev1::NamespaceSpec {
                finalizers: strings(&["kubernetes"]),
            }),
            status: Some(corev1::NamespaceStatus::default()),
        };
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "x",
                "generateName": "x-",
                "uid": "0b5e",
                "resourceVersion": "42",
                "generation": 3,
                "creationTimestamp": "2023-11-14T22:13:20Z",
                "deletionTimestamp": "2023-11-14T22:13:50Z",
                "deletionGracePeriodSeconds": 0,
                "labels": {"team": "a"},
                "annotations": {"note": "hi"},
                "finalizers": ["shipshape.io/cleanup"]
            },
            "spec": {"finalizers": ["kubernetes"]}
        });
        assert_eq!(decoded(&envelope("v1", "Namespace", &namespace)), expected);
    }

    #[test]
    fn service_ports_and_target_ports() {
        let port = |name: &str, port: i32, target: Option<IntOrString>, node_port: i32| {
            corev1::ServicePort {
                name: s(name),
                protocol: s("TCP"),
                app_protocol: None,
                port: Some(port),
                target_port: target,
                node_port: Some(node_port),
            }
        };
        let service = corev1::Service {
            metadata: Some(metav1::ObjectMeta {
                name: s("web"),
                namespace: s("default"),
                ..Default::default()
            }),
            spec: Some(corev1::ServiceSpec {
                ports: vec![
                    port("http", 80, int(8080), 30080),
                    port("https", 443, string("https"), 0),
                    // Go's encoder writes an unset targetPort as int 0.
                    port("metrics", 9090, int(0), 0),
                ],
                selector: map(&[("app", "web")]),
                cluster_ip: s("10.96.0.10"),
                cluster_ips: strings(&["10.96.0.10"]),
                r#type: s("NodePort"),
                session_affinity: s("None"),
                external_traffic_policy: s("Cluster"),
                health_check_node_port: Some(0),
                publish_not_ready_addresses: Some(false),
                ip_families: strings(&["IPv4"]),
                ip_family_policy: s("SingleStack"),
                ..Default::default()
            }),
            status: None,
        };
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080},
                    {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"},
                    {"name": "metrics", "protocol": "TCP", "port": 9090}
                ],
                "selector": {"app": "web"},
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "type": "NodePort",
                "sessionAffinity": "None",
                "externalTrafficPolicy": "Cluster",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack"
            }
        });
        assert_eq!(decoded(&envelope("v1", "Service", &service)), expected);
    }

    #[test]
    fn eviction_with_delete_options() {
        let eviction = policyv1::Eviction {
            metadata: Some(go_meta("p1", &[])),
            delete_options: Some(metav1::DeleteOptions {
                grace_period_seconds: Some(30),
                ..Default::default()
            }),
        };
        let expected = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "p1"},
            "deleteOptions": {"gracePeriodSeconds": 30}
        });
        assert_eq!(
            decoded(&envelope("policy/v1", "Eviction", &eviction)),
            expected
        );

        // `kubectl drain` without --grace-period sends empty delete options.
        let eviction = policyv1::Eviction {
            metadata: Some(metav1::ObjectMeta {
                name: s("p1"),
                namespace: s("default"),
                ..Default::default()
            }),
            delete_options: Some(metav1::DeleteOptions::default()),
        };
        let expected = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "p1", "namespace": "default"},
            "deleteOptions": {}
        });
        assert_eq!(
            decoded(&envelope("policy/v1", "Eviction", &eviction)),
            expected
        );
    }

    #[test]
    fn delete_options_under_any_group_version() {
        let options = metav1::DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(metav1::Preconditions {
                uid: s("u1"),
                resource_version: None,
            }),
            orphan_dependents: None,
            propagation_policy: s("Foreground"),
            dry_run: strings(&["All"]),
            ignore_store_read_error_with_cluster_breaking_potential: None,
        };
        for api_version in ["v1", "meta.k8s.io/v1", "apps/v1"] {
            let expected = json!({
                "apiVersion": api_version,
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "u1"},
                "propagationPolicy": "Foreground",
                "dryRun": ["All"]
            });
            let body = envelope(api_version, "DeleteOptions", &options);
            assert_eq!(decoded(&body), expected);
        }
    }

    #[test]
    fn pod_with_the_realistic_fields() {
        let http_probe = corev1::Probe {
            handler: Some(corev1::ProbeHandler {
                http_get: Some(corev1::HttpGetAction {
                    path: s("/healthz"),
                    port: int(8080),
                    host: s(""),
                    scheme: s("HTTP"),
                    http_headers: vec![corev1::HttpHeader {
                        name: s("X-Probe"),
                        value: s("1"),
                    }],
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(0),
            timeout_seconds: Some(1),
            period_seconds: Some(10),
            success_threshold: Some(1),
            failure_threshold: Some(3),
            termination_grace_period_seconds: None,
        };
        let tcp_probe = corev1::Probe {
            handler: Some(corev1::ProbeHandler {
                tcp_socket: Some(corev1::TcpSocketAction {
                    port: string("http"),
                    host: None,
                }),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        };
        let exec_probe = corev1::Probe {
            handler: Some(corev1::ProbeHandler {
                exec: Some(corev1::ExecAction {
                    command: strings(&["cat", "/tmp/ready"]),
                }),
                ..Default::default()
            }),
            failure_threshold: Some(30),
            termination_grace_period_seconds: Some(10),
            ..Default::default()
        };
        let env = vec![
            corev1::EnvVar {
                name: s("MODE"),
                value: s("fast"),
                value_from: None,
            },
            corev1::EnvVar {
                name: s("EMPTY"),
                value: s(""),
                value_from: None,
            },
            corev1::EnvVar {
                name: s("NODE"),
                value: s(""),
                value_from: Some(corev1::EnvVarSource {
                    field_ref: Some(corev1::ObjectFieldSelector {
                        api_version: s("v1"),
                        field_path: s("spec.nodeName"),
                    }),
                    ..Default::default()
                }),
            },
            corev1::EnvVar {
                name: s("MEM"),
                value: None,
                value_from: Some(corev1::EnvVarSource {
                    resource_field_ref: Some(corev1::ResourceFieldSelector {
                        container_name: s("app"),
                        resource: s("limits.memory"),
                        divisor: Some(Quantity { string: s("1Mi") }),
                    }),
                    ..Default::default()
                }),
            },
            corev1::EnvVar {
                name: s("LEVEL"),
                value: None,
                value_from: Some(corev1::EnvVarSource {
                    config_map_key_ref: Some(corev1::ConfigMapKeySelector {
                        local_object_reference: Some(corev1::LocalObjectReference {
                            name: s("settings"),
                        }),
                        key: s("level"),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            },
            corev1::EnvVar {
                name: s("TOKEN"),
                value: None,
                value_from: Some(corev1::EnvVarSource {
                    secret_key_ref: Some(corev1::SecretKeySelector {
                        local_object_reference: Some(corev1::LocalObjectReference {
                            name: s("creds"),
                        }),
                        key: s("token"),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
        ];
        let app = corev1::Container {
            name: s("app"),
            image: s("shipshape/probe:v1"),
            command: strings(&["/probe"]),
            args: strings(&["--listen=:8080"]),
            working_dir: s("/srv"),
            ports: vec![corev1::ContainerPort {
                name: s("http"),
                host_port: Some(0),
                container_port: Some(8080),
                protocol: s("TCP"),
                host_ip: s(""),
            }],
            env,
            resources: Some(corev1::ResourceRequirements {
                limits: quantities(&[("cpu", "500m"), ("memory", "128Mi")]),
                requests: quantities(&[("cpu", "100m")]),
                claims: vec![],
            }),
            volume_mounts: vec![
                corev1::VolumeMount {
                    name: s("data"),
                    read_only: Some(false),
                    mount_path: s("/data"),
                    sub_path: s(""),
                    ..Default::default()
                },
                corev1::VolumeMount {
                    name: s("config"),
                    read_only: Some(true),
                    mount_path: s("/etc/probe"),
                    ..Default::default()
                },
            ],
            liveness_probe: Some(http_probe),
            readiness_probe: Some(tcp_probe),
            startup_probe: Some(exec_probe),
            lifecycle: Some(corev1::Lifecycle {
                post_start: None,
                pre_stop: Some(corev1::LifecycleHandler {
                    exec: Some(corev1::ExecAction {
                        command: strings(&["sleep", "5"]),
                    }),
                    ..Default::default()
                }),
                stop_signal: None,
            }),
            termination_message_path: s("/dev/termination-log"),
            termination_message_policy: s("File"),
            image_pull_policy: s("IfNotPresent"),
            security_context: Some(corev1::SecurityContext {
                capabilities: Some(corev1::Capabilities {
                    add: strings(&["NET_ADMIN"]),
                    drop: strings(&["ALL"]),
                }),
                privileged: Some(false),
                run_as_user: Some(0),
                run_as_non_root: Some(false),
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: Some(false),
                ..Default::default()
            }),
            stdin: Some(false),
            tty: Some(true),
            ..Default::default()
        };
        let init = corev1::Container {
            name: s("init"),
            image: s("busybox"),
            command: strings(&["true"]),
            liveness_probe: Some(corev1::Probe {
                handler: Some(corev1::ProbeHandler {
                    grpc: Some(corev1::GrpcAction {
                        port: Some(9000),
                        service: s(""),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let volumes = vec![
            corev1::Volume {
                name: s("data"),
                volume_source: Some(corev1::VolumeSource {
                    empty_dir: Some(corev1::EmptyDirVolumeSource {
                        medium: s(""),
                        size_limit: Some(Quantity { string: s("1Gi") }),
                    }),
                    ..Default::default()
                }),
            },
            corev1::Volume {
                name: s("host"),
                volume_source: Some(corev1::VolumeSource {
                    host_path: Some(corev1::HostPathVolumeSource {
                        path: s("/var/log"),
                        r#type: s(""),
                    }),
                    ..Default::default()
                }),
            },
            corev1::Volume {
                name: s("config"),
                volume_source: Some(corev1::VolumeSource {
                    config_map: Some(corev1::ConfigMapVolumeSource {
                        local_object_reference: Some(corev1::LocalObjectReference {
                            name: s("probe-config"),
                        }),
                        items: vec![corev1::KeyToPath {
                            key: s("probe.yaml"),
                            path: s("probe.yaml"),
                            mode: Some(0o644),
                        }],
                        default_mode: Some(420),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
            corev1::Volume {
                name: s("creds"),
                volume_source: Some(corev1::VolumeSource {
                    secret: Some(corev1::SecretVolumeSource {
                        secret_name: s("creds"),
                        items: vec![],
                        default_mode: Some(256),
                        optional: Some(true),
                    }),
                    ..Default::default()
                }),
            },
        ];
        let pod = corev1::Pod {
            metadata: Some(metav1::ObjectMeta {
                name: s("probe"),
                namespace: s("default"),
                labels: map(&[("app", "probe")]),
                ..Default::default()
            }),
            spec: Some(corev1::PodSpec {
                volumes,
                init_containers: vec![init],
                containers: vec![app],
                restart_policy: s("Always"),
                termination_grace_period_seconds: Some(30),
                active_deadline_seconds: Some(3600),
                dns_policy: s("ClusterFirst"),
                node_selector: map(&[("disk", "ssd")]),
                service_account_name: s("probe"),
                node_name: s("node-1"),
                host_network: Some(true),
                host_pid: Some(false),
                security_context: Some(corev1::PodSecurityContext {
                    run_as_user: Some(1000),
                    run_as_group: Some(1000),
                    run_as_non_root: Some(true),
                    supplemental_groups: vec![2000],
                    fs_group: Some(2000),
                    ..Default::default()
                }),
                image_pull_secrets: vec![corev1::LocalObjectReference { name: s("regcred") }],
                hostname: s("probe-0"),
                subdomain: s("probes"),
                scheduler_name: s("default-scheduler"),
                tolerations: vec![
                    corev1::Toleration {
                        key: s("node.kubernetes.io/unreachable"),
                        operator: s("Exists"),
                        value: s(""),
                        effect: s("NoExecute"),
                        toleration_seconds: Some(300),
                    },
                    corev1::Toleration {
                        key: s("dedicated"),
                        operator: s("Equal"),
                        value: s("probes"),
                        effect: s("NoSchedule"),
                        toleration_seconds: None,
                    },
                ],
                priority: Some(0),
                enable_service_links: Some(true),
                ..Default::default()
            }),
            status: Some(corev1::PodStatus {
                phase: s("Running"),
                ..Default::default()
            }),
        };
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", "namespace": "default", "labels": {"app": "probe"}},
            "spec": {
                "volumes": [
                    {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "host", "hostPath": {"path": "/var/log", "type": ""}},
                    {
                        "name": "config",
                        "configMap": {
                            "name": "probe-config",
                            "items": [{"key": "probe.yaml", "path": "probe.yaml", "mode": 420}],
                            "defaultMode": 420
                        }
                    },
                    {
                        "name": "creds",
                        "secret": {"secretName": "creds", "defaultMode": 256, "optional": true}
                    }
                ],
                "initContainers": [{
                    "name": "init",
                    "image": "busybox",
                    "command": ["true"],
                    "resources": {},
                    "livenessProbe": {"grpc": {"port": 9000, "service": ""}}
                }],
                "containers": [{
                    "name": "app",
                    "image": "shipshape/probe:v1",
                    "command": ["/probe"],
                    "args": ["--listen=:8080"],
                    "workingDir": "/srv",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [
                        {"name": "MODE", "value": "fast"},
                        {"name": "EMPTY"},
                        {
                            "name": "NODE",
                            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}
                        },
                        {
                            "name": "MEM",
                            "valueFrom": {"resourceFieldRef": {
                                "containerName": "app",
                                "resource": "limits.memory",
                                "divisor": "1Mi"
                            }}
                        },
                        {
                            "name": "LEVEL",
                            "valueFrom": {"configMapKeyRef": {
                                "name": "settings",
                                "key": "level",
                                "optional": false
                            }}
                        },
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}
                        }
                    ],
                    "resources": {
                        "limits": {"cpu": "500m", "memory": "128Mi"},
                        "requests": {"cpu": "100m"}
                    },
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "config", "readOnly": true, "mountPath": "/etc/probe"}
                    ],
                    "livenessProbe": {
                        "httpGet": {
                            "path": "/healthz",
                            "port": 8080,
                            "scheme": "HTTP",
                            "httpHeaders": [{"name": "X-Probe", "value": "1"}]
                        },
                        "timeoutSeconds": 1,
                        "periodSeconds": 10,
                        "successThreshold": 1,
                        "failureThreshold": 3
                    },
                    "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
                    "startupProbe": {
                        "exec": {"command": ["cat", "/tmp/ready"]},
                        "failureThreshold": 30,
                        "terminationGracePeriodSeconds": 10
                    },
                    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                    "securityContext": {
                        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                        "privileged": false,
                        "runAsUser": 0,
                        "runAsNonRoot": false,
                        "readOnlyRootFilesystem": true,
                        "allowPrivilegeEscalation": false
                    },
                    "tty": true
                }],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "activeDeadlineSeconds": 3600,
                "dnsPolicy": "ClusterFirst",
                "nodeSelector": {"disk": "ssd"},
                "serviceAccountName": "probe",
                "nodeName": "node-1",
                "hostNetwork": true,
                "securityContext": {
                    "runAsUser": 1000,
                    "runAsGroup": 1000,
                    "runAsNonRoot": true,
                    "supplementalGroups": [2000],
                    "fsGroup": 2000
                },
                "imagePullSecrets": [{"name": "regcred"}],
                "hostname": "probe-0",
                "subdomain": "probes",
                "schedulerName": "default-scheduler",
                "tolerations": [
                    {
                        "key": "node.kubernetes.io/unreachable",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300
                    },
                    {"key": "dedicated", "operator": "Equal", "value": "probes", "effect": "NoSchedule"}
                ],
                "priority": 0,
                "enableServiceLinks": true
            }
        });
        assert_eq!(decoded(&envelope("v1", "Pod", &pod)), expected);
    }

    #[test]
    fn node_spec_and_labels() {
        let node = corev1::Node {
            metadata: Some(metav1::ObjectMeta {
                name: s("node-1"),
                labels: map(&[("kubernetes.io/hostname", "node-1")]),
                ..Default::default()
            }),
            spec: Some(corev1::NodeSpec {
                pod_cidr: s("10.244.1.0/24"),
                pod_cid_rs: strings(&["10.244.1.0/24"]),
                provider_id: s("shipshape://node-1"),
                unschedulable: Some(true),
                taints: vec![
                    corev1::Taint {
                        key: s("node.kubernetes.io/unschedulable"),
                        value: s(""),
                        effect: s("NoSchedule"),
                        time_added: at_seconds(0),
                    },
                    corev1::Taint {
                        key: s("dedicated"),
                        value: s("probes"),
                        effect: s("NoExecute"),
                        time_added: None,
                    },
                ],
                config_source: None,
                external_id: s(""),
            }),
            status: None,
        };
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
            "spec": {
                "podCIDR": "10.244.1.0/24",
                "podCIDRs": ["10.244.1.0/24"],
                "providerID": "shipshape://node-1",
                "unschedulable": true,
                "taints": [
                    {
                        "key": "node.kubernetes.io/unschedulable",
                        "effect": "NoSchedule",
                        "timeAdded": "1970-01-01T00:00:00Z"
                    },
                    {"key": "dedicated", "value": "probes", "effect": "NoExecute"}
                ]
            }
        });
        assert_eq!(decoded(&envelope("v1", "Node", &node)), expected);
    }

    #[test]
    fn endpoints_subsets() {
        let endpoints = corev1::Endpoints {
            metadata: Some(metav1::ObjectMeta {
                name: s("web"),
                namespace: s("default"),
                ..Default::default()
            }),
            subsets: vec![corev1::EndpointSubset {
                addresses: vec![corev1::EndpointAddress {
                    ip: s("10.244.1.5"),
                    hostname: s(""),
                    node_name: s("node-1"),
                    target_ref: Some(corev1::ObjectReference {
                        kind: s("Pod"),
                        namespace: s("default"),
                        name: s("web-1"),
                        uid: s("p-1"),
                        ..Default::default()
                    }),
                }],
                not_ready_addresses: vec![corev1::EndpointAddress {
                    ip: s("10.244.2.7"),
                    ..Default::default()
                }],
                ports: vec![corev1::EndpointPort {
                    name: s("http"),
                    port: Some(8080),
                    protocol: s("TCP"),
                    app_protocol: None,
                }],
            }],
        };
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{
                "addresses": [{
                    "ip": "10.244.1.5",
                    "nodeName": "node-1",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1", "uid": "p-1"}
                }],
                "notReadyAddresses": [{"ip": "10.244.2.7"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
            }]
        });
        assert_eq!(decoded(&envelope("v1", "Endpoints", &endpoints)), expected);
    }

    #[test]
    fn event_basics_and_micro_time() {
        let event = corev1::Event {
            metadata: Some(metav1::ObjectMeta {
                name: s("web.17a"),
                namespace: s("default"),
                ..Default::default()
            }),
            involved_object: Some(corev1::ObjectReference {
                kind: s("Deployment"),
                namespace: s("default"),
                name: s("web"),
                api_version: s("apps/v1"),
                ..Default::default()
            }),
            reason: s("ScalingReplicaSet"),
            message: s("Scaled up replica set web-5d4f to 3"),
            source: Some(corev1::EventSource {
                component: s("deployment-controller"),
                host: s(""),
            }),
            first_timestamp: at_seconds(1_700_000_000),
            last_timestamp: at_seconds(1_700_000_060),
            count: Some(2),
            r#type: s("Normal"),
            event_time: Some(metav1::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(123_456_789),
            }),
            series: None,
            action: s(""),
            related: None,
            reporting_component: s("shipshape"),
            reporting_instance: None,
        };
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "web.17a", "namespace": "default"},
            "involvedObject": {
                "kind": "Deployment",
                "namespace": "default",
                "name": "web",
                "apiVersion": "apps/v1"
            },
            "reason": "ScalingReplicaSet",
            "message": "Scaled up replica set web-5d4f to 3",
            "source": {"component": "deployment-controller"},
            "firstTimestamp": "2023-11-14T22:13:20Z",
            "lastTimestamp": "2023-11-14T22:14:20Z",
            "count": 2,
            "type": "Normal",
            "eventTime": "2023-11-14T22:13:20.123456Z",
            "reportingComponent": "shipshape",
            "reportingInstance": ""
        });
        assert_eq!(decoded(&envelope("v1", "Event", &event)), expected);
    }

    #[test]
    fn timestamps() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_210_096, "2024-02-29T12:34:56Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (MIN_SECONDS, "0000-01-01T00:00:00Z"),
            (MAX_SECONDS, "9999-12-31T23:59:59Z"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(rfc3339(seconds, None).ok().as_deref(), Some(expected));
        }
        assert!(rfc3339(MIN_SECONDS - 1, None).is_err());
        assert!(rfc3339(MAX_SECONDS + 1, None).is_err());
        assert!(rfc3339(i64::MIN, None).is_err());

        let micro = |seconds, nanos| {
            micro_time(&metav1::MicroTime {
                seconds: Some(seconds),
                nanos: Some(nanos),
            })
            .ok()
            .flatten()
        };
        assert_eq!(micro(0, 1_000), Some(json!("1970-01-01T00:00:00.000001Z")));
        assert_eq!(micro(0, -1_000), Some(json!("1969-12-31T23:59:59.999999Z")));
        assert_eq!(micro(0, 999), Some(json!("1970-01-01T00:00:00.000000Z")));
        assert_eq!(micro(GO_ZERO_TIME, 0), None);
        assert!(
            micro_time(&metav1::MicroTime {
                seconds: Some(i64::MAX),
                nanos: Some(i32::MAX),
            })
            .is_err()
        );

        assert_eq!(time_value(metav1::Time::default()), Ok(None));
        assert_eq!(
            time_value(metav1::Time {
                seconds: Some(GO_ZERO_TIME),
                nanos: None,
            }),
            Ok(None)
        );
    }

    fn time_value(t: metav1::Time) -> Result<Option<Value>, String> {
        super::time(&t).map_err(|e| e.problem)
    }

    // -- errors ---------------------------------------------------------------

    #[test]
    fn rejects_a_body_without_magic() {
        assert!(matches!(decode_error(b""), ProtobufError::MissingMagic));
        assert!(matches!(decode_error(b"k8s"), ProtobufError::MissingMagic));
        assert!(matches!(
            decode_error(br#"{"kind":"Namespace"}"#),
            ProtobufError::MissingMagic
        ));
        let json_like = &KUBECTL_CREATE_NAMESPACE[1..];
        assert!(matches!(
            decode_error(json_like),
            ProtobufError::MissingMagic
        ));
    }

    #[test]
    fn rejects_garbage_after_magic() {
        let err = decode_error(b"k8s\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff");
        assert!(matches!(err, ProtobufError::Envelope(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("failed to decode the runtime.Unknown envelope")
        );

        // An envelope whose typeMeta claims 100 bytes but has 2.
        let err = decode_error(b"k8s\0\x0a\x64\x0a\x02");
        assert!(matches!(err, ProtobufError::Envelope(_)), "{err}");
    }

    #[test]
    fn rejects_an_envelope_without_type_meta() {
        assert!(matches!(
            decode_error(b"k8s\0"),
            ProtobufError::MissingTypeMeta
        ));
        let body = envelope("", "Deployment", &appsv1::Deployment::default());
        assert!(matches!(
            decode_error(&body),
            ProtobufError::MissingTypeMeta
        ));
        let body = envelope("apps/v1", "", &appsv1::Deployment::default());
        assert!(matches!(
            decode_error(&body),
            ProtobufError::MissingTypeMeta
        ));
    }

    #[test]
    fn rejects_unsupported_kinds() {
        let body = envelope(
            "v1",
            "PersistentVolume",
            &corev1::PersistentVolume::default(),
        );
        let err = decode_error(&body);
        assert!(
            matches!(&err, ProtobufError::UnsupportedKind { api_version, kind }
                if api_version == "v1" && kind == "PersistentVolume"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "unsupported kind \"PersistentVolume\" (apiVersion \"v1\") in a protobuf body; \
             send it as application/json"
        );
        // The right kind in the wrong group version is not guessed at.
        let body = envelope("apps/v1beta1", "Deployment", &appsv1::Deployment::default());
        assert!(matches!(
            decode_error(&body),
            ProtobufError::UnsupportedKind { .. }
        ));
    }

    #[test]
    fn rejects_content_encodings() {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: s("v1"),
                kind: s("Namespace"),
            }),
            raw: Some(vec![]),
            content_encoding: s("gzip"),
            content_type: None,
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        assert!(matches!(
            decode_error(&body),
            ProtobufError::UnsupportedContentEncoding { encoding } if encoding == "gzip"
        ));
    }

    #[test]
    fn rejects_a_truncated_object() {
        let raw = appsv1::Deployment {
            metadata: Some(go_meta("web", &[("app", "web")])),
            ..Default::default()
        }
        .encode_to_vec();
        let body = envelope_raw("apps/v1", "Deployment", raw[..raw.len() - 3].to_vec());
        let err = decode_error(&body);
        assert!(
            matches!(&err, ProtobufError::Object { kind, .. } if kind == "apps/v1 Deployment"),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("failed to decode apps/v1 Deployment from protobuf")
        );
    }

    #[test]
    fn rejects_invalid_utf8_in_strings() {
        let mut raw = corev1::Namespace {
            metadata: Some(metav1::ObjectMeta {
                name: s("xx"),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let last = raw.len() - 1;
        raw[last] = 0xff;
        let body = envelope_raw("v1", "Namespace", raw);
        assert!(matches!(decode_error(&body), ProtobufError::Object { .. }));
    }

    #[test]
    fn reports_where_an_unrenderable_value_sits() {
        let mut deployment = appsv1::Deployment::default();
        let container = corev1::Container {
            name: s("probe"),
            liveness_probe: Some(corev1::Probe {
                handler: Some(corev1::ProbeHandler {
                    http_get: Some(corev1::HttpGetAction {
                        port: Some(IntOrString {
                            r#type: Some(7),
                            int_val: None,
                            str_val: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        deployment.spec = Some(appsv1::DeploymentSpec {
            template: Some(corev1::PodTemplateSpec {
                metadata: None,
                spec: Some(corev1::PodSpec {
                    containers: vec![corev1::Container::default(), container],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        });
        let err = decode_error(&envelope("apps/v1", "Deployment", &deployment));
        assert_eq!(
            err.to_string(),
            "failed to convert apps/v1 Deployment to JSON: \
             spec.template.spec.containers[1].livenessProbe.httpGet.port: \
             unsupported IntOrString type 7 (expected 0 for an int or 1 for a string)"
        );
    }

    #[test]
    fn rejects_timestamps_outside_rfc3339_years() {
        let namespace = corev1::Namespace {
            metadata: Some(metav1::ObjectMeta {
                name: s("x"),
                creation_timestamp: at_seconds(i64::MAX),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = decode_error(&envelope("v1", "Namespace", &namespace));
        assert!(
            matches!(&err, ProtobufError::Value { path, .. } if path == "metadata.creationTimestamp"),
            "{err}"
        );
    }

    /// Every prefix of a real body, and every single-byte corruption of it,
    /// decodes or errors; none panics.
    #[test]
    fn never_panics_on_mangled_bodies() {
        let bodies = [
            KUBECTL_CREATE_DEPLOYMENT,
            KUBECTL_CREATE_NAMESPACE,
            KUBECTL_CREATE_SERVICE_NODEPORT,
            KUBECTL_CREATE_SERVICE_CLUSTERIP,
        ];
        for body in bodies {
            for end in 0..body.len() {
                let _ = decode(&body[..end]);
            }
            for i in 0..body.len() {
                for byte in [0x00, 0x01, 0x7f, 0x80, 0xff, body[i] ^ 0x08] {
                    let mut mangled = body.to_vec();
                    mangled[i] = byte;
                    let _ = decode(&mangled);
                }
            }
        }
    }

    /// Pseudo-random bytes after the magic, including inside a valid envelope.
    #[test]
    fn never_panics_on_random_bytes() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let kinds = [
            ("apps/v1", "Deployment"),
            ("apps/v1", "ReplicaSet"),
            ("v1", "Pod"),
            ("v1", "Service"),
            ("v1", "Namespace"),
            ("v1", "Node"),
            ("v1", "Endpoints"),
            ("v1", "Event"),
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("v1", "ServiceAccount"),
            ("policy/v1", "Eviction"),
            ("v1", "DeleteOptions"),
        ];
        for round in 0..4_000 {
            let len = (next() % 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut body = MAGIC.to_vec();
            body.extend(&bytes);
            let _ = decode(&body);
            let (api_version, kind) = kinds[round % kinds.len()];
            let _ = decode(&envelope_raw(api_version, kind, bytes));
        }
    }
}
