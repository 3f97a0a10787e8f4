//! Micro-benchmarks of hallmark's pure core on the load benchmark's bodies:
//!
//! ```text
//! cargo bench --bench core                 # everything (~3 minutes)
//! cargo bench --bench core -- decode       # one group (criterion filter)
//! ```
//!
//! * `decode/<body>` — `admission::Review::decode` of the raw bytes;
//! * `diff/<body>` — `ownership::diff::diff(oldObject, object)` (UPDATEs);
//! * `fieldsv1/<body>` — `FieldSet::decode` of every `oldObject.metadata.managedFields[].fieldsV1`;
//! * `mutate/<body>`, `validate/<body>` — `Engine::mutate` / `Engine::validate` on a decoded
//!   request, with the load benchmark's policy;
//! * `request/<body>` — what the server does per `/mutate` request without I/O: decode,
//!   mutate, `encode_response`;
//! * `policy_rules/{validate,mutate}/<n>` — the 16 KB UPDATE against 1, 50 and 500 rules
//!   (one of which matches it), built as `CompiledPolicy`/`CompiledRule` values;
//! * `decode_ref/<how>/<body>` — reference points for the decode, not hallmark code: the
//!   whole body into `serde_json::Value` (`value`), the same with every `managedFields`
//!   kept as raw JSON text (`value_raw_managed_fields`), into a zero-copy tree whose strings
//!   borrow from the body and whose objects are vectors (`borrowed`, [`Tree`]), and a
//!   validating scan that builds nothing (`scan`, `IgnoredAny`). Each includes the drop.
//!
//! Bodies and policies come from `benches/common/mod.rs` (the captured kube-apiserver
//! fixtures, widened).

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hallmark::admission::{Review, encode_response};
use hallmark::config::Settings;
use hallmark::ownership::diff::{DiffOptions, diff};
use hallmark::ownership::fieldsv1::FieldSet;
use hallmark::provenance::Stamper;
use hallmark::review::{Engine, OnError};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

fn engine() -> Engine {
    Engine::new(Stamper::new(Settings::default()), OnError::Allow)
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_795_744_200).expect("timestamp")
}

fn decoded(body: &common::Body) -> Review {
    Review::decode(body.as_slice()).expect("body decodes")
}

/// Fewer, longer samples for the 3 MiB body.
fn sized(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, body: &common::Body) {
    if body.len() > 1024 * 1024 {
        group.sample_size(10);
    } else {
        group.sample_size(50);
    }
    group.throughput(Throughput::Bytes(body.len() as u64));
}

