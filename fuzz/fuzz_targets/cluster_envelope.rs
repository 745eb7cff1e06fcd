//! Cluster messages: any bytes decode to a request, a response or an error, never a panic; what
//! decodes re-encodes to bytes that decode and re-encode to the same bytes (compared as bytes,
//! because a NaN value is not equal to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_actors::cluster::protocol::{decode, encode, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok((trace, req)) = decode::<Request>(data) {
        let again = encode(trace.as_deref(), &req);
        let (trace2, req2) = decode::<Request>(&again).expect("re-encoded request decodes");
        assert_eq!(encode(trace2.as_deref(), &req2), again);
    }
    if let Ok((trace, resp)) = decode::<Response>(data) {
        let again = encode(trace.as_deref(), &resp);
        let (trace2, resp2) = decode::<Response>(&again).expect("re-encoded response decodes");
        assert_eq!(encode(trace2.as_deref(), &resp2), again);
    }
});
