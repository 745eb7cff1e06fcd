//! DCGM CSV: header validation, the record length limit and row parsing never panic, and
//! every row either parses or is rejected with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_actors::dcgm::{open_reader, parse_timestamp, RowParser};

fuzz_target!(|data: &[u8]| {
    let Ok((mut rdr, cols)) = open_reader(data) else {
        return;
    };
    let mut parser = RowParser::new(cols);
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if e.is_io_error() => break,
            Err(_) => continue,
        }
        if let Ok((row, gpu)) = parser.parse(&rec) {
            assert!(!row.uuid.is_empty());
            assert_eq!(gpu.uuid, row.uuid);
            let _ = parse_timestamp(row.csv_timestamp);
        }
    }
    let _ = rdr.get_mut().take_overlong();
});
