//! `metadata.managedFields[].fieldsV1`: which fields each field manager owns.
//!
//! FieldsV1 is structured-merge-diff's trie encoding of a field set: every key of a JSON
//! object is one step (`f:<field>`, `k:<key json>`, `v:<value json>`, `i:<index>`) or `.`
//! (the element itself), and `{}` marks a field owned as a whole.

use super::diff::{ListKeys, key_text};
use super::path::{FieldPath, Segment};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Deeper than anything serde_json parses (it stops at 128); guards against values built
/// in code.
const MAX_DEPTH: usize = 512;

/// How much of one FieldsV1 key an error message repeats.
const MAX_KEY_IN_ERROR: usize = 64;

/// A decoded FieldsV1 set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    root: Node,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Node {
    /// `{}` in FieldsV1: the field as a whole (everything below it).
    leaf: bool,
    /// `".": {}`: the element itself (its existence), not its children.
    itself: bool,
    /// Sorted by segment, no duplicates.
    children: Vec<(Segment, Node)>,
    /// `(child, pair)` for every key field of every `Key` child, sorted by that
    /// `(field, value)` pair: finds the elements whose key contains a given pair without a
    /// scan, for tolerant key matching.
    key_pairs: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid FieldsV1 at {at}: {message}")]
pub struct FieldsV1Error {
    pub at: String,
    pub message: String,
}

impl FieldSet {
    /// Decodes a `fieldsV1` object. Anything that is not FieldsV1 is an error, never a
    /// panic; `at` names the offending key by the FieldsV1 keys leading to it.
    pub fn decode(fields: &Value) -> Result<FieldSet, FieldsV1Error> {
        let mut at = Vec::new();
        let Value::Object(map) = fields else {
            return Err(error(&at, "expected a JSON object"));
        };
        // At the root `{}` is the empty set, not "the whole object".
        let root = decode_children(map, &mut at)?;
        Ok(FieldSet { root })
    }

    /// True when a change at `path` touches a field of this set: an owned field covers the
    /// path, or the path is (or contains) an owned field or element.
    ///
    /// `path` is a concrete path from the diff. A `Key` segment also matches an element
    /// whose key has a subset or superset of its fields (a manifest may omit a defaulted
    /// key field such as `protocol`); `Any` matches every element.
    pub fn touches(&self, path: &[Segment]) -> bool {
        touches_from(&self.root, path)
    }

    /// The length of the shortest prefix of `path` that this set owns as a whole (a `{}`
    /// leaf), following exact steps; `None` when no prefix is a leaf that way.
    pub fn leaf_depth(&self, path: &[Segment]) -> Option<usize> {
        let mut node = &self.root;
        for (depth, segment) in path.iter().enumerate() {
            if node.leaf && depth > 0 {
                return Some(depth);
            }
            node = node.exact_child(segment)?;
        }
        node.leaf.then_some(path.len())
    }

    /// Every owned field, in path order: leaves and the elements owned with `.`.
    pub fn paths(&self) -> Vec<FieldPath> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        collect_paths(&self.root, &mut prefix, &mut out);
        out
    }

    pub fn is_empty(&self) -> bool {
        !self.root.leaf && !self.root.itself && self.root.children.is_empty()
    }

    /// Records, for every list that has `k:` elements in this set, the key field names,
    /// under the list's generalised path (elements replaced by [`Segment::Any`]).
    pub fn learn_list_keys(&self, into: &mut ListKeys) {
        let mut prefix = Vec::new();
        learn_from(&self.root, &mut prefix, into);
    }
}

fn error(at: &[&str], message: impl Into<String>) -> FieldsV1Error {
    let at = if at.is_empty() {
        "the root".to_owned()
    } else {
        let mut text = String::new();
        for (i, key) in at.iter().enumerate() {
            if i > 0 {
                text.push('.');
            }
            match key.char_indices().nth(MAX_KEY_IN_ERROR) {
                Some((cut, _)) => {
                    text.push_str(&key[..cut]);
                    text.push('…');
                }
                None => text.push_str(key),
            }
        }
        text
    };
    FieldsV1Error { at, message: message.into() }
}

/// Decodes the entries of a non-root FieldsV1 object (`{}` → a leaf).
fn decode_node<'v>(value: &'v Value, at: &mut Vec<&'v str>) -> Result<Node, FieldsV1Error> {
    let Value::Object(map) = value else {
        return Err(error(at, "expected a JSON object"));
    };
    if map.is_empty() {
        return Ok(Node { leaf: true, ..Node::default() });
    }
    decode_children(map, at)
}

