//! What every operation can answer besides its own responses, added to the OpenAPI document in
//! one place: the bearer tokens (401, and 403 for changes), and the node-wide limits (413 for
//! an over-large body, 503 when too many requests are in flight or one runs too long).

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::Modify;

/// Name of the bearer scheme in the document.
const BEARER: &str = "bearer";

/// Adds the shared responses and the optional bearer security to every operation.
pub struct Shared;

fn error(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn add(op: &mut Operation, changes: bool) {
    let mut add = |code: &str, description: &str| {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| error(description).into());
    };
    add(
        "401",
        "Missing or wrong bearer token (when the node requires one)",
    );
    if changes {
        add("403", "The token may read but not change the cluster");
        add("413", "Request body over the size limit");
    }
    add(
        "503",
        "Too many requests in flight, or the request ran past its time limit",
    );
    // A token is needed only when the node is configured with one: either requirement holds.
    op.security = Some(vec![
        SecurityRequirement::new(BEARER, Vec::<String>::new()),
        SecurityRequirement::default(),
    ]);
}

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        for item in openapi.paths.paths.values_mut() {
            if let Some(op) = item.get.as_mut() {
                add(op, false);
            }
            if let Some(op) = item.post.as_mut() {
                add(op, true);
            }
        }
    }
}
