//! # ConfigMaps and Secrets in a container: environment variables and files
//!
//! A pod names ConfigMaps and Secrets in three places: `env[].valueFrom.configMapKeyRef`
//! and `.secretKeyRef` (one key as one variable), `envFrom` (every key as a variable, after
//! an optional prefix), and `volumes[].configMap` and `.secret` (every key, or the `items`
//! chosen, as a file). The agent reads them through the API when it creates a container,
//! as the kubelet does. One that is missing, and not marked `optional`, keeps the
//! container from being created: it waits with `CreateContainerConfigError` and says why,
//! and the next round tries again, so creating the ConfigMap later starts the container.
//!
//! A `projected` volume gathers such files with two more sources: a `serviceAccountToken`
//! (a token the agent asks the API for, `TokenRequest`, as the pod's ServiceAccount) and
//! the `downwardAPI`'s `metadata.namespace`. The apiserver gives every pod one, as
//! Kubernetes does (`kube-api-access-*`: token, `ca.crt`, namespace), which is how a
//! client library inside the pod finds its credentials.
//!
//! Files are written into the pod's directory on this node and mounted read-only. Unlike
//! the kubelet, the agent does not rewrite them while the container runs: a new container
//! (a restart) sees the new data, and a new token.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PodSpec, Secret, ServiceAccount, Volume,
};
use kube::Api;

/// One ConfigMap's or Secret's data: bytes by key.
type Data = BTreeMap<String, Vec<u8>>;

/// Which kind of source a reference names.
#[derive(Debug, Clone, Copy)]
enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    /// As Kubernetes' messages name it: `ConfigMap default/x` (and, in lower case,
    /// `configmap "x" not found`).
    fn title(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
}

/// The ConfigMaps and Secrets one pod refers to, as they were when read.
#[derive(Debug, Default)]
pub(super) struct Sources {
    namespace: String,
    config_maps: BTreeMap<String, Option<Data>>,
    secrets: BTreeMap<String, Option<Data>>,
    /// A token of the pod's ServiceAccount, if a projected volume asks for one.
    token: Option<String>,
}