fn decode_children<'v>(map: &'v Map<String, Value>, at: &mut Vec<&'v str>) -> Result<Node, FieldsV1Error> {
    if at.len() >= MAX_DEPTH {
        return Err(error(at, "nested too deeply"));
    }
    let mut node = Node::default();
    node.children.reserve(map.len());
    for (key, value) in map {
        at.push(key);
        if key == "." {
            match value {
                Value::Object(m) if m.is_empty() => node.itself = true,
                _ => return Err(error(at, "`.` must be {}")),
            }
        } else {
            let segment = parse_key(key).map_err(|message| error(at, message))?;
            let child = decode_node(value, at)?;
            node.children.push((segment, child));
        }
        at.pop();
    }
    // Different spellings can name the same element (`k:` fields in another order, `i:03`).
    node.children.sort_by(|a, b| a.0.cmp(&b.0));
    if node.children.windows(2).any(|w| w[0].0 == w[1].0) {
        node.children = merge_duplicates(std::mem::take(&mut node.children));
    }
    node.key_pairs = index_key_pairs(&node.children);
    Ok(node)
}

/// Merges adjacent children with equal segments (input sorted).
fn merge_duplicates(children: Vec<(Segment, Node)>) -> Vec<(Segment, Node)> {
    let mut out: Vec<(Segment, Node)> = Vec::with_capacity(children.len());
    for (segment, node) in children {
        match out.last_mut() {
            Some((last, existing)) if *last == segment => union_into(existing, node),
            _ => out.push((segment, node)),
        }
    }
    out
}

fn union_into(into: &mut Node, other: Node) {
    into.leaf |= other.leaf;
    into.itself |= other.itself;
    if other.children.is_empty() {
        return;
    }
    let mut merged = std::mem::take(&mut into.children);
    merged.extend(other.children);
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    into.children = merge_duplicates(merged);
    into.key_pairs = index_key_pairs(&into.children);
}

fn index_key_pairs(children: &[(Segment, Node)]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (child, (segment, _)) in children.iter().enumerate() {
        if let Segment::Key(fields) = segment {
            pairs.extend((0..fields.len()).map(|pair| (child, pair)));
        }
    }
    if !pairs.is_empty() {
        pairs.sort_by(|a, b| pair_at(children, *a).cmp(pair_at(children, *b)));
    }
    pairs
}

fn pair_at(children: &[(Segment, Node)], (child, pair): (usize, usize)) -> &(String, String) {
    static NONE: (String, String) = (String::new(), String::new());
    match &children[child].0 {
        Segment::Key(fields) => fields.get(pair).unwrap_or(&NONE),
        _ => &NONE,
    }
}

/// One FieldsV1 key (other than `.`) as a path segment.
fn parse_key(key: &str) -> Result<Segment, String> {
    if let Some(name) = key.strip_prefix("f:") {
        return Ok(Segment::Field(name.to_owned()));
    }
    if let Some(json) = key.strip_prefix("k:") {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(json) else {
            return Err("`k:` must be followed by a JSON object".into());
        };
        if fields.is_empty() {
            return Err("`k:` names no key field".into());
        }
        let mut key = Vec::with_capacity(fields.len());
        for (name, value) in fields {
            let Some(text) = key_text(&value) else {
                return Err(format!("`k:` field {name:?} is not a string, number or bool"));
            };
            key.push((name, text.into_owned()));
        }
        key.sort();
        return Ok(Segment::Key(key));
    }
    if let Some(json) = key.strip_prefix("v:") {
        return match serde_json::from_str::<Value>(json) {
            Ok(value) => Ok(Segment::Value(value.to_string())),
            Err(_) => Err("`v:` must be followed by a JSON value".into()),
        };
    }
    if let Some(index) = key.strip_prefix("i:") {
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return Err("`i:` must be followed by a non-negative integer".into());
        }
        return index.parse().map(Segment::Index).map_err(|_| "`i:` index is out of range".to_owned());
    }
    Err("expected a key starting with `f:`, `k:`, `v:`, `i:` or `.`".into())
}

impl Node {
    fn exact_child(&self, segment: &Segment) -> Option<&Node> {
        self.children.binary_search_by(|(s, _)| s.cmp(segment)).ok().map(|i| &self.children[i].1)
    }

