//! Watch caches of the GitOps objects a reconciler's write is stamped from (Flux
//! Kustomizations, HelmReleases and their sources; Argo CD Applications): kube-rs
//! reflectors, one per kind, read by [`crate::gitops::lookup`] on `/mutate` without any
//! request to the API server.
//!
//! Each kind is found through API discovery (its preferred version). A kind whose CRD is
//! not installed, or that hallmark may not list and watch (RBAC), is not cached: writes
//! from it are stamped as before (`channel: gitops`, no Git fields); the log says so once
//! per kind and `hallmark_gitops_sources{kind}` is 0.

use crate::gitops::{Lookup, SourceKind, SourceStore};
use crate::metrics::GitopsMetrics;
use futures_util::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long to wait before looking for a CRD again that was not installed (a CRD
/// installed after hallmark starts is picked up then).
pub const REDISCOVER: Duration = Duration::from_secs(300);

/// The caches, one slot per [`SourceKind`], filled as their watches start.
pub struct SourceCaches {
    slots: [Slot; SourceKind::ALL.len()],
    metrics: OnceLock<GitopsMetrics>,
}

#[derive(Default)]
struct Slot {
    store: OnceLock<(ApiResource, Store<DynamicObject>)>,
    /// The watch works: listed at least once and not refused since.
    healthy: AtomicBool,
}

impl Default for SourceCaches {
    fn default() -> SourceCaches {
        SourceCaches::new()
    }
}

fn index(kind: SourceKind) -> usize {
    SourceKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl SourceCaches {
    /// Empty caches; `metrics` counts lookups and shows which kinds are cached.
    pub fn new() -> SourceCaches {
        SourceCaches { slots: Default::default(), metrics: OnceLock::new() }
    }

    /// Counts into these metrics from now on (once; the server's, set after it is built).
    pub fn set_metrics(&self, metrics: GitopsMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// No Kubernetes client at all: every kind is unavailable (said once in the log).
    pub fn unavailable(&self, why: &str) {
        for kind in SourceKind::ALL {
            self.set_healthy(kind, false);
        }
        tracing::info!(
            reason = %why,
            "GitOps sources not cached (no Kubernetes client): reconciler writes are stamped without their Git source"
        );
    }

    fn slot(&self, kind: SourceKind) -> &Slot {
        &self.slots[index(kind)]
    }

    fn set_healthy(&self, kind: SourceKind, healthy: bool) {
        self.slot(kind).healthy.store(healthy, Ordering::SeqCst);
        if let Some(m) = self.metrics.get() {
            m.set_source(kind.plural(), healthy);
        }
    }
}

impl SourceStore for SourceCaches {
    fn get(&self, kind: SourceKind, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let (resource, store) = self.slot(kind).store.get()?;
        store.get(&ObjectRef::new_with(name, resource.clone()).within(namespace))
    }

    fn applications_named(&self, name: &str) -> Vec<Arc<DynamicObject>> {
        match self.slot(SourceKind::Application).store.get() {
            Some((_, store)) => store.state_filter(|o| o.metadata.name.as_deref() == Some(name)),
            None => Vec::new(),
        }
    }

    fn watching(&self, kind: SourceKind) -> bool {
        self.slot(kind).healthy.load(Ordering::SeqCst)
    }

    fn record(&self, lookup: &Lookup) {
        if let Some(m) = self.metrics.get() {
            m.lookup(lookup.label());
        }
    }
}

/// Starts one watch per kind with `client`; returns when every kind has been looked for
/// once (the watches go on in their own tasks).
pub async fn watch(caches: Arc<SourceCaches>, client: kube::Client) {
    for kind in SourceKind::ALL {
        tokio::spawn(watch_kind(caches.clone(), client.clone(), kind));
    }
}

/// The kind's preferred version through API discovery, or why there is none.
async fn discover(client: &kube::Client, kind: SourceKind) -> Result<ApiResource, String> {
    let group = kube::discovery::group(client, kind.group()).await.map_err(|e| {
        format!("API group {} not found ({})", kind.group(), crate::admission::one_line(&e.to_string()))
    })?;
    group
        .recommended_kind(kind.kind())
        .map(|(resource, _)| resource)
        .ok_or_else(|| format!("{} is not served by API group {}", kind.kind(), kind.group()))
}

async fn watch_kind(caches: Arc<SourceCaches>, client: kube::Client, kind: SourceKind) {
    let resource = loop {
        match discover(&client, kind).await {
            Ok(r) => break r,
            Err(why) => {
                caches.set_healthy(kind, false);
                tracing::info!(
                    kind = kind.kind(),
                    reason = %why,
                    "GitOps source not cached: writes it applies are stamped without their Git source"
                );
                tokio::time::sleep(REDISCOVER).await;
            }
        }
    };
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let reader = writer.as_reader();
    let slot = caches.slot(kind);
    if slot.store.set((resource.clone(), reader)).is_err() {
        return;
    }
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().modify(trim).reflect(writer).boxed();
    let mut refused = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                caches.set_healthy(kind, true);
                if refused {
                    tracing::info!(kind = kind.kind(), "GitOps source cached again");
                }
                refused = false;
            }
            Ok(_) => {}
            Err(e) => {
                let text = crate::admission::one_line(&e.to_string());
                // Said once until the watch works again; the watcher retries with backoff.
                if !refused {
                    caches.set_healthy(kind, false);
                    tracing::warn!(
                        kind = kind.kind(),
                        resource = kind.plural(),
                        error = %text,
                        "cannot list or watch GitOps sources (RBAC list/watch on this resource?); writes it applies are stamped without their Git source"
                    );
                }
                refused = true;
            }
        }
    }
}

/// Drops what the lookups never read and can be large: managedFields, a Kustomization's
/// inventory, an Application's resource lists and history.
fn trim(obj: &mut DynamicObject) {
    obj.metadata.managed_fields = None;
    obj.metadata.annotations = None;
    if let Some(status) = obj.data.get_mut("status").and_then(|s| s.as_object_mut()) {
        for key in ["inventory", "resources", "history", "conditions", "summary"] {
            status.remove(key);
        }
        if let Some(result) =
            status.get_mut("operationState").and_then(|o| o.get_mut("syncResult")).and_then(|r| r.as_object_mut())
        {
            result.remove("resources");
            result.remove("managedNamespaceMetadata");
        }
    }
}
