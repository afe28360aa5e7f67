//! The README's Rust examples are the files `examples/readme_*.rs`, word for word, so that they
//! run: `.ci/run` runs each twice in a scratch directory (a second run meets the files the first
//! left, as a user who runs an example again does). As doctests they are only compiled.

use std::path::Path;

const EXAMPLES: [&str; 3] = ["readme_use", "readme_objects", "readme_copies"];

#[test]
fn the_readme_rust_examples_are_the_example_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```rust")
        .skip(1)
        .map(|b| {
            let body = &b[b.find('\n').unwrap() + 1..];
            &body[..body.find("```").unwrap()]
        })
        .collect();
    assert_eq!(
        blocks.len(),
        EXAMPLES.len(),
        "a README Rust block with no example file, or one gone"
    );
    for (block, name) in blocks.iter().zip(EXAMPLES) {
        let file = std::fs::read_to_string(root.join(format!("examples/{name}.rs"))).unwrap();
        // The file's own header (`//!` lines and the blank line after them) is not in the README.
        let body: String = file
            .lines()
            .skip_while(|l| l.starts_with("//!"))
            .skip(1)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(*block, body, "the README's block and examples/{name}.rs differ");
    }
}
