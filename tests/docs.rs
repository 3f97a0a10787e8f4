//! The documentation a clone carries is whole and self-contained:
//!
//! - every relative link in the Markdown documents (`[text](target)`, images, reference
//!   links and `<a href>`/`<img src>` in inline HTML) resolves to a file or directory inside
//!   the repository, and a `#fragment` names a heading of the target document (GitHub's
//!   anchor rules: lower case, punctuation dropped, spaces to `-`, `-1`, `-2`, … for
//!   repeats) or, for a source file, a GitHub line anchor (`#L10`, `#L10-L20`);
//! - links with a scheme (`https://…`, `mailto:`) are left alone: no network in tests;
//! - no committed file outside `tests/fixtures/` (verbatim captures) mentions the
//!   `shared` folder beside the checkout, which a clone does not have.
//!
//! Markdown is read with `pulldown-cmark`, so code spans and fenced blocks (where
//! `[name=web]` and `(…)` are not links) are never mistaken for links.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

/// The documents whose links must resolve (besides every `docs/*.md` and every other
/// committed Markdown file). Each must exist: a renamed document fails here first.
const DOCUMENTS: &[&str] = &[
    "README.md",
    "docs/SUMMARY.md",
    "docs/install.md",
    "docs/provenance.md",
    "docs/ownership-policies.md",
    "docs/gitops.md",
    "docs/plugin.md",
    "docs/operating.md",
    "docs/performance.md",
    "docs/reliability.md",
    "docs/development.md",
    "docs/reference.md",
    "manifests/README.md",
    "certs/README.md",
    "benches/README.md",
    "tests/fixtures/README.md",
    "tests/fixtures/validating/README.md",
];

/// The folder a clone does not have, spelled so that this file does not mention it.
fn outside_needles() -> [String; 1] {
    [format!("..{}shared", '/')]
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_FOOTNOTES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// One link of a document: where it points and the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    target: String,
    line: usize,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The values of `attr="…"` (or `'…'`) attributes in a piece of HTML.
fn html_attributes(html: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    let needle = format!("{attr}=");
    let mut from = 0;
    while let Some(i) = lower[from..].find(&needle) {
        let at = from + i;
        from = at + needle.len();
        // Only a whole attribute name: preceded by whitespace.
        if !lower[..at].ends_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let rest = &html[from..];
        let value = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or(""),
            _ => rest.split(|c: char| c.is_ascii_whitespace() || c == '>').next().unwrap_or(""),
        };
        out.push(value.to_owned());
    }
    out
}

