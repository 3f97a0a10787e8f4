//! Policy reload without a restart: files and directories given with `--policy` are
//! polled; `--watch-policies` watches `OwnershipPolicy` resources (see `crd`). An invalid
//! document is reported and the last good snapshot stays in force.

use super::AppState;
use crate::policy::load::load_paths;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const POLICY_POLL: Duration = Duration::from_secs(2);

/// What the policy files look like now: every file's path, size, mtime and bytes hash, so
/// that an atomic replace (a ConfigMap volume's `..data` swap) is seen like an edit.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, u64, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    for p in paths {
        let mut files = vec![p.clone()];
        if p.is_dir() {
            files = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|f| f.is_file()).collect())
                .unwrap_or_default();
            files.sort();
        }
        for f in files {
            out.push(file_print(&f));
        }
    }
    out
}

fn file_print(f: &Path) -> (PathBuf, u64, Option<SystemTime>, u64) {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(f).ok();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(f).unwrap_or_default().hash(&mut h);
    (f.to_path_buf(), meta.as_ref().map(|m| m.len()).unwrap_or(0), meta.and_then(|m| m.modified().ok()), h.finish())
}

/// Polls the `--policy` files and swaps a new snapshot in when they change and load.
pub async fn policy_watch(state: Arc<AppState>, paths: Vec<PathBuf>) {
    let p = paths.clone();
    let mut last = tokio::task::spawn_blocking(move || fingerprint(&p)).await.unwrap_or_default();
    let mut last_error: Option<String> = None;
    loop {
        tokio::time::sleep(POLICY_POLL).await;
        let p = paths.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&p)).await else { continue };
        if now == last {
            continue;
        }
        last = now;
        let p = paths.clone();
        match tokio::task::spawn_blocking(move || load_paths(&p)).await {
            Ok(Ok(policies)) => {
                let n = policies.len();
                state.set_source("files", policies);
                state.metrics.reload("policy", true);
                state.metrics.set_policies_rejected("files", 0);
                last_error = None;
                tracing::info!(policies = n, "policies reloaded from files");
            }
            Ok(Err(e)) => {
                state.metrics.reload("policy", false);
                // The files load as a whole: one bad document refuses the new set.
                state.metrics.set_policies_rejected("files", 1);
                let e = e.to_string();
                if last_error.as_deref() != Some(&e) {
                    tracing::error!(error = %e, "policy rejected; the last good policies stay in force");
                    last_error = Some(e);
                }
            }
            Err(_) => {}
        }
    }
}
