//! The structural diff of a write: which fields `object` changes relative to `oldObject`.
//!
//! Maps are compared key by key, keyed lists element by element (matched by key, so a
//! reorder is no change), everything else as a whole. The walk borrows both objects and
//! keeps the current path as a chain of stack frames, so that only reported changes
//! allocate.

use super::fieldsv1::FieldSet;
use super::path::{FieldPath, Segment};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;

/// One changed field, borrowing its old and new values from the two objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<'a> {
    pub path: FieldPath,
    pub old: Option<&'a Value>,
    pub new: Option<&'a Value>,
}

/// What the diff leaves out, and how it matches list elements.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions<'p> {
    /// hallmark's own annotations (`hallmark.dev/`): never a change of the object.
    /// Empty means hallmark has no annotations to leave out.
    pub annotation_prefix: &'p str,
    /// List keys learned from managedFields (see [`ListKeys::from_objects`]); they win
    /// over the built-in table.
    pub list_keys: Option<&'p ListKeys>,
    /// Leave `kubernetes.io/change-cause` out (the stamp's history): hallmark sets it
    /// itself, and when kube-apiserver calls the stamp again after another mutating
    /// webhook (`reinvocationPolicy: IfNeeded`) its own change-cause is no change of the
    /// write. Ownership keeps it: a change-cause Git applied is Git's.
    pub leave_out_change_cause: bool,
}

impl<'p> DiffOptions<'p> {
    pub fn new(annotation_prefix: &'p str) -> Self {
        DiffOptions { annotation_prefix, list_keys: None, leave_out_change_cause: false }
    }

    pub fn with_list_keys(mut self, list_keys: &'p ListKeys) -> Self {
        self.list_keys = Some(list_keys);
        self
    }
}

/// Key field names of keyed lists, by the list's generalised path (every element step
/// replaced by [`Segment::Any`], e.g. `spec.template.spec.containers[*].ports`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListKeys {
    by_list: HashMap<Vec<Segment>, Vec<String>>,
}

impl ListKeys {
    pub fn new() -> Self {
        ListKeys::default()
    }

    /// Learns from every `metadata.managedFields[].fieldsV1` of the objects; entries that
    /// do not decode are skipped.
    pub fn from_objects(objs: &[&Value]) -> ListKeys {
        let mut keys = ListKeys::new();
        for obj in objs {
            for entry in super::managed::entries(obj) {
                if let Some(Ok(set)) = entry.fields().map(|f| FieldSet::decode(&f)) {
                    keys.learn(&set);
                }
            }
        }
        keys
    }

    pub fn learn(&mut self, set: &FieldSet) {
        set.learn_list_keys(self);
    }

    /// Adds key fields for the list at `list` (concrete or generalised); fields already
    /// known for it stay.
    pub fn insert<I, S>(&mut self, list: &[Segment], fields: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let known = self.by_list.entry(generalise(list)).or_default();
        for field in fields {
            let field = field.as_ref();
            if let Err(at) = known.binary_search_by(|f| f.as_str().cmp(field)) {
                known.insert(at, field.to_owned());
            }
        }
    }

    /// The key fields of the list at `list` (concrete or generalised), sorted.
    pub fn get(&self, list: &[Segment]) -> Option<&[String]> {
        let fields = if list.iter().all(|s| matches!(s, Segment::Field(_) | Segment::Any)) {
            self.by_list.get(list)
        } else {
            self.by_list.get(generalise(list).as_slice())
        };
        fields.map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.by_list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_list.is_empty()
    }
}

/// The path with every element step (`Key`, `Index`, `Value`) replaced by `Any`.
pub fn generalise(path: &[Segment]) -> Vec<Segment> {
    path.iter()
        .map(|s| match s {
            Segment::Field(name) => Segment::Field(name.clone()),
            Segment::Key(_) | Segment::Index(_) | Segment::Value(_) | Segment::Any => Segment::Any,
        })
        .collect()
}

/// The changed fields of a write, in a stable order (sorted by path, no duplicates).
pub fn diff<'a>(old: &'a Value, new: &'a Value, opts: &DiffOptions<'_>) -> Vec<Change<'a>> {
    let mut differ = Differ { opts, sink: Collect { changes: Vec::new() } };
    // Collecting never stops early.
    let _ = differ.root(old, new);
    let mut changes = differ.sink.changes;
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes.dedup_by(|a, b| a.path == b.path);
    changes
}

/// True when [`diff`] would find no change; stops at the first one.
pub fn is_noop(old: &Value, new: &Value, opts: &DiffOptions<'_>) -> bool {
    Differ { opts, sink: FirstChange }.root(old, new).is_ok()
}

/// Maintained by the apiserver under `metadata`: never a change of the write.
const MAINTAINED_METADATA: &[&str] =
    &["managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink"];

