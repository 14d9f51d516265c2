//! Responses kept for `GET /v1/responses/{id}` (the Responses API's
//! `store`, true unless a request says false): each finished response's
//! whole body, by its id, in memory, within a count and a byte budget
//! (the oldest let go first). The conversation itself lives in its cell
//! and transcript; what is kept here is only the reply as the client got
//! it. Pure but for the two handlers at the bottom, which read the kept
//! ones back (`GET`) and let them go (`DELETE`).

use serde_json::Value;
use std::collections::{HashMap, VecDeque};

/// Responses kept at most: a client reads a response back soon after it
/// was made, if ever.
pub const MAX_KEPT: usize = 4096;

/// Bytes of kept bodies at most (their JSON), so a few huge answers
/// cannot hold the gateway's memory.
pub const MAX_KEPT_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Kept {
    by_id: HashMap<String, (Value, usize)>,
    /// Oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

impl Kept {
    /// Keeps `body` under its `id`; a body over the whole budget is not
    /// kept at all.
    pub fn keep(&mut self, body: &Value) {
        let Some(id) = body.get("id").and_then(Value::as_str) else {
            return;
        };
        let size = body.to_string().len();
        if size > MAX_KEPT_BYTES {
            return;
        }
        self.forget(id);
        self.by_id.insert(id.to_owned(), (body.clone(), size));
        self.order.push_back(id.to_owned());
        self.bytes += size;
        while self.by_id.len() > MAX_KEPT || self.bytes > MAX_KEPT_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, n)) = self.by_id.remove(&oldest) {
                self.bytes -= n;
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.by_id.get(id).map(|(v, _)| v)
    }

    /// Lets go of `id`; whether it was kept.
    pub fn forget(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some((_, n)) => {
                self.bytes -= n;
                self.order.retain(|o| o != id);
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The whole response a Responses stream ended with (its
/// `response.completed` event's), to keep.
pub fn completed(frames: &[super::respond::Frame]) -> Option<&Value> {
    frames.iter().find_map(|f| match f {
        super::respond::Frame::Named("response.completed", v) => v.get("response"),
        _ => None,
    })
}

/// Why a response cannot be read back: an id hum never gave out (its MAC
/// fails), or one not kept (`store: false`, let go, deleted, or made
/// before the gateway last started).
fn unknown(id: &str) -> axum::response::Response {
    super::respond::error::<super::responses::Responses>(
        &thrum::ErrorCode::NotFound,
        &format!("no response {} is kept here", crate::logsafe::escape(id)),
        None,
    )
}

/// `GET /v1/responses/{id}`: a kept response, as it was returned.
pub async fn read(
    gw: std::sync::Arc<super::Gateway>,
    headers: axum::http::HeaderMap,
    id: String,
) -> axum::response::Response {
    let_in(&gw, &headers, |gw| read_let_in(gw, &id))
}

/// `GET /v1/responses/{id}` for a caller let in already.
pub fn read_let_in(gw: &super::Gateway, id: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(sid) = gw.response_ids.sid_of(id) else {
        return unknown(id);
    };
    let body = gw.kept.lock().expect("kept lock").get(id).cloned();
    match body {
        Some(body) => super::with_session(axum::Json(body).into_response(), &sid),
        None => unknown(id),
    }
}

/// `DELETE /v1/responses/{id}`: lets a kept response go (the conversation
/// goes on: its cell and transcript are not this).
pub async fn delete(
    gw: std::sync::Arc<super::Gateway>,
    headers: axum::http::HeaderMap,
    id: String,
) -> axum::response::Response {
    let_in(&gw, &headers, |gw| delete_let_in(gw, &id))
}

/// `DELETE /v1/responses/{id}` for a caller let in already.
pub fn delete_let_in(gw: &super::Gateway, id: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    if gw.response_ids.sid_of(id).is_none() || !gw.kept.lock().expect("kept lock").forget(id) {
        return unknown(id);
    }
    axum::Json(serde_json::json!({"id": id, "object": "response", "deleted": true})).into_response()
}

/// `then`, for a request that carries the token.
fn let_in(
    gw: &super::Gateway,
    headers: &axum::http::HeaderMap,
    then: impl FnOnce(&super::Gateway) -> axum::response::Response,
) -> axum::response::Response {
    use super::respond::Dialect;
    if !super::authorized(gw, headers) {
        return super::respond::error::<super::responses::Responses>(
            &thrum::ErrorCode::Unauthorized,
            super::responses::Responses::UNAUTHORIZED,
            None,
        );
    }
    then(gw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_kept_response_reads_back_until_forgotten() {
        let mut k = Kept::default();
        k.keep(&json!({"id": "resp_1", "output": []}));
        k.keep(&json!({"no": "id"}));
        assert_eq!(k.len(), 1);
        assert_eq!(k.get("resp_1").unwrap()["output"], json!([]));
        assert!(k.forget("resp_1"));
        assert!(!k.forget("resp_1"));
        assert!(k.is_empty());
        assert_eq!(k.bytes(), 0);
    }

    #[test]
    fn the_oldest_go_first_past_the_count() {
        let mut k = Kept::default();
        for i in 0..MAX_KEPT + 3 {
            k.keep(&json!({"id": format!("resp_{i}")}));
        }
        assert_eq!(k.len(), MAX_KEPT);
        assert!(k.get("resp_0").is_none() && k.get("resp_2").is_none());
        assert!(k.get("resp_3").is_some());
        assert!(k.get(&format!("resp_{}", MAX_KEPT + 2)).is_some());
    }

    #[test]
    fn the_byte_budget_holds_and_a_body_past_it_is_not_kept() {
        let mut k = Kept::default();
        let big = "x".repeat(MAX_KEPT_BYTES / 3);
        for i in 0..4 {
            k.keep(&json!({"id": format!("resp_{i}"), "text": big}));
        }
        assert!(k.bytes() <= MAX_KEPT_BYTES);
        assert!(k.get("resp_0").is_none(), "the oldest went");
        assert!(k.get("resp_3").is_some());
        k.keep(&json!({"id": "huge", "text": "x".repeat(MAX_KEPT_BYTES + 1)}));
        assert!(k.get("huge").is_none());
        // Kept again under the same id: counted once.
        let before = k.bytes();
        k.keep(&json!({"id": "resp_3", "text": big}));
        assert_eq!(k.bytes(), before);
    }
}
