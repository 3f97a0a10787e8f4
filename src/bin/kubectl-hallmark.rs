//! `kubectl hallmark`: provenance stamps and Git field ownership of Kubernetes objects.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(hallmark::plugin::main());
}
