//! Runs every scenario once at a tiny size against the test database (`DATABASE_URL` or a
//! throwaway server), through the real binary and its child processes, and writes the document.
//! Keeps the benchmark compiling and working; the timed run is `scripts/bench`.

use std::error::Error;
use std::process::Command;

#[test]
fn every_scenario_runs_at_a_tiny_size_and_the_document_is_written() -> Result<(), Box<dyn Error>> {
    let doc = std::env::temp_dir().join(format!("es-bench-smoke-{}.md", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_es-bench"))
        .args(["--smoke", "--write"])
        .arg(&doc)
        .env("ES_BENCH_COMMAND", "es-bench --smoke")
        .output()?;
    let stdout = String::from_utf8(output.stdout)?;
    let stderr = String::from_utf8(output.stderr)?;
    assert!(output.status.success(), "es-bench --smoke failed:\n{stderr}\n{stdout}");
    let written = std::fs::read_to_string(&doc)?;
    std::fs::remove_file(&doc)?;
    for id in [
        "1a.", "1b.", "2a.", "2b.", "3a.", "3b.", "3c.", "4a.", "4b.", "5.", "6.",
    ] {
        assert!(
            stdout.contains(&format!("| {id} ")),
            "no row for scenario {id}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("| Scenario | Metric | es-rs | cqrs-es | raw sqlx |"),
        "{stdout}"
    );
    assert!(stdout.contains("### Peak memory (MiB)"), "{stdout}");
    assert!(written.contains("`es-bench --smoke`"), "{written}");
    assert!(written.contains("PostgreSQL: PostgreSQL"), "{written}");
    assert!(written.contains(&stdout.trim()[..200]), "the document lacks the table");
    Ok(())
}
