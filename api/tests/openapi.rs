//! The committed `api/openapi.json` is the document the code generates.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark code may panic

#[test]
fn committed_openapi_matches_the_code() {
    let committed = include_str!("../openapi.json");
    let generated = telemetry_api::openapi_json();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "api/openapi.json is stale: run `cargo run -- openapi > api/openapi.json`"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).expect("valid JSON");
    for path in [
        "/api/v1/gpus",
        "/api/v1/gpus/{uuid}",
        "/api/v1/gpus/{uuid}/telemetry",
        "/api/v1/metrics",
        "/api/v1/cluster",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the spec"
        );
    }
}
