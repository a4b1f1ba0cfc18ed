//! Delivery answers HTTP errors in API.md's shape through the shared [`ApiError`].

pub(crate) use realchat_runtime::api_error::ApiError;