    /// Elements whose key is a strict subset or superset of `key` (sorted by field).
    fn tolerant_key_children<'s>(&'s self, key: &'s [(String, String)]) -> impl Iterator<Item = &'s Node> + 's {
        // A superset of `key` contains every pair of it: look through the elements that
        // contain its rarest pair.
        let rarest = key.iter().map(|pair| self.key_pair_range(pair)).min_by_key(|range| range.len()).unwrap_or(0..0);
        let supersets = self.key_pairs[rarest].iter().map(|&(child, _)| child).filter(move |&child| {
            match &self.children[child].0 {
                Segment::Key(theirs) => theirs.len() > key.len() && is_subset(key, theirs),
                _ => false,
            }
        });
        supersets
            .map(move |child| &self.children[child].1)
            // A subset of `key` starts with one of its pairs: children are sorted by key,
            // so those starting with a given pair are adjacent.
            .chain(key.iter().flat_map(move |first| {
                self.children[self.key_prefix_range(first)]
                    .iter()
                    .filter(move |(segment, _)| match segment {
                        Segment::Key(theirs) => theirs.len() < key.len() && is_subset(theirs, key),
                        _ => false,
                    })
                    .map(|(_, node)| node)
            }))
    }

    /// The range of `key_pairs` entries equal to `pair`.
    fn key_pair_range(&self, pair: &(String, String)) -> std::ops::Range<usize> {
        let children = &self.children;
        let start = self.key_pairs.partition_point(|&e| pair_at(children, e) < pair);
        let end = self.key_pairs.partition_point(|&e| pair_at(children, e) <= pair);
        start..end
    }

    /// The range of children whose segment is a `Key` starting with `pair`.
    fn key_prefix_range(&self, pair: &(String, String)) -> std::ops::Range<usize> {
        let order = |segment: &Segment| match segment {
            Segment::Field(_) => Ordering::Less,
            Segment::Key(fields) => match fields.first() {
                Some(first) => first.cmp(pair),
                None => Ordering::Less,
            },
            Segment::Index(_) | Segment::Value(_) | Segment::Any => Ordering::Greater,
        };
        let start = self.children.partition_point(|(s, _)| order(s) == Ordering::Less);
        let end = self.children.partition_point(|(s, _)| order(s) != Ordering::Greater);
        start..end
    }
}

/// Both sorted by field name, field names unique.
fn is_subset(small: &[(String, String)], large: &[(String, String)]) -> bool {
    small.iter().all(|pair| large.binary_search(pair).is_ok())
}

fn touches_from(node: &Node, path: &[Segment]) -> bool {
    if node.leaf {
        return true;
    }
    let Some((segment, rest)) = path.split_first() else {
        return node.itself || !node.children.is_empty();
    };
    if let Some(child) = node.exact_child(segment) {
        return touches_from(child, rest);
    }
    match segment {
        Segment::Key(key) if !key.is_empty() => node.tolerant_key_children(key).any(|child| touches_from(child, rest)),
        Segment::Any => node
            .children
            .iter()
            .filter(|(s, _)| !matches!(s, Segment::Field(_)))
            .any(|(_, child)| touches_from(child, rest)),
        _ => false,
    }
}

fn collect_paths(node: &Node, prefix: &mut Vec<Segment>, out: &mut Vec<FieldPath>) {
    if !prefix.is_empty() && (node.leaf || node.itself) {
        out.push(FieldPath(prefix.clone()));
    }
    for (segment, child) in &node.children {
        prefix.push(segment.clone());
        collect_paths(child, prefix, out);
        prefix.pop();
    }
}

