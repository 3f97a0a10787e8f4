//! The thin shell around the API server: connecting with kubectl's kubeconfig rules,
//! reading objects, the user, and the OwnershipPolicy resources.

use super::discovery::Resource;
use super::owners::PolicySource;
use crate::admission::UserInfo;
use crate::policy::{CompiledPolicy, OwnershipPolicy, PolicySet};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Request;
use kube::core::params::{GetParams, ListParams};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What the commands need from the cluster connection.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    /// The context's namespace (`default` if it names none).
    pub default_namespace: String,
    /// The kubeconfig's user entry name of the context, a best guess at the username.
    pub kubeconfig_user: Option<String>,
}

/// How to connect, as kubectl's flags say.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub impersonate: Option<String>,
    pub impersonate_groups: Vec<String>,
    pub impersonate_extra: BTreeMap<String, Vec<String>>,
}

/// Connects like kubectl: `--kubeconfig`, else `$KUBECONFIG` or `~/.kube/config`, with
/// `--context`; without any kubeconfig, the in-cluster service account.
pub async fn connect(opts: &ConnectOptions) -> Result<Cluster, String> {
    let explicit = opts.kubeconfig.is_some() || opts.context.is_some();
    let kubeconfig = match &opts.kubeconfig {
        Some(path) => Some(read_kubeconfig(path)?),
        None => match Kubeconfig::read() {
            Ok(kc) => Some(kc),
            Err(e) if explicit => return Err(format!("cannot load the kubeconfig: {e}")),
            Err(_) => None,
        },
    };
    let options = KubeConfigOptions { context: opts.context.clone(), ..KubeConfigOptions::default() };
    let (mut config, kubeconfig_user) = match kubeconfig {
        Some(kc) => {
            let user = context_user(&kc, opts.context.as_deref());
            let config = kube::Config::from_custom_kubeconfig(kc, &options).await.map_err(|e| match &opts.context {
                Some(c) => format!("context \"{c}\": {e}"),
                None => e.to_string(),
            })?;
            (config, user)
        }
        None => (
            kube::Config::incluster().map_err(|e| {
                format!("no kubeconfig (looked at --kubeconfig, KUBECONFIG and ~/.kube/config) and not running in a cluster: {e}")
            })?,
            None,
        ),
    };
    if let Some(user) = &opts.impersonate {
        config.auth_info.impersonate = Some(user.clone());
    }
    if !opts.impersonate_groups.is_empty() {
        config.auth_info.impersonate_groups = Some(opts.impersonate_groups.clone());
    }
    if !opts.impersonate_extra.is_empty() {
        let extra: HashMap<String, Vec<String>> = opts.impersonate_extra.clone().into_iter().collect();
        config.auth_info.impersonate_user_extra = Some(extra);
    }
    let default_namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    Ok(Cluster { client, default_namespace, kubeconfig_user })
}

fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, String> {
    Kubeconfig::read_from(path).map_err(|e| format!("error loading config file \"{}\": {e}", path.display()))
}

/// The user entry the context (given or current) names.
fn context_user(kc: &Kubeconfig, context: Option<&str>) -> Option<String> {
    let name = context.or(kc.current_context.as_deref())?;
    kc.contexts.iter().find(|c| c.name == name)?.context.as_ref()?.user.clone()
}

/// `kind "name" not found` the way kubectl says it.
pub fn not_found(resource: &Resource, name: &str) -> String {
    format!("{} \"{name}\" not found", resource.qualified())
}

impl Cluster {
    /// The object, or `None` when the server says 404.
    pub async fn get(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<Option<Value>, String> {
        let request =
            Request::new(resource.url_path(namespace)).get(name, &GetParams::default()).map_err(|e| e.to_string())?;
        match self.client.request::<Value>(request).await {
            Ok(v) => Ok(Some(v)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(api_error(e)),
        }
    }

    /// Every object's metadata (annotations are all `list` needs), page by page.
    pub async fn list_metadata(&self, resource: &Resource, namespace: Option<&str>) -> Result<Vec<Value>, String> {
        self.list_pages(resource, namespace, true).await
    }

    /// Every object, whole, page by page; `apiVersion` and `kind` set on each item (a
    /// list's items do not carry them).
    pub async fn list(&self, resource: &Resource, namespace: Option<&str>) -> Result<Vec<Value>, String> {
        let mut items = self.list_pages(resource, namespace, false).await?;
        for item in &mut items {
            if let Some(o) = item.as_object_mut() {
                o.entry("apiVersion").or_insert_with(|| Value::String(resource.api_version()));
                o.entry("kind").or_insert_with(|| Value::String(resource.kind.clone()));
            }
        }
        Ok(items)
    }

    async fn list_pages(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        metadata: bool,
    ) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let request = Request::new(resource.url_path(namespace));
            let request = if metadata { request.list_metadata(&params) } else { request.list(&params) }
                .map_err(|e| e.to_string())?;
            let page: Value = self.client.request(request).await.map_err(api_error)?;
            if let Some(list) = page.get("items").and_then(Value::as_array) {
                items.extend(list.iter().cloned());
            }
            match page.pointer("/metadata/continue").and_then(Value::as_str).filter(|c| !c.is_empty()) {
                Some(token) => params.continue_token = Some(token.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// Who the server says we are (SelfSubjectReview), or `Err` with why it could not say.
    pub async fn whoami(&self) -> Result<UserInfo, String> {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        let request = hyper::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let review: Value = self.client.request(request).await.map_err(api_error)?;
        let info = review.pointer("/status/userInfo").cloned().unwrap_or(Value::Null);
        let user: UserInfo = serde_json::from_value(info).map_err(|e| e.to_string())?;
        if user.username.is_empty() {
            return Err("the SelfSubjectReview names no user".to_owned());
        }
        Ok(user)
    }

    /// The cluster's OwnershipPolicy resources, compiled; invalid ones are reported in
    /// `warnings` and left out. Without the CRD (or resources), the built-in default.
    pub async fn policies(&self, warnings: &mut Vec<String>) -> Result<(PolicySet, PolicySource), String> {
        let request = Request::new("/apis/hallmark.dev/v1alpha1/ownershippolicies")
            .list(&ListParams::default())
            .map_err(|e| e.to_string())?;
        let list: Value = match self.client.request(request).await {
            Ok(v) => v,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok((PolicySet::default(), PolicySource::BuiltinNoCrd)),
            Err(e) => {
                return Err(format!(
                    "cannot list OwnershipPolicy resources (pass --policy FILE to use a file instead): {}",
                    api_error(e)
                ));
            }
        };
        let mut compiled: Vec<CompiledPolicy> = Vec::new();
        for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
            let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
            let result = serde_json::from_value::<OwnershipPolicy>(item.clone())
                .map_err(|e| e.to_string())
                .and_then(|doc| crate::policy::compile_resource(&doc));
            match result {
                Ok(p) => compiled.push(p),
                Err(e) => warnings.push(format!("OwnershipPolicy \"{name}\" is invalid and left out: {e}")),
            }
        }
        if compiled.is_empty() {
            return Ok((PolicySet::default(), PolicySource::BuiltinNoResources));
        }
        let names = compiled.iter().map(|p| p.name.clone()).collect();
        Ok((PolicySet { policies: compiled }, PolicySource::Cluster(names)))
    }
}

/// A server error in kubectl's words: the Status message when there is one.
pub fn api_error(e: kube::Error) -> String {
    crate::admission::kube_error(&e)
}
