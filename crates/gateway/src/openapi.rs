//! The OpenAPI document, assembled from the handlers' annotations.

use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, RefOr, Response, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{error, routes};

/// RealChat's public API.
#[derive(OpenApi)]
#[openapi(
    info(title = "RealChat", version = "1", description = "The public HTTP API of RealChat. Errors are `{\"error\": {\"code\", \"message\"}}`."),
    paths(
        routes::auth::register,
        routes::auth::login,
        routes::auth::refresh,
        routes::auth::logout,
        routes::auth::me,
        routes::conversations::create,
        routes::conversations::list,
        routes::conversations::get,
        routes::conversations::members,
        routes::conversations::add_member,
        routes::conversations::remove_member,
        routes::conversations::send,
        routes::conversations::history,
        routes::conversations::mark_read,
        routes::users::me,
        routes::users::edit,
        routes::users::get,
        routes::users::search,
        routes::realtime::presence,
        routes::realtime::websocket,
        routes::meta::jwks,
        routes::meta::healthz,
        routes::meta::readyz,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth, &CommonErrors),
    tags((name = "auth", description = "Accounts and tokens"),
        (name = "conversations", description = "Direct and group conversations"),
        (name = "messages", description = "Sending, history, read positions"),
        (name = "profiles", description = "Profiles and the directory"),
        (name = "realtime", description = "The WebSocket and presence, served by delivery"), (name = "meta", description = "Probes"))
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The errors any operation of a kind can answer, documented on each so a client (or a tool
/// that checks the document against the server) knows every status it may see: bad input, a
/// missing or revoked token, a rate limit, a dependency down. An operation's own description
/// of one of them wins.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            // The probes and the JWKS are not rate limited and need no token.
            let probe = matches!(
                path.as_str(),
                "/healthz" | "/readyz" | "/.well-known/jwks.json"
            );
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let body = operation.request_body.is_some();
                let parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_response(description));
                };
                if body || parameters {
                    add(
                        "400",
                        "invalid_argument or malformed_json: the input breaks a rule of the API",
                    );
                }
                if body {
                    add("413", "payload_too_large: the body is over 64 KiB");
                    add(
                        "415",
                        "unsupported_media_type: the body is not application/json",
                    );
                }
                if authenticated {
                    add(
                        "401",
                        "unauthenticated or token_expired: no access token, or a bad, expired or revoked one",
                    );
                }
                if !probe {
                    add(
                        "429",
                        "rate_limited: too many requests; Retry-After says when to try again",
                    );
                    add(
                        "503",
                        "unavailable: a service this needs is down; Retry-After says when to try again",
                    );
                }
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}
