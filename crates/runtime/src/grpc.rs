//! How a stable API error code travels inside a gRPC status.
//!
//! Services answer errors as `tonic::Status` with the code in the [`ERROR_CODE_METADATA`]
//! metadata entry (`x-realchat-code`); the gateway
//! reads it back to produce the API's error body. The gRPC status code stays meaningful on its
//! own for other clients.

/// Metadata key carrying the API error code.
pub const ERROR_CODE_METADATA: &str = "x-realchat-code";

/// A status with an API error code attached.
pub fn status(
    code: tonic::Code,
    api_code: &'static str,
    message: impl Into<String>,
) -> tonic::Status {
    let mut status = tonic::Status::new(code, message);
    status.metadata_mut().insert(
        ERROR_CODE_METADATA,
        tonic::metadata::MetadataValue::from_static(api_code),
    );
    status
}

/// The API error code a status carries, if a RealChat service set one.
pub fn api_code(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(ERROR_CODE_METADATA)
        .and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_code_survives_the_round_trip() {
        let s = status(tonic::Code::AlreadyExists, "username_taken", "taken");
        assert_eq!(api_code(&s), Some("username_taken"));
        assert_eq!(s.code(), tonic::Code::AlreadyExists);
        assert_eq!(api_code(&tonic::Status::internal("x")), None);
    }
}
