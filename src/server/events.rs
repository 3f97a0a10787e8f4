//! Kubernetes Events for denied and break-glass writes, on the object written, where
//! `kubectl describe` and `kubectl get events` show them (docs/audit-trail.md "Events").
//!
//! The admission answer never waits for an Event: [`EventSink::offer`] puts it on a
//! bounded queue (a full queue drops it, counted) and a background task sends it with
//! kube-rs' [`Recorder`], which aggregates repeats of the same reason on the same object
//! into one Event with a `series` count (events.k8s.io/v1). Dry-run writes never get one.

use crate::admission::{AdmissionRequest, truncate};
use crate::metrics::EventMetrics;
use crate::policy::PolicySet;
use crate::review::{Decision, object_name};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::Value;
use tokio::sync::mpsc;

/// Events waiting to be sent at most; past it new ones are dropped (and counted).
pub const QUEUE: usize = 1024;
/// `reportingController` of hallmark's Events.
pub const CONTROLLER: &str = "hallmark";
/// Reasons (`kubectl describe` shows them in the REASON column).
pub const DENIED: &str = "OwnershipDenied";
pub const BREAK_GLASS: &str = "BreakGlass";
/// events.k8s.io/v1 limits `note` to 1 kB.
const MAX_NOTE: usize = 1000;

/// One Event to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub regarding: ObjectReference,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// The Event a decision leaves, if any: a `/validate` denial (`OwnershipDenied`) or
/// break-glass write (`BreakGlass`), not dry-run, of an object that exists (its uid is
/// known: an UPDATE or DELETE). The note names who, the Git-owned fields (paths, never
/// values) and their owners.
pub fn event_for(req: &AdmissionRequest, decision: &Decision, policies: &PolicySet) -> Option<Pending> {
    let (reason, action, verb) = match decision.outcome {
        "denied" => (DENIED, "Deny", "was denied a change of"),
        "break-glass" => (BREAK_GLASS, "Allow", "overrode (break-glass)"),
        _ => return None,
    };
    if req.dry_run == Some(true) {
        return None;
    }
    let old = req.old_object.as_ref()?;
    let uid = old.pointer("/metadata/uid").and_then(Value::as_str).filter(|u| !u.is_empty())?;
    let name = object_name(req);
    if name.is_empty() {
        return None;
    }
    // A `scale` write is about its parent (the Scale carries the parent's uid).
    let (api_version, kind) = if req.subresource() == Some("scale") {
        let g = &req.resource;
        let version = if g.group.is_empty() { g.version.clone() } else { format!("{}/{}", g.group, g.version) };
        (version, crate::ownership::verdict::kind_of_resource(&g.resource).to_owned())
    } else {
        let k = &req.kind;
        let version = if k.group.is_empty() { k.version.clone() } else { format!("{}/{}", k.group, k.version) };
        (version, k.kind.clone())
    };
    let owners: Vec<String> = decision
        .involved
        .policies
        .iter()
        .map(|p| match policies.effective().find(|c| &c.name == p) {
            Some(c) => match &c.repository {
                Some(repo) => format!("{} (Git: {repo}; policy {p})", c.owner_name),
                None => format!("{} (policy {p})", c.owner_name),
            },
            None => format!("policy {p}"),
        })
        .collect();
    let note = format!(
        "{} {verb} Git-owned fields {} owned by {}",
        req.user_info.username,
        decision.involved.paths_text(),
        owners.join(", ")
    );
    Some(Pending {
        regarding: ObjectReference {
            api_version: Some(api_version),
            kind: Some(kind),
            name: Some(name.to_owned()),
            namespace: req.namespace().map(str::to_owned),
            uid: Some(uid.to_owned()),
            ..ObjectReference::default()
        },
        reason,
        action,
        note: truncate(&note, MAX_NOTE),
    })
}

/// The sending end: cheap to offer to, never blocks.
pub struct EventSink {
    tx: mpsc::Sender<Pending>,
    metrics: EventMetrics,
}

impl EventSink {
    /// A sink and the queue's receiving end (for [`send_all`]).
    pub fn new(metrics: EventMetrics, capacity: usize) -> (EventSink, mpsc::Receiver<Pending>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (EventSink { tx, metrics }, rx)
    }

    /// Queues the Event of a decision, if it has one; a full queue drops it.
    pub fn offer(&self, req: &AdmissionRequest, decision: &Decision, policies: &PolicySet) {
        if !matches!(decision.outcome, "denied" | "break-glass") {
            return;
        }
        let Some(event) = event_for(req, decision, policies) else { return };
        let reason = event.reason;
        if self.tx.try_send(event).is_err() {
            self.metrics.count(reason, "dropped");
        }
    }
}

/// Sends the queued Events until the sink is dropped.
pub async fn send_all(client: kube::Client, mut rx: mpsc::Receiver<Pending>, metrics: EventMetrics) {
    let reporter = Reporter {
        controller: CONTROLLER.to_owned(),
        instance: std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()),
    };
    let recorder = Recorder::new(client, reporter);
    let mut failing = false;
    while let Some(p) = rx.recv().await {
        let event = Event {
            type_: EventType::Warning,
            reason: p.reason.to_owned(),
            note: Some(p.note),
            action: p.action.to_owned(),
            secondary: None,
        };
        match recorder.publish(&event, &p.regarding).await {
            Ok(()) => {
                metrics.count(p.reason, "sent");
                failing = false;
            }
            Err(e) => {
                metrics.count(p.reason, "failed");
                // Once until Events work again (RBAC create/patch on events.k8s.io events).
                if !failing {
                    tracing::warn!(error = %crate::admission::one_line(&e.to_string()), reason = p.reason, "cannot record an Event");
                }
                failing = true;
            }
        }
    }
}