fn bench_core(c: &mut Criterion) {
    let bodies = common::all();
    let policies = common::policy_set(1);
    let engine = engine();
    let prefix = Settings::default().annotation_prefix;

    let mut g = c.benchmark_group("decode");
    for b in &bodies {
        sized(&mut g, b);
        g.bench_with_input(BenchmarkId::from_parameter(b.name), b, |bench, b| {
            bench.iter(|| Review::decode(black_box(b.as_slice())).expect("decodes"))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("diff");
    for b in bodies.iter().filter(|b| b.name.starts_with("update")) {
        sized(&mut g, b);
        let review = decoded(b);
        let (old, new) =
            (review.request.old_object.as_ref().expect("old"), review.request.object.as_ref().expect("new"));
        let opts = DiffOptions::new(&prefix);
        g.bench_function(b.name, |bench| bench.iter(|| diff(black_box(old), black_box(new), &opts)));
    }
    g.finish();

    let mut g = c.benchmark_group("fieldsv1");
    for b in bodies.iter().filter(|b| b.name.starts_with("update")) {
        sized(&mut g, b);
        let review = decoded(b);
        let entries: Vec<Value> =
            hallmark::ownership::managed::entries(review.request.old_object.as_ref().expect("old"))
                .iter()
                .filter_map(|e| e.fields().map(|f| f.into_owned()))
                .collect();
        g.bench_function(b.name, |bench| {
            bench.iter(|| {
                for f in &entries {
                    black_box(FieldSet::decode(black_box(f)).expect("FieldsV1"));
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("mutate");
    for b in &bodies {
        sized(&mut g, b);
        let review = decoded(b);
        g.bench_function(b.name, |bench| bench.iter(|| engine.mutate(black_box(&review.request), &policies, now())));
    }
    g.finish();

    let mut g = c.benchmark_group("validate");
    for b in bodies.iter().filter(|b| b.name.starts_with("update")) {
        sized(&mut g, b);
        let review = decoded(b);
        g.bench_function(b.name, |bench| bench.iter(|| engine.validate(black_box(&review.request), &policies)));
    }
    g.finish();

    let mut g = c.benchmark_group("request");
    for b in &bodies {
        sized(&mut g, b);
        g.bench_function(b.name, |bench| {
            bench.iter(|| {
                let review = Review::decode(black_box(b.as_slice())).expect("decodes");
                let d = engine.mutate(&review.request, &policies, now());
                encode_response(review.api_version, &review.request.uid, &d.answer)
            })
        });
    }
    g.finish();

    let b16 = common::update_16k();
    let review = decoded(&b16);
    for (name, mutate) in [("validate", false), ("mutate", true)] {
        let mut g = c.benchmark_group(format!("policy_rules/{name}"));
        g.sample_size(50);
        for n in [1usize, 50, 500] {
            let set = common::policy_set(n);
            g.bench_with_input(BenchmarkId::from_parameter(n), &set, |bench, set| {
                bench.iter(|| {
                    if mutate {
                        engine.mutate(black_box(&review.request), set, now())
                    } else {
                        engine.validate(black_box(&review.request), set)
                    }
                })
            });
        }
        g.finish();
    }

    // Reconciler matching (on every write, for every policy): exact names against globs.
    let mut g = c.benchmark_group("subjects");
    let exact = hallmark::policy::Subjects::new(
        vec![
            "system:serviceaccount:flux-system:kustomize-controller".into(),
            "system:serviceaccount:flux-system:helm-controller".into(),
        ],
        vec!["gitops-admins".into()],
    );
    let globbed = hallmark::policy::Subjects::new(
        vec![
            "system:serviceaccount:flux-system:kustomize-controller".into(),
            "system:serviceaccount:*:flux-reconciler".into(),
        ],
        vec!["system:serviceaccounts:gitops-*".into()],
    );
    let tenant_groups: Vec<String> =
        vec!["system:serviceaccounts".into(), "system:serviceaccounts:team-a".into(), "system:authenticated".into()];
    for (name, subjects, user) in [
        ("exact/miss", &exact, "dev"),
        ("exact/hit", &exact, "system:serviceaccount:flux-system:helm-controller"),
        ("glob/miss", &globbed, "dev"),
        ("glob/hit", &globbed, "system:serviceaccount:team-a:flux-reconciler"),
    ] {
        g.bench_function(name, |bench| bench.iter(|| black_box(subjects).contains(black_box(user), &tenant_groups)));
    }
    g.finish();
}

/// A zero-copy JSON tree: strings borrow from the input unless they contain escapes,
/// objects are vectors of pairs. Only here to show what the decode could cost.
#[allow(dead_code)]
enum Tree<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Arr(Vec<Tree<'a>>),
    Obj(Vec<(Cow<'a, str>, Tree<'a>)>),
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Tree<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Tree<'de>, E> {
                Ok(Tree::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Tree<'de>, E> {
                Ok(Tree::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Tree<'de>, E> {
                Ok(Tree::Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Tree<'de>, E> {
                Ok(Tree::Num(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Tree<'de>, E> {
                Ok(Tree::Num(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Tree<'de>, E> {
                Ok(Tree::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Tree<'de>, E> {
                Ok(Tree::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Tree<'de>, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Tree::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Tree<'de>, A::Error> {
                let mut v = Vec::new();
                while let Some((Key(k), x)) = a.next_entry()? {
                    v.push((k, x));
                }
                Ok(Tree::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `serde_json::Value`, except that every `managedFields` list is kept as its raw JSON
/// text (one string) instead of a tree: what decoding would cost if hallmark parsed
/// managedFields only where it reads them (see benches/README.md).
struct RawManagedFields(Value);

impl<'de> Deserialize<'de> for RawManagedFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawManagedFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<RawManagedFields, E> {
                Ok(RawManagedFields(Value::Null))
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawManagedFields, E> {
                Ok(RawManagedFields(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawManagedFields, E> {
                Ok(RawManagedFields(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawManagedFields, E> {
                Ok(RawManagedFields(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawManagedFields, E> {
                Ok(RawManagedFields(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawManagedFields, E> {
                Ok(RawManagedFields(Value::String(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<RawManagedFields, E> {
                Ok(RawManagedFields(Value::String(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<RawManagedFields, A::Error> {
                let mut v = Vec::new();
                while let Some(RawManagedFields(x)) = a.next_element()? {
                    v.push(x);
                }
                Ok(RawManagedFields(Value::Array(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<RawManagedFields, A::Error> {
                let mut m = serde_json::Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    let v = if k == "managedFields" {
                        let raw: Box<serde_json::value::RawValue> = a.next_value()?;
                        Value::String(String::from(Box::<str>::from(raw)))
                    } else {
                        a.next_value::<RawManagedFields>()?.0
                    };
                    m.insert(k, v);
                }
                Ok(RawManagedFields(Value::Object(m)))
            }
        }
        d.deserialize_any(V)
    }
}

fn bench_decode_ref(c: &mut Criterion) {
    for b in common::all() {
        let mut g = c.benchmark_group("decode_ref");
        sized(&mut g, &b);
        g.bench_function(BenchmarkId::new("value", b.name), |bench| {
            bench.iter(|| serde_json::from_slice::<Value>(black_box(b.as_slice())).expect("json"))
        });
        g.bench_function(BenchmarkId::new("value_raw_managed_fields", b.name), |bench| {
            bench.iter(|| serde_json::from_slice::<RawManagedFields>(black_box(b.as_slice())).expect("json").0)
        });
        g.bench_function(BenchmarkId::new("borrowed", b.name), |bench| {
            bench.iter(|| serde_json::from_slice::<Tree>(black_box(b.as_slice())).map(|_| ()).expect("json"))
        });
        g.bench_function(BenchmarkId::new("scan", b.name), |bench| {
            bench.iter(|| serde_json::from_slice::<IgnoredAny>(black_box(b.as_slice())).expect("json"))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_core, bench_decode_ref
}
criterion_main!(benches);
