//! The two webhook configurations, generated from the policies in force
//! (`hallmark webhook-config`), and the CEL `matchConditions` that keep kube-apiserver from
//! calling `POST /validate` for writes whose answer cannot depend on hallmark.
//!
//! # How kube-apiserver uses `matchConditions`
//!
//! Facts this module relies on, from the Kubernetes source
//! (`staging/src/k8s.io/apiserver/pkg/admission/plugin/...`):
//!
//! - **All must be true to call.** `webhook/matchconditions/matcher.go` (`Match`): any
//!   condition that evaluates to `false` skips the webhook; all `true` calls it; an
//!   evaluation *error* with none `false` applies `failurePolicy` (`Fail`: the write is
//!   rejected without calling; `Ignore`: the call is skipped). The ownership webhook is
//!   `Fail`, so an expression that errors would reject writes: every expression here guards
//!   each optional field with `has()` and each object access with `!= null`.
//! - **Variables.** `cel/compile.go` declares `object` and `oldObject` as `dyn` (`null` for
//!   DELETE and CREATE respectively), `request` as the typed `kubernetes.AdmissionRequest`
//!   of `BuildRequestType` (optional: `userInfo.username`, `userInfo.groups`,
//!   `userInfo.extra`, `subResource`, `namespace`), and `authorizer`. `cel/filter.go`
//!   (`CreateAdmissionRequest`, `ForInput`) builds `request` from the admission attributes
//!   and converts it to unstructured JSON, so empty optional fields are absent
//!   (`has()` is false), exactly as in the AdmissionReview a webhook receives.
//! - **`request.kind`/`request.resource` are the request's own.** `CreateAdmissionRequest`
//!   takes them from the attributes as the client made the request, not converted to the
//!   version the webhook registered under `matchPolicy: Equivalent` (which is what hallmark
//!   receives in its review). Kind names and resource plurals do not change between the
//!   versions of one API, API groups can: the expressions therefore never compare groups
//!   (which can only send more).
//! - **Cost.** `apis/cel/config.go`: `RuntimeCELCostBudgetMatchConditions = 2500000` for all
//!   the conditions of one webhook on one request; running out is an evaluation error. The
//!   expressions here cost about one unit per `managedFields` entry and reconciler field
//!   manager compared, plus a few per name and pattern: a few hundred on a typical object,
//!   and under 100 000 even for 1000 managedFields entries and 20 field managers (see
//!   [`estimated_cost`]).
//!
//! # What the ownership condition decides
//!
//! [`ownership_condition`] is true ("call") unless kube-apiserver can see that hallmark's
//! `Engine::validate` (`src/review.rs`) would answer "allowed" with no warning and no audit
//! annotation. For every policy in force (the built-in default when none is loaded), a write
//! can only get a finding when the writer is not that policy's reconciler
//! (`ownership::verdict::is_reconciler`: users/groups, plus the service-account token extras
//! when `requirePodToken`) and
//! - it is an UPDATE of an object whose group/kind/namespace one of its rules names
//!   (kind or resource plural, case-insensitive, as `CompiledRule::matches_kind`; namespace
//!   globs; a `labelSelector` is treated as matching), or
//! - it is an UPDATE (with `managedFields` not `ignore`, or `deleteProtection`: a write
//!   may take the reconciler's managedFields away) or a DELETE (with `deleteProtection`)
//!   of an object whose `oldObject.metadata.managedFields` has an entry
//!   of one of its reconciler field managers — for an UPDATE, not counting Flux's
//!   `kustomize-controller` entry when `oldObject` tells Flux to leave it alone
//!   (`kustomize.toolkit.fluxcd.io/reconcile: disabled` or `.../ssa: Ignore`).
//!
//! Whatever else cannot be decided from these is sent: subresource writes (the Scale a
//! validating webhook receives has no managedFields), a missing `oldObject`, an UPDATE
//! without `object`. Break-glass writers need no case of their own: they only get warnings
//! where the condition already sends.

use crate::ownership::markers::{FLUX_KUSTOMIZE_MANAGER, FLUX_RECONCILE, FLUX_SSA};
use crate::policy::{CompiledPolicy, CompiledRule, Enforcement, PolicySet, is_glob};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use std::collections::{BTreeMap, BTreeSet};

