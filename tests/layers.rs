//! DESIGN.md §1: dependencies flow one way. Every `crate::` path in a module of the library names
//! a module of the same layer or one listed before it (test-only code aside).

use std::path::Path;

/// The layers, lowest first (DESIGN.md §1).
const LAYERS: [&str; 15] = [
    "kind", "error", "format", "storage", "alloc", "trie", "meta", "shared", "txn", "typed",
    "check", "heap", "compact", "copy", "publish",
];

/// The module defining each item the crate root re-exports.
fn defined_in(item: &str) -> Option<&'static str> {
    Some(match item {
        "Error" | "Result" => "error",
        "Kind" => "kind",
        "MAX_KEY_LEN" | "MAX_NESTING" | "MAX_VALUE_LEN" | "OUT_OF_LINE_MIN" | "FILE_MAGIC"
        | "FORMAT_VERSION" | "MAX_READERS" | "digest_hex" | "shard_of" => "format",
        "ReaderInfo" => "storage",
        "SkippedCommit" => "meta",
        "Durability" => "shared",
        "Iter" | "IterPosition" | "Map" | "MapMut" | "OwnedMap" | "OwnedBytes" | "OwnedIter"
        | "Readable" | "Writable" | "OwnedValue" | "ReadTxn" | "SharedRead" | "Value"
        | "WriteTxn" => "txn",
        "CheckReport" => "check",
        "Heap" | "HeapOptions" | "Stats" => "heap",
        "CompactStats" => "compact",
        "CopyStats" => "copy",
        "PublishStats" => "publish",
        m if LAYERS.contains(&m) || m == "testkit" => {
            return LAYERS.iter().copied().find(|l| *l == m);
        }
        _ => return None,
    })
}

/// Source files of `dir`, test-only files left out.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "testkit" {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") && !["tests.rs", "crash_tests.rs"].contains(&name.as_str())
        {
            out.push(path);
        }
    }
}

/// The names a `crate::` path starts with: `crate::a::b` gives `a`, `crate::{a, b::c}` gives both.
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let ident =
        |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.find('}').unwrap_or(group.len())];
            names.extend(body.split(',').map(|p| ident(p.trim())).filter(|n| !n.is_empty()));
        } else {
            names.push(ident(rest));
        }
    }
    names
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut checked = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let module = rel.split(['/', '.']).next().unwrap().to_owned();
        let Some(own) = LAYERS.iter().position(|l| *l == module) else { continue };
        let code = std::fs::read_to_string(&file).unwrap();
        // Test modules at the end of a file may use anything; comments (doc links) are no use.
        let code = code.split("#[cfg(test)]\nmod tests {").next().unwrap();
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for name in crate_paths(&code) {
            let layer = defined_in(&name).unwrap_or_else(|| {
                panic!("{rel}: crate::{name} is in no layer; update this test and DESIGN §1")
            });
            let at = LAYERS.iter().position(|l| *l == layer).unwrap();
            assert!(
                at <= own,
                "{rel} ({module}) uses crate::{name} ({layer}), a layer above its own"
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} paths found: the scan is broken");
}
