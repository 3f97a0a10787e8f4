//! `--watch-policies`: `OwnershipPolicy` custom resources through the Kubernetes API.
//!
//! Each resource is compiled on its own: an invalid one is reported (log, metric and a
//! `Ready=False` status condition naming the error) and the last good version of it
//! stays in force, as do all the others.

use super::AppState;
use crate::policy::{CompiledPolicy, OwnershipPolicy};
use futures_util::StreamExt as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Watches the resources until the process ends; reconnects with backoff.
pub async fn watch(state: Arc<AppState>) {
    match kube::Client::try_default().await {
        Ok(client) => watch_with(state, client).await,
        Err(e) => {
            tracing::error!(error = %e, "--watch-policies: no Kubernetes client; OwnershipPolicy resources are not watched");
            state.metrics.reload("crd", false);
        }
    }
}

/// Watches with a given client (tests point it at a local API server).
pub async fn watch_with(state: Arc<AppState>, client: kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let api: Api<OwnershipPolicy> = Api::all(client);
    let mut docs: BTreeMap<String, OwnershipPolicy> = BTreeMap::new();
    let mut good: BTreeMap<String, CompiledPolicy> = BTreeMap::new();
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    let mut initial: Option<BTreeMap<String, OwnershipPolicy>> = None;
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => initial = Some(BTreeMap::new()),
            Ok(Event::InitApply(p)) => {
                if let Some(i) = initial.as_mut() {
                    i.insert(p.name_any(), p);
                }
            }
            Ok(Event::InitDone) => {
                docs = initial.take().unwrap_or_default();
                good.retain(|name, _| docs.contains_key(name));
                publish(&state, &api, &crds, &docs, &mut good, &mut reported).await;
            }
            Ok(Event::Apply(p)) => {
                docs.insert(p.name_any(), p);
                publish(&state, &api, &crds, &docs, &mut good, &mut reported).await;
            }
            Ok(Event::Delete(p)) => {
                let name = p.name_any();
                docs.remove(&name);
                good.remove(&name);
                reported.remove(&name);
                publish(&state, &api, &crds, &docs, &mut good, &mut reported).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "OwnershipPolicy watch error; retrying");
            }
        }
    }
}

async fn publish(
    state: &AppState,
    api: &Api<OwnershipPolicy>,
    crd_api: &Api<CustomResourceDefinition>,
    docs: &BTreeMap<String, OwnershipPolicy>,
    good: &mut BTreeMap<String, CompiledPolicy>,
    reported: &mut BTreeMap<String, String>,
) {
    let mut rejected = 0;
    // The cluster's CRDs, read once per change and only for policies whose rules name
    // kinds other than the built-in ones.
    let mut crds: Option<Result<Vec<CustomResourceDefinition>, String>> = None;
    for (name, doc) in docs {
        let checked = match crate::policy::compile_resource(doc) {
            Ok(compiled) if names_custom_kinds(&compiled) => {
                let crds = match &crds {
                    Some(c) => c,
                    None => crds
                        .insert(crd_api.list(&ListParams::default()).await.map(|l| l.items).map_err(|e| one_line(&e))),
                };
                check_custom_kinds(name, compiled, crds)
            }
            other => other.map(|c| (c, "policy is in force".to_owned())),
        };
        let (ok, message) = match checked {
            Ok((compiled, message)) => {
                good.insert(name.clone(), compiled);
                (true, message)
            }
            Err(e) => {
                rejected += 1;
                state.metrics.reload("crd", false);
                tracing::error!(policy = %name, error = %e, "OwnershipPolicy rejected; its last good version stays in force");
                (false, e)
            }
        };
        let key = format!("{ok}:{message}:{}", doc.metadata.generation.unwrap_or(0));
        if reported.get(name) != Some(&key) {
            set_condition(api, doc, ok, &message).await;
            reported.insert(name.clone(), key);
        }
    }
    state.metrics.set_policies_rejected("crd", rejected);
    state.set_source("crd", good.values().cloned().collect());
    state.metrics.reload("crd", true);
}

/// True when a rule names a kind that is not a built-in kind hallmark knows.
fn names_custom_kinds(policy: &CompiledPolicy) -> bool {
    policy.rules.iter().any(|r| {
        let named = crate::policy::kinds::named(&r.groups, &r.kinds);
        !named.any_kind && !named.unknown.is_empty()
    })
}

/// The policy's paths against the CRDs of the kinds it names: an error rejects it (as a
/// compile error does); kinds that cannot be checked are said in its Ready message.
fn check_custom_kinds(
    name: &str,
    compiled: CompiledPolicy,
    crds: &Result<Vec<CustomResourceDefinition>, String>,
) -> Result<(CompiledPolicy, String), String> {
    let kinds = |p: &CompiledPolicy| {
        let mut all: Vec<String> =
            p.rules.iter().flat_map(|r| crate::policy::kinds::named(&r.groups, &r.kinds).unknown).collect();
        all.dedup();
        all.join(", ")
    };
    match crds {
        Ok(crds) => {
            let check = crate::policy::kinds::check_with_crds(&compiled, crds);
            if !check.errors.is_empty() {
                return Err(check.errors.join("; "));
            }
            if check.unchecked.is_empty() {
                return Ok((compiled, "policy is in force".to_owned()));
            }
            let unchecked = check.unchecked.join(", ");
            tracing::warn!(policy = %name, kinds = %unchecked, "no CustomResourceDefinition names these kinds: their field paths are not checked");
            Ok((
                compiled,
                format!(
                    "policy is in force; field paths of {unchecked} not checked: no CustomResourceDefinition of the cluster names them"
                ),
            ))
        }
        Err(e) => {
            let kinds = kinds(&compiled);
            tracing::warn!(policy = %name, kinds = %kinds, error = %e, "cannot read CustomResourceDefinitions: field paths of these kinds are not checked");
            Ok((
                compiled,
                format!(
                    "policy is in force; field paths of {kinds} not checked: hallmark cannot read CustomResourceDefinitions ({e})"
                ),
            ))
        }
    }
}

/// An API error on one line (kube's Display of a Status is one line; others may not be).
fn one_line(e: &kube::Error) -> String {
    let text = match e {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.reason),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn set_condition(api: &Api<OwnershipPolicy>, doc: &OwnershipPolicy, ok: bool, message: &str) {
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now());
    let status = serde_json::json!({
        "status": {
            "observedGeneration": doc.metadata.generation,
            "conditions": [{
                "type": "Ready",
                "status": if ok { "True" } else { "False" },
                "reason": if ok { "Loaded" } else { "Invalid" },
                "message": crate::admission::truncate(message, 1000),
                "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "observedGeneration": doc.metadata.generation,
            }]
        }
    });
    if let Err(e) = api.patch_status(&doc.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await {
        tracing::warn!(policy = %doc.name_any(), error = %e, "cannot update OwnershipPolicy status");
    }
}