/// The name of the stamping webhook (in the MutatingWebhookConfiguration).
pub const STAMP_WEBHOOK: &str = "stamp.hallmark.dev";
/// The name of the ownership webhook (in the ValidatingWebhookConfiguration).
pub const OWNERSHIP_WEBHOOK: &str = "ownership.hallmark.dev";
/// The name of the webhook that checks `OwnershipPolicy` objects (in the
/// ValidatingWebhookConfiguration `<name>-policies`).
pub const POLICY_WEBHOOK: &str = "policies.hallmark.dev";
/// The name of the generated matchCondition of the ownership webhook.
pub const OWNERSHIP_CONDITION: &str = "ownership-may-apply";
/// The caBundle of the committed manifests: base64 of this text (see manifests/README.md).
pub const CA_BUNDLE_PLACEHOLDER: &[u8] = b"hallmark-ca-bundle-placeholder";

/// The resources people and pipelines apply directly: (API group, version, resources, scope).
const RESOURCES: &[(&str, &str, &[&str], &str)] = &[
    ("apps", "v1", &["deployments", "statefulsets", "daemonsets", "replicasets"], "Namespaced"),
    ("batch", "v1", &["jobs", "cronjobs"], "Namespaced"),
    ("", "v1", &["services", "configmaps", "secrets", "serviceaccounts", "persistentvolumeclaims"], "Namespaced"),
    ("", "v1", &["namespaces"], "Cluster"),
    ("networking.k8s.io", "v1", &["ingresses", "networkpolicies"], "Namespaced"),
    ("autoscaling", "v2", &["horizontalpodautoscalers"], "Namespaced"),
    ("policy", "v1", &["poddisruptionbudgets"], "Namespaced"),
    ("rbac.authorization.k8s.io", "v1", &["roles", "rolebindings"], "Namespaced"),
    ("rbac.authorization.k8s.io", "v1", &["clusterroles", "clusterrolebindings"], "Cluster"),
];

/// The `scale` subresources the ownership webhook judges (a change of the parent's
/// `spec.replicas`).
const SCALE_SUBRESOURCES: &[&str] = &["deployments/scale", "statefulsets/scale", "replicasets/scale"];

/// Where the webhooks call hallmark and how the configurations are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// metadata.name of both configurations.
    pub name: String,
    /// Namespace and name of hallmark's Service.
    pub namespace: String,
    pub service: String,
    /// The Service port (HTTPS).
    pub port: i32,
    /// PEM bytes of the CA that signed hallmark's serving certificate (serialised base64).
    pub ca_bundle: Vec<u8>,
    /// `Fail` or `Ignore` for the ownership webhook.
    pub ownership_failure_policy: String,
    /// The config's `systemWriters` (users, groups; as written), which both webhooks skip.
    pub system_writers: (Vec<String>, Vec<String>),
    /// `https://HOST:PORT[/PREFIX]`: call hallmark at this URL (`clientConfig.url`, with
    /// `/mutate` or `/validate` appended) instead of the Service; for a hallmark that runs
    /// outside the cluster (a laptop beside kind or minikube). Checked by [`check_url`].
    pub url: Option<String>,
}

impl Default for Target {
    fn default() -> Target {
        Target {
            name: "hallmark".into(),
            namespace: "hallmark-system".into(),
            service: "hallmark".into(),
            port: 443,
            ca_bundle: CA_BUNDLE_PLACEHOLDER.to_vec(),
            ownership_failure_policy: "Fail".into(),
            system_writers: (crate::config::DEFAULT_SYSTEM_WRITERS.iter().map(|s| s.to_string()).collect(), Vec::new()),
            url: None,
        }
    }
}

fn condition(name: &str, expression: &str) -> MatchCondition {
    MatchCondition { name: name.into(), expression: expression.into() }
}

/// The system writers both webhooks skip (they write constantly; with `failurePolicy: Fail`
/// a control-plane write that depended on hallmark could stall namespace deletion, garbage
/// collection or kube-apiserver's start-up). Each is guarded with `has()`: a request without
/// a username (there is none in practice) is sent rather than failing the evaluation, which
/// `failurePolicy: Fail` would turn into a rejected write.
pub fn system_writer_conditions() -> Vec<MatchCondition> {
    vec![
        condition(
            "not-scheduler-or-controller-manager",
            "!has(request.userInfo.username) || !(request.userInfo.username in ['system:kube-controller-manager','system:kube-scheduler'])",
        ),
        condition(
            "not-a-node",
            "!has(request.userInfo.username) || !request.userInfo.username.startsWith('system:node:')",
        ),
        condition(
            "not-a-kube-system-controller",
            "!has(request.userInfo.username) || !request.userInfo.username.startsWith('system:serviceaccount:kube-system:')",
        ),
        condition(
            "not-kube-apiserver",
            "!has(request.userInfo.username) || request.userInfo.username != 'system:apiserver'",
        ),
    ]
}

