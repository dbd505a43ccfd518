//! The engine: every command of the product as one transaction over a [`Store`], and the
//! scheduler that runs due steps. The HTTP API, the CLI, the demo and the tests all drive the
//! product through [`Engine`]; none of them writes to the store directly.

mod commands;
mod enroll;
mod scheduler;
pub mod steps;

use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::{Mutex, Notify};

use crate::clock::{Clock, ManualClock, next_hour_after};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::keys;
use crate::settings::TenantSettings;
use crate::store::{KeyState, Scope, Store, Tx};

/// How long a request holds its `Idempotency-Key` before a retry may take it over: longer than
/// any request runs (bodies are at most a few MiB, every command is one transaction), short
/// enough that a client retrying after a crashed process is not refused for long.
pub const IDEMPOTENCY_LEASE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

pub use commands::*;
pub use enroll::SWEEP_PAGE;
pub use scheduler::{BatchReport, DEFAULT_MAX_CONCURRENT_BATCHES, SchedulerConfig};

/// Who is acting: the tenant every read and write is scoped to, and the user it acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub user_id: UserId,
}

pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Present when time is manual (`--clock manual`): then `/v1/clock` exists.
    manual: Option<Arc<ManualClock>>,
    /// Woken by writes that may have made work due sooner than the scheduler thinks.
    wake: Arc<Notify>,
    /// When hourly periodic work (the enrollment sweep) runs next.
    next_sweep: Mutex<Timestamp>,
    /// One manual-clock advance at a time.
    advancing: Mutex<()>,
    config: SchedulerConfig,
    key_pepper: Vec<u8>,
}

