//! `--watch-policies`: `OwnershipPolicy` custom resources through the Kubernetes API.
//!
//! Each resource is compiled on its own: an invalid one is reported (log, metric, a
//! `Ready=False` status condition naming the error and a `Warning` Event) and the last
//! good version of it stays in force, as do all the others. A policy that comes into
//! force gets `Ready=True` and a `Normal` Event. Both are written only when the condition
//! on the object differs from the one to report (a restart, or a second replica, finds it
//! already written and stays quiet).

use super::AppState;
use crate::policy::{CompiledPolicy, OwnershipPolicy};
use futures_util::StreamExt as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::{Resource as _, ResourceExt as _};
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
    let api: Api<OwnershipPolicy> = Api::all(client.clone());
    let recorder = Recorder::new(
        client,
        Reporter { controller: "hallmark".into(), instance: std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()) },
    );
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
                publish(&state, &api, &crds, &recorder, &docs, &mut good, &mut reported).await;
            }
            Ok(Event::Apply(p)) => {
                docs.insert(p.name_any(), p);
                publish(&state, &api, &crds, &recorder, &docs, &mut good, &mut reported).await;
            }
            Ok(Event::Delete(p)) => {
                let name = p.name_any();
                docs.remove(&name);
                good.remove(&name);
                reported.remove(&name);
                publish(&state, &api, &crds, &recorder, &docs, &mut good, &mut reported).await;
            }
            Err(e) => {
                tracing::warn!(error = %watch_error(&e), "OwnershipPolicy watch error; retrying");
            }
        }
    }
}

/// A watch error in one line, the API's Status in kubectl's words.
fn watch_error(e: &watcher::Error) -> String {
    use crate::admission::kube_error;
    match e {
        watcher::Error::InitialListFailed(e) => format!("cannot list OwnershipPolicies: {}", kube_error(e)),
        watcher::Error::WatchStartFailed(e) => format!("cannot watch OwnershipPolicies: {}", kube_error(e)),
        watcher::Error::WatchFailed(e) => format!("the OwnershipPolicy watch failed: {}", kube_error(e)),
        other => crate::admission::one_line(&other.to_string()),
    }
}

async fn publish(
    state: &AppState,
    api: &Api<OwnershipPolicy>,
    crd_api: &Api<CustomResourceDefinition>,
    recorder: &Recorder,
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
                    None => crds.insert(
                        crd_api
                            .list(&ListParams::default())
                            .await
                            .map(|l| l.items)
                            .map_err(|e| crate::admission::kube_error(&e)),
                    ),
                };
                check_custom_kinds(name, compiled, crds)
            }
            other => other.map(|c| (c, READY_MESSAGE.to_owned())),
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
            let message = crate::admission::truncate(&message, 1000);
            if !already_reported(doc, ok, &message) {
                set_condition(api, doc, ok, &message).await;
                record_event(recorder, doc, ok, &message, had_last_good(doc, good, ok)).await;
            }
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
                return Ok((compiled, READY_MESSAGE.to_owned()));
            }
            let unchecked = check.unchecked.join(", ");
            tracing::warn!(policy = %name, kinds = %unchecked, "no CustomResourceDefinition names these kinds: their field paths are not checked");
            Ok((
                compiled,
                format!(
                    "{READY_MESSAGE}; field paths of {unchecked} not checked: no CustomResourceDefinition of the cluster names them"
                ),
            ))
        }
        Err(e) => {
            let kinds = kinds(&compiled);
            tracing::warn!(policy = %name, kinds = %kinds, error = %e, "cannot read CustomResourceDefinitions: field paths of these kinds are not checked");
            Ok((
                compiled,
                format!(
                    "{READY_MESSAGE}; field paths of {kinds} not checked: hallmark cannot read CustomResourceDefinitions ({e})"
                ),
            ))
        }
    }
}

/// The message of `Ready=True`.
pub const READY_MESSAGE: &str = "policy is in force";

/// The `Ready` condition the object already carries says what is to be reported, for its
/// current generation.
fn already_reported(doc: &OwnershipPolicy, ok: bool, message: &str) -> bool {
    let Some(status) = &doc.status else { return false };
    status.conditions.iter().any(|c| {
        c.type_ == "Ready"
            && c.status == if ok { "True" } else { "False" }
            && c.message == message
            && c.observed_generation == doc.metadata.generation
    })
}

/// For a refused generation: whether an earlier version of the policy is still in force.
fn had_last_good(doc: &OwnershipPolicy, good: &BTreeMap<String, CompiledPolicy>, ok: bool) -> bool {
    !ok && good.contains_key(&doc.name_any())
}

async fn set_condition(api: &Api<OwnershipPolicy>, doc: &OwnershipPolicy, ok: bool, message: &str) {
    let status_word = if ok { "True" } else { "False" };
    // lastTransitionTime moves only when the status does.
    let previous = doc.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let since = match previous {
        Some(c) if c.status == status_word => c.last_transition_time.0.to_string(),
        _ => {
            let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now());
            now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
        }
    };
    let status = serde_json::json!({
        "status": {
            "observedGeneration": doc.metadata.generation,
            "conditions": [{
                "type": "Ready",
                "status": status_word,
                "reason": if ok { "Loaded" } else { "Invalid" },
                "message": message,
                "lastTransitionTime": since,
                "observedGeneration": doc.metadata.generation,
            }]
        }
    });
    if let Err(e) = api.patch_status(&doc.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await {
        tracing::warn!(policy = %doc.name_any(), error = %crate::admission::kube_error(&e), "cannot update OwnershipPolicy status");
    }
}

/// An Event on the policy (`kubectl describe ownershippolicy NAME`, `kubectl get events`):
/// `Normal Ready` when a generation comes into force, `Warning Invalid` when one is
/// refused, saying whether an earlier version stays in force.
async fn record_event(recorder: &Recorder, doc: &OwnershipPolicy, ok: bool, message: &str, last_good: bool) {
    let generation = doc.metadata.generation.unwrap_or(0);
    let note = if ok {
        format!("generation {generation} is in force")
    } else if last_good {
        format!("generation {generation} refused, the last good version stays in force: {message}")
    } else {
        format!("generation {generation} refused, the policy is not in force: {message}")
    };
    let event = KubeEvent {
        type_: if ok { EventType::Normal } else { EventType::Warning },
        reason: if ok { "Ready".into() } else { "Invalid".into() },
        note: Some(crate::admission::truncate(&note, 1000)),
        action: "Load".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &doc.object_ref(&())).await {
        tracing::warn!(policy = %doc.name_any(), error = %crate::admission::kube_error(&e), "cannot record an Event on the OwnershipPolicy");
    }
}