/// The conditions that skip the config's `systemWriters` (users, groups; exact names and
/// globs, as `policy::Subjects` matches them): the four named conditions above for the
/// default set (the shipped manifests), else one generated `not-a-system-writer`
/// condition (none when both lists are empty). hallmark allows these writers anyway
/// (`Engine::is_system_writer`): skipping them only saves the call.
pub fn system_writer_conditions_for(users: &[String], groups: &[String]) -> Vec<MatchCondition> {
    let default = users.len() == crate::config::DEFAULT_SYSTEM_WRITERS.len()
        && users.iter().zip(crate::config::DEFAULT_SYSTEM_WRITERS).all(|(a, b)| a == b)
        && groups.is_empty();
    if default {
        return system_writer_conditions();
    }
    match writer_in(users, groups) {
        B::F => Vec::new(),
        writer => vec![condition("not-a-system-writer", &B::not(writer).render(Prec::Or))],
    }
}

/// Every matchCondition of the ownership webhook for the default system writers: the
/// system writers, then [`ownership_condition`].
pub fn ownership_conditions(policies: &PolicySet) -> Vec<MatchCondition> {
    let t = Target::default();
    ownership_conditions_for(&t.system_writers.0, &t.system_writers.1, policies)
}

/// Every matchCondition of the ownership webhook: [`system_writer_conditions_for`] these
/// system writers, then [`ownership_condition`].
pub fn ownership_conditions_for(users: &[String], groups: &[String], policies: &PolicySet) -> Vec<MatchCondition> {
    let mut all = system_writer_conditions_for(users, groups);
    all.push(ownership_condition(policies));
    all
}

/// The generated condition: true when the write may get an answer other than "allowed, no
/// warning" from the policies in force (see the module documentation).
pub fn ownership_condition(policies: &PolicySet) -> MatchCondition {
    condition(OWNERSHIP_CONDITION, &ownership_expression(policies))
}

/// The CEL expression of [`ownership_condition`]; one disjunct per line.
pub fn ownership_expression(policies: &PolicySet) -> String {
    let mut parts = vec![
        B::atom("has(request.subResource)"),
        B::atom("oldObject == null"),
        B::and(vec![B::atom("request.operation != 'DELETE'"), B::atom("object == null")]),
    ];
    // Policies with the same reconcilers share one "not a reconciler" test.
    let mut groups: Vec<(Identity, Vec<&CompiledPolicy>)> = Vec::new();
    for p in policies.effective() {
        let id = Identity::of(p);
        match groups.iter_mut().find(|(i, _)| *i == id) {
            Some((_, members)) => members.push(p),
            None => groups.push((id, vec![p])),
        }
    }
    for (id, members) in &groups {
        parts.push(B::and(vec![B::not(id.expr()), touched(members)]));
    }
    let rendered: Vec<String> = match B::or(parts) {
        B::Or(items) => items.iter().map(|b| b.render(Prec::Or)).collect(),
        other => vec![other.render(Prec::Or)],
    };
    rendered.join("\n|| ")
}

/// A rough, deliberately generous estimate of the runtime cost of [`ownership_expression`]
/// in cel-go's units, for an object with `entries` managedFields entries. Per entry of each
/// `managedFields.exists(...)`: the loop step, `has`, the field selection, building the
/// list literal of managers (about 10 in cel-go's cost model) and the `in` over it (its
/// length), counted twice over. Everything else is evaluated once and bounded by the
/// expression's length (a regular expression costs about a tenth of its length times the
/// string's; the strings are names). Compare with `RuntimeCELCostBudgetMatchConditions =
/// 2500000` (k8s.io/apiserver/pkg/apis/cel/config.go).
pub fn estimated_cost(policies: &PolicySet, entries: u64) -> u64 {
    let expression = ownership_expression(policies);
    let scans: u64 = expression.matches("managedFields.exists(").count() as u64;
    let managers: u64 = policies.effective().map(|p| p.reconciler_field_managers.len() as u64).sum();
    scans * entries * 2 * (4 + 10 + managers) + expression.len() as u64
}

/// Who a policy's reconcilers are, as the "not a reconciler" test needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    users: Vec<String>,
    groups: Vec<String>,
    require_pod_token: bool,
}

impl Identity {
    fn of(p: &CompiledPolicy) -> Identity {
        let sorted = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>();
        Identity {
            users: sorted(p.reconcilers.users.as_written()),
            groups: sorted(p.reconcilers.groups.as_written()),
            require_pod_token: p.require_pod_token,
        }
    }

