//! Identifiers defined by the spec: `sigil(nest, sid)` and `rid()`.

use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lowercase hex of the first 6 bytes of `sha256(nest + ":" + sid)`.
///
/// ```
/// assert_eq!(thrum::sigil("claude-cli", "sid-1"), "132f4fa1d4d3");
/// ```
pub fn sigil(nest: &str, sid: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(nest.as_bytes());
    hasher.update(b":");
    hasher.update(sid.as_bytes());
    let digest = hasher.finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Per-process counter behind [`rid`]; starts at 0 as the spec says.
static RID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A request id: base36(ms since epoch) `-` base36(per-process counter from 0).
pub fn rid() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    rid_from(ms, RID_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The formatting half of [`rid`], separated so it can be tested exactly.
pub fn rid_from(ms_since_epoch: u64, counter: u64) -> String {
    format!("{}-{}", base36(ms_since_epoch), base36(counter))
}

/// Lowercase base 36, as JavaScript's `Number.prototype.toString(36)` prints it.
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".to_owned();
    }
    let mut out = Vec::with_capacity(13);
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("base36 digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigil_matches_the_spec_vectors() {
        assert_eq!(sigil("claude-cli", "sid-1"), "132f4fa1d4d3");
        assert_eq!(sigil("claude-cli", "sid-daman-operator"), "b08f2a331647");
        assert_eq!(sigil("sim", "bee-07"), "d74516e83c87");
    }

    #[test]
    fn sigil_is_twelve_lowercase_hex_chars() {
        let s = sigil("", "");
        assert_eq!(s.len(), 12);
        assert!(s
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }

    #[test]
    fn base36_matches_javascript() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        // (1764412800000).toString(36) in JavaScript
        assert_eq!(base36(1_764_412_800_000), "mik5tpmo");
        assert_eq!(base36(u64::MAX), "3w5e11264sgsf");
    }

    #[test]
    fn rid_is_time_then_counter() {
        assert_eq!(rid_from(1_764_412_800_000, 0), "mik5tpmo-0");
        assert_eq!(rid_from(1_764_412_800_000, 37), "mik5tpmo-11");
    }

    #[test]
    fn rid_counter_increases_and_time_is_now() {
        let a = rid();
        let b = rid();
        let (ta, ca) = a.split_once('-').unwrap();
        let (tb, cb) = b.split_once('-').unwrap();
        let ca = u64::from_str_radix(ca, 36).unwrap();
        let cb = u64::from_str_radix(cb, 36).unwrap();
        assert!(cb > ca, "counter must increase: {a} then {b}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let ta = u64::from_str_radix(ta, 36).unwrap();
        let tb = u64::from_str_radix(tb, 36).unwrap();
        assert!(ta <= tb && tb <= now && now - ta < 60_000);
    }
}
