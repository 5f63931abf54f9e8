//! The macros' user interface: misuse is a compile error that names the problem and the fix at
//! the right span (one `.rs` and a reviewed `.stderr` per mistake), and every attribute compiles.

#[test]
fn macro_misuse_is_a_clear_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/fail/*.rs");
}

#[test]
fn every_attribute_compiles_and_behaves() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
}

/// What a user reads never names a path of es-core's that is not public API, and one mistake is
/// one error: no two errors of a case say the same thing at the same place.
#[test]
fn no_message_names_a_private_path_or_repeats_an_error() {
    // serde's own derive reports a field type without serde impls once per use, through its
    // internals, exactly as a plain `#[derive(Serialize, Deserialize)]` does; `#[event]` cannot
    // change that without generating serde's impls itself.
    const SERDE_REPORTS_ITSELF: &str = "event_not_serializable.stderr";
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/fail");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("ui/fail is readable") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|extension| extension != "stderr") {
            continue;
        }
        let stderr = std::fs::read_to_string(&path).expect("a readable .stderr");
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        for private in ["es_core::__private", "__private::", "ApplyEach"] {
            if name != SERDE_REPORTS_ITSELF || private != "__private::" {
                assert!(!stderr.contains(private), "{name} mentions `{private}`:\n{stderr}");
            }
        }
        if name != SERDE_REPORTS_ITSELF {
            let mut seen = std::collections::BTreeSet::new();
            let lines: Vec<&str> = stderr.lines().collect();
            for (i, line) in lines.iter().enumerate().filter(|(_, line)| line.starts_with("error")) {
                let at = lines.get(i + 1).copied().unwrap_or_default().trim();
                assert!(seen.insert((*line, at)), "{name} reports `{line}` at `{at}` twice");
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 20,
        "only {checked} .stderr files were found in {}",
        dir.display()
    );
}
