//! API keys (issue #3): `nk_<prefix>_<secret>`. Only an HMAC-SHA256 of the whole key is
//! stored; the prefix finds the row, and the comparison is constant-time.

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::{ApiKeyRecord, TenantId, UserId, new_id};

/// Used when no `NURTURE_API_KEY_PEPPER` is configured. The secret part of a key has 192 bits of
/// randomness, so the hash alone does not make it guessable; a configured pepper additionally
/// makes a stolen database useless for checking keys offline.
pub const DEFAULT_PEPPER: &[u8] = b"nurture-api-key-v1";

const PREFIX_LEN: usize = 12;

pub fn hash(pepper: &[u8], key: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(pepper).expect("HMAC takes keys of any length");
    mac.update(key.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

pub fn generate(
    pepper: &[u8],
    tenant_id: TenantId,
    user_id: UserId,
    now: Timestamp,
) -> (String, ApiKeyRecord) {
    let mut bytes = [0u8; 30];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let prefix = hex[..PREFIX_LEN].to_string();
    let plain = format!("nk_{prefix}_{}", &hex[PREFIX_LEN..]);
    let record = ApiKeyRecord {
        id: new_id(),
        tenant_id,
        user_id,
        prefix,
        hash: hash(pepper, &plain),
        created_at: now,
    };
    (plain, record)
}

/// The lookup prefix of a well-formed key.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("nk_")?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == PREFIX_LEN && !secret.is_empty()).then_some(prefix)
}

pub fn verify(pepper: &[u8], key: &str, stored: &[u8]) -> bool {
    hash(pepper, key).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_verifies_and_a_changed_one_does_not() {
        let (plain, rec) = generate(DEFAULT_PEPPER, new_id(), new_id(), Timestamp::UNIX_EPOCH);
        assert_eq!(prefix_of(&plain), Some(rec.prefix.as_str()));
        assert!(verify(DEFAULT_PEPPER, &plain, &rec.hash));
        let mut wrong = plain.clone();
        wrong.pop();
        wrong.push('x');
        assert!(!verify(DEFAULT_PEPPER, &wrong, &rec.hash));
        assert!(!verify(b"other pepper", &plain, &rec.hash));
        assert!(!plain.contains(&String::from_utf8_lossy(&rec.hash).to_string()));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        assert_eq!(prefix_of("not-a-key"), None);
        assert_eq!(prefix_of("nk_short_x"), None);
        assert_eq!(prefix_of("nk_0123456789ab_"), None);
    }
}
