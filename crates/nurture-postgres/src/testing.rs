//! Throwaway databases for test suites (this crate's tests, the behaviour suite, the binary's
//! tests) and for `nurture bench`: each gets a fresh database on a server (for tests, the one
//! `NURTURE_TEST_PG` names), dropped when the guard is dropped — also when a test panics, since
//! the guard is dropped while unwinding.

use std::str::FromStr;

use nurture_core::error::{Error, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};

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
    /// The server's URL as given (`NURTURE_TEST_PG`), for [`TestDatabase::url`].
    server_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates `nurture_test_<uuid>` on the test server.
    pub async fn create() -> Result<TestDatabase> {
        let url = std::env::var(TEST_URL_VAR).unwrap_or_else(|_| DEFAULT_TEST_URL.to_string());
        Self::create_on(&url, "nurture_test").await
    }

    /// Creates `<prefix>_<uuid>` on the server `url` names (`prefix`: letters, digits and
    /// underscores).
    pub async fn create_on(url: &str, prefix: &str) -> Result<TestDatabase> {
        let admin = PgConnectOptions::from_str(url)
            .map_err(|e| {
                Error::invalid(
                    "database",
                    format!("{} is not a PostgreSQL URL: {e}", crate::redact_url(url)),
                )
            })?
            // CREATE and DROP DATABASE take a second or more: not worth a warning each.
            .disable_statement_logging();
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::invalid(
                "prefix",
                "letters, digits and underscores only",
            ));
        }
        let url = url.to_string();
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect_with(&admin).await.map_err(|e| {
            Error::store(format!(
                "cannot reach the server {}: {e}",
                crate::redact_url(&url)
            ))
        })?;
        // The name is ours (letters, digits, underscores), so quoting it is enough.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .map_err(Error::store)?;
        let _ = conn.close().await;
        Ok(TestDatabase {
            admin,
            server_url: url,
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `postgres://` URL of this database (the test server's URL with the database name as
    /// its path, query parameters kept): what a test passes to the `nurture` binary.
    pub fn url(&self) -> String {
        with_database(&self.server_url, &self.name)
    }

    /// Options that connect to the server's maintenance database (the one the test server's
    /// URL names), e.g. for `ALTER DATABASE` on this one.
    pub fn server_options(&self) -> PgConnectOptions {
        self.admin.clone()
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

/// `url` with its path replaced by `/name` (the authority and any `?query` kept).
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
    format!("{scheme}://{authority}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_test_database_url_keeps_the_server_and_its_parameters() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgresql://u:p@db/postgres?sslmode=disable", "t1"),
            "postgresql://u:p@db/t1?sslmode=disable"
        );
    }
}
