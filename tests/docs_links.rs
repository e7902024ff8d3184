//! Every relative link in the repository's Markdown (README.md, docs/, examples/, bindings/)
//! points to a file or folder that exists in the repository: a fresh clone has nothing else.

use std::path::{Component, Path, PathBuf};

/// The Markdown files that people read, under `root`.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                // Build outputs, virtual environments and VCS data are not documentation.
                if !(name.starts_with('.') || name == "target" || name == "node_modules" || name == "corpus") {
                    pending.push(path);
                }
            } else if name.ends_with(".md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The targets of the inline links `[text](target)` and reference definitions `[id]: target`
/// of a Markdown text, outside fenced code blocks and code spans.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Reference definitions: `[id]: target`.
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix('[') {
            if let Some((_, after)) = rest.split_once("]:") {
                if let Some(target) = after.split_whitespace().next() {
                    targets.push(target.trim_matches(['<', '>']).to_string());
                }
            }
        }
        // Inline links, skipping code spans.
        let mut in_code = false;
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'`' => in_code = !in_code,
                b']' if !in_code && bytes.get(i + 1) == Some(&b'(') => {
                    if let Some(end) = line[i + 2..].find(')') {
                        let inside = &line[i + 2..i + 2 + end];
                        let target = inside.split_whitespace().next().unwrap_or("");
                        targets.push(target.trim_matches(['<', '>']).to_string());
                        i += 2 + end;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    targets
}

/// Every link of the Markdown under `root` that does not lead to a path inside `root`.
fn broken_links(root: &Path) -> Vec<String> {
    let mut broken = Vec::new();
    for file in markdown_files(root) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let dir = file.parent().unwrap_or(root);
        for target in link_targets(&text) {
            let external = target.contains("://") || target.starts_with("mailto:");
            let path = target.split('#').next().unwrap_or("");
            if external || path.is_empty() {
                continue;
            }
            let shown = file.strip_prefix(root).unwrap_or(&file).display().to_string();
            let anchor = target.split_once('#').map(|(_, a)| a).filter(|a| !a.is_empty());
            match resolve(root, dir, path) {
                Some(resolved) if resolved.exists() => {
                    if let Some(anchor) = anchor.filter(|_| path.ends_with(".md")) {
                        let text = std::fs::read_to_string(&resolved).unwrap_or_default();
                        if !heading_anchors(&text).iter().any(|a| a == anchor) {
                            broken.push(format!("{shown}: ({target}) names no heading of {path}"));
                        }
                    }
                }
                Some(_) => broken.push(format!("{shown}: ({target}) does not exist")),
                None => broken.push(format!("{shown}: ({target}) leads outside the repository")),
            }
        }
    }
    broken
}

/// The anchors GitHub gives the headings of a Markdown text: lower case, punctuation dropped,
/// spaces turned into hyphens.
fn heading_anchors(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    let mut anchors = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            let title = line.trim_start_matches('#').trim();
            let anchor: String = title
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            anchors.push(anchor);
        }
    }
    anchors
}

/// `path` (relative to `dir`, or to `root` when it starts with `/`) as a path inside `root`,
/// or `None` when it climbs out of it.
fn resolve(root: &Path, dir: &Path, path: &str) -> Option<PathBuf> {
    let start = if path.starts_with('/') { root.to_path_buf() } else { dir.to_path_buf() };
    let mut resolved = start.strip_prefix(root).ok()?.to_path_buf();
    for part in Path::new(path.trim_start_matches('/')).components() {
        match part {
            Component::Normal(name) => resolved.push(name),
            // Climbing above the root is leaving the repository.
            Component::ParentDir if !resolved.pop() => return None,
            _ => {}
        }
    }
    Some(root.join(resolved))
}

#[test]
fn every_link_in_the_docs_exists_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(root.join("README.md").exists());
    let broken = broken_links(root);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_finds_missing_files_links_outside_and_ignores_code() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("docs")).unwrap();
    std::fs::write(root.path().join("docs/here.md"), "# Top: of `it`").unwrap();
    std::fs::write(
        root.path().join("README.md"),
        "[ok](docs/here.md#top-of-it) [bad anchor](docs/here.md#bottom) [web](https://example.org/x) [anchor](#quick-start)\n\
         [gone](docs/missing.md) and `[code](not/checked.md)`\n\
         [out](../shared/SPEC.md)\n\
         [ref]: docs/also-missing.md\n\
         ```\n[fenced](not/checked/either.md)\n```\n",
    )
    .unwrap();
    std::fs::write(root.path().join("docs/back.md"), "[up](../README.md) [up2](../../x.md)").unwrap();
    let broken = broken_links(root.path());
    assert_eq!(
        broken,
        [
            "README.md: (docs/here.md#bottom) names no heading of docs/here.md",
            "README.md: (docs/missing.md) does not exist",
            "README.md: (../shared/SPEC.md) leads outside the repository",
            "README.md: (docs/also-missing.md) does not exist",
            "docs/back.md: (../../x.md) leads outside the repository",
        ]
    );
}
