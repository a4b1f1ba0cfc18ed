//! The API's error answer: [`ApiError`] lives in `realchat_runtime::api_error`, shared with
//! delivery; here are the shapes the OpenAPI document gives it.

use serde::Serialize;

pub use realchat_runtime::api_error::ApiError;

/// An error as the API reports it: `{"error": {"code", "message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable snake_case code, e.g. `invalid_argument`.
    pub(crate) code: String,
    /// What went wrong, for people.
    pub(crate) message: String,
}
