//! Broker log records and the sample batches they carry: any bytes are a record or an error;
//! an intact record's payload decodes to a batch or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_actors::broker::{decode_record, encode_record, find_record};
use telemetry_storage::SampleBatch;

const MAX_RECORD: u64 = 8 << 20;

fuzz_target!(|data: &[u8]| {
    let offset = data.get(..8).map_or(0, |b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a) % 1024
    });
    if let Ok((payload, len)) = decode_record(data, offset, MAX_RECORD) {
        assert_eq!(encode_record(offset, payload), &data[..len as usize]);
        let _ = SampleBatch::decode(payload);
    }
    let _ = find_record(data, offset, MAX_RECORD);
    if let Ok(batch) = SampleBatch::decode(data) {
        let _ = batch.validate();
    }
});