    /// True when the writer is one of these reconcilers (`verdict::is_reconciler`).
    fn expr(&self) -> B {
        let subjects = writer_in(&self.users, &self.groups);
        if self.require_pod_token { B::and(vec![subjects, pod_token()]) } else { subjects }
    }
}

/// `verdict::has_pod_token`: one of the extras kube-apiserver puts on a service account
/// token, with a value.
fn pod_token() -> B {
    let keys = ["authentication.kubernetes.io/credential-id", "authentication.kubernetes.io/pod-name"];
    let each = keys
        .iter()
        .map(|k| {
            let k = cel_string(k);
            B::and(vec![
                B::atom(format!("{k} in request.userInfo.extra")),
                B::atom(format!("size(request.userInfo.extra[{k}]) > 0")),
            ])
        })
        .collect();
    B::and(vec![B::atom("has(request.userInfo.extra)"), B::or(each)])
}

/// True when a write by someone who is not their reconciler may get a finding from one of
/// these policies (which share their reconcilers).
fn touched(policies: &[&CompiledPolicy]) -> B {
    let mut update_managers = BTreeSet::new();
    let mut delete_managers = BTreeSet::new();
    for p in policies {
        // An UPDATE may take a reconciler's managedFields away, which both read.
        if p.managed_fields != Enforcement::Ignore || p.delete_protection {
            update_managers.extend(p.reconciler_field_managers.iter().cloned());
        }
        if p.delete_protection {
            delete_managers.extend(p.reconciler_field_managers.iter().cloned());
        }
    }
    let named = B::or(policies.iter().flat_map(|p| p.rules.iter()).map(rule_names).collect());
    let not_delete = B::atom("request.operation != 'DELETE'");
    let flux = FLUX_KUSTOMIZE_MANAGER.to_owned();
    if update_managers == delete_managers && !update_managers.contains(&flux) {
        return B::or(vec![managed_by(&update_managers), B::and(vec![not_delete, named])]);
    }
    // Flux's entry gives no ownership on an UPDATE of an object Flux was told to leave
    // alone on the cluster's copy (`ownership::markers`); `ssa: IfNotPresent` counts only
    // when Flux applied it, which is left to hallmark. Deletions are always sent.
    let update = if update_managers.remove(&flux) {
        let others: Vec<String> = update_managers.into_iter().collect();
        let flux_counts = B::and(vec![B::atom(format!("e.manager == {}", cel_string(&flux))), B::not(flux_stopped())]);
        scan_managers(B::or(vec![any_of("e.manager", &others, false), flux_counts]))
    } else {
        managed_by(&update_managers)
    };
    B::or(vec![
        B::and(vec![not_delete, B::or(vec![named, update])]),
        B::and(vec![B::atom("request.operation == 'DELETE'"), managed_by(&delete_managers)]),
    ])
}

/// True when `oldObject` carries `kustomize.toolkit.fluxcd.io/reconcile: disabled` or
/// `kustomize.toolkit.fluxcd.io/ssa: Ignore` as an annotation or a label (the value
/// case-insensitively, as Flux compares it).
fn flux_stopped() -> B {
    let mut tests = Vec::new();
    for map in ["annotations", "labels"] {
        let at = format!("oldObject.metadata.{map}");
        let each = [(FLUX_RECONCILE, "disabled"), (FLUX_SSA, "Ignore")]
            .iter()
            .map(|(key, value)| {
                let key = cel_string(key);
                B::and(vec![
                    B::atom(format!("{key} in {at}")),
                    B::atom(format!("{at}[{key}].matches({})", cel_string(&format!("^(?i:{value})$")))),
                ])
            })
            .collect();
        tests.push(B::and(vec![B::atom(format!("has({at})")), B::or(each)]));
    }
    B::and(vec![B::atom("oldObject != null"), B::atom("has(oldObject.metadata)"), B::or(tests)])
}

/// True when `oldObject.metadata.managedFields` has an entry of one of these managers
/// (an over-approximation of `verdict::evaluate`, which also looks at the entry's
/// subresource and fields).
fn managed_by(managers: &BTreeSet<String>) -> B {
    let managers: Vec<String> = managers.iter().cloned().collect();
    scan_managers(any_of("e.manager", &managers, false))
}

