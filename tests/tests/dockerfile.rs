//! The Dockerfile, which no container runtime here can build: what it copies exists and is not
//! left out of the build context by .dockerignore (nor is anything cargo needs), it builds with
//! the project's own command (`cargo xtask build`, whose setup is xtask's) rather than a copy of
//! the recipe, it ships the binary that command makes, and the runtime base has the glibc the
//! build stage linked against.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(name: &str) -> String {
    let path = repo().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One instruction: its keyword (upper case), its flags (`--from=build`) and the rest.
#[derive(Debug)]
struct Instruction {
    line: usize,
    keyword: String,
    flags: Vec<String>,
    rest: String,
}

/// The Dockerfile's instructions, continuation lines joined, comments and parser directives
/// left out.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (pending.is_none() && trimmed.is_empty()) {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                joined.push_str(part);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(trimmed);
                let mut words = joined.split_whitespace();
                let keyword = words.next().unwrap_or("").to_uppercase();
                let mut flags = Vec::new();
                let mut rest = Vec::new();
                for w in words {
                    if rest.is_empty() && w.starts_with("--") {
                        flags.push(w.to_owned());
                    } else {
                        rest.push(w);
                    }
                }
                out.push(Instruction {
                    line: start,
                    keyword,
                    flags,
                    rest: rest.join(" "),
                });
            }
        }
    }
    assert!(pending.is_none(), "the Dockerfile ends in a continuation");
    out
}

/// .dockerignore's patterns, each as (anchored at the root, path segments).
fn ignore_patterns() -> Vec<(bool, Vec<String>)> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|p| {
            // Docker matches a pattern from the context's root; one without a slash in front
            // would read differently to git's rules. Only the unambiguous forms are allowed.
            let (anchored, rest) = if let Some(rest) = p.strip_prefix("**/") {
                (false, rest)
            } else if let Some(rest) = p.strip_prefix('/') {
                (true, rest)
            } else {
                panic!(".dockerignore: write {p:?} as /{p} (from the root) or **/{p} (any depth)")
            };
            assert!(
                !p.starts_with('!') && !rest.contains("**") && !rest.contains(['?', '[']),
                ".dockerignore: {p:?} uses syntax this test does not read"
            );
            (anchored, rest.split('/').map(str::to_owned).collect())
        })
        .collect()
}

/// `*` within one path segment.
fn segment_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len())
                    .any(|i| segment_matches(tail, &name[head.len() + i..]))
        }
    }
}

/// Whether a pattern leaves out `path` (relative to the root): it matches the path or one of
/// its directories.
fn ignored(patterns: &[(bool, Vec<String>)], path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    patterns.iter().any(|(anchored, pattern)| {
        let starts: Vec<usize> = if *anchored {
            vec![0]
        } else {
            (0..segments.len()).collect()
        };
        starts.into_iter().any(|s| {
            segments.len() - s >= pattern.len()
                && pattern
                    .iter()
                    .zip(&segments[s..])
                    .all(|(p, n)| segment_matches(p, n))
        })
    })
}

/// The files git tracks: what a clone, and so a build context, holds.
fn tracked_files() -> Vec<String> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repo())
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files: {:?}", out);
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_dockerignore_reader_reads_docker_patterns() {
    let patterns = |ps: &[&str]| -> Vec<(bool, Vec<String>)> {
        ps.iter()
            .map(|p| match p.strip_prefix('/') {
                Some(r) => (true, r.split('/').map(str::to_owned).collect()),
                None => (
                    false,
                    p.trim_start_matches("**/")
                        .split('/')
                        .map(str::to_owned)
                        .collect(),
                ),
            })
            .collect()
    };
    let p = patterns(&["/target", "**/node_modules", "/BENCH-*.log", "**/*.swp"]);
    for (path, out) in [
        ("target/release/monitor", true),
        ("tests/target/x", false),
        ("tests/kubernetes/node_modules/yaml/index.js", true),
        ("BENCH-1.log", true),
        ("tests/BENCH-1.log", false),
        ("a/b/.x.swp", true),
        ("monitor-user/src/main.rs", false),
    ] {
        assert_eq!(ignored(&p, path), out, "{path}");
    }
}

#[test]
fn the_context_holds_what_the_build_reads() {
    let patterns = ignore_patterns();
    // Cargo reads every workspace member's manifest and sources, and the alias `cargo xtask`
    // is in .cargo/config.toml.
    let workspace: toml::Table = read("Cargo.toml").parse().unwrap();
    let members: Vec<String> = workspace["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}/", m.as_str().unwrap()))
        .collect();
    let needed = |f: &str| {
        ["Cargo.toml", "Cargo.lock", ".cargo/config.toml"].contains(&f)
            || members.iter().any(|m| f.starts_with(m.as_str()))
    };
    let files = tracked_files();
    assert!(files.iter().any(|f| f == "monitor-user/src/main.rs"));
    let left_out: Vec<&String> = files
        .iter()
        .filter(|f| needed(f) && ignored(&patterns, f))
        .collect();
    assert!(
        left_out.is_empty(),
        ".dockerignore leaves out files the build reads: {left_out:?}"
    );
    for i in instructions(&read("Dockerfile")) {
        if (i.keyword == "COPY" || i.keyword == "ADD")
            && !i.flags.iter().any(|f| f.starts_with("--from"))
        {
            let words: Vec<&str> = i.rest.split_whitespace().collect();
            let (_, sources) = words.split_last().expect("COPY SRC... DEST");
            for src in sources {
                let rel = src.trim_start_matches("./");
                let path = repo().join(rel);
                assert!(
                    path.exists(),
                    "Dockerfile:{}: COPY {src}: no such file in the repository",
                    i.line
                );
                if rel != "." && !rel.is_empty() {
                    assert!(
                        !ignored(&patterns, rel),
                        "Dockerfile:{}: COPY {src} is left out by .dockerignore",
                        i.line
                    );
                }
            }
        }
    }
}

