//! `nurture bench` as its users run it: the keys issue #2 names, counts that agree with each
//! other, and the raw-SQL reference round doing the same work as the engine's rounds. Nothing
//! here asserts a speed: the figures are printed, not tested.

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("bench")
        .args(args)
        .env_remove("NURTURE_BENCH_BACKEND")
        .env_remove("NURTURE_BATCH_SIZE")
        .output()
        .expect("the nurture binary runs")
}

#[test]
fn the_sqlite_bench_prints_its_figures_and_the_reference_round_runs_every_enrollment_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&[
        "--leads",
        "600",
        "--batch-size",
        "64",
        "--json",
        "--reference",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(f["backend"], "sqlite");
    assert_eq!(f["leads"], 600);
    for key in [
        "steps_per_sec",
        "enroll_pass_seconds",
        "peak_rss_mb",
        "reference_steps_per_sec",
    ] {
        assert!(f[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {f}");
    }
    // A third of the leads match a sequence; converted and do-not-contact ones do not enroll.
    let enrolled = f["enrolled"].as_u64().unwrap();
    assert!((150..=220).contains(&enrolled), "{f}");
    // Two engine rounds (first and second email of every enrollment), then the third email of
    // every enrollment in raw SQL: each enrollment exactly once per round.
    assert_eq!(f["steps"].as_u64(), Some(2 * enrolled), "{f}");
    assert_eq!(f["messages"].as_u64(), Some(2 * enrolled), "{f}");
    assert_eq!(f["reference_steps"].as_u64(), Some(enrolled), "{f}");
    // The raw enrollment pass, on a second database built alike, enrolls the same leads.
    assert_eq!(f["reference_enrolled"].as_u64(), Some(enrolled), "{f}");
    assert!(
        f["reference_enroll_pass_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "{f}"
    );
    // Both databases lived in --dir and are removed afterwards.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_postgres_bench_runs_every_step_once_across_its_workers_and_the_reference_round_too() {
    let server = std::env::var("NURTURE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string());
    let out = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["bench", "--backend", "postgres", "--workers", "3"])
        .args(["--max-concurrent-batches", "2", "--leads", "600"])
        .args(["--batch-size", "64", "--json", "--reference"])
        .env("NURTURE_BENCH_PG", server)
        .env_remove("NURTURE_BATCH_SIZE")
        .output()
        .expect("the nurture binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(f["backend"], "postgres");
    assert_eq!(
        (f["workers"].as_u64(), f["max_concurrent_batches"].as_u64()),
        (Some(3), Some(2))
    );
    for key in [
        "steps_per_sec",
        "enroll_pass_seconds",
        "reference_steps_per_sec",
    ] {
        assert!(f[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {f}");
    }
    let enrolled = f["enrolled"].as_u64().unwrap();
    assert!((150..=220).contains(&enrolled), "{f}");
    // Three workers sharing two batch places: each enrollment's first and second email once,
    // then its third once in the server-side reference statement (which fails the bench if a
    // step did less than all its work).
    assert_eq!(f["steps"].as_u64(), Some(2 * enrolled), "{f}");
    assert_eq!(f["messages"].as_u64(), Some(2 * enrolled), "{f}");
    assert_eq!(f["reference_steps"].as_u64(), Some(enrolled), "{f}");
}
