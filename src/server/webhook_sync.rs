//! `--watch-policies` also keeps hallmark's own ValidatingWebhookConfiguration current: the
//! `matchConditions` of its ownership webhook follow the policies in force
//! ([`crate::webhook_config::ownership_conditions`]), so that a new policy takes effect
//! without a redeploy.
//!
//! Only that one list is written, with a strategic merge patch keyed by the webhook's name
//! (`webhooks` and `matchConditions` are merge lists keyed by `name` in
//! `admissionregistration/v1`) whose `$patch: replace` element replaces the list as a
//! whole (k8s.io/apimachinery/pkg/util/strategicpatch/patch.go,
//! `mergeSliceWithSpecialElements`), so conditions of a removed policy do not linger.
//! Nothing else of the object (caBundle injected by cert-manager, failurePolicy, rules) is
//! touched. RBAC: `get`/`patch` on `validatingwebhookconfigurations` with
//! `resourceNames: [NAME]`.
//!
//! It patches only when the conditions in the cluster differ from the generated ones, reads
//! them back every [`SyncOptions::resync`] (a server-side apply of the manifests with
//! `--force-conflicts` resets them to the built-in default's), and does nothing before
//! every policy source has loaded once (`AppState::policies_loaded`): narrowing the
//! conditions to a partial policy set would skip writes that a policy still loading
//! judges. Errors are logged, counted in
//! `hallmark_reloads_total{what="webhook-config",result="error"}` and retried with backoff;
//! they never stop the server.

use super::AppState;
use crate::webhook_config::{OWNERSHIP_WEBHOOK, ownership_conditions_for};
use k8s_openapi::api::admissionregistration::v1::{MatchCondition, ValidatingWebhookConfiguration};
use kube::api::{Api, Patch, PatchParams};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How [`sync_with`] runs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// metadata.name of the ValidatingWebhookConfiguration.
    pub name: String,
    /// How often the policy snapshot is compared with the last conditions written (local
    /// work only; no API call unless they differ).
    pub poll: Duration,
    /// How often the object is read back even when the policies did not change.
    pub resync: Duration,
    /// The longest wait between two attempts after errors (the wait doubles from `poll`).
    pub max_backoff: Duration,
}

impl SyncOptions {
    /// For the configuration `name`: poll every second, read back every 10 seconds, back
    /// off up to a minute after errors.
    pub fn new(name: impl Into<String>) -> SyncOptions {
        SyncOptions {
            name: name.into(),
            poll: Duration::from_secs(1),
            resync: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Runs with the in-cluster (or kubeconfig) client until the process ends.
pub async fn sync(state: Arc<AppState>, options: SyncOptions) {
    match kube::Client::try_default().await {
        Ok(client) => sync_with(state, client, options).await,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes client; the webhook configuration's matchConditions are not kept current");
            state.metrics.reload("webhook-config", false);
        }
    }
}

/// What one reconcile did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The conditions in the cluster were already the generated ones.
    Current,
    /// They were patched.
    Patched,
}

/// Keeps the conditions current with a given client (tests point it at a local API).
pub async fn sync_with(state: Arc<AppState>, client: kube::Client, options: SyncOptions) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let mut written: Option<Vec<MatchCondition>> = None;
    let mut last_check: Option<Instant> = None;
    let mut backoff = options.poll;
    let mut last_error: Option<String> = None;
    loop {
        if state.policies_loaded.load(Ordering::SeqCst) {
            let writers = &state.engine.stamper.settings.system_writers;
            let wanted = ownership_conditions_for(
                writers.users.as_written(),
                writers.groups.as_written(),
                &state.policies.load(),
            );
            let due = last_check.is_none_or(|t| t.elapsed() >= options.resync);
            if written.as_ref() != Some(&wanted) || due {
                last_check = Some(Instant::now());
                match reconcile(&api, &options.name, &wanted).await {
                    Ok(outcome) => {
                        state.metrics.reload("webhook-config", true);
                        if outcome == Outcome::Patched {
                            tracing::info!(name = %options.name, webhook = OWNERSHIP_WEBHOOK, "matchConditions updated to the policies in force");
                        }
                        written = Some(wanted);
                        backoff = options.poll;
                        last_error = None;
                    }
                    Err(e) => {
                        state.metrics.reload("webhook-config", false);
                        let text = e.to_string();
                        if last_error.as_deref() != Some(text.as_str()) {
                            tracing::error!(name = %options.name, error = %text, "cannot update the webhook configuration's matchConditions; retrying");
                            last_error = Some(text);
                        }
                        written = None;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(options.max_backoff);
                        continue;
                    }
                }
            }
        }
        tokio::time::sleep(options.poll).await;
    }
}

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{}", crate::admission::kube_error(.0))]
    Api(#[from] kube::Error),
    #[error("validatingwebhookconfiguration {0} has no webhook named {OWNERSHIP_WEBHOOK}")]
    NoWebhook(String),
}

/// Reads the configuration and patches the ownership webhook's matchConditions when they
/// differ from `wanted`.
pub async fn reconcile(
    api: &Api<ValidatingWebhookConfiguration>,
    name: &str,
    wanted: &[MatchCondition],
) -> Result<Outcome, SyncError> {
    let current = api.get(name).await?;
    let webhook = current
        .webhooks
        .iter()
        .flatten()
        .find(|w| w.name == OWNERSHIP_WEBHOOK)
        .ok_or_else(|| SyncError::NoWebhook(name.to_owned()))?;
    if webhook.match_conditions.as_deref().unwrap_or_default() == wanted {
        return Ok(Outcome::Current);
    }
    api.patch(
        name,
        &PatchParams { field_manager: Some("hallmark".into()), ..PatchParams::default() },
        &Patch::Strategic(patch_body(wanted)),
    )
    .await?;
    Ok(Outcome::Patched)
}

/// The strategic merge patch that replaces the ownership webhook's matchConditions.
pub fn patch_body(wanted: &[MatchCondition]) -> serde_json::Value {
    let mut list = vec![serde_json::json!({"$patch": "replace"})];
    list.extend(wanted.iter().map(|c| serde_json::json!({"name": c.name, "expression": c.expression})));
    serde_json::json!({"webhooks": [{"name": OWNERSHIP_WEBHOOK, "matchConditions": list}]})
}