/// kubectl's client-side mirror of the manifest; the apiserver rewrites it on the first
/// server-side apply, so it is never a change of its own.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Key fields by list field name, sorted by name (standard Kubernetes merge keys).
fn builtin_key_fields(at: &At<'_, '_>) -> Option<&'static [&'static str]> {
    let Step::Field(name) = at.step else {
        return None;
    };
    Some(match name {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => &["name"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "ports" if at.is_under_container() => &["containerPort", "protocol"],
        "ports" => &["port", "protocol"],
        "hostAliases" => &["ip"],
        "topologySpreadConstraints" => &["topologyKey", "whenUnsatisfiable"],
        "conditions" => &["type"],
        _ => return None,
    })
}

/// A list element's key: `(field, value text)` sorted by field, borrowed where possible.
type ElementKey<'a> = Vec<(&'a str, Cow<'a, str>)>;

/// The current path: one frame per step, linked to the parent's (None at the root).
struct At<'p, 'a> {
    parent: Option<&'p At<'p, 'a>>,
    step: Step<'p, 'a>,
}

#[derive(Clone, Copy)]
enum Step<'p, 'a> {
    Field(&'a str),
    Element(&'p [(&'a str, Cow<'a, str>)]),
    /// An element of a set (a list of scalars compared as a set): `[="value"]`.
    Member(&'a Value),
}

impl At<'_, '_> {
    fn steps(&self) -> Vec<Step<'_, '_>> {
        let mut steps = Vec::new();
        let mut at = Some(self);
        while let Some(frame) = at {
            steps.push(frame.step);
            at = frame.parent;
        }
        steps.reverse();
        steps
    }

    fn path(&self) -> FieldPath {
        FieldPath(
            self.steps()
                .into_iter()
                .map(|step| match step {
                    Step::Field(name) => Segment::Field(name.to_owned()),
                    Step::Element(key) => {
                        Segment::Key(key.iter().map(|(f, v)| ((*f).to_owned(), v.clone().into_owned())).collect())
                    }
                    Step::Member(v) => Segment::Value(v.to_string()),
                })
                .collect(),
        )
    }

    fn generalised(&self) -> Vec<Segment> {
        self.steps()
            .into_iter()
            .map(|step| match step {
                Step::Field(name) => Segment::Field(name.to_owned()),
                Step::Element(_) | Step::Member(_) => Segment::Any,
            })
            .collect()
    }

    fn is_field(&self, name: &str) -> bool {
        matches!(self.step, Step::Field(n) if n == name)
    }

    /// `metadata` of the object.
    fn is_metadata(&self) -> bool {
        self.parent.is_none() && self.is_field("metadata")
    }

    /// `metadata.finalizers` of the object.
    fn is_finalizers(&self) -> bool {
        self.is_field("finalizers") && self.parent.is_some_and(At::is_metadata)
    }

    /// `metadata.annotations` of the object.
    fn is_annotations(&self) -> bool {
        self.is_field("annotations") && self.parent.is_some_and(At::is_metadata)
    }

    /// `…containers[…].ports` (any kind of container).
    fn is_under_container(&self) -> bool {
        let Some(element) = self.parent else {
            return false;
        };
        matches!(element.step, Step::Element(_))
            && element.parent.is_some_and(|list| {
                list.is_field("containers") || list.is_field("initContainers") || list.is_field("ephemeralContainers")
            })
    }
}

/// Where a walk stops early.
struct Stop;

type Flow = Result<(), Stop>;

trait Sink<'a> {
    fn change(&mut self, at: Option<&At<'_, 'a>>, old: Option<&'a Value>, new: Option<&'a Value>) -> Flow;
}

struct Collect<'a> {
    changes: Vec<Change<'a>>,
}

impl<'a> Sink<'a> for Collect<'a> {
    fn change(&mut self, at: Option<&At<'_, 'a>>, old: Option<&'a Value>, new: Option<&'a Value>) -> Flow {
        let path = at.map(At::path).unwrap_or_default();
        self.changes.push(Change { path, old, new });
        Ok(())
    }
}

struct FirstChange;

impl<'a> Sink<'a> for FirstChange {
    fn change(&mut self, _: Option<&At<'_, 'a>>, _: Option<&'a Value>, _: Option<&'a Value>) -> Flow {
        Err(Stop)
    }
}

/// Kubernetes drops `null`s: a null counts as absent.
fn present(value: &Value) -> Option<&Value> {
    if value.is_null() { None } else { Some(value) }
}

struct Differ<'o, S> {
    opts: &'o DiffOptions<'o>,
    sink: S,
}

impl<'o, 'a, S: Sink<'a>> Differ<'o, S> {
    fn root(&mut self, old: &'a Value, new: &'a Value) -> Flow {
        match (present(old), present(new)) {
            (None, None) => Ok(()),
            (Some(old), Some(new)) => self.value(None, old, new),
            // A created or deleted object: its fields, less what the apiserver maintains.
            (Some(Value::Object(old)), None) => self.one_sided_map(None, old, Side::Old),
            (None, Some(Value::Object(new))) => self.one_sided_map(None, new, Side::New),
            (old, new) => self.sink.change(None, old, new),
        }
    }

    fn value(&mut self, at: Option<&At<'_, 'a>>, old: &'a Value, new: &'a Value) -> Flow {
        match (old, new) {
            (Value::Object(o), Value::Object(n)) => self.map(at, o, n),
            (Value::Array(o), Value::Array(n)) => self.list(at, old, o, new, n),
            _ if old == new => Ok(()),
            _ => self.sink.change(at, Some(old), Some(new)),
        }
    }

    fn map(&mut self, at: Option<&At<'_, 'a>>, old: &'a Map<String, Value>, new: &'a Map<String, Value>) -> Flow {
        for (key, old_value) in old {
            let Some(old_value) = present(old_value) else {
                continue;
            };
            if self.ignored(at, key) {
                continue;
            }
            let child = At { parent: at, step: Step::Field(key) };
            match new.get(key).and_then(present) {
                Some(new_value) => self.value(Some(&child), old_value, new_value)?,
                None => self.one_sided(&child, old_value, Side::Old)?,
            }
        }
        for (key, new_value) in new {
            let Some(new_value) = present(new_value) else {
                continue;
            };
            if old.get(key).and_then(present).is_some() || self.ignored(at, key) {
                continue;
            }
            let child = At { parent: at, step: Step::Field(key) };
            self.one_sided(&child, new_value, Side::New)?;
        }
        Ok(())
    }

    /// A field present on one side only: one change, except for the maps that the diff
    /// filters, whose remaining entries are the change. A map with a single entry is the
    /// same change as that entry (an absent map is an empty one), so the path names the
    /// entry: `annotations["kubectl.kubernetes.io/restartedAt"]`, not `annotations`.
    fn one_sided(&mut self, at: &At<'_, 'a>, value: &'a Value, side: Side) -> Flow {
        if let Value::Object(map) = value {
            if at.is_metadata() || at.is_annotations() {
                return self.one_sided_map(Some(at), map, side);
            }
            let mut entries = map.iter().filter(|(_, v)| !v.is_null());
            if let (Some((key, only)), None) = (entries.next(), entries.next()) {
                let child = At { parent: Some(at), step: Step::Field(key) };
                return self.one_sided(&child, only, side);
            }
        }
        let (old, new) = side.place(value);
        self.sink.change(Some(at), old, new)
    }