/// Every link and image target of a Markdown text, with its line.
fn links(text: &str) -> Vec<Link> {
    let mut out = Vec::new();
    for (event, range) in Parser::new_ext(text, options()).into_offset_iter() {
        let line = line_of(text, range.start);
        match event {
            Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. }) => {
                out.push(Link { target: dest_url.to_string(), line });
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                for attr in ["href", "src"] {
                    for target in html_attributes(&html, attr) {
                        out.push(Link { target, line });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// GitHub's anchor for a heading's text: lower case; letters, digits, `-` and `_` kept;
/// spaces turned into `-`; everything else (punctuation, symbols) dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors a Markdown document offers: its headings' slugs (a repeated slug gets
/// `-1`, `-2`, …, as on GitHub) and the `id`/`name` of HTML elements.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(text, options()) {
        match event {
            Event::Start(Tag::Heading { .. }) => {
                heading = Some(String::new());
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(h) = heading.take() {
                    let base = slug(&h);
                    let n = seen.entry(base.clone()).or_insert(0);
                    let anchor = if *n == 0 { base.clone() } else { format!("{base}-{n}") };
                    *n += 1;
                    out.insert(anchor);
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                for attr in ["id", "name"] {
                    out.extend(html_attributes(&html, attr));
                }
            }
            _ => {}
        }
    }
    out
}

/// True for `scheme:…` (http, https, mailto, …): not a path in the repository.
fn has_scheme(target: &str) -> bool {
    match target.split_once(':') {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// `%20` and friends, as a browser decodes a link's path.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `base/rel` with `.` and `..` resolved lexically; `None` when it climbs above `root`.
fn resolve(root: &Path, base_dir: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<String> = Vec::new();
    let start = base_dir.strip_prefix(root).ok()?;
    for c in start.components() {
        if let Component::Normal(p) = c {
            parts.push(p.to_string_lossy().into_owned());
        }
    }
    for piece in rel.split('/') {
        match piece {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p.to_owned()),
        }
    }
    Some(parts.iter().fold(root.to_path_buf(), |acc, p| acc.join(p)))
}

/// A GitHub line anchor of a source file: `L10` or `L10-L20`.
fn is_line_anchor(fragment: &str) -> bool {
    let line = |s: &str| s.strip_prefix('L').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    match fragment.split_once('-') {
        Some((a, b)) => line(a) && line(b),
        None => line(fragment),
    }
}

/// The problems with the links of one document (`doc` is inside `root`).
fn check_document(root: &Path, doc: &Path) -> Vec<String> {
    let shown = doc.strip_prefix(root).unwrap_or(doc).display().to_string();
    let text = match std::fs::read_to_string(doc) {
        Ok(t) => t,
        Err(e) => return vec![format!("{shown}: cannot read: {e}")],
    };
    let base_dir = doc.parent().unwrap_or(root);
    let mut problems = Vec::new();
    let mut anchor_cache: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    for link in links(&text) {
        let at = format!("{shown}:{}: ({})", link.line, link.target);
        let target = link.target.trim();
        if target.is_empty() {
            problems.push(format!("{at}: empty link target"));
            continue;
        }
        if has_scheme(target) || target.starts_with("//") {
            continue; // http(s), mailto, …: left alone.
        }
        let (path_part, fragment) = match target.split_once('#') {
            Some((p, f)) => (p, Some(percent_decode(f))),
            None => (target, None),
        };
        let path_part = path_part.split('?').next().unwrap_or(path_part);
        if path_part.starts_with('/') {
            problems.push(format!("{at}: absolute path; link relative to this document"));
            continue;
        }
        let file = if path_part.is_empty() {
            doc.to_path_buf()
        } else {
            match resolve(root, base_dir, &percent_decode(path_part)) {
                Some(p) => p,
                None => {
                    problems.push(format!("{at}: points outside the repository"));
                    continue;
                }
            }
        };
        if !file.exists() {
            problems.push(format!("{at}: no such file or directory in the repository"));
            continue;
        }
        let Some(fragment) = fragment.filter(|f| !f.is_empty()) else {
            continue;
        };
        let is_markdown = file.extension().is_some_and(|e| e == "md");
        if !is_markdown {
            if !(file.is_file() && is_line_anchor(&fragment)) {
                problems.push(format!("{at}: #{fragment} is not a line anchor (#L10, #L10-L20) of a file"));
            }
            continue;
        }
        let anchors = anchor_cache
            .entry(file.clone())
            .or_insert_with(|| std::fs::read_to_string(&file).map(|t| anchors(&t)).unwrap_or_default());
        if !anchors.contains(&fragment) {
            problems.push(format!("{at}: no heading with anchor #{fragment} in the target"));
        }
    }
    problems
}

/// The committed files (`git ls-files`), else every file under `root` but `target/` and
/// `.git/` (a source archive without git).
fn committed_files(root: &Path) -> Vec<PathBuf> {
    let git = std::process::Command::new("git").arg("-C").arg(root).args(["ls-files", "-z"]).output();
    if let Ok(out) = git
        && out.status.success()
        && !out.stdout.is_empty()
    {
        return out
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root.join(String::from_utf8_lossy(p).as_ref()))
            .collect();
    }
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if dir == root && (name == "target" || name == ".git") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The Markdown documents checked: [`DOCUMENTS`], `docs/*.md`, and every other committed
/// `.md` file.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs: BTreeSet<PathBuf> = DOCUMENTS.iter().map(|d| root.join(d)).collect();
    if let Ok(entries) = std::fs::read_dir(root.join("docs")) {
        docs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "md")));
    }
    docs.extend(committed_files(root).into_iter().filter(|p| p.extension().is_some_and(|e| e == "md")));
    docs.into_iter().collect()
}