#[test]
fn the_image_is_built_by_xtask_and_ships_its_binary() {
    let all = instructions(&read("Dockerfile"));
    // Stages: FROM IMAGE [AS NAME].
    let stages: Vec<(usize, &Instruction)> = all
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "FROM")
        .collect();
    let [(build_at, build_from), (final_at, final_from)] = stages.as_slice() else {
        panic!("expected a build stage and a runtime stage: {stages:?}");
    };
    let build_name = build_from
        .rest
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("as"))
        .map(|w| w[1].to_owned())
        .expect("the build stage is named (FROM ... AS build)");
    let build = &all[*build_at..*final_at];
    let runtime = &all[*final_at..];

    // The build runs xtask's command and nothing that would repeat its recipe.
    let runs: Vec<&Instruction> = build.iter().filter(|i| i.keyword == "RUN").collect();
    assert!(
        runs.iter().any(|r| r.rest.contains("cargo xtask build")),
        "the build stage must run `cargo xtask build` (xtask/src/setup.rs sets up the eBPF build chain): {runs:?}"
    );
    for r in &runs {
        for repeated in ["cargo build", "cargo install", "rustup ", "bpf-linker"] {
            assert!(
                !r.rest.contains(repeated),
                "Dockerfile:{}: `{repeated}` repeats what `cargo xtask build` does; let xtask do it",
                r.line
            );
        }
    }
    let main_rs = read("xtask/src/main.rs");
    assert!(
        main_rs.contains("Cmd::Build =>")
            && main_rs.contains("None => workspace_root().join(\"target\")")
            && main_rs.contains("target_dir().join(\"release\")"),
        "xtask no longer has the `build` command writing target/release (without CARGO_TARGET_DIR, \
         as in the Dockerfile) that the Dockerfile copies from"
    );
    // What it copies out of the build is what that command makes, taken from WORKDIR.
    let workdir = build
        .iter()
        .rev()
        .find(|i| i.keyword == "WORKDIR")
        .map(|i| i.rest.clone())
        .expect("the build stage sets WORKDIR");
    let shipped = runs
        .iter()
        .find_map(|r| {
            let words: Vec<&str> = r.rest.split_whitespace().collect();
            words
                .windows(3)
                .find(|w| w[0] == "cp" && w[1] == "target/release/monitor")
                .map(|w| w[2].to_owned())
        })
        .expect("the build stage copies target/release/monitor out of the (cached) target dir");
    let copy = runtime
        .iter()
        .find(|i| {
            i.keyword == "COPY" && i.flags.iter().any(|f| *f == format!("--from={build_name}"))
        })
        .expect("the runtime stage copies from the build stage");
    let words: Vec<&str> = copy.rest.split_whitespace().collect();
    let [src, dest] = words.as_slice() else {
        panic!("Dockerfile:{}: COPY SRC DEST", copy.line);
    };
    let src_abs = if src.starts_with('/') {
        PathBuf::from(src)
    } else {
        Path::new(&workdir).join(src)
    };
    assert_eq!(
        src_abs,
        Path::new(&workdir).join(&shipped),
        "Dockerfile:{}: the runtime stage copies {src}, not the binary the build wrote ({shipped})",
        copy.line
    );
    let entrypoint = runtime
        .iter()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("an ENTRYPOINT");
    let exec: Vec<String> = serde_json::from_str(&entrypoint.rest)
        .unwrap_or_else(|e| panic!("ENTRYPOINT in exec (JSON) form: {e}"));
    assert_eq!(
        exec.first().map(String::as_str),
        Some(*dest),
        "the entrypoint is the binary"
    );

    // glibc: the runtime's Debian release is the build's.
    let debian = |image: &str| -> u32 {
        for (codename, release) in [("bullseye", 11), ("bookworm", 12), ("trixie", 13)] {
            if image.contains(codename) || image.contains(&format!("debian{release}")) {
                return release;
            }
        }
        panic!("{image}: which Debian release? (a glibc image named by codename or debianN)")
    };
    assert_eq!(
        debian(&build_from.rest),
        debian(&final_from.rest),
        "the build stage ({}) and the runtime ({}) must be one Debian release: the binary needs \
         the glibc it was linked against",
        build_from.rest,
        final_from.rest
    );
}
