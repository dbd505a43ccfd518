//! Throwaway databases for test suites (this crate's tests and the behaviour suite): each test
//! gets a fresh database on the server named by `NURTURE_TEST_PG`, dropped when the guard is
//! dropped — also when the test panics, since the guard is dropped while unwinding.

use std::str::FromStr;

use nurture_core::error::{Error, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::PgStore;

/// The variable naming the server tests use.
pub const TEST_URL_VAR: &str = "NURTURE_TEST_PG";
/// The server tests use when the variable is not set.
pub const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// A database that exists for as long as this value does.
pub struct TestDatabase {
    /// Options for the server's maintenance database, from which the test database is created
    /// and dropped.
    admin: PgConnectOptions,
    name: String,
}

impl TestDatabase {
    /// Creates `nurture_test_<uuid>` on the test server.
    pub async fn create() -> Result<TestDatabase> {
        let url = std::env::var(TEST_URL_VAR).unwrap_or_else(|_| DEFAULT_TEST_URL.to_string());
        let admin = PgConnectOptions::from_str(&url).map_err(|e| {
            Error::store(format!("{TEST_URL_VAR}={}: {e}", crate::redact_url(&url)))
        })?;
        let name = format!("nurture_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect_with(&admin).await.map_err(|e| {
            Error::store(format!(
                "cannot reach the test server {}: {e}",
                crate::redact_url(&url)
            ))
        })?;
        // The name is ours (letters, digits, underscores), so quoting it is enough.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .map_err(Error::store)?;
        let _ = conn.close().await;
        Ok(TestDatabase { admin, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Options that connect to this database as the test server's user.
    pub fn options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// A store on this database, migrated.
    pub async fn store(&self) -> Result<PgStore> {
        use nurture_core::store::Store;
        let store = PgStore::connect_with(self.options()).await?;
        store.migrate().await?;
        Ok(store)
    }
}

impl Drop for TestDatabase {
    /// Drops the database on a thread of its own with its own runtime: `Drop` cannot await,
    /// and the test's runtime may be single-threaded or shutting down. `WITH (FORCE)` ends the
    /// sessions that the test's pools still hold.
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        let outcome = std::thread::spawn(move || -> std::result::Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect_with(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok(())
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!(
                "could not drop test database {}: the dropping thread panicked",
                self.name
            ),
        }
    }
}