#[test]
fn every_relative_link_in_the_documentation_resolves_inside_the_repository() {
    let root = root();
    let docs = documents(&root);
    let mut problems = Vec::new();
    for d in DOCUMENTS {
        if !root.join(d).is_file() {
            problems.push(format!("{d}: the document is missing"));
        }
    }
    let mut checked = 0;
    for doc in &docs {
        if doc.is_file() {
            checked += links(&std::fs::read_to_string(doc).unwrap_or_default()).len();
            problems.extend(check_document(&root, doc));
        }
    }
    assert!(checked > 0, "no links found in {} documents: the parser read nothing", docs.len());
    assert!(problems.is_empty(), "broken links ({}):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn the_reference_is_linked_from_the_readme() {
    let root = root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        links(&readme).iter().any(|l| l.target == "docs/reference.md"),
        "README.md must link docs/reference.md, the reference of the interfaces"
    );
    assert!(root.join("docs/reference.md").is_file());
}

/// The README is the front page: short, with the two commands of a fresh clone (CI runs
/// `cargo test` through `.ci/run`), and it leads to the guide.
#[test]
fn the_readme_is_a_front_page_that_leads_to_the_guide() {
    let root = root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines; the guide belongs in docs/");
    for command in ["cargo test", "cargo run --release -- serve", "cargo install --path ."] {
        assert!(readme.contains(command), "README.md must show `{command}`");
    }
    let targets: BTreeSet<String> = links(&readme).into_iter().map(|l| l.target).collect();
    for page in guide_pages(&root) {
        let want = format!("docs/{page}");
        assert!(
            targets.iter().any(|t| t == &want || t.starts_with(&format!("{want}#"))),
            "README.md does not link {want}"
        );
    }
}

/// The pages of the guide: every `docs/*.md` but SUMMARY.md.
fn guide_pages(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.ends_with(".md") && n != "SUMMARY.md")
        .collect()
}

/// `mdbook build docs` renders the guide: docs/book.toml takes docs/ as its source, and
/// docs/SUMMARY.md (mdBook's table of contents) lists every page exactly once, each a file
/// that exists.
#[test]
fn the_summary_lists_every_page_of_the_guide_once() {
    let root = root();
    let book = std::fs::read_to_string(root.join("docs/book.toml")).expect("docs/book.toml");
    assert!(book.lines().any(|l| l.replace(' ', "") == "src=\".\""), "book.toml: src = \".\"");
    let summary = std::fs::read_to_string(root.join("docs/SUMMARY.md")).expect("docs/SUMMARY.md");
    let listed: Vec<String> = links(&summary).into_iter().map(|l| l.target).collect();
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "a page listed twice: {listed:?}");
    assert_eq!(unique, guide_pages(&root), "docs/SUMMARY.md and the pages in docs/ differ");
}