impl Sources {
    /// Reads every ConfigMap and Secret the pod names (none: no request).
    pub(super) async fn read(
        client: &kube::Client,
        namespace: &str,
        spec: Option<&PodSpec>,
    ) -> Result<Sources, kube::Error> {
        let (config_map_names, secret_names) = spec.map(named).unwrap_or_default();
        let mut sources = Sources {
            namespace: namespace.to_owned(),
            ..Sources::default()
        };
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        for name in config_map_names {
            let data = config_maps.get_opt(&name).await?.map(|c| {
                let text = c
                    .data
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k, v.into_bytes()));
                let binary = c.binary_data.into_iter().flatten().map(|(k, v)| (k, v.0));
                text.chain(binary).collect()
            });
            sources.config_maps.insert(name, data);
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for name in secret_names {
            let data = secrets.get_opt(&name).await?.map(|s| {
                let pairs = s.data.into_iter().flatten();
                pairs.map(|(k, v)| (k, v.0)).collect()
            });
            sources.secrets.insert(name, data);
        }
        let projected = spec.into_iter().flat_map(|s| s.volumes.iter().flatten());
        let projected = projected.filter_map(|v| v.projected.as_ref());
        let mut asked = projected.flat_map(|p| p.sources.iter().flatten());
        if let Some(asked) = asked.find_map(|s| s.service_account_token.as_ref()) {
            let account = spec.and_then(|s| s.service_account_name.as_deref());
            let spec = TokenRequestSpec {
                audiences: asked.audience.iter().cloned().collect(),
                expiration_seconds: Some(asked.expiration_seconds.unwrap_or(3600)),
                ..TokenRequestSpec::default()
            };
            let request = TokenRequest {
                spec,
                ..TokenRequest::default()
            };
            let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
            let pp = &Default::default();
            let token = accounts.create_token_request(account.unwrap_or("default"), pp, &request);
            sources.token = token.await?.status.map(|s| s.token);
        }
        Ok(sources)
    }

    /// The data of source `name`; `Ok(None)` if it is missing but optional.
    fn data(
        &self,
        kind: Kind,
        name: &str,
        optional: Option<bool>,
    ) -> Result<Option<&Data>, String> {
        let found = match kind {
            Kind::ConfigMap => self.config_maps.get(name),
            Kind::Secret => self.secrets.get(name),
        };
        match found.and_then(Option::as_ref) {
            Some(data) => Ok(Some(data)),
            None if optional == Some(true) => Ok(None),
            None => Err(format!(
                "{} {name:?} not found",
                kind.title().to_lowercase()
            )),
        }
    }

    /// One key of a source; `Ok(None)` if the source or key is missing but optional.
    fn key(
        &self,
        kind: Kind,
        name: &str,
        key: &str,
        optional: Option<bool>,
    ) -> Result<Option<&[u8]>, String> {
        let Some(data) = self.data(kind, name, optional)? else {
            return Ok(None);
        };
        match data.get(key) {
            Some(value) => Ok(Some(value)),
            None if optional == Some(true) => Ok(None),
            None => Err(self.no_key(kind, name, key)),
        }
    }

    /// Why key `key` of source `name` cannot be had.
    fn no_key(&self, kind: Kind, name: &str, key: &str) -> String {
        let (kind, namespace) = (kind.title(), &self.namespace);
        format!("couldn't find key {key} in {kind} {namespace}/{name}")
    }

    /// The variables `container` takes from ConfigMaps and Secrets: `envFrom` first, then
    /// `env`'s references (which win over `envFrom`'s for the same name). Variables of
    /// `env` that are not references are the caller's.
    pub(super) fn env(&self, container: &Container) -> Result<Vec<(String, String)>, String> {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let mut vars = Vec::new();
        for from in container.env_from.iter().flatten() {
            let prefix = from.prefix.as_deref().unwrap_or_default();
            let data = match (&from.config_map_ref, &from.secret_ref) {
                (Some(r), _) => self.data(Kind::ConfigMap, &r.name, r.optional)?,
                (None, Some(r)) => self.data(Kind::Secret, &r.name, r.optional)?,
                (None, None) => None,
            };
            for (key, value) in data.into_iter().flatten() {
                vars.push((format!("{prefix}{key}"), text(value)));
            }
        }
        for var in container.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            let value = match (&from.config_map_key_ref, &from.secret_key_ref) {
                (Some(r), _) => self.key(Kind::ConfigMap, &r.name, &r.key, r.optional)?,
                (None, Some(r)) => self.key(Kind::Secret, &r.name, &r.key, r.optional)?,
                (None, None) => continue,
            };
            if let Some(value) = value {
                vars.push((var.name.clone(), text(value)));
            }
        }
        Ok(vars)
    }

    /// Writes a `configMap`, `secret` or `projected` volume's files into `dir` (emptied
    /// first); false for a volume of another kind, which is left alone.
    pub(super) fn write_volume(&self, volume: &Volume, dir: &Path) -> Result<bool, String> {
        let (name, projected) = (&volume.name, volume.projected.as_ref());
        if volume.config_map.is_none() && volume.secret.is_none() && projected.is_none() {
            return Ok(false);
        }
        let cannot = |e: std::io::Error| format!("cannot write volume {name:?}: {e}");
        // Emptied, not removed: another container of the pod may have it mounted.
        std::fs::create_dir_all(dir).map_err(cannot)?;
        for entry in std::fs::read_dir(dir).map_err(cannot)? {
            let path = entry.map_err(cannot)?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).map_err(cannot)?;
            } else {
                std::fs::remove_file(&path).map_err(cannot)?;
            }
        }
        let default_mode = match (&volume.config_map, &volume.secret, projected) {
            (Some(c), _, _) => c.default_mode,
            (None, Some(s), _) => s.default_mode,
            (None, None, p) => p.and_then(|p| p.default_mode),
        };
        let write = |path: &str, value: &[u8], mode: Option<i32>| {
            let relative = Path::new(path);
            if !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(format!(
                    "volume {name:?}: path {path:?} must be relative and must not contain '..'"
                ));
            }
            let file = dir.join(relative);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(cannot)?;
            }
            std::fs::write(&file, value).map_err(cannot)?;
            set_mode(&file, mode.or(default_mode).unwrap_or(0o644)).map_err(cannot)
        };
        let mut sources = Vec::new();
        if let Some(c) = &volume.config_map {
            sources.push((Kind::ConfigMap, c.name.as_str(), &c.items, c.optional));
        }
        if let Some(s) = &volume.secret {
            let secret = s.secret_name.as_deref().unwrap_or_default();
            sources.push((Kind::Secret, secret, &s.items, s.optional));
        }
        for source in projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &source.config_map {
                sources.push((Kind::ConfigMap, c.name.as_str(), &c.items, c.optional));
            }
            if let Some(s) = &source.secret {
                sources.push((Kind::Secret, s.name.as_str(), &s.items, s.optional));
            }
            if let Some(asked) = &source.service_account_token {
                let token = self
                    .token
                    .as_deref()
                    .ok_or("no token of the pod's account")?;
                write(&asked.path, token.as_bytes(), None)?;
            }
            // Of the downward API, the namespace: what a client library reads.
            let fields = source
                .downward_api
                .iter()
                .flat_map(|d| d.items.iter().flatten());
            for item in fields.filter(|i| {
                i.field_ref.as_ref().map(|f| f.field_path.as_str()) == Some("metadata.namespace")
            }) {
                write(&item.path, self.namespace.as_bytes(), item.mode)?;
            }
        }
        for (kind, name, items, optional) in sources {
            let Some(data) = self.data(kind, name, optional)? else {
                continue;
            };
            // Without `items`, every key, as a file of its name.
            let every_key = || {
                let item = |key: &String| KeyToPath {
                    key: key.clone(),
                    path: key.clone(),
                    mode: None,
                };
                data.keys().map(item).collect()
            };
            for item in items.clone().unwrap_or_else(every_key) {
                match data.get(&item.key) {
                    Some(value) => write(&item.path, value, item.mode)?,
                    None if optional == Some(true) => {}
                    None => return Err(self.no_key(kind, name, &item.key)),
                }
            }
        }
        Ok(true)
    }
}