/// True when `oldObject.metadata.managedFields` has an entry `e` with a manager for which
/// `test` holds.
fn scan_managers(test: B) -> B {
    match test {
        B::F => B::F,
        test => B::and(vec![
            B::atom("oldObject != null"),
            B::atom("has(oldObject.metadata)"),
            B::atom("has(oldObject.metadata.managedFields)"),
            B::atom(format!(
                "oldObject.metadata.managedFields.exists(e, has(e.manager) && {})",
                test.render(Prec::And)
            )),
        ]),
    }
}

/// True when the request is of a group/kind/namespace the rule names (its labelSelector is
/// not evaluated: treated as matching). Groups are not compared (see the module docs).
fn rule_names(rule: &CompiledRule) -> B {
    let kind = if rule.kinds.is_empty() || rule.kinds.iter().any(|k| k == "*") {
        B::T
    } else {
        // `matches_kind`: the kind, the resource, or the guessed plural of the kind, all
        // case-insensitively.
        let kinds = alternation(rule.kinds.iter().map(String::as_str));
        let mut resources: Vec<String> = rule.kinds.clone();
        resources.extend(rule.kinds.iter().map(|k| crate::policy::guess_resource(k)));
        let resources = alternation(resources.iter().map(String::as_str));
        B::or(vec![
            B::atom(format!("request.kind.kind.matches({})", cel_string(&format!("^(?i:{kinds})$")))),
            B::atom(format!("request.resource.resource.matches({})", cel_string(&format!("^(?i:{resources})$")))),
        ])
    };
    let namespace = if rule.namespaces.is_empty() {
        B::T
    } else {
        let mut exact = Vec::new();
        let mut tests = Vec::new();
        for glob in &rule.namespaces {
            let pattern = glob.pattern();
            if glob.is_case_insensitive() || is_glob(&pattern) {
                tests.push(B::atom(format!(
                    "request.namespace.matches({})",
                    cel_string(&glob_regex(&pattern, glob.is_case_insensitive()))
                )));
            } else {
                exact.push(pattern);
            }
        }
        if !exact.is_empty() {
            tests.insert(0, any_of("request.namespace", &exact, false));
        }
        B::and(vec![B::atom("has(request.namespace)"), B::or(tests)])
    };
    B::and(vec![kind, namespace])
}

/// True when the writer's username is one of `users` or one of its groups one of
/// `groups` (exact names and globs, as `policy::Subjects::contains`), each read only
/// where present (`has()`): a request without them is not matched, never an error.
fn writer_in(users: &[String], groups: &[String]) -> B {
    let user = match any_of("request.userInfo.username", users, false) {
        B::F => B::F,
        test => B::and(vec![B::atom("has(request.userInfo.username)"), test]),
    };
    let group = match any_of("g", groups, false) {
        B::F => B::F,
        test => B::and(vec![
            B::atom("has(request.userInfo.groups)"),
            B::atom(format!("request.userInfo.groups.exists(g, {})", test.render(Prec::Or))),
        ]),
    };
    B::or(vec![user, group])
}

/// True when `value` (a CEL string expression) is one of `names`: exact names with `in`,
/// glob patterns (`*`, `?`) with an anchored regular expression.
fn any_of(value: &str, names: &[String], case_insensitive: bool) -> B {
    let (globs, exact): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| is_glob(n));
    let mut tests = Vec::new();
    match exact.as_slice() {
        [] => {}
        [one] => tests.push(B::atom(format!("{value} == {}", cel_string(one)))),
        many => tests.push(B::atom(format!("{value} in {}", cel_list(many.iter().map(|s| s.as_str()))))),
    }
    for g in globs {
        tests.push(B::atom(format!("{value}.matches({})", cel_string(&glob_regex(g, case_insensitive)))));
    }
    B::or(tests)
}

/// An anchored RE2 regular expression (Go's `regexp`, as cel-go's `matches` uses) for a
/// glob with `*` (any run of characters) and `?` (one character), like `wildmatch`.
pub fn glob_regex(glob: &str, case_insensitive: bool) -> String {
    let mut re = String::from(if case_insensitive { "^(?is:" } else { "^(?s:" });
    for c in glob.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => push_literal(&mut re, c),
        }
    }
    re.push_str(")$");
    re
}

/// `a|b|c` of escaped literals.
fn alternation<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let unique: BTreeSet<&str> = items.collect();
    let mut out = String::new();
    for (i, item) in unique.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        for c in item.chars() {
            push_literal(&mut out, c);
        }
    }
    out
}

/// A character as a regular-expression literal: the metacharacters of RE2 (and of Rust's
/// `regex`) escaped with a backslash, which both read as the literal character.
fn push_literal(re: &mut String, c: char) {
    if "\\.+*?()|[]{}^$".contains(c) {
        re.push('\\');
    }
    re.push(c);
}

