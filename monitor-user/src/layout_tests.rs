//! The folders are pipeline stages and imports point upstream only: a collector never imports
//! the exporter, a model never imports a notifier. Checked on the source itself.
use std::path::{Path, PathBuf};

/// Each stage, with the top-level modules it may use (besides itself).
const STAGES: &[(&str, &[&str])] = &[
    ("collect", &[]),
    ("requests", &["collect"]),
    ("model", &["collect", "requests"]),
    ("alerts", &["collect", "requests", "model"]),
    ("notify", &["collect", "requests", "model", "alerts"]),
    ("serve", &["collect", "requests", "model", "alerts"]),
    ("store", &["collect", "requests", "model"]),
    ("report", &["collect", "requests", "model", "store"]),
    (
        "web",
        &[
            "collect", "requests", "model", "alerts", "serve", "store", "report",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named after `crate::` in `text`, including each item of a
/// `crate::{a::.., b}` group.
fn crate_modules(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        found.push(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(ident(rest));
        }
    }
    found
}

#[test]
fn stages_import_only_upstream() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let all: Vec<&str> = STAGES
        .iter()
        .map(|(s, _)| *s)
        .chain(["commands", "config"])
        .collect();
    let mut wrong = Vec::new();
    for (stage, allowed) in STAGES {
        let mut files = Vec::new();
        rust_files(&src.join(stage), &mut files);
        assert!(!files.is_empty(), "no stage folder {stage}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for module in crate_modules(&text) {
                if module != *stage
                    && all.contains(&module.as_str())
                    && !allowed.contains(&module.as_str())
                {
                    wrong.push(format!("{} imports crate::{module}", file.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports pointing downstream:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_import_scanner_sees_groups_and_paths() {
    let text = "use crate::{\n    alerts::{Alert, engine::X},\n    model::Model,\n};\nfn f() { crate::serve::http::x(); }";
    assert_eq!(crate_modules(text), ["alerts", "model", "serve"]);
}