#[cfg(unix)]
fn set_mode(file: &Path, mode: i32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = u32::try_from(mode & 0o777).unwrap_or(0o644);
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: i32) -> std::io::Result<()> {
    Ok(())
}

/// The names of the ConfigMaps and of the Secrets a pod spec refers to.
fn named(spec: &PodSpec) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut config_maps, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for from in c.env_from.iter().flatten() {
            config_maps.extend(from.config_map_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(from.secret_ref.as_ref().map(|r| r.name.clone()));
        }
        for var in c.env.iter().flatten() {
            let from = var.value_from.as_ref();
            config_maps.extend(
                from.and_then(|f| f.config_map_key_ref.as_ref())
                    .map(|r| r.name.clone()),
            );
            secrets.extend(
                from.and_then(|f| f.secret_key_ref.as_ref())
                    .map(|r| r.name.clone()),
            );
        }
    }
    for v in spec.volumes.iter().flatten() {
        config_maps.extend(v.config_map.as_ref().map(|c| c.name.clone()));
        secrets.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            config_maps.extend(source.config_map.as_ref().map(|c| c.name.clone()));
            secrets.extend(source.secret.as_ref().map(|s| s.name.clone()));
        }
    }
    (config_maps, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sources() -> Sources {
        let data = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                    .collect(),
            )
        };
        Sources {
            namespace: "default".into(),
            config_maps: [
                (
                    "settings".to_owned(),
                    data(&[("mode", "fast"), ("level", "3")]),
                ),
                ("gone".to_owned(), None),
            ]
            .into(),
            secrets: [("login".to_owned(), data(&[("user", "admin")]))].into(),
            token: Some("a token".into()),
        }
    }

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).expect("a container")
    }

    #[test]
    fn variables_come_from_env_from_then_from_references() {
        let c = container(json!({"name": "c", "envFrom": [
                {"configMapRef": {"name": "settings"}, "prefix": "APP_"},
                {"secretRef": {"name": "login"}}],
            "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                    {"name": "PLAIN", "value": "left to the caller"},
                    {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}}]}));
        assert_eq!(
            sources().env(&c).expect("resolved"),
            [
                ("APP_level".to_owned(), "3".to_owned()),
                ("APP_mode".to_owned(), "fast".to_owned()),
                ("user".to_owned(), "admin".to_owned()),
                ("MODE".to_owned(), "fast".to_owned()),
            ]
        );
    }

    #[test]
    fn a_missing_source_or_key_says_which_unless_optional() {
        let missing =
            container(json!({"name": "c", "envFrom": [{"configMapRef": {"name": "gone"}}]}));
        assert_eq!(
            sources().env(&missing),
            Err("configmap \"gone\" not found".into())
        );
        let no_key = container(json!({"name": "c", "env": [{"name": "X", "valueFrom":
            {"secretKeyRef": {"name": "login", "key": "password"}}}]}));
        assert_eq!(
            sources().env(&no_key),
            Err("couldn't find key password in Secret default/login".into())
        );
        let optional = container(
            json!({"name": "c", "envFrom": [{"configMapRef": {"name": "gone", "optional": true}}]}),
        );
        assert_eq!(sources().env(&optional), Ok(Vec::new()));
    }

    #[test]
    fn a_volume_holds_one_file_per_key_or_the_items_chosen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let all: Volume =
            serde_json::from_value(json!({"name": "v", "configMap": {"name": "settings"}}))
                .expect("a volume");
        assert_eq!(sources().write_volume(&all, dir.path()), Ok(true));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("mode")).expect("mode"),
            "fast"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("level")).expect("level"),
            "3"
        );

        let chosen: Volume =
            serde_json::from_value(json!({"name": "v", "secret": {"secretName": "login",
            "items": [{"key": "user", "path": "conf/user.txt", "mode": 0o400}]}}))
            .expect("a volume");
        assert_eq!(sources().write_volume(&chosen, dir.path()), Ok(true));
        assert!(
            !dir.path().join("mode").exists(),
            "the directory is written afresh"
        );
        let file = dir.path().join("conf/user.txt");
        assert_eq!(std::fs::read_to_string(&file).expect("user"), "admin");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o400);
        }

        let escaping: Volume =
            serde_json::from_value(json!({"name": "v", "secret": {"secretName": "login",
            "items": [{"key": "user", "path": "../outside"}]}}))
            .expect("a volume");
        assert!(sources().write_volume(&escaping, dir.path()).is_err());
        let empty: Volume =
            serde_json::from_value(json!({"name": "v", "emptyDir": {}})).expect("a volume");
        assert_eq!(sources().write_volume(&empty, dir.path()), Ok(false));
    }

    #[test]
    fn a_projected_volume_holds_the_token_the_chosen_keys_and_the_namespace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let access: Volume = serde_json::from_value(json!({"name": "kube-api-access-x",
            "projected": {"defaultMode": 0o600, "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "settings", "items": [{"key": "mode", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}))
        .expect("a volume");
        assert_eq!(sources().write_volume(&access, dir.path()), Ok(true));
        for (file, text) in [
            ("token", "a token"),
            ("ca.crt", "fast"),
            ("namespace", "default"),
        ] {
            let path = dir.path().join(file);
            assert_eq!(std::fs::read_to_string(&path).expect(file), text);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&path).expect(file).permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
        }
        let mut tokenless = sources();
        tokenless.token = None;
        assert!(tokenless.write_volume(&access, dir.path()).is_err());
        let missing: Volume =
            serde_json::from_value(json!({"name": "v", "projected": {"sources": [
            {"configMap": {"name": "gone"}}]}}))
            .expect("a volume");
        assert_eq!(
            sources().write_volume(&missing, dir.path()),
            Err("configmap \"gone\" not found".into())
        );
    }
}
