//! The packaged env file (`packaging/aigw.env`) names every variable the
//! README's Configuration section documents, so an administrator finds each
//! one where they edit the configuration. (packaging/test.sh checks the same
//! on the built package; this catches it in `make test`, before packaging.)

use std::collections::BTreeSet;

fn configuration_section(readme: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.starts_with("## ") {
            inside = line.starts_with("## Configuration");
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `NAME` in backticks: upper case, digits and underscores, starting with a letter.
fn backticked_names(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            let mut chars = w.chars();
            chars.next().is_some_and(|c| c.is_ascii_uppercase())
                && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_env_file_lists_every_readme_variable() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let env_file = std::fs::read_to_string(format!("{root}/packaging/aigw.env")).unwrap();
    let listed: BTreeSet<&str> = env_file
        .lines()
        .filter_map(|l| l.trim_start_matches('#').split_once('=').map(|(k, _)| k))
        .collect();
    let names = backticked_names(&configuration_section(&readme));
    assert!(names.len() > 50, "the Configuration section was not found");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| n.as_str() != "JOURNAL_STREAM" && !listed.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "packaging/aigw.env lacks README variables: {missing:?}"
    );
}