/// A CEL string literal in single quotes.
pub fn cel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn cel_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    format!("[{}]", items.map(cel_string).collect::<Vec<_>>().join(", "))
}

/// A boolean expression with its trivial parts folded away, rendered as CEL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum B {
    T,
    F,
    /// A self-contained CEL expression that binds tighter than `&&` (no top-level `&&`/`||`).
    Atom(String),
    And(Vec<B>),
    Or(Vec<B>),
    Not(Box<B>),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Prec {
    Or,
    And,
    Unary,
}

impl B {
    fn atom(s: impl Into<String>) -> B {
        B::Atom(s.into())
    }

    fn and(items: Vec<B>) -> B {
        let mut out = Vec::new();
        for b in items {
            match b {
                B::T => {}
                B::F => return B::F,
                B::And(inner) => out.extend(inner),
                b => out.push(b),
            }
        }
        match out.len() {
            0 => B::T,
            1 => out.remove(0),
            _ => B::And(out),
        }
    }

    fn or(items: Vec<B>) -> B {
        let mut out = Vec::new();
        for b in items {
            match b {
                B::F => {}
                B::T => return B::T,
                B::Or(inner) => out.extend(inner),
                b => out.push(b),
            }
        }
        match out.len() {
            0 => B::F,
            1 => out.remove(0),
            _ => B::Or(out),
        }
    }

    fn not(b: B) -> B {
        match b {
            B::T => B::F,
            B::F => B::T,
            B::Not(inner) => *inner,
            b => B::Not(Box::new(b)),
        }
    }

    /// CEL text, parenthesised when it binds more loosely than `context` requires. An `&&`
    /// inside `||` is parenthesised too, for the reader.
    fn render(&self, context: Prec) -> String {
        let (text, prec) = match self {
            B::T => ("true".to_owned(), Prec::Unary),
            B::F => ("false".to_owned(), Prec::Unary),
            B::Atom(s) => (s.clone(), Prec::Unary),
            B::Not(inner) => (format!("!({})", inner.render(Prec::Or)), Prec::Unary),
            B::And(items) => (items.iter().map(|b| b.render(Prec::And)).collect::<Vec<_>>().join(" && "), Prec::And),
            B::Or(items) => (items.iter().map(|b| b.render(Prec::Unary)).collect::<Vec<_>>().join(" || "), Prec::Or),
        };
        // `!x` and atoms never need parentheses; an `&&` needs them under `||` only for
        // readability, an `||` under `&&` for correctness.
        let wrap = match (prec, context) {
            (Prec::Unary, _) => false,
            (Prec::And, Prec::Or) => false,
            (Prec::And, Prec::And) => false,
            (Prec::And, Prec::Unary) => true,
            (Prec::Or, Prec::Or) => false,
            (Prec::Or, _) => true,
        };
        if wrap { format!("({text})") } else { text }
    }
}

fn labels() -> BTreeMap<String, String> {
    [("app.kubernetes.io/name", "hallmark"), ("app.kubernetes.io/part-of", "hallmark")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn client_config(t: &Target, path: &str) -> WebhookClientConfig {
    if let Some(base) = &t.url {
        return WebhookClientConfig {
            ca_bundle: Some(ByteString(t.ca_bundle.clone())),
            service: None,
            url: Some(format!("{}{path}", base.trim_end_matches('/'))),
        };
    }
    WebhookClientConfig {
        ca_bundle: Some(ByteString(t.ca_bundle.clone())),
        service: Some(ServiceReference {
            name: t.service.clone(),
            namespace: t.namespace.clone(),
            path: Some(path.into()),
            port: Some(t.port),
        }),
        url: None,
    }
}

/// Checks a `--url` as kube-apiserver checks `clientConfig.url`
/// (`ValidateWebhookURL` in k8s.io/apiserver, webhook/validation.go): scheme `https`, a
/// host, no user info, no query and no fragment. A path is kept as a prefix of `/mutate`
/// and `/validate`. The error is a sentence for `hallmark webhook-config` (exit 2).
pub fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err("must start with https:// (kube-apiserver calls webhooks over TLS only)".to_owned());
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err("has no host: expected https://HOST:PORT".to_owned());
    }
    if authority.contains('@') {
        return Err("must not carry a user name or password".to_owned());
    }
    if url.contains('?') || url.contains('#') {
        return Err("must not have a query or a fragment".to_owned());
    }
    if url.contains(char::is_whitespace) {
        return Err("must not contain whitespace".to_owned());
    }
    match url.parse::<axum::http::Uri>() {
        Ok(u) if u.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => Err("has no host: expected https://HOST:PORT".to_owned()),
        Err(e) => Err(format!("is not a URL: {e}")),
    }
}