    fn one_sided_map(&mut self, at: Option<&At<'_, 'a>>, map: &'a Map<String, Value>, side: Side) -> Flow {
        for (key, value) in map {
            let Some(value) = present(value) else {
                continue;
            };
            if self.ignored(at, key) {
                continue;
            }
            let child = At { parent: at, step: Step::Field(key) };
            self.one_sided(&child, value, side)?;
        }
        Ok(())
    }

    /// What the apiserver and hallmark maintain: never a change of the write.
    fn ignored(&self, at: Option<&At<'_, 'a>>, key: &str) -> bool {
        let Some(at) = at else { return false };
        if at.is_metadata() {
            return MAINTAINED_METADATA.contains(&key);
        }
        if at.is_annotations() {
            let prefix = self.opts.annotation_prefix;
            return key == LAST_APPLIED
                || (self.opts.leave_out_change_cause && key == crate::changecause::KEY)
                || (!prefix.is_empty() && key.starts_with(prefix));
        }
        false
    }

    fn list(
        &mut self,
        at: Option<&At<'_, 'a>>,
        old_list: &'a Value,
        old: &'a [Value],
        new_list: &'a Value,
        new: &'a [Value],
    ) -> Flow {
        if old.is_empty() && new.is_empty() {
            return Ok(());
        }
        if let Some(fields) = self.key_fields(at, old, new)
            && let Some(old_keyed) = index_by_key(old, &fields)
            && let Some(new_keyed) = index_by_key(new, &fields)
        {
            return self.keyed(at, &old_keyed, &new_keyed);
        }
        if let Some(at) = at.filter(|a| a.is_finalizers())
            && old.iter().chain(new).all(Value::is_string)
        {
            return self.set(at, old, new);
        }
        if lists_equal(old, new) { Ok(()) } else { self.sink.change(at, Some(old_list), Some(new_list)) }
    }

    /// A set (`metadata.finalizers`, `+listType=set`): each element added or removed is a
    /// change of its own (`metadata.finalizers[="example.com/cleanup"]`), as managedFields
    /// own them (`v:`); order is no change.
    fn set(&mut self, at: &At<'_, 'a>, old: &'a [Value], new: &'a [Value]) -> Flow {
        for gone in old.iter().filter(|v| !new.contains(v)) {
            self.sink.change(Some(&At { parent: Some(at), step: Step::Member(gone) }), Some(gone), None)?;
        }
        for added in new.iter().filter(|v| !old.contains(v)) {
            self.sink.change(Some(&At { parent: Some(at), step: Step::Member(added) }), None, Some(added))?;
        }
        Ok(())
    }

    /// The key fields of a list of objects (sorted), or None for an atomic list.
    fn key_fields(&self, at: Option<&At<'_, 'a>>, old: &'a [Value], new: &'a [Value]) -> Option<Vec<&'o str>> {
        let mut elements = old.iter().chain(new);
        if !elements.all(Value::is_object) {
            return None;
        }
        if let (Some(at), Some(learned)) = (at, self.opts.list_keys)
            && !learned.is_empty()
            && let Some(fields) = learned.get(&at.generalised())
            && !fields.is_empty()
        {
            return Some(fields.iter().map(String::as_str).collect());
        }
        if let Some(fields) = at.and_then(builtin_key_fields) {
            return Some(fields.to_vec());
        }
        let named = |v: &Value| v.get("name").is_some_and(|n| n.is_string() || n.is_number() || n.is_boolean());
        if old.iter().chain(new).all(named) { Some(vec!["name"]) } else { None }
    }

    fn keyed(
        &mut self,
        at: Option<&At<'_, 'a>>,
        old: &[(ElementKey<'a>, &'a Value)],
        new: &[(ElementKey<'a>, &'a Value)],
    ) -> Flow {
        let (mut i, mut j) = (0, 0);
        loop {
            let order = match (old.get(i), new.get(j)) {
                (Some(o), Some(n)) => o.0.cmp(&n.0),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => return Ok(()),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let (key, value) = &old[i];
                    let child = At { parent: at, step: Step::Element(key) };
                    self.sink.change(Some(&child), Some(value), None)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let (key, value) = &new[j];
                    let child = At { parent: at, step: Step::Element(key) };
                    self.sink.change(Some(&child), None, Some(value))?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (key, old_value) = &old[i];
                    let child = At { parent: at, step: Step::Element(key) };
                    self.value(Some(&child), old_value, new[j].1)?;
                    i += 1;
                    j += 1;
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Old,
    New,
}

impl Side {
    fn place(self, value: &Value) -> (Option<&Value>, Option<&Value>) {
        match self {
            Side::Old => (Some(value), None),
            Side::New => (None, Some(value)),
        }
    }
}

/// Elements with their keys, sorted by key; None when an element is not an object, has
/// none of the key fields or a non-scalar one, or two elements share a key.
fn index_by_key<'a>(elements: &'a [Value], fields: &[&str]) -> Option<Vec<(ElementKey<'a>, &'a Value)>> {
    let mut keyed = Vec::with_capacity(elements.len());
    for element in elements {
        let Value::Object(map) = element else {
            return None;
        };
        let mut key = Vec::with_capacity(fields.len());
        for field in fields {
            let Some((name, value)) = map.get_key_value(*field) else {
                continue;
            };
            if value.is_null() {
                continue;
            }
            let text = key_text(value)?;
            key.push((name.as_str(), text));
        }
        if key.is_empty() {
            return None;
        }
        keyed.push((key, element));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    if keyed.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    Some(keyed)
}

/// The text of a key field's value, as in a `Key` segment: a string unquoted, a number or
/// bool as JSON text; None for anything else. FieldsV1 `k:` keys are spelled the same way.
/// The value at a concrete path of an object (`Field` steps into maps, `Key` into the
/// element of a keyed list whose key fields have those values, `Index` into a position,
/// `Value` into the set element with that JSON text); `None` when absent or null.
pub fn value_at<'a>(object: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    let mut at = object;
    for segment in path {
        at = match (segment, at) {
            (Segment::Field(name), Value::Object(map)) => map.get(name)?,
            (Segment::Key(key), Value::Array(list)) => list.iter().find(|element| {
                key.iter().all(|(field, want)| element.get(field).and_then(key_text).is_some_and(|have| have == *want))
            })?,
            (Segment::Index(i), Value::Array(list)) => list.get(*i)?,
            (Segment::Value(text), Value::Array(list)) => {
                let want: Value = serde_json::from_str(text).ok()?;
                list.iter().find(|element| **element == want)?
            }
            _ => return None,
        };
    }
    present(at)
}

pub(crate) fn key_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn lists_equal(old: &[Value], new: &[Value]) -> bool {
    old.len() == new.len() && old.iter().zip(new).all(|(o, n)| equal(o, n))
}

/// Deep equality where a `null` map value counts as absent.
fn equal(old: &Value, new: &Value) -> bool {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let matched = o.iter().filter(|(_, v)| !v.is_null()).try_fold(0usize, |count, (k, v)| match n.get(k) {
                Some(nv) if equal(v, nv) => Some(count + 1),
                _ => None,
            });
            matched.is_some_and(|count| count == n.values().filter(|v| !v.is_null()).count())
        }
        (Value::Array(o), Value::Array(n)) => lists_equal(o, n),
        _ => old == new,
    }
}

