//! How each of humd's error codes shows in each API: the HTTP status and
//! the error's type (and OpenAI's `code`), in one table.

use axum::http::StatusCode;
use thrum::ErrorCode;

/// One code's face in both APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Face {
    pub status: StatusCode,
    /// OpenAI's `error.type`, and its `error.code` (`None`: humd's code).
    pub openai: (&'static str, Option<&'static str>),
    /// Anthropic's `error.type`.
    pub anthropic: &'static str,
}

/// The table.
pub(crate) fn face(code: &ErrorCode) -> Face {
    let (status, openai, anthropic) = match code {
        ErrorCode::Overloaded => (
            StatusCode::TOO_MANY_REQUESTS,
            ("rate_limit_error", None),
            "rate_limit_error",
        ),
        // A daily budget is spent: retry after its reset (Retry-After); what
        // OpenAI answers when a quota is used up.
        ErrorCode::BudgetExceeded => (
            StatusCode::TOO_MANY_REQUESTS,
            ("insufficient_quota", Some("insufficient_quota")),
            "rate_limit_error",
        ),
        ErrorCode::NoWorker => (
            StatusCode::NOT_FOUND,
            ("invalid_request_error", Some("model_not_found")),
            "not_found_error",
        ),
        ErrorCode::NotFound => (
            StatusCode::NOT_FOUND,
            ("invalid_request_error", Some("not_found")),
            "not_found_error",
        ),
        ErrorCode::BadRequest => (
            StatusCode::BAD_REQUEST,
            ("invalid_request_error", None),
            "invalid_request_error",
        ),
        ErrorCode::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            ("authentication_error", Some("invalid_api_key")),
            "authentication_error",
        ),
        ErrorCode::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            ("server_error", None),
            "api_error",
        ),
        _ => (StatusCode::BAD_GATEWAY, ("server_error", None), "api_error"),
    };
    Face {
        status,
        openai,
        anthropic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_face_and_the_retryable_ones_are_429() {
        for code in ErrorCode::KNOWN {
            let f = face(code);
            assert!(
                f.status.is_client_error() || f.status.is_server_error(),
                "{code}"
            );
        }
        assert_eq!(
            face(&ErrorCode::Overloaded).status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            face(&ErrorCode::BudgetExceeded).openai.0,
            "insufficient_quota"
        );
        assert_eq!(face(&ErrorCode::NoWorker).anthropic, "not_found_error");
        assert_eq!(
            face(&ErrorCode::Other("x".into())).status,
            StatusCode::BAD_GATEWAY
        );
    }
}