/// Not in kube-system (control plane) nor in hallmark's own namespace (hallmark must never
/// depend on itself to start).
fn namespace_selector(t: &Target) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(vec!["kube-system".into(), t.namespace.clone()]),
        }]),
        match_labels: None,
    }
}

fn rules(operations: &[&str], scale: bool) -> Vec<RuleWithOperations> {
    let ops: Vec<String> = operations.iter().map(|s| s.to_string()).collect();
    let mut out: Vec<RuleWithOperations> = RESOURCES
        .iter()
        .map(|(group, version, resources, scope)| RuleWithOperations {
            api_groups: Some(vec![group.to_string()]),
            api_versions: Some(vec![version.to_string()]),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            operations: Some(ops.clone()),
            scope: Some(scope.to_string()),
        })
        .collect();
    if scale {
        out.insert(
            1,
            RuleWithOperations {
                api_groups: Some(vec!["apps".into()]),
                api_versions: Some(vec!["v1".into()]),
                resources: Some(SCALE_SUBRESOURCES.iter().map(|s| s.to_string()).collect()),
                operations: Some(vec!["UPDATE".into()]),
                scope: Some("Namespaced".into()),
            },
        );
    }
    out
}

/// The stamping webhook (`POST /mutate`): CREATE and UPDATE of the directly applied
/// resources, `failurePolicy: Ignore`, reinvoked when a later webhook changes the object.
pub fn mutating(t: &Target) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(t.name.clone()), labels: Some(labels()), ..ObjectMeta::default() },
        webhooks: Some(vec![MutatingWebhook {
            name: STAMP_WEBHOOK.into(),
            client_config: client_config(t, "/mutate"),
            failure_policy: Some("Ignore".into()),
            reinvocation_policy: Some("IfNeeded".into()),
            match_policy: Some("Equivalent".into()),
            side_effects: "NoneOnDryRun".into(),
            admission_review_versions: vec!["v1".into()],
            timeout_seconds: Some(5),
            rules: Some(rules(&["CREATE", "UPDATE"], false)),
            namespace_selector: Some(namespace_selector(t)),
            match_conditions: Some(system_writer_conditions_for(&t.system_writers.0, &t.system_writers.1)),
            object_selector: None,
        }]),
    }
}

/// The ownership webhook (`POST /validate`): UPDATE and DELETE of the directly applied
/// resources and UPDATE of their `scale` subresources (CREATE is never judged), with the
/// system-writer conditions and [`ownership_condition`] for `policies`.
pub fn validating(t: &Target, policies: &PolicySet) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(t.name.clone()), labels: Some(labels()), ..ObjectMeta::default() },
        webhooks: Some(vec![ValidatingWebhook {
            name: OWNERSHIP_WEBHOOK.into(),
            client_config: client_config(t, "/validate"),
            failure_policy: Some(t.ownership_failure_policy.clone()),
            match_policy: Some("Equivalent".into()),
            side_effects: "NoneOnDryRun".into(),
            admission_review_versions: vec!["v1".into()],
            timeout_seconds: Some(5),
            rules: Some(rules(&["UPDATE", "DELETE"], true)),
            namespace_selector: Some(namespace_selector(t)),
            match_conditions: Some(ownership_conditions_for(&t.system_writers.0, &t.system_writers.1, policies)),
            object_selector: None,
        }]),
    }
}

/// The policy webhook (`POST /validate-policy`), in its own ValidatingWebhookConfiguration
/// `<name>-policies`: CREATE and UPDATE of `OwnershipPolicy` objects, checked by the same
/// loader as `--watch-policies`, so that `kubectl apply` of an invalid policy is refused
/// with hallmark's reason. `failurePolicy: Ignore`: while hallmark is down policies can
/// still be applied (an invalid one is then reported on its status and in an Event, and
/// never replaces the last good version in force).
pub fn policies(t: &Target) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(format!("{}-policies", t.name)),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: POLICY_WEBHOOK.into(),
            client_config: client_config(t, "/validate-policy"),
            failure_policy: Some("Ignore".into()),
            match_policy: Some("Equivalent".into()),
            side_effects: "None".into(),
            admission_review_versions: vec!["v1".into()],
            timeout_seconds: Some(5),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["hallmark.dev".into()]),
                api_versions: Some(vec!["v1alpha1".into()]),
                resources: Some(vec!["ownershippolicies".into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                scope: Some("Cluster".into()),
            }]),
            namespace_selector: None,
            match_conditions: None,
            object_selector: None,
        }]),
    }
}