/// Test helpers shared with `fieldsv1`'s tests: a tiny path builder that does not depend
/// on `path::parse`, and the captured fixtures.
#[cfg(test)]
pub(crate) mod test_support {
    use super::Segment;
    use serde_json::Value;

    /// `a.b[name=web].c["x.y/z"][3][*]`: fields, keys (`k=v,k2=v2`, sorted here),
    /// indexes, `[*]`, and quoted field names.
    pub(crate) fn path(text: &str) -> Vec<Segment> {
        let mut segments = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                rest = r;
            } else if let Some(r) = rest.strip_prefix("[\"") {
                let end = r.find("\"]").expect("closing \"]");
                segments.push(Segment::Field(r[..end].to_owned()));
                rest = &r[end + 2..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').expect("closing ]");
                let inner = &r[..end];
                segments.push(if inner == "*" {
                    Segment::Any
                } else if let Ok(index) = inner.parse() {
                    Segment::Index(index)
                } else {
                    let mut key: Vec<(String, String)> = inner
                        .split(',')
                        .map(|pair| {
                            let (f, v) = pair.split_once('=').expect("field=value");
                            (f.to_owned(), v.to_owned())
                        })
                        .collect();
                    key.sort();
                    Segment::Key(key)
                });
                rest = &r[end + 1..];
            } else {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                segments.push(Segment::Field(rest[..end].to_owned()));
                rest = &rest[end..];
            }
        }
        segments
    }

    pub(crate) fn fixtures_dir() -> &'static str {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")
    }

    pub(crate) fn fixture(name: &str) -> Value {
        let file = format!("{}/{name}", fixtures_dir());
        let text = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{fixture, fixtures_dir, path};
    use super::*;
    use serde_json::json;

    fn opts() -> DiffOptions<'static> {
        DiffOptions::new("hallmark.dev/")
    }

    fn paths(changes: &[Change<'_>]) -> Vec<Vec<Segment>> {
        changes.iter().map(|c| c.path.0.clone()).collect()
    }

    /// The diff of a captured review, with and without keys learned from managedFields:
    /// both must agree on these Deployments.
    fn review_paths(name: &str) -> Vec<Vec<Segment>> {
        let review = fixture(name);
        let (old, new) = (&review["request"]["oldObject"], &review["request"]["object"]);
        let plain = diff(old, new, &opts());
        let keys = ListKeys::from_objects(&[old, new]);
        let learned = diff(old, new, &opts().with_list_keys(&keys));
        assert_eq!(plain, learned, "{name}");
        assert_eq!(is_noop(old, new, &opts()), plain.is_empty(), "{name}");
        paths(&plain)
    }

    fn single(changes: &[Change<'_>]) -> (Vec<Segment>, Option<Value>, Option<Value>) {
        assert_eq!(changes.len(), 1, "{changes:?}");
        let c = &changes[0];
        (c.path.0.clone(), c.old.cloned(), c.new.cloned())
    }

    fn deployment(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": spec})
    }

    fn pod_spec(containers: Value) -> Value {
        deployment(json!({"template": {"spec": {"containers": containers}}}))
    }

    #[test]
    fn client_side_apply_of_a_new_image_changes_only_the_image() {
        let review = fixture("deploy-web-update-csa-image-dev.json");
        let changes = diff(&review["request"]["oldObject"], &review["request"]["object"], &opts());
        let (at, old, new) = single(&changes);
        assert_eq!(at, path("spec.template.spec.containers[name=web].image"));
        assert_eq!(old, Some(json!("registry.example.com/acme/web:1.4.2")));
        assert_eq!(new, Some(json!("registry.example.com/acme/web:1.5.0")));
        assert_eq!(review_paths("deploy-web-update-csa-image-dev.json"), vec![at]);
    }

    #[test]
    fn patching_the_cpu_limit_changes_only_the_cpu_limit() {
        let name = "deploy-platform-agent-update-patch-cpu-dev-flux-owned.json";
        let review = fixture(name);
        let keys = ListKeys::from_objects(&[&review["request"]["oldObject"]]);
        assert_eq!(keys.get(&path("spec.template.spec.containers")), Some(&["name".to_owned()][..]));
        let changes = diff(&review["request"]["oldObject"], &review["request"]["object"], &opts());
        let (at, old, new) = single(&changes);
        assert_eq!(at, path("spec.template.spec.containers[name=agent].resources.limits.cpu"));
        assert_eq!((old, new), (Some(json!("500m")), Some(json!("750m"))));
        assert_eq!(review_paths(name), vec![at]);
    }

    #[test]
    fn server_side_apply_noops_change_nothing() {
        for name in [
            "deploy-web-update-ssa-noop-dev.json",
            "deploy-platform-agent-update-ssa-noop-flux.json",
            "deploy-platform-agent-update-ssa-dryrun-noop-flux.json",
        ] {
            assert_eq!(review_paths(name), Vec::<Vec<Segment>>::new(), "{name}");
            let review = fixture(name);
            assert!(is_noop(&review["request"]["oldObject"], &review["request"]["object"], &opts()));
        }
    }

    #[test]
    fn forged_hallmark_and_last_applied_annotations_are_not_changes() {
        assert_eq!(review_paths("deploy-web-update-csa-forged-annotations-dev.json"), vec![path("spec.replicas")]);
        assert!(review_paths("deploy-web-update-annotate-forged-committer-dev.json").is_empty());
    }

    #[test]
    fn rollout_restart_changes_the_restarted_at_template_annotation() {
        let name = "deploy-web-update-rollout-restart-dev.json";
        let review = fixture(name);
        let changes = diff(&review["request"]["oldObject"], &review["request"]["object"], &opts());
        let (at, old, new) = single(&changes);
        assert_eq!(at, path(r#"spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]"#));
        assert_eq!((old, new), (None, Some(json!("2026-11-27T01:48:56Z"))));
        assert_eq!(review_paths(name), vec![at]);
    }

    #[test]
    fn other_captured_writes_change_what_they_wrote() {
        assert_eq!(
            review_paths("deploy-platform-agent-update-annotate-dev-unowned.json"),
            vec![path(r#"metadata.annotations["team-a.example.com/oncall"]"#)]
        );
        assert_eq!(
            review_paths("deploy-web-update-replace-dev.json"),
            vec![path("spec.template.spec.containers[name=web].env[name=LOG_LEVEL].value")]
        );
        assert_eq!(review_paths("deploy-web-scale-dev.json"), vec![path("spec.replicas")]);
        assert_eq!(
            review_paths("deploy-platform-agent-update-ssa-flux-revert-drift.json"),
            vec![path("spec.template.spec.containers[name=agent].resources.limits.cpu")]
        );
        assert_eq!(
            review_paths("deploy-shop-update-csa-oidc-gha.json"),
            vec![path("spec.template.spec.containers[name=shop].image")]
        );
        let status = review_paths("deploy-web-status-patch-admin.json");
        assert!(status.contains(&path("status.conditions")), "{status:?}");
        assert!(status.iter().all(|p| p[0] == Segment::Field("status".into())));
    }

    /// Every review and stored object in the fixtures, as (name, old, new) pairs.
    fn fixture_documents() -> Vec<(String, Value)> {
        let mut docs = Vec::new();
        for file in std::fs::read_dir(fixtures_dir()).expect("fixtures dir") {
            let file = file.expect("dir entry").path();
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if name.ends_with(".json") {
                docs.push((name.clone(), fixture(&name)));
            }
        }
        assert!(docs.len() > 40, "fixtures missing: {}", docs.len());
        docs
    }

    #[test]
    fn every_fixture_object_diffed_with_itself_is_unchanged() {
        for (name, doc) in fixture_documents() {
            let objects = [&doc["request"]["object"], &doc["request"]["oldObject"], &doc];
            for object in objects {
                let keys = ListKeys::from_objects(&[object]);
                assert!(diff(object, object, &opts()).is_empty(), "{name}");
                assert!(diff(object, object, &opts().with_list_keys(&keys)).is_empty(), "{name}");
                assert!(is_noop(object, object, &opts()), "{name}");
                let copy = object.clone();
                assert!(diff(object, &copy, &opts()).is_empty(), "{name}");
            }
        }
    }

    #[test]
    fn is_noop_agrees_with_diff_on_every_review() {
        for (name, doc) in fixture_documents() {
            let (old, new) = (&doc["request"]["oldObject"], &doc["request"]["object"]);
            assert_eq!(is_noop(old, new, &opts()), diff(old, new, &opts()).is_empty(), "{name}");
        }
    }

    #[test]
    fn a_created_object_is_its_fields_less_what_the_apiserver_maintains() {
        let review = fixture("deploy-web-create-csa-dev.json");
        let object = &review["request"]["object"];
        let changes = diff(&Value::Null, object, &opts());
        let found = paths(&changes);
        // Top-level fields are whole changes; metadata is filtered entry by entry.
        assert!(found.contains(&path("spec")));
        assert!(found.contains(&path("metadata.name")));
        assert!(found.contains(&path("metadata.labels")));
        assert!(!found.iter().any(|p| p.starts_with(&path("metadata.managedFields"))));
        assert!(!found.contains(&path(r#"metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]"#)));
        assert!(changes.iter().all(|c| c.old.is_none() && c.new.is_some()));
        assert!(!is_noop(&Value::Null, object, &opts()));
        assert!(is_noop(&Value::Null, &Value::Null, &opts()));
    }

    #[test]
    fn reordering_a_keyed_list_is_no_change() {
        let old = pod_spec(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
        let new = pod_spec(json!([{"name": "b", "image": "b:1"}, {"name": "a", "image": "a:1"}]));
        assert!(diff(&old, &new, &opts()).is_empty());
        assert!(is_noop(&old, &new, &opts()));
    }

    #[test]
    fn added_and_removed_elements_are_one_change_each() {
        let old = pod_spec(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
        let new = pod_spec(json!([{"name": "c", "image": "c:1", "args": ["x"]}, {"name": "b", "image": "b:2"}]));
        let changes = diff(&old, &new, &opts());
        assert_eq!(
            paths(&changes),
            vec![
                path("spec.template.spec.containers[name=a]"),
                path("spec.template.spec.containers[name=b].image"),
                path("spec.template.spec.containers[name=c]"),
            ]
        );
        assert_eq!(changes[0].old, Some(&old["spec"]["template"]["spec"]["containers"][0]));
        assert_eq!(changes[0].new, None);
        assert_eq!(changes[2].old, None);
        assert_eq!(changes[2].new, Some(&new["spec"]["template"]["spec"]["containers"][0]));
    }

    #[test]
    fn map_keys_added_and_removed_are_changes() {
        let old = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let new = json!({"metadata": {"labels": {"b": "2", "c": "3"}}});
        let changes = diff(&old, &new, &opts());
        assert_eq!(paths(&changes), vec![path(r#"metadata.labels["a"]"#), path(r#"metadata.labels["c"]"#)]);
        assert_eq!((changes[0].old, changes[0].new), (Some(&json!("1")), None));
        assert_eq!((changes[1].old, changes[1].new), (None, Some(&json!("3"))));
    }

    #[test]
    fn an_added_subtree_is_one_change_named_by_its_only_entry() {
        let old = deployment(json!({"replicas": 1}));
        let one = deployment(json!({"replicas": 1, "strategy": {"rollingUpdate": {"maxSurge": 1}}}));
        assert_eq!(paths(&diff(&old, &one, &opts())), vec![path("spec.strategy.rollingUpdate.maxSurge")]);
        let two =
            deployment(json!({"replicas": 1, "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}));
        let changes = diff(&old, &two, &opts());
        assert_eq!(paths(&changes), vec![path("spec.strategy.rollingUpdate")]);
        assert_eq!(changes[0].new, Some(&two["spec"]["strategy"]["rollingUpdate"]));
        let empty = deployment(json!({"replicas": 1, "strategy": {}}));
        assert_eq!(paths(&diff(&old, &empty, &opts())), vec![path("spec.strategy")]);
    }

    #[test]
    fn null_counts_as_absent() {
        let old = json!({"spec": {"a": null, "b": 1, "c": {"d": null}}});
        let new = json!({"spec": {"b": 1, "c": {}, "e": null}});
        assert!(diff(&old, &new, &opts()).is_empty());
        assert!(is_noop(&old, &new, &opts()));
        let set = json!({"spec": {"a": 2, "b": 1, "c": {}}});
        let (at, before, after) = single(&diff(&old, &set, &opts()));
        assert_eq!((at, before, after), (path("spec.a"), None, Some(json!(2))));
        // Inside an atomic list too.
        let old = json!({"spec": {"list": [{"a": 1, "b": null}]}});
        let new = json!({"spec": {"list": [{"a": 1}]}});
        assert!(diff(&old, &new, &opts()).is_empty());
    }

    #[test]
    fn a_type_change_is_one_change() {
        let old = json!({"spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "list": [1]}});
        let new = json!({"spec": {"replicas": "1", "selector": "a=b", "list": {"0": 1}}});
        let changes = diff(&old, &new, &opts());
        assert_eq!(paths(&changes), vec![path("spec.list"), path("spec.replicas"), path("spec.selector")]);
        assert_eq!(changes[2].old, Some(&old["spec"]["selector"]));
        assert_eq!(changes[2].new, Some(&new["spec"]["selector"]));
    }

    #[test]
    fn a_list_of_scalars_is_atomic() {
        let old = pod_spec(json!([{"name": "web", "args": ["--a", "--b"]}]));
        let new = pod_spec(json!([{"name": "web", "args": ["--a", "--c"]}]));
        let changes = diff(&old, &new, &opts());
        let (at, before, after) = single(&changes);
        assert_eq!(at, path("spec.template.spec.containers[name=web].args"));
        assert_eq!((before, after), (Some(json!(["--a", "--b"])), Some(json!(["--a", "--c"]))));
        let reordered = pod_spec(json!([{"name": "web", "args": ["--b", "--a"]}]));
        assert_eq!(paths(&diff(&old, &reordered, &opts())), vec![at]);
    }

    #[test]
    fn duplicate_keys_make_a_list_atomic() {
        let old = pod_spec(json!([{"name": "web", "image": "a"}, {"name": "web", "image": "b"}]));
        let new = pod_spec(json!([{"name": "web", "image": "a"}, {"name": "web", "image": "c"}]));
        let (at, _, _) = single(&diff(&old, &new, &opts()));
        assert_eq!(at, path("spec.template.spec.containers"));
        // Unique before, duplicated after: still one change of the whole list.
        let unique = pod_spec(json!([{"name": "web", "image": "a"}]));
        assert_eq!(paths(&diff(&unique, &new, &opts())), vec![path("spec.template.spec.containers")]);
        // The same list with duplicates on both sides is no change.
        assert!(diff(&new, &new.clone(), &opts()).is_empty());
    }

    #[test]
    fn elements_that_are_not_objects_make_a_list_atomic() {
        let old = json!({"spec": {"items": [{"name": "a"}, "b"]}});
        let new = json!({"spec": {"items": [{"name": "a"}, "c"]}});
        assert_eq!(paths(&diff(&old, &new, &opts())), vec![path("spec.items")]);
        let unkeyed_old = json!({"spec": {"rules": [{"host": "a"}]}});
        let unkeyed_new = json!({"spec": {"rules": [{"host": "b"}]}});
        assert_eq!(paths(&diff(&unkeyed_old, &unkeyed_new, &opts())), vec![path("spec.rules")]);
    }

    #[test]
    fn lists_of_named_objects_are_keyed_by_name() {
        let old = json!({"spec": {"listeners": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}});
        let new = json!({"spec": {"listeners": [{"name": "https", "port": 8443}, {"name": "http", "port": 80}]}});
        assert_eq!(paths(&diff(&old, &new, &opts())), vec![path("spec.listeners[name=https].port")]);
    }

    #[test]
    fn learned_keys_match_elements_by_several_fields() {
        let managed = json!([{"manager": "kustomize-controller", "operation": "Apply", "fieldsV1": {"f:spec": {"f:listeners": {
            r#"k:{"port":80,"protocol":"TCP"}"#: {".": {}, "f:port": {}, "f:protocol": {}, "f:tls": {}},
            r#"k:{"port":80,"protocol":"UDP"}"#: {".": {}, "f:port": {}, "f:protocol": {}},
        }}}}, {"manager": "broken", "fieldsV1": {"x:junk": {}}}]);
        let old = json!({"metadata": {"managedFields": managed}, "spec": {"listeners": [
            {"port": 80, "protocol": "TCP", "tls": false}, {"port": 80, "protocol": "UDP"},
        ]}});
        let new = json!({"metadata": {"managedFields": managed}, "spec": {"listeners": [
            {"port": 80, "protocol": "UDP"}, {"port": 80, "protocol": "TCP", "tls": true},
        ]}});
        // Without learned keys the list is unkeyed: one change of the whole list.
        assert_eq!(paths(&diff(&old, &new, &opts())), vec![path("spec.listeners")]);
        let keys = ListKeys::from_objects(&[&old]);
        assert_eq!(keys.get(&path("spec.listeners")), Some(&["port".to_owned(), "protocol".to_owned()][..]));
        let changes = diff(&old, &new, &opts().with_list_keys(&keys));
        assert_eq!(paths(&changes), vec![path("spec.listeners[port=80,protocol=TCP].tls")]);
        assert!(!is_noop(&old, &new, &opts().with_list_keys(&keys)));
    }

    #[test]
    fn learned_keys_win_over_the_builtin_table() {
        // A CRD whose `ports` are container ports outside a `containers` list: the table
        // would key them by `port`, which they lack.
        let managed = json!([{"manager": "flux", "fieldsV1": {"f:spec": {"f:ports": {
            r#"k:{"containerPort":9102,"protocol":"TCP"}"#: {".": {}, "f:name": {}},
        }}}}]);
        let ports = |name: &str| {
            json!([{"containerPort": 9102, "protocol": "TCP", "name": name},
                   {"containerPort": 9103, "protocol": "TCP", "name": "admin"}])
        };
        let old = json!({"metadata": {"managedFields": managed}, "spec": {"ports": ports("metrics")}});
        let new = json!({"metadata": {"managedFields": managed}, "spec": {"ports": ports("prom")}});
        assert_eq!(paths(&diff(&old, &new, &opts())), vec![path("spec.ports")]);
        let keys = ListKeys::from_objects(&[&old, &new]);
        assert_eq!(
            paths(&diff(&old, &new, &opts().with_list_keys(&keys))),
            vec![path("spec.ports[containerPort=9102,protocol=TCP].name")]
        );
    }

    #[test]
    fn container_ports_are_keyed_by_port_and_protocol() {
        let old = pod_spec(json!([{"name": "web", "ports": [
            {"containerPort": 80, "protocol": "TCP", "name": "http"},
            {"containerPort": 80, "protocol": "UDP", "name": "quic"},
            {"containerPort": 9090, "name": "metrics"},
        ]}]));
        let new = pod_spec(json!([{"name": "web", "ports": [
            {"containerPort": 9090, "name": "prom"},
            {"containerPort": 80, "protocol": "UDP", "name": "quic"},
            {"containerPort": 80, "protocol": "TCP", "name": "web"},
        ]}]));
        assert_eq!(
            paths(&diff(&old, &new, &opts())),
            vec![
                path("spec.template.spec.containers[name=web].ports[containerPort=80,protocol=TCP].name"),
                // protocol omitted in the manifest: left out of the key.
                path("spec.template.spec.containers[name=web].ports[containerPort=9090].name"),
            ]
        );
    }

    #[test]
    fn service_ports_are_keyed_by_port_and_protocol() {
        let old = json!({"kind": "Service", "spec": {"ports": [
            {"port": 80, "protocol": "TCP", "targetPort": 8080}, {"port": 443, "protocol": "TCP", "targetPort": 8443},
        ]}});
        let new = json!({"kind": "Service", "spec": {"ports": [
            {"port": 443, "protocol": "TCP", "targetPort": 8443}, {"port": 80, "protocol": "TCP", "targetPort": 9090},
        ]}});
        assert_eq!(paths(&diff(&old, &new, &opts())), vec![path("spec.ports[port=80,protocol=TCP].targetPort")]);
    }

    #[test]
    fn builtin_keys_cover_env_mounts_and_conditions() {
        let old = pod_spec(json!([{"name": "web",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "volumeMounts": [{"mountPath": "/data", "name": "data"}, {"mountPath": "/tmp", "name": "tmp"}],
        }]));
        let new = pod_spec(json!([{"name": "web",
            "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "3"}],
            "volumeMounts": [{"mountPath": "/tmp", "name": "tmp"}, {"mountPath": "/data", "name": "data2"}],
        }]));
        assert_eq!(
            paths(&diff(&old, &new, &opts())),
            vec![
                path("spec.template.spec.containers[name=web].env[name=A].value"),
                path("spec.template.spec.containers[name=web].volumeMounts[mountPath=/data].name"),
            ]
        );
        let old = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Available", "status": "True"}]}});
        let new = json!({"status": {"conditions": [{"type": "Available", "status": "True"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(paths(&diff(&old, &new, &opts())), vec![path("status.conditions[type=Ready].status")]);
    }

    #[test]
    fn apiserver_maintained_metadata_is_ignored() {
        let old = json!({"metadata": {"name": "web", "resourceVersion": "1", "generation": 1, "uid": "u",
            "creationTimestamp": "t", "selfLink": "/x", "managedFields": [{"manager": "a"}]}});
        let new = json!({"metadata": {"name": "web", "resourceVersion": "2", "generation": 2,
            "managedFields": [{"manager": "b"}]}});
        assert!(diff(&old, &new, &opts()).is_empty());
        assert!(is_noop(&old, &new, &opts()));
        // Only at the object's root: a nested `metadata.generation` is content.
        let old = json!({"spec": {"metadata": {"generation": 1}}});
        let new = json!({"spec": {"metadata": {"generation": 2}}});
        assert_eq!(paths(&diff(&old, &new, &opts())), vec![path("spec.metadata.generation")]);
    }

    #[test]
    fn annotations_holding_only_ignored_keys_are_no_change() {
        let old = json!({"metadata": {"name": "web"}});
        let new = json!({"metadata": {"name": "web", "annotations": {
            "hallmark.dev/applied-by": "mallory",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        }}});
        assert!(diff(&old, &new, &opts()).is_empty());
        assert!(diff(&new, &old, &opts()).is_empty());
        assert!(is_noop(&old, &new, &opts()));
        let other = json!({"metadata": {"name": "web", "annotations": {"hallmark.dev/x": "1", "team/x": "1"}}});
        assert_eq!(paths(&diff(&old, &other, &opts())), vec![path(r#"metadata.annotations["team/x"]"#)]);
        // The prefix is configurable, and hallmark's annotations only live at the root.
        let custom = DiffOptions::new("stamp.example.com/");
        assert_eq!(paths(&diff(&old, &new, &custom)), vec![path(r#"metadata.annotations["hallmark.dev/applied-by"]"#)]);
        let template_old = json!({"spec": {"template": {"metadata": {"annotations": {}}}}});
        let template_new = json!({"spec": {"template": {"metadata": {"annotations": {"hallmark.dev/x": "1"}}}}});
        assert_eq!(
            paths(&diff(&template_old, &template_new, &opts())),
            vec![path(r#"spec.template.metadata.annotations["hallmark.dev/x"]"#)]
        );
    }

    #[test]
    fn changes_are_sorted_by_path_and_unique() {
        let old = json!({"b": 1, "a": {"z": 1, "y": 2}, "c": [1]});
        let new = json!({"a": {"y": 3, "x": 0}, "c": [2], "d": 4});
        let found = paths(&diff(&old, &new, &opts()));
        let mut sorted = found.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(found, sorted);
        assert_eq!(found, vec![path("a.x"), path("a.y"), path("a.z"), path("b"), path("c"), path("d")]);
    }

    #[test]
    fn large_maps_and_lists_diff_in_reasonable_time() {
        let mut data = Map::new();
        for i in 0..100_000 {
            data.insert(format!("key-{i}"), Value::String(format!("value-{i}")));
        }
        let old = json!({"kind": "ConfigMap", "data": data.clone()});
        data.insert("key-77777".into(), json!("changed"));
        let new = json!({"kind": "ConfigMap", "data": data});
        let started = std::time::Instant::now();
        assert_eq!(paths(&diff(&old, &new, &opts())), vec![path(r#"data["key-77777"]"#)]);
        assert!(!is_noop(&old, &new, &opts()));

        let containers: Vec<Value> = (0..20_000).map(|i| json!({"name": format!("c{i}"), "image": "x"})).collect();
        let mut reversed = containers.clone();
        reversed.reverse();
        reversed[5]["image"] = json!("y");
        let (old, new) = (pod_spec(Value::Array(containers)), pod_spec(Value::Array(reversed)));
        assert_eq!(paths(&diff(&old, &new, &opts())), vec![path("spec.template.spec.containers[name=c19994].image")]);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn list_keys_generalise_concrete_paths() {
        let mut keys = ListKeys::new();
        keys.insert(&path("spec.containers[name=web].ports"), ["protocol", "containerPort"]);
        keys.insert(&path("spec.containers[name=other].ports"), ["containerPort"]);
        assert_eq!(keys.len(), 1);
        let expected = ["containerPort".to_owned(), "protocol".to_owned()];
        assert_eq!(keys.get(&path("spec.containers[*].ports")), Some(&expected[..]));
        assert_eq!(keys.get(&path("spec.containers[name=x].ports")), Some(&expected[..]));
        assert_eq!(keys.get(&path("spec.containers")), None);
        assert_eq!(generalise(&path("a[name=x].b[3]")), path("a[*].b[*]"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (0u8..4).prop_map(|n| json!(n)),
                "[a-c]{0,2}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("name|type|port|protocol|metadata|annotations|[a-c]", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Mostly well-formed FieldsV1, with some bad keys and values.
        fn fields_v1() -> impl Strategy<Value = Value> {
            let key = prop_oneof![
                Just(".".to_owned()),
                "f:[a-c]",
                Just(r#"k:{"name":"a"}"#.to_owned()),
                Just(r#"k:{"protocol":"TCP","name":1}"#.to_owned()),
                Just(r#"k:{"name":"a","protocol":"TCP"}"#.to_owned()),
                "i:[0-2]{1,2}",
                Just(r#"v:"x""#.to_owned()),
                Just("x:bad".to_owned()),
            ];
            let leaf = prop_oneof![9 => Just(json!({})), 1 => Just(json!(1))];
            leaf.prop_recursive(5, 64, 4, move |inner| {
                prop::collection::btree_map(key.clone(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect()))
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn diff_is_sorted_unique_and_agrees_with_is_noop(old in json_value(), new in json_value()) {
                let changes = diff(&old, &new, &opts());
                prop_assert_eq!(is_noop(&old, &new, &opts()), changes.is_empty());
                prop_assert!(changes.windows(2).all(|w| w[0].path < w[1].path));
                prop_assert!(changes.iter().all(|c| c.old != c.new));
                prop_assert!(diff(&old, &old, &opts()).is_empty());
                prop_assert!(diff(&new, &new.clone(), &opts()).is_empty());
            }

            #[test]
            fn decoding_arbitrary_json_never_panics(value in prop_oneof![json_value(), fields_v1()]) {
                if let Ok(set) = FieldSet::decode(&value) {
                    let _ = set.paths();
                    let _ = set.touches(&path("name.type[name=a]"));
                }
            }
        }
    }
}
