//! Response ids of the Responses API, which name their conversation: a
//! follow-up's `previous_response_id` is the sid of the conversation it
//! continues, so it goes to the same warm cell with no affinity guessing.
//! An id is `resp_<sid, hex>_<nonce><mac>`: the mac (a keyed SHA-256 of
//! the sid and nonce, 128 bits) is what makes an id hum did not give out
//! unknown — nobody can name another conversation's sid by making one up.
//! The key comes from the gateway's token, so ids outlive a restart of the
//! gateway (they are as good as the conversation's cell or transcript).

use sha2::{Digest, Sha256};

/// Bytes of the nonce and of the mac in an id.
const NONCE: usize = 8;
const MAC: usize = 16;

/// A sid longer than this is not put in an id (sids hum makes are short).
const MAX_SID: usize = 256;

/// What makes and checks ids.
#[derive(Clone)]
pub struct ResponseIds {
    key: [u8; 32],
}

impl ResponseIds {
    /// Keyed by `token` (a random key when there is none: ids then last as
    /// long as this gateway).
    pub fn new(token: Option<&str>) -> ResponseIds {
        let seed = match token {
            Some(t) => format!("hum response ids\0{t}"),
            None => format!("hum response ids\0{}", uuid::Uuid::new_v4()),
        };
        ResponseIds {
            key: Sha256::digest(seed.as_bytes()).into(),
        }
    }

    fn mac(&self, sid: &[u8], nonce: &[u8]) -> [u8; MAC] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((sid.len() as u64).to_be_bytes());
        h.update(sid);
        h.update(nonce);
        let full = h.finalize();
        let mut mac = [0u8; MAC];
        mac.copy_from_slice(&full[..MAC]);
        mac
    }

    /// A new id naming `sid`.
    pub fn mint(&self, sid: &str) -> String {
        let nonce: [u8; NONCE] = std::array::from_fn(|_| fastrand::u8(..));
        let mac = self.mac(sid.as_bytes(), &nonce);
        format!("resp_{}_{}{}", hex(sid.as_bytes()), hex(&nonce), hex(&mac))
    }

    /// The sid `id` names, when hum gave it out.
    pub fn sid_of(&self, id: &str) -> Option<String> {
        let (sid_hex, tail) = id.strip_prefix("resp_")?.rsplit_once('_')?;
        if sid_hex.len() > 2 * MAX_SID || tail.len() != 2 * (NONCE + MAC) {
            return None;
        }
        let sid = unhex(sid_hex)?;
        let tail = unhex(tail)?;
        let (nonce, mac) = tail.split_at(NONCE);
        let expected = self.mac(&sid, nonce);
        // (Every byte compared: the time says nothing of where they differ.)
        let differ = expected.iter().zip(mac).fold(0u8, |d, (a, b)| d | (a ^ b));
        (differ == 0).then(|| String::from_utf8(sid).ok()).flatten()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_its_sid_and_a_made_up_or_altered_one_names_none() {
        let ids = ResponseIds::new(Some("token-a"));
        let id = ids.mint("gw-1234");
        assert!(id.starts_with("resp_"));
        assert_eq!(ids.sid_of(&id).as_deref(), Some("gw-1234"));
        assert_ne!(ids.mint("gw-1234"), id, "each response its own id");
        // Another sid's hex with this id's nonce and mac: refused.
        let forged = id.replacen(&hex(b"gw-1234"), &hex(b"gw-9999"), 1);
        assert_eq!(ids.sid_of(&forged), None);
        // Another gateway's key: refused; the same token: the same key.
        assert_eq!(ResponseIds::new(Some("token-b")).sid_of(&id), None);
        assert_eq!(
            ResponseIds::new(Some("token-a")).sid_of(&id).as_deref(),
            Some("gw-1234")
        );
        for junk in [
            "",
            "resp_",
            "resp_zz_00",
            "chatcmpl-1",
            "resp_00_",
            &format!("{id}0"),
        ] {
            assert_eq!(ids.sid_of(junk), None, "{junk}");
        }
    }
}
