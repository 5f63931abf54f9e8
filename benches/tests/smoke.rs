//! Runs every scenario once at a tiny size, PostgreSQL's against the test database
//! (`DATABASE_URL` or a throwaway server) and SQLite's on files in a temporary directory, through
//! the real binary and its child processes, and writes the document; then measures SQLite alone
//! and checks that rewriting the document keeps the PostgreSQL section as it was. Keeps the
//! benchmark compiling and working; the timed run is `scripts/bench`.

use std::error::Error;
use std::path::Path;
use std::process::Command;

/// Runs `es-bench --smoke` with `args` and `--write doc`; returns what it printed.
fn smoke(args: &[&str], doc: &Path) -> Result<String, Box<dyn Error>> {
    let output = Command::new(env!("CARGO_BIN_EXE_es-bench"))
        .arg("--smoke")
        .args(args)
        .arg("--write")
        .arg(doc)
        .env(
            "ES_BENCH_COMMAND",
            format!("es-bench --smoke {}", args.join(" ")).trim(),
        )
        .output()?;
    let stdout = String::from_utf8(output.stdout)?;
    let stderr = String::from_utf8(output.stderr)?;
    assert!(
        output.status.success(),
        "es-bench --smoke {args:?} failed:\n{stderr}\n{stdout}"
    );
    Ok(stdout)
}

/// The text between the markers of section `name` (the opening marker may say more after the
/// name).
fn section<'d>(doc: &'d str, name: &str) -> &'d str {
    let begin = format!("<!-- es-bench:begin {name} ");
    let end = format!("<!-- es-bench:end {name} -->");
    let marker = doc.find(&begin).unwrap_or_else(|| panic!("no section {name}:\n{doc}"));
    let start = doc[marker..].find('\n').expect("a marker line") + marker + 1;
    let stop = doc[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("section {name} never ends"))
        + start;
    &doc[start..stop]
}

#[test]
fn every_scenario_runs_at_a_tiny_size_and_the_document_is_written() -> Result<(), Box<dyn Error>> {
    let doc = std::env::temp_dir().join(format!("es-bench-smoke-{}.md", std::process::id()));
    let stdout = smoke(&[], &doc)?;
    let written = std::fs::read_to_string(&doc)?;
    for id in [
        "1a.", "1b.", "2a.", "2b.", "3a.", "3b.", "3c.", "4a.", "4b.", "5.", "6.", "7.", "s1a.", "s3a.", "s4b.", "s5.",
    ] {
        assert!(
            stdout.contains(&format!("| {id} ")),
            "no row for scenario {id}:\n{stdout}"
        );
    }
    // Bulk import: cqrs-es has none (not measured), and es-rs has two targets.
    let import_row = stdout
        .lines()
        .find(|line| line.starts_with("| 7. "))
        .unwrap_or_default();
    assert!(
        import_row.contains("| – |") && import_row.contains("≥ 0.80x raw, ≥ 100,000/s"),
        "{import_row}"
    );
    for printed in [
        "| Scenario | Metric | es-rs | cqrs-es | raw sqlx |",
        "| Scenario | Metric | es-rs | raw rusqlite | es-rs / raw |",
        "### Peak memory (MiB)",
    ] {
        assert!(stdout.contains(printed), "no {printed:?} in:\n{stdout}");
    }
    for noted in [
        "`es-bench --smoke`",
        "PostgreSQL: PostgreSQL",
        "- SQLite: 3.",
        "`journal_mode` = `wal`, `synchronous` =\n  `2` (FULL)",
    ] {
        assert!(written.contains(noted), "no {noted:?} in:\n{written}");
    }
    // Each store's tables, as printed, are in its section of the document.
    for (label, name) in [("PostgreSQL", "postgres"), ("SQLite", "sqlite")] {
        let printed = stdout
            .split(&format!("## {label}\n\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {label} tables:\n{stdout}"));
        assert!(
            section(&written, name).contains(&printed.trim()[..200]),
            "the {label} section lacks the table"
        );
    }

    // A run of SQLite alone rewrites its section and keeps PostgreSQL's as it was, and the
    // hand-written notes.
    let notes = "<!-- es-bench:begin sqlite-notes (by hand) -->\nWhy s5 is slow.\n<!-- es-bench:end sqlite-notes -->\n";
    std::fs::write(&doc, format!("{written}{notes}"))?;
    let stdout = smoke(&["--sqlite"], &doc)?;
    let rewritten = std::fs::read_to_string(&doc)?;
    std::fs::remove_file(&doc)?;
    assert!(!stdout.contains("## PostgreSQL"), "{stdout}");
    assert_eq!(section(&rewritten, "postgres"), section(&written, "postgres"));
    assert_eq!(section(&rewritten, "sqlite-notes"), "Why s5 is slow.\n");
    assert!(
        section(&rewritten, "sqlite").contains("`es-bench --smoke --sqlite`"),
        "{rewritten}"
    );
    Ok(())
}