fn learn_from(node: &Node, prefix: &mut Vec<Segment>, into: &mut ListKeys) {
    let mut key_fields: BTreeSet<&str> = BTreeSet::new();
    for (segment, _) in &node.children {
        if let Segment::Key(fields) = segment {
            key_fields.extend(fields.iter().map(|(name, _)| name.as_str()));
        }
    }
    if !key_fields.is_empty() {
        into.insert(prefix, key_fields);
    }
    for (segment, child) in &node.children {
        if child.children.is_empty() {
            continue;
        }
        prefix.push(match segment {
            Segment::Field(name) => Segment::Field(name.clone()),
            Segment::Key(_) | Segment::Index(_) | Segment::Value(_) | Segment::Any => Segment::Any,
        });
        learn_from(child, prefix, into);
        prefix.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::diff::test_support::{fixture, path};
    use serde_json::json;

    const CPU_PATCH: &str = "deploy-platform-agent-update-patch-cpu-dev-flux-owned.json";

    fn entry(review: &Value, object: &str, manager: &str) -> FieldSet {
        let entries = review["request"][object]["metadata"]["managedFields"].as_array().expect("managedFields");
        let fields = entries.iter().find(|e| e["manager"] == manager).map(|e| &e["fieldsV1"]).expect("manager entry");
        FieldSet::decode(fields).expect("decodes")
    }

    fn decode(fields: Value) -> FieldSet {
        FieldSet::decode(&fields).expect("decodes")
    }

    fn decode_err(fields: Value) -> FieldsV1Error {
        FieldSet::decode(&fields).expect_err("must not decode")
    }

    #[test]
    fn flux_entry_in_old_object_owns_the_cpu_limit() {
        let review = fixture(CPU_PATCH);
        let flux = entry(&review, "oldObject", "kustomize-controller");
        assert!(flux.touches(&path("spec.template.spec.containers[name=agent].resources.limits.cpu")));
        assert!(flux.touches(&path("spec.template.spec.containers[name=agent].image")));
        assert!(flux.touches(&path("spec.replicas")));
    }

    #[test]
    fn patch_entry_in_object_owns_the_cpu_limit_it_wrote() {
        let review = fixture(CPU_PATCH);
        let patch = entry(&review, "object", "kubectl-patch");
        assert!(patch.touches(&path("spec.template.spec.containers[name=agent].resources.limits.cpu")));
        assert!(!patch.touches(&path("spec.template.spec.containers[name=agent].resources.limits.memory")));
        assert!(!patch.touches(&path("spec.replicas")));
        // The flux entry of the new object lost the cpu limit to the patch.
        let flux = entry(&review, "object", "kustomize-controller");
        assert!(!flux.touches(&path("spec.template.spec.containers[name=agent].resources.limits.cpu")));
        assert!(flux.touches(&path("spec.template.spec.containers[name=agent].resources.limits.memory")));
    }

    #[test]
    fn fields_the_entry_does_not_own_are_not_touched() {
        let flux = entry(&fixture(CPU_PATCH), "oldObject", "kustomize-controller");
        assert!(!flux.touches(&path(r#"metadata.annotations["team-a.example.com/oncall"]"#)));
        assert!(!flux.touches(&path(r#"metadata.labels["team-a.example.com/extra"]"#)));
        assert!(!flux.touches(&path("spec.template.spec.containers[name=sidecar]")));
        assert!(!flux.touches(&path("spec.template.spec.containers[name=agent].resources.limits.ephemeral-storage")));
        assert!(!flux.touches(&path("spec.strategy")));
    }

    #[test]
    fn a_change_to_a_parent_of_owned_fields_touches_them() {
        let flux = entry(&fixture(CPU_PATCH), "oldObject", "kustomize-controller");
        assert!(flux.touches(&path("metadata.labels")));
        assert!(flux.touches(&path("spec.template.spec.containers")));
        assert!(flux.touches(&path("spec.template.spec.containers[name=agent]")));
        assert!(flux.touches(&path("spec")));
    }

    #[test]
    fn key_with_two_fields_is_sorted_by_field_name() {
        let set = decode(json!({"f:ports": {r#"k:{"protocol":"TCP","containerPort":9102}"#: {".": {}, "f:name": {}}}}));
        let element = vec![
            Segment::Field("ports".into()),
            Segment::Key(vec![("containerPort".into(), "9102".into()), ("protocol".into(), "TCP".into())]),
        ];
        let mut name = element.clone();
        name.push(Segment::Field("name".into()));
        assert_eq!(set.paths(), vec![FieldPath(element.clone()), FieldPath(name)]);
        assert!(set.touches(&path("ports[protocol=TCP,containerPort=9102].name")));
        assert!(!set.touches(&path("ports[containerPort=9102,protocol=UDP].name")));
        assert!(!set.touches(&path("ports[containerPort=9103,protocol=TCP]")));
    }

    #[test]
    fn key_missing_a_field_matches_the_element_tolerantly() {
        let set = decode(json!({"f:ports": {
            r#"k:{"containerPort":80,"protocol":"TCP"}"#: {".": {}, "f:name": {}},
            r#"k:{"containerPort":81,"protocol":"TCP"}"#: {".": {}},
        }}));
        // The diff knew fewer key fields than the set (protocol omitted in a manifest).
        assert!(set.touches(&path("ports[containerPort=80].name")));
        assert!(!set.touches(&path("ports[containerPort=81].name")));
        assert!(!set.touches(&path("ports[containerPort=82]")));
        // The diff knew more key fields than the set.
        let by_name = decode(json!({"f:env": {r#"k:{"name":"A"}"#: {"f:value": {}}}}));
        assert!(by_name.touches(&path("env[name=A,value=x].value")));
        assert!(!by_name.touches(&path("env[name=B,value=x].value")));
    }

    #[test]
    fn set_and_index_segments_decode() {
        let set = decode(json!({
            "f:metadata": {"f:finalizers": {r#"v:"example.com/guard""#: {}, "v:3": {}}},
            "f:spec": {"f:rules": {"i:0": {"f:verbs": {}}, "i:12": {".": {}}}},
        }));
        let finalizer = |v: &str| {
            vec![Segment::Field("metadata".into()), Segment::Field("finalizers".into()), Segment::Value(v.into())]
        };
        let rule = |i: usize| vec![Segment::Field("spec".into()), Segment::Field("rules".into()), Segment::Index(i)];
        let mut verbs = rule(0);
        verbs.push(Segment::Field("verbs".into()));
        assert_eq!(
            set.paths(),
            vec![
                FieldPath(finalizer(r#""example.com/guard""#)),
                FieldPath(finalizer("3")),
                FieldPath(verbs.clone()),
                FieldPath(rule(12)),
            ]
        );
        assert!(set.touches(&finalizer(r#""example.com/guard""#)));
        assert!(!set.touches(&finalizer(r#""other""#)));
        verbs.push(Segment::Index(2));
        assert!(set.touches(&verbs));
        assert!(!set.touches(&rule(1)));
    }

    #[test]
    fn a_leaf_covers_everything_below_it() {
        let set = decode(json!({"f:spec": {"f:selector": {}, "f:template": {"f:spec": {"f:containers": {}}}}}));
        assert!(set.touches(&path("spec.selector")));
        assert!(set.touches(&path("spec.selector.matchLabels.app")));
        assert!(set.touches(&path("spec.template.spec.containers[name=web].image")));
        assert!(!set.touches(&path("spec.replicas")));
        assert!(!set.touches(&path("spec.template.metadata")));
    }

    #[test]
    fn an_element_owned_by_dot_does_not_cover_fields_it_does_not_list() {
        let set = decode(json!({"f:containers": {r#"k:{"name":"web"}"#: {".": {}, "f:image": {}}}}));
        assert!(!set.touches(&path("containers[name=web].resources.limits.cpu")));
        assert!(!set.touches(&path("containers[name=web].args")));
        assert!(set.touches(&path("containers[name=web].image")));
        assert!(set.touches(&path("containers[name=web]")));
        assert!(set.touches(&path("containers")));
        assert!(!set.touches(&path("containers[name=other]")));
    }

    #[test]
    fn any_element_matches_every_element_of_the_set() {
        let set = decode(json!({"f:containers": {
            r#"k:{"name":"a"}"#: {"f:image": {}},
            r#"k:{"name":"b"}"#: {"f:resources": {}},
        }}));
        assert!(set.touches(&path("containers[*].resources.limits")));
        assert!(set.touches(&path("containers[*].image")));
        assert!(!set.touches(&path("containers[*].args")));
    }

    #[test]
    fn an_empty_fieldsv1_is_an_empty_set() {
        let set = decode(json!({}));
        assert!(set.is_empty());
        assert!(set.paths().is_empty());
        assert!(!set.touches(&path("spec")));
        assert!(!set.touches(&[]));
        assert!(!decode(json!({"f:spec": {}})).is_empty());
    }

    #[test]
    fn two_spellings_of_one_element_merge() {
        let set = decode(json!({"f:ports": {
            r#"k:{"containerPort":80,"protocol":"TCP"}"#: {"f:name": {}},
            r#"k:{"protocol":"TCP","containerPort":80}"#: {".": {}, "f:hostPort": {}},
        }, "f:list": {"i:1": {"f:a": {}}, "i:01": {"f:b": {}}}}));
        let names: Vec<usize> = set.paths().iter().map(|p| p.0.len()).collect();
        assert_eq!(names, vec![3, 3, 2, 3, 3]);
        assert!(set.touches(&path("ports[containerPort=80,protocol=TCP].name")));
        assert!(set.touches(&path("ports[containerPort=80,protocol=TCP].hostPort")));
        assert!(set.touches(&path("list[1].a")));
        assert!(set.touches(&path("list[1].b")));
        assert!(!set.touches(&path("list[1].c")));
    }

    #[test]
    fn paths_are_in_path_order() {
        let flux = entry(&fixture(CPU_PATCH), "oldObject", "kustomize-controller");
        let paths = flux.paths();
        assert!(paths.contains(&FieldPath(path("spec.template.spec.containers[name=agent].resources.limits.cpu"))));
        assert!(paths.contains(&FieldPath(path("spec.template.spec.containers[name=agent]"))));
        assert!(!paths.contains(&FieldPath(path("spec.template.spec.containers[name=agent].resources"))));
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert_eq!(paths.len(), 21);
    }

    #[test]
    fn list_keys_are_learned_under_generalised_paths() {
        let flux = entry(&fixture(CPU_PATCH), "oldObject", "kustomize-controller");
        let mut keys = ListKeys::new();
        flux.learn_list_keys(&mut keys);
        assert_eq!(keys.get(&path("spec.template.spec.containers")), Some(&["name".to_owned()][..]));
        assert_eq!(
            keys.get(&path("spec.template.spec.containers[*].ports")),
            Some(&["containerPort".to_owned(), "protocol".to_owned()][..])
        );
        assert_eq!(keys.get(&path("spec.template.spec.containers[name=agent].env")), Some(&["name".to_owned()][..]));
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn every_captured_managed_fields_entry_decodes() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut decoded = 0;
        for file in std::fs::read_dir(dir).expect("fixtures dir") {
            let file = file.expect("dir entry").path();
            if file.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let doc: Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
            let objects = [&doc["request"]["object"], &doc["request"]["oldObject"], &doc];
            for object in objects {
                for e in object["metadata"]["managedFields"].as_array().into_iter().flatten() {
                    let set = FieldSet::decode(&e["fieldsV1"]);
                    assert!(set.is_ok(), "{}: {:?}", file.display(), set.err());
                    decoded += 1;
                }
            }
        }
        assert!(decoded > 100, "only {decoded} entries");
    }

    #[test]
    fn malformed_fieldsv1_is_an_error() {
        assert_eq!(decode_err(json!([])).at, "the root");
        assert_eq!(decode_err(json!("f:spec")).at, "the root");
        assert_eq!(decode_err(json!(null)).at, "the root");
        let non_object = decode_err(json!({"f:spec": {"f:replicas": 1}}));
        assert_eq!(non_object.at, "f:spec.f:replicas");
        assert_eq!(decode_err(json!({"f:spec": {"x:replicas": {}}})).at, "f:spec.x:replicas");
        assert_eq!(decode_err(json!({"replicas": {}})).at, "replicas");
        for bad in [
            r#"k:{"name":"#,
            r#"k:["web"]"#,
            r#"k:"web""#,
            "k:{}",
            r#"k:{"name":{"a":1}}"#,
            r#"k:{"name":null}"#,
            r#"k:{"name":"a"} trailing"#,
            "i:x",
            "i:-1",
            "i:+1",
            "i:",
            "i:99999999999999999999999999",
            "v:",
            "v:{",
        ] {
            let err = decode_err(json!({"f:list": {bad: {}}}));
            assert!(err.at.starts_with("f:list."), "{bad}: {err}");
        }
        assert_eq!(decode_err(json!({".": {"f:a": {}}})).at, ".");
        assert_eq!(decode_err(json!({".": 1})).at, ".");
    }

    #[test]
    fn long_keys_are_shortened_in_errors() {
        let key = format!("x:{}", "é".repeat(10_000));
        let err = decode_err(json!({ key: {} }));
        assert!(err.at.chars().count() <= MAX_KEY_IN_ERROR + 1, "{}", err.at.len());
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_an_error_not_a_crash() {
        let mut value = json!({});
        for _ in 0..MAX_DEPTH + 10 {
            let mut map = Map::new();
            map.insert("f:a".into(), value);
            value = Value::Object(map);
        }
        assert_eq!(decode_err(value).message, "nested too deeply");
    }

    #[test]
    fn many_elements_decode_and_match_quickly() {
        let mut containers = Map::new();
        for i in 0..20_000 {
            containers.insert(format!(r#"k:{{"containerPort":{i},"protocol":"TCP"}}"#), json!({".": {}, "f:name": {}}));
        }
        let set = decode(json!({ "f:ports": containers }));
        assert_eq!(set.paths().len(), 40_000);
        let started = std::time::Instant::now();
        for i in (0..40_000).step_by(7) {
            let exact = path(&format!("ports[containerPort={i},protocol=TCP].name"));
            let partial = path(&format!("ports[containerPort={i}].name"));
            assert_eq!(set.touches(&exact), i < 20_000);
            assert_eq!(set.touches(&partial), i < 20_000);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