/// The stores keep microseconds, so every instant the engine hands out is truncated to them.
fn now_of(clock: &dyn Clock) -> Timestamp {
    crate::clock::truncate_to_micros(clock.now())
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Engine {
        let next = next_hour_after(clock.now());
        Engine {
            store,
            clock,
            manual: None,
            wake: Arc::new(Notify::new()),
            next_sweep: Mutex::new(next),
            advancing: Mutex::new(()),
            config: SchedulerConfig::default(),
            key_pepper: keys::DEFAULT_PEPPER.to_vec(),
        }
    }

    /// An engine whose time moves only by [`Engine::advance_to`].
    pub fn with_manual_clock(store: Arc<dyn Store>, clock: Arc<ManualClock>) -> Engine {
        let mut engine = Engine::new(store, clock.clone());
        engine.manual = Some(clock);
        engine
    }

    pub fn with_config(mut self, config: SchedulerConfig) -> Self {
        self.config = config;
        self
    }

    /// The secret mixed into API-key hashes (`NURTURE_API_KEY_PEPPER`).
    pub fn with_key_pepper(mut self, pepper: &[u8]) -> Self {
        self.key_pepper = pepper.to_vec();
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> Timestamp {
        now_of(self.clock.as_ref())
    }

    pub fn is_manual_clock(&self) -> bool {
        self.manual.is_some()
    }

    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// After a write that may have made work due sooner: wake this process's scheduler and
    /// tell the others (a failed announcement only delays them until their timer).
    async fn wake_schedulers(&self) {
        self.wake.notify_one();
        if let Err(e) = self.store.announce_due().await {
            tracing::debug!(error = %e, "could not announce due work");
        }
    }

    async fn begin(&self, scope: Scope) -> Result<Box<dyn Tx>> {
        self.store.begin(scope).await
    }

    /// A read-only transaction of `tenant`: it never waits for the write lock (SQLite) nor
    /// holds one, so reads go on beside the scheduler's writes.
    async fn begin_read(&self, tenant: TenantId) -> Result<Box<dyn Tx>> {
        self.store.begin_read(Scope::Tenant(tenant)).await
    }

    async fn settings(&self, tx: &mut dyn Tx, tenant: TenantId) -> Result<TenantSettings> {
        Ok(tx
            .get_tenant(tenant)
            .await?
            .ok_or(Error::NotFound("tenant"))?
            .settings)
    }

    // -- tenants and keys ---------------------------------------------------------------------

    /// Creates a tenant, its service user and one API key; returns the tenant and the key,
    /// which is shown this once and stored only as a hash.
    pub async fn create_tenant(&self, name: &str) -> Result<(Tenant, String)> {
        let name = name.trim();
        if name.is_empty() || name.len() > 255 {
            return Err(Error::invalid(
                "name",
                "a tenant name has 1 to 255 characters",
            ));
        }
        let now = self.now();
        let tenant = Tenant {
            id: new_id(),
            name: name.to_string(),
            settings: TenantSettings::default(),
            created_at: now,
        };
        let user = User {
            id: new_id(),
            tenant_id: tenant.id,
            email: format!("api@{}.invalid", tenant.id.simple()),
            role: UserRole::Admin,
            password_hash: None,
            created_at: now,
        };
        let (plain, record) = keys::generate(&self.key_pepper, tenant.id, user.id, now);
        let mut tx = self.begin(Scope::Tenant(tenant.id)).await?;
        tx.insert_tenant(&tenant).await?;
        tx.insert_user(&user).await?;
        tx.insert_api_key(&record).await?;
        tx.commit().await?;
        Ok((tenant, plain))
    }

    /// The principal an API key stands for, or `None` for a wrong or unknown key.
    pub async fn authenticate(&self, api_key: &str) -> Result<Option<Principal>> {
        let Some(prefix) = keys::prefix_of(api_key) else {
            return Ok(None);
        };
        // Before the key is found there is no tenant: the lookup by prefix is system work. A
        // read: every API request does it, and none should wait for the scheduler's writes.
        let mut tx = self.store.begin_read(Scope::System).await?;
        let record = tx.find_api_key(prefix).await?;
        tx.commit().await?;
        Ok(record
            .filter(|r| keys::verify(&self.key_pepper, api_key, &r.hash))
            .map(|r| Principal {
                tenant_id: r.tenant_id,
                user_id: r.user_id,
            }))
    }

    pub async fn get_settings(&self, p: Principal) -> Result<TenantSettings> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let s = self.settings(tx.as_mut(), p.tenant_id).await?;
        tx.commit().await?;
        Ok(s)
    }

    /// Merge-patches the tenant's settings; errors name the setting.
    pub async fn patch_settings(
        &self,
        p: Principal,
        patch: &serde_json::Value,
    ) -> Result<TenantSettings> {
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let current = self.settings(tx.as_mut(), p.tenant_id).await?;
        let next = current.patched(patch)?;
        tx.update_tenant_settings(p.tenant_id, &next).await?;
        tx.commit().await?;
        self.wake_schedulers().await;
        Ok(next)
    }

    /// `Idempotency-Key` for the API: reserves `key` for a request with `request_hash` for
    /// [`IDEMPOTENCY_LEASE`], or says what holds it: a saved answer, or a request still running
    /// (see [`KeyState`]). The reservation lives in the database, so it holds across every
    /// process serving the tenant.
    pub async fn reserve_idempotency_key(
        &self,
        p: Principal,
        key: &str,
        request_hash: &[u8],
    ) -> Result<KeyState> {
        let now = self.now();
        let lease_until = now + IDEMPOTENCY_LEASE;
        let tenant = p.tenant_id;
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        // Twice at most: a key released between the insert and the read is free again.
        for _ in 0..2 {
            if tx
                .insert_idempotency_key(tenant, key, request_hash, now, lease_until)
                .await?
            {
                tx.commit().await?;
                return Ok(KeyState::Reserved);
            }
            let Some(held) = tx.get_idempotency_key(tenant, key).await? else {
                continue;
            };
            let state = match held.saved {
                Some(saved) => KeyState::Saved(saved),
                None => {
                    // A lease that ran out belonged to a process that died: the same request
                    // may take the key over (one retry wins); a different one never may.
                    let expired = held.locked_until.is_none_or(|until| until <= now);
                    if expired
                        && held.request_hash == request_hash
                        && tx
                            .take_over_idempotency_key(tenant, key, now, lease_until)
                            .await?
                    {
                        KeyState::Reserved
                    } else {
                        KeyState::InFlight {
                            request_hash: held.request_hash,
                        }
                    }
                }
            };
            tx.commit().await?;
            return Ok(state);
        }
        Err(Error::conflict(
            "the Idempotency-Key changed hands while it was read; retry",
        ))
    }

    /// Completes a reservation with the answer to replay to retries.
    pub async fn save_response(
        &self,
        p: Principal,
        key: &str,
        saved: &crate::store::SavedResponse,
    ) -> Result<()> {
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        tx.save_response(p.tenant_id, key, saved).await?;
        tx.commit().await
    }

    /// Gives a reservation up, so that a retry runs the request again.
    pub async fn release_idempotency_key(&self, p: Principal, key: &str) -> Result<()> {
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        tx.release_idempotency_key(p.tenant_id, key).await?;
        tx.commit().await
    }
}
