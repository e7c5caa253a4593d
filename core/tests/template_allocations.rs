//! The loadgen's encode path allocates nothing per message, with a ten-value payload
//! template, a nested stamp, ISO times in a named zone and string device ids: counted by
//! the `allocation-counter` crate's global allocator.
#![allow(clippy::unwrap_used)]

use iotload_core::plan::Template;
use iotload_core::stamp::{DeviceIdFormat, JsonCarrier, JsonFields, Stamp, TimeFormat};

#[test]
fn encoding_a_templated_message_allocates_nothing() {
    let body = JsonCarrier::parse_body(
        r#"{"unitMacId":"VZW_LH_UNIT_{device:03}","msgNo":"{seq}","batch":"{counter}",
            "reported":"{now:iso8601-local}","battery":"{int:0..100}","temp":"{float:15..30:1}",
            "location":{"lat":"{walk:40.5..40.9:0.001}","lon":"{walk:-74.2..-73.7:0.001}"},
            "status":"{choice:moving|parked|charging}","note":"unit {device} at {now:ms}"}"#,
    )
    .unwrap();
    let carrier = JsonCarrier::templated(
        JsonFields::parse("meta.unit,meta.seq,-,/meta/sentAt").unwrap(),
        TimeFormat::Iso8601Local,
        Some(&body),
        300,
    )
    .unwrap()
    .with_zone("Europe/Berlin".parse().unwrap())
    .with_device_id(DeviceIdFormat::from_template(
        &Template::parse("VZW_{device:05}").unwrap(),
    ));
    let mut states: Vec<_> = (0..10).map(|d| carrier.device_values(d)).collect();
    let mut out = Vec::with_capacity(1024);
    let stamp = |seq: u64| Stamp {
        device: (seq % 10) as u32,
        seq,
        intended_us: 1_795_568_523_123_456 + seq,
        sent_us: 1_795_568_523_124_000 + seq,
    };
    // Warm up: the buffer reaches its size.
    for seq in 0..100 {
        carrier.encode_for(&stamp(seq), &mut states[(seq % 10) as usize], &mut out);
    }
    let counted = allocation_counter::measure(|| {
        for seq in 100..100_100 {
            carrier.encode_for(&stamp(seq), &mut states[(seq % 10) as usize], &mut out);
        }
    });
    assert_eq!(counted.count_total, 0, "allocations in 100,000 encodes");
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["meta"]["unit"], "VZW_00009");
    assert_eq!(value["unitMacId"], "VZW_LH_UNIT_009");
}
