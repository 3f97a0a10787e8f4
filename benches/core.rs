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
//!   (one of which matches it), built as `CompiledPolicy`/`CompiledRule` values.
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
use serde_json::Value;
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
        let entries: Vec<Value> = review.request.old_object.as_ref().expect("old")["metadata"]["managedFields"]
            .as_array()
            .expect("managedFields")
            .iter()
            .map(|e| e["fieldsV1"].clone())
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
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_core
}
criterion_main!(benches);
