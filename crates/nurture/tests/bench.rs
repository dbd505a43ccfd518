//! `nurture bench` as its users run it: the keys issue #2 names, counts that agree with each
//! other, and the raw-SQL reference round doing the same work as the engine's rounds. Nothing
//! here asserts a speed: the figures are printed, not tested.

use std::process::Command;

/// Runs the bench on 600 leads, 64 enrollments per batch, with the reference round, plus `args`.
fn bench(args: &[&str], env: &[(&str, String)]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("bench")
        .args([
            "--leads",
            "600",
            "--batch-size",
            "64",
            "--json",
            "--reference",
        ])
        .args(args)
        .env_remove("NURTURE_BENCH_BACKEND")
        .env_remove("NURTURE_BATCH_SIZE")
        .env_remove("NURTURE_MAX_CONCURRENT_BATCHES")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("the nurture binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// What every bench run must show: positive rates, about a third of the 600 leads enrolled
/// (converted and do-not-contact ones never are), and each enrollment's first and second email
/// run once by the engine, then its third once by the reference round. Returns how many
/// enrolled.
fn assert_each_round_ran_every_enrollment_once(f: &serde_json::Value) -> u64 {
    for key in [
        "steps_per_sec",
        "enroll_pass_seconds",
        "peak_rss_mb",
        "reference_steps_per_sec",
    ] {
        assert!(f[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {f}");
    }
    let enrolled = f["enrolled"].as_u64().unwrap();
    assert!((150..=220).contains(&enrolled), "{f}");
    assert_eq!(f["steps"].as_u64(), Some(2 * enrolled), "{f}");
    assert_eq!(f["messages"].as_u64(), Some(2 * enrolled), "{f}");
    assert_eq!(f["reference_steps"].as_u64(), Some(enrolled), "{f}");
    enrolled
}

#[test]
fn the_sqlite_bench_prints_its_figures_and_the_reference_round_runs_every_enrollment_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = bench(&["--dir", dir.path().to_str().unwrap()], &[]);
    assert_eq!(f["backend"], "sqlite");
    assert_eq!(f["leads"], 600);
    let enrolled = assert_each_round_ran_every_enrollment_once(&f);
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
    let f = bench(
        &[
            "--backend",
            "postgres",
            "--workers",
            "3",
            "--max-concurrent-batches",
            "2",
        ],
        &[("NURTURE_BENCH_PG", server)],
    );
    assert_eq!(f["backend"], "postgres");
    assert_eq!(
        (f["workers"].as_u64(), f["max_concurrent_batches"].as_u64()),
        (Some(3), Some(2))
    );
    // Three workers sharing two batch slots, then the server-side reference statement (which
    // fails the bench if a step did less than all its work).
    assert_each_round_ran_every_enrollment_once(&f);
}
