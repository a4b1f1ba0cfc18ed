//! The OpenAPI document, assembled from the handlers' annotations.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
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
    modifiers(&BearerAuth),
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
