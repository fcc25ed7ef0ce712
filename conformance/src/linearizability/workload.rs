//! The clients whose history is checked: tasks that create, read, compare-and-set and
//! delete a few objects through any Kubernetes API, recording every call.
//!
//! The objects are core/v1 Events in the scenario's namespace: every Kubernetes API has
//! them, no controller writes them, and nothing runs because of them. The value is the
//! event's `message`. A compare-and-set is what every controller does: read the object,
//! then replace it sending the `resourceVersion` read, which the system must refuse (409)
//! if anything wrote the object in between. Every value written is new, so the model can
//! say "still holds the value I read" where the system checks the version.
//!
//! An answer the client cannot interpret as done or not done — a timeout, a reset
//! connection, a 5xx — is recorded as unknown. A refused connection, and a refusal the
//! model has no word for (a 4xx such as "the namespace does not exist"), are not recorded
//! at all: the request did nothing.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Input, Output, Recorder};

/// How long one call may take before its outcome counts as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two calls of one client, so that the clients load the system without
/// starving what else the scenario runs.
const THINK: Duration = Duration::from_millis(15);

/// Pause after a call that found the system unreachable.
const UNREACHABLE_PAUSE: Duration = Duration::from_millis(100);

/// Where the clients get a Kubernetes client from, asked before every call (a driver may
/// hand out a new one after a control-plane restart).
pub type ClientSource = std::sync::Arc<dyn Fn() -> anyhow::Result<kube::Client> + Send + Sync>;

/// Clients running in the background.
#[derive(Debug)]
pub struct Workload {
    recorder: Recorder,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    keys: Vec<String>,
    namespace: String,
}

impl Workload {
    /// Starts `clients` clients on `keys` objects named `<prefix>-<n>` in `namespace`.
    pub fn start(
        source: ClientSource,
        namespace: &str,
        prefix: &str,
        clients: usize,
        keys: usize,
    ) -> Workload {
        let recorder = Recorder::new();
        let (stop, stopped) = watch::channel(false);
        let keys: Vec<String> = (0..keys).map(|n| format!("{prefix}-{n}")).collect();
        let tasks = (0..clients)
            .map(|id| {
                let client = Client {
                    id,
                    source: source.clone(),
                    namespace: namespace.to_owned(),
                    keys: keys.clone(),
                    recorder: recorder.clone(),
                    written: 0,
                    random: 0x9E37_79B9_7F4A_7C15
                        ^ (id as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
                };
                tokio::spawn(client.run(stopped.clone()))
            })
            .collect();
        Workload {
            recorder,
            stop,
            tasks,
            keys,
            namespace: namespace.to_owned(),
        }
    }

    /// Reads every object once, all at once, through `client` — one member of several,
    /// say — as one more client of the history (numbered after the others); the reads it
    /// answers within `limit` join the history (one not answered changed nothing).
    /// Returns how many it answered.
    pub async fn read_through(&self, client: kube::Client, limit: Duration) -> usize {
        let id = self.tasks.len();
        let reads = self.keys.iter().map(|key| {
            let client = client.clone();
            let mut reader = Client {
                id,
                source: std::sync::Arc::new(move || Ok(client.clone())),
                namespace: self.namespace.clone(),
                keys: self.keys.clone(),
                recorder: self.recorder.clone(),
                written: 0,
                random: 0,
            };
            async move {
                matches!(
                    tokio::time::timeout(limit, reader.read(key)).await,
                    Ok(Answer::Answered(_))
                )
            }
        });
        futures::future::join_all(reads)
            .await
            .into_iter()
            .filter(|answered| *answered)
            .count()
    }

    /// The objects the clients work on.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The history recorded so far.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Stops the clients, waits for their calls in flight, and returns the history.
    pub async fn stop(mut self) -> Recorder {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.recorder.clone()
    }
}

impl Drop for Workload {
    /// A scenario that ends before its history is checked stops its clients at once.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How one call ended, as far as the client can tell.
enum Answer<T> {
    /// The system answered.
    Answered(T),
    /// The request never reached the system: nothing to record.
    Unreachable,
    /// The system refused the request for a reason the model does not know; it did
    /// nothing, so there is nothing to record either.
    Refused,
    /// Nobody knows whether it took effect.
    Unknown,
}

/// One client.
struct Client {
    id: usize,
    source: ClientSource,
    namespace: String,
    keys: Vec<String>,
    recorder: Recorder,
    /// How many values this client wrote, to make each one new.
    written: u64,
    random: u64,
}

impl Client {
    fn below(&mut self, n: u64) -> u64 {
        // splitmix64: the clients need variety, not cryptography.
        self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }

    fn fresh_value(&mut self) -> String {
        self.written += 1;
        format!("c{}-{}", self.id, self.written)
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        while !*stopped.borrow() {
            let pick = self.below(self.keys.len() as u64) as usize;
            let key = self.keys[pick].clone();
            let reached = match self.below(10) {
                0 | 1 => self.create(&key).await,
                2..=4 => !matches!(self.read(&key).await, Answer::Unreachable),
                5..=8 => self.compare_and_set(&key).await,
                _ => self.delete(&key).await,
            };
            let pause = if reached { THINK } else { UNREACHABLE_PAUSE };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    fn api(&self) -> Option<Api<Event>> {
        let client = (self.source)().ok()?;
        Some(Api::namespaced(client, &self.namespace))
    }

    /// Records a write's answer; whether the system was reached.
    fn record(&self, key: &str, input: Input, invoked: u64, answer: Answer<Output>) -> bool {
        match answer {
            Answer::Answered(output) => self.recorder.record(self.id, key, input, invoked, output),
            Answer::Unknown => self
                .recorder
                .record(self.id, key, input, invoked, Output::Unknown),
            Answer::Refused => {}
            Answer::Unreachable => return false,
        }
        true
    }

    async fn create(&mut self, key: &str) -> bool {
        let value = self.fresh_value();
        let Some(api) = self.api() else { return false };
        let event = event(&self.namespace, key, &value, None);
        let invoked = self.recorder.now();
        let answer = call(
            api.create(&PostParams::default(), &event),
            |result| match result {
                Ok(_) => Some(Output::Created),
                Err(status) if status.code == 409 => Some(Output::AlreadyExists),
                Err(_) => None,
            },
        )
        .await;
        self.record(key, Input::Create(value), invoked, answer)
    }

    /// Reads `key` and records what it holds; the event read (for its version and
    /// identity), if the system answered.
    async fn read(&mut self, key: &str) -> Answer<Option<Event>> {
        let Some(api) = self.api() else {
            return Answer::Unreachable;
        };
        let invoked = self.recorder.now();
        let answer = call(api.get(key), |result| match result {
            Ok(event) => Some(Some(event)),
            Err(status) if status.code == 404 => Some(None),
            Err(_) => None,
        })
        .await;
        if let Answer::Answered(event) = &answer {
            let value = event
                .as_ref()
                .map(|e| e.message.clone().unwrap_or_default());
            self.recorder
                .record(self.id, key, Input::Read, invoked, Output::Value(value));
        }
        // A read that got no answer changed nothing: it is left out of the history.
        answer
    }

    async fn compare_and_set(&mut self, key: &str) -> bool {
        let current = match self.read(key).await {
            Answer::Answered(Some(current)) => current,
            // Nothing to base an update on: create it instead.
            Answer::Answered(None) => return self.create(key).await,
            Answer::Unknown | Answer::Refused => return true,
            Answer::Unreachable => return false,
        };
        let from = current.message.clone().unwrap_or_default();
        let uid = current.metadata.uid.clone();
        let to = self.fresh_value();
        let Some(api) = self.api() else { return false };
        let replacement = event(
            &self.namespace,
            key,
            &to,
            current.metadata.resource_version.clone(),
        );
        let invoked = self.recorder.now();
        let answer = call(
            api.replace(key, &PostParams::default(), &replacement),
            |result| match result {
                Ok(written) if written.metadata.uid == uid => Some(Output::Updated),
                Ok(_) => Some(Output::CreatedByUpdate),
                Err(status) if status.code == 409 => Some(Output::Conflict),
                Err(status) if status.code == 404 => Some(Output::NotFound),
                Err(_) => None,
            },
        )
        .await;
        self.record(key, Input::Update { from, to }, invoked, answer)
    }

    async fn delete(&mut self, key: &str) -> bool {
        let Some(api) = self.api() else { return false };
        let invoked = self.recorder.now();
        let answer = call(
            api.delete(key, &DeleteParams::default()),
            |result| match result {
                Ok(_) => Some(Output::Deleted),
                Err(status) if status.code == 404 => Some(Output::NotFound),
                Err(_) => None,
            },
        )
        .await;
        self.record(key, Input::Delete, invoked, answer)
    }
}

/// Runs one call with [`CALL_TIMEOUT`] and sorts its result: `interpret` turns a result or
/// an API status into an answer, or `None` for a status the model has no word for (a
/// refusal if it is a 4xx, unknown otherwise).
async fn call<T, O>(
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
    interpret: impl FnOnce(Result<T, &kube::core::Status>) -> Option<O>,
) -> Answer<O> {
    let result = match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Err(_) => return Answer::Unknown,
        Ok(result) => result,
    };
    match result {
        Ok(value) => interpret(Ok(value)).map_or(Answer::Unknown, Answer::Answered),
        Err(kube::Error::Api(status)) if status.code < 500 => {
            interpret(Err(&status)).map_or(Answer::Refused, Answer::Answered)
        }
        Err(error) if connection_refused(&error) => Answer::Unreachable,
        Err(_) => Answer::Unknown,
    }
}

/// Whether the request failed because nothing accepted the connection (so it was never
/// sent).
fn connection_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The event holding `value` at `key`.
pub(crate) fn event(
    namespace: &str,
    key: &str,
    value: &str,
    resource_version: Option<String>,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(key.to_owned()),
            namespace: Some(namespace.to_owned()),
            resource_version,
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Namespace".to_owned()),
            api_version: Some("v1".to_owned()),
            name: Some(namespace.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        reason: Some("ConsistencyCheck".to_owned()),
        message: Some(value.to_owned()),
        type_: Some("Normal".to_owned()),
        source: Some(EventSource {
            component: Some("shipshape-conformance".to_owned()),
            host: None,
        }),
        ..Default::default()
    }
}