/// Which configurations [`yaml`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Mutating,
    Validating,
    /// The `<name>-policies` configuration of the policy webhook.
    Policies,
}

/// The configurations as YAML documents separated by `---`: the mutating one, the
/// ownership one, the policy one.
pub fn yaml(t: &Target, policies_in_force: &PolicySet, only: Option<Which>) -> Result<String, serde_yaml::Error> {
    let mut docs = Vec::new();
    let wanted = |w: Which| only.is_none_or(|o| o == w);
    if wanted(Which::Mutating) {
        docs.push(serde_yaml::to_string(&mutating(t))?);
    }
    if wanted(Which::Validating) {
        docs.push(serde_yaml::to_string(&validating(t, policies_in_force))?);
    }
    if wanted(Which::Policies) {
        docs.push(serde_yaml::to_string(&policies(t))?);
    }
    Ok(docs.join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wildmatch::WildMatch;

    #[test]
    fn folding_and_rendering() {
        let a = || B::atom("a == 1");
        let b = || B::atom("b");
        assert_eq!(B::and(vec![B::T, a()]), a());
        assert_eq!(B::and(vec![B::F, a()]), B::F);
        assert_eq!(B::or(vec![B::F, a()]), a());
        assert_eq!(B::or(vec![B::T, a()]), B::T);
        assert_eq!(B::not(B::not(a())), a());
        let e = B::and(vec![B::or(vec![a(), b()]), B::not(B::and(vec![a(), b()]))]);
        assert_eq!(e.render(Prec::Or), "(a == 1 || b) && !(a == 1 && b)");
        let e = B::or(vec![B::and(vec![a(), b()]), b()]);
        assert_eq!(e.render(Prec::Or), "(a == 1 && b) || b");
        assert_eq!(e.render(Prec::And), "((a == 1 && b) || b)");
    }

    #[test]
    fn strings_and_regexes_are_escaped() {
        assert_eq!(cel_string("it's a\\b\n"), r"'it\'s a\\b\n'");
        assert_eq!(glob_regex("team-*.a?", false), r"^(?s:team-.*\.a.)$");
        assert_eq!(glob_regex("A*", true), "^(?is:A.*)$");
        assert_eq!(alternation(["Deployment", "a.b", "Deployment"].into_iter()), r"Deployment|a\.b");
        // Glob translation agrees with wildmatch on a table of names.
        let globs = ["team-*", "*-prod", "a?c", "*", "exact", "x*y*z", "", "a.b*"];
        let names = ["team-a", "team-", "team", "x-prod", "abc", "ac", "exact", "xaybz", "xyz", "", "a.bc", "axbc"];
        for g in globs {
            let re = regex_lite(&glob_regex(g, false));
            for n in names {
                assert_eq!(re(n), WildMatch::new(g).matches(n), "{g} vs {n}");
            }
        }
    }

    /// A tiny matcher for the regexes `glob_regex` makes (anchored; `.*`, `.`, escaped
    /// literals), so that the library needs no regex engine.
    fn regex_lite(re: &str) -> impl Fn(&str) -> bool + use<> {
        let body = re.strip_prefix("^(?s:").and_then(|r| r.strip_suffix(")$")).expect("shape").to_owned();
        let mut glob = String::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => glob.push(chars.next().expect("escaped")),
                '.' if chars.peek() == Some(&'*') => {
                    chars.next();
                    glob.push('*');
                }
                '.' => glob.push('?'),
                c => glob.push(c),
            }
        }
        let m = WildMatch::new(&glob);
        move |s: &str| m.matches(s)
    }

    #[test]
    fn the_builtin_default_skips_reconcilers_and_objects_without_reconciler_managers() {
        let e = ownership_expression(&PolicySet::default());
        assert!(e.contains("'system:serviceaccount:flux-system:kustomize-controller'"), "{e}");
        assert!(e.contains("'kustomize-controller'") && e.contains("'argocd-application-controller'"), "{e}");
        assert!(!e.contains("request.kind.kind"), "no rules, no kind test: {e}");
        assert!(!e.contains("== 'DELETE'"), "no deleteProtection: {e}");
        assert!(estimated_cost(&PolicySet::default(), 1000) < 100_000);
    }
}
