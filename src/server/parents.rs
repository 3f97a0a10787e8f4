//! Reading the parent of a `scale` write through the Kubernetes API.
//!
//! A validating webhook's `Scale` carries no managedFields and no labels (see
//! [`crate::ownership::managed::scale_with_parent`]), so `/validate` reads the parent's
//! metadata — a `PartialObjectMetadata` GET, which needs RBAC `get` on
//! `deployments`, `statefulsets` and `replicasets` in `apps` and nothing else — with a
//! bounded timeout. When the read fails, the write is answered as `--on-error` says.

use crate::admission::AdmissionRequest;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use kube::Api;
use serde_json::Value;
use std::time::Duration;

/// Default bound on one parent read (`--parent-lookup-timeout-ms`). The validating
/// webhook's `timeoutSeconds` in `manifests/base` is 5 s; a read takes a few ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads parents' metadata with one client and one timeout.
#[derive(Clone)]
pub struct ParentLookup {
    client: kube::Client,
    timeout: Duration,
}

impl ParentLookup {
    pub fn new(client: kube::Client, timeout: Duration) -> ParentLookup {
        ParentLookup { client, timeout }
    }

    /// The `metadata` (as JSON: labels, annotations, managedFields, ...) of the object
    /// whose `scale` subresource `req` writes. Errors are one line, for the warning or
    /// deny message of `--on-error` and the log: which object, and why (timeout, not
    /// found, forbidden by RBAC, unreachable API).
    pub async fn metadata(&self, req: &AdmissionRequest) -> Result<Value, String> {
        let namespace = req.namespace().unwrap_or_default();
        let name = req.name.as_deref().unwrap_or_default();
        let what = format!("{}/{name}", req.resource.resource);
        if namespace.is_empty() || name.is_empty() {
            return Err(format!("cannot read the parent {what}: the review names no namespace or name"));
        }
        // Both go into the request path: only names Kubernetes itself would accept, so a
        // review (e.g. posted straight to the webhook port) cannot steer the read elsewhere.
        if !crate::config::is_dns_label(namespace) || !crate::config::is_dns_subdomain(name) {
            return Err(format!(
                "cannot read the parent of {}: the review's namespace or name is not a valid Kubernetes name",
                req.resource.resource
            ));
        }
        let client = self.client.clone();
        let read = async {
            let meta = match req.resource.resource.as_str() {
                "deployments" => Api::<Deployment>::namespaced(client, namespace).get_metadata(name).await?.metadata,
                "statefulsets" => Api::<StatefulSet>::namespaced(client, namespace).get_metadata(name).await?.metadata,
                "replicasets" => Api::<ReplicaSet>::namespaced(client, namespace).get_metadata(name).await?.metadata,
                _ => return Ok(None),
            };
            Ok::<_, kube::Error>(Some(meta))
        };
        match tokio::time::timeout(self.timeout, read).await {
            Err(_) => Err(format!("the parent {what} was not read within {} ms", self.timeout.as_millis())),
            Ok(Err(e)) => Err(format!("cannot read the parent {what}: {}", crate::admission::kube_error(&e))),
            Ok(Ok(None)) => Err(format!("hallmark does not read parents of {}", req.resource.resource)),
            Ok(Ok(Some(meta))) => serde_json::to_value(meta).map_err(|e| format!("cannot read the parent {what}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{is_dns_label, is_dns_subdomain};

    #[test]
    fn only_kubernetes_names_reach_the_request_path() {
        for good in ["web", "platform-agent", "a.b-c.d", "x1"] {
            assert!(is_dns_subdomain(good), "{good}");
        }
        for bad in ["", "..", "../x", "web?watch=true", "a/b", "Web", "-a", "a-", "a..b", "x#", "a b", "%2e%2e"] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        assert!(is_dns_label("team-a"));
        for bad in ["team.a", "team-a#", "", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