#[test]
fn no_committed_file_outside_the_fixtures_mentions_the_folder_beside_the_checkout() {
    let root = root();
    let needles = outside_needles();
    let files = committed_files(&root);
    assert!(files.iter().any(|f| f.ends_with("Cargo.toml")), "the file list is empty or wrong: {}", files.len());
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&root).unwrap_or(&file).to_path_buf();
        if rel.starts_with("tests/fixtures") {
            continue; // verbatim captures and their README, as they were recorded
        }
        let Ok(bytes) = std::fs::read(&file) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.lines().enumerate() {
            if needles.iter().any(|n| line.contains(n.as_str())) {
                found.push(format!("{}:{}: {}", rel.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "these refer to a folder outside the repository, which a clone does not have:\n{}",
        found.join("\n")
    );
}

// The checker itself, on documents made here: it must catch what it is for.

fn scratch(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn problems_of(files: &[(&str, &str)], doc: &str) -> Vec<String> {
    let dir = scratch(files);
    check_document(dir.path(), &dir.path().join(doc))
}

#[test]
fn a_link_to_a_missing_file_is_reported_with_its_line() {
    let p = problems_of(&[("README.md", "# T\n\nSee [the guide](docs/guide.md).\n")], "README.md");
    assert_eq!(p, ["README.md:3: (docs/guide.md): no such file or directory in the repository"]);
}

#[test]
fn files_directories_and_anchors_that_exist_pass() {
    let files = [
        (
            "README.md",
            "# Top\n\n[g](docs/guide.md#the-cli-hallmark-serve) [d](docs/) [s](src/cli.rs#L10-L20) [self](#top)\n",
        ),
        ("docs/guide.md", "# Guide\n\n## The CLI: `hallmark serve`\n\n[back](../README.md)\n"),
        ("src/cli.rs", "fn main() {}\n"),
    ];
    assert_eq!(problems_of(&files, "README.md"), Vec::<String>::new());
    assert_eq!(problems_of(&files, "docs/guide.md"), Vec::<String>::new());
}

#[test]
fn a_missing_anchor_is_reported() {
    let files = [("README.md", "# Top\n\n[g](docs/guide.md#nope) [here](#top-1)\n"), ("docs/guide.md", "# Guide\n")];
    assert_eq!(
        problems_of(&files, "README.md"),
        [
            "README.md:3: (docs/guide.md#nope): no heading with anchor #nope in the target",
            "README.md:3: (#top-1): no heading with anchor #top-1 in the target",
        ]
    );
}

#[test]
fn links_outside_the_repository_and_absolute_paths_are_reported() {
    let needle = &outside_needles()[0];
    let text = format!("# T\n\n[a]({needle}/DESIGN.md)\n\n[b](/etc/passwd)\n");
    let p = problems_of(&[("README.md", &text)], "README.md");
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].ends_with("points outside the repository"), "{p:?}");
    assert!(p[1].ends_with("absolute path; link relative to this document"), "{p:?}");
}

#[test]
fn web_links_are_left_alone_and_code_is_not_a_link() {
    let text = "# T\n\n[k8s](https://kubernetes.io/nowhere) <https://example.com/x> [m](mailto:a@b.c)\n\n\
                `containers[name=web](x)`\n\n```\n[a](missing.md)\n```\n";
    assert_eq!(problems_of(&[("README.md", text)], "README.md"), Vec::<String>::new());
}

#[test]
fn html_links_and_reference_links_are_checked() {
    let text = "# T\n\n<a href=\"missing.md\">x</a>\n\n[ref][r]\n\n[r]: gone/\n";
    let p = problems_of(&[("README.md", text)], "README.md");
    assert_eq!(
        p,
        [
            "README.md:3: (missing.md): no such file or directory in the repository",
            "README.md:5: (gone/): no such file or directory in the repository",
        ]
    );
}

#[test]
fn anchors_follow_githubs_rules() {
    let doc = "# hallmark\n\n## `kubectl hallmark show KIND/NAME`\n\n### Rules that keep stamps honest and cheap\n\n\
               ## Exit codes\n\n## Exit codes\n\n## `/mutate` — the stamp\n\n<a id=\"custom\"></a>\n";
    let a = anchors(doc);
    for want in [
        "hallmark",
        "kubectl-hallmark-show-kindname",
        "rules-that-keep-stamps-honest-and-cheap",
        "exit-codes",
        "exit-codes-1",
        "mutate--the-stamp",
        "custom",
    ] {
        assert!(a.contains(want), "{want} not in {a:?}");
    }
    assert_eq!(slug("GitLab CI (OIDC `id_tokens`)"), "gitlab-ci-oidc-id_tokens");
    assert_eq!(slug("Ownership policies"), "ownership-policies");
}
