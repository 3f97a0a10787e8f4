//! `--watch-policies`: `OwnershipPolicy` custom resources through the Kubernetes API.
//!
//! Each resource is compiled on its own: an invalid one is reported (log, metric and a
//! `Ready=False` status condition naming the error) and the last good version of it
//! stays in force, as do all the others.

use super::AppState;
use crate::policy::{CompiledPolicy, OwnershipPolicy};
use futures_util::StreamExt as _;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
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
                publish(&state, &api, &docs, &mut good, &mut reported).await;
            }
            Ok(Event::Apply(p)) => {
                docs.insert(p.name_any(), p);
                publish(&state, &api, &docs, &mut good, &mut reported).await;
            }
            Ok(Event::Delete(p)) => {
                let name = p.name_any();
                docs.remove(&name);
                good.remove(&name);
                reported.remove(&name);
                publish(&state, &api, &docs, &mut good, &mut reported).await;
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
    docs: &BTreeMap<String, OwnershipPolicy>,
    good: &mut BTreeMap<String, CompiledPolicy>,
    reported: &mut BTreeMap<String, String>,
) {
    let mut rejected = 0;
    for (name, doc) in docs {
        let (ok, message) = match crate::policy::compile_resource(doc) {
            Ok(compiled) => {
                good.insert(name.clone(), compiled);
                (true, "policy is in force".to_owned())
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
