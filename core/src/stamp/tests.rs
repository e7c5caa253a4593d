use super::*;
use chrono::{Local, NaiveDateTime, TimeZone};
use serde_json::{Map, Value};

use super::json::{EXPECT_TIME, EXPECT_U32, EXPECT_U64, MAX_ISO_US, PAD_OVERHEAD, parse_iso_us};
use proptest::prelude::*;

const STAMP: Stamp = Stamp {
    device: 42,
    seq: 7,
    intended_us: 1_795_568_523_123_456,
    sent_us: 1_795_568_523_124_000,
};

fn carrier(format: TimeFormat) -> JsonCarrier {
    JsonCarrier::new(JsonFields::default(), format, None, 0)
}

fn encode(c: &JsonCarrier, stamp: &Stamp) -> Vec<u8> {
    let mut out = Vec::new();
    c.encode(stamp, &mut out);
    out
}

fn json_err(payload: &str) -> StampError {
    carrier(TimeFormat::Micros)
        .decode(payload.as_bytes())
        .unwrap_err()
}

fn local_us(naive: &str) -> u64 {
    let naive = NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f").unwrap();
    let local = Local.from_local_datetime(&naive).earliest().unwrap();
    u64::try_from(local.timestamp_micros()).unwrap()
}

fn body() -> Map<String, Value> {
    JsonCarrier::parse_body(
        r#"{"temp":21.5,"name":"sensor \"a\"","tags":["x",{"y":null}],"seq":999,"pad":1}"#,
    )
    .unwrap()
}

#[test]
fn micros_encoding_is_compact_json_with_stamp_fields_first() {
    let out = encode(&carrier(TimeFormat::Micros), &STAMP);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"device":42,"seq":7,"intended_us":1795568523123456,"sent_us":1795568523124000}"#
    );
}

#[test]
fn iso8601_encoding_writes_utc_microseconds_with_z() {
    let out = encode(&carrier(TimeFormat::Iso8601), &STAMP);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"device":42,"seq":7,"intended_us":"2026-11-25T01:02:03.123456Z","sent_us":"2026-11-25T01:02:03.124000Z"}"#
    );
}

#[test]
fn iso8601_encoding_covers_epoch_and_year_9999_and_falls_back_to_micros_beyond() {
    let c = carrier(TimeFormat::Iso8601);
    let mut stamp = Stamp {
        intended_us: 0,
        sent_us: MAX_ISO_US,
        ..STAMP
    };
    let text = String::from_utf8(encode(&c, &stamp)).unwrap();
    assert!(text.contains(r#""intended_us":"1970-01-01T00:00:00.000000Z""#));
    assert!(text.contains(r#""sent_us":"9999-12-31T23:59:59.999999Z""#));
    assert_eq!(c.decode(text.as_bytes()), Ok(stamp));
    stamp.sent_us = MAX_ISO_US + 1;
    let text = String::from_utf8(encode(&c, &stamp)).unwrap();
    assert!(text.contains(r#""sent_us":253402300800000000}"#));
    assert_eq!(c.decode(text.as_bytes()), Ok(stamp));
}

#[test]
fn json_round_trips_in_both_time_formats() {
    for format in [TimeFormat::Micros, TimeFormat::Iso8601] {
        let c = carrier(format);
        assert_eq!(c.decode(&encode(&c, &STAMP)), Ok(STAMP));
    }
}

#[test]
fn encode_clears_what_was_in_the_buffer() {
    let c = carrier(TimeFormat::Micros);
    let mut out = b"garbage".to_vec();
    c.encode(&STAMP, &mut out);
    assert_eq!(c.decode(&out), Ok(STAMP));
}

#[test]
fn custom_field_names_round_trip_and_are_escaped() {
    let fields = JsonFields {
        device: "deviceId".into(),
        seq: "n\"o".into(),
        intended: "t0".into(),
        sent: "lastUpdated".into(),
    };
    let c = JsonCarrier::new(fields, TimeFormat::Iso8601, None, 0);
    let out = encode(&c, &STAMP);
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["deviceId"], 42);
    assert_eq!(value["n\"o"], 7);
    assert_eq!(value["lastUpdated"], "2026-11-25T01:02:03.124000Z");
    assert_eq!(c.decode(&out), Ok(STAMP));
}

#[test]
fn escaped_keys_in_payload_match_configured_names() {
    let payload = r#"{"dev\u0069ce":1,"seq":2,"sent_us":3}"#;
    let stamp = carrier(TimeFormat::Micros)
        .decode(payload.as_bytes())
        .unwrap();
    assert_eq!(stamp.device, 1);
}

#[test]
fn foreign_payload_with_naive_last_updated_decodes_as_local_time() {
    let fields = JsonFields {
        device: "deviceId".into(),
        sent: "lastUpdated".into(),
        ..JsonFields::default()
    };
    let c = JsonCarrier::new(fields, TimeFormat::Micros, None, 0);
    let payload =
        br#"{"temp":21.5,"deviceId":3,"seq":9,"lastUpdated":"2026-11-25T01:02:03.123456"}"#;
    let expected = local_us("2026-11-25T01:02:03.123456");
    assert_eq!(
        c.decode(payload),
        Ok(Stamp {
            device: 3,
            seq: 9,
            intended_us: expected,
            sent_us: expected,
        })
    );
}

#[test]
fn missing_intended_time_falls_back_to_sent_time() {
    let stamp = carrier(TimeFormat::Micros)
        .decode(br#"{"device":1,"seq":2,"sent_us":3}"#)
        .unwrap();
    assert_eq!(stamp.intended_us, 3);
}

#[test]
fn iso_times_accept_offsets_space_separator_and_missing_fraction() {
    let z = 1_795_568_523_123_456;
    assert_eq!(parse_iso_us("2026-11-25T01:02:03.123456Z"), Some(z));
    assert_eq!(
        parse_iso_us("2026-11-25T01:02:03.123456+01:00"),
        Some(z - 3_600_000_000)
    );
    assert_eq!(parse_iso_us("2026-11-25 01:02:03.123456Z"), Some(z));
    assert_eq!(parse_iso_us("2026-11-25T01:02:03Z"), Some(z - 123_456));
    assert_eq!(parse_iso_us("2026-11-25T01:02:03.123456789Z"), Some(z));
    assert_eq!(
        parse_iso_us("2026-11-25 01:02:03.123456"),
        Some(local_us("2026-11-25T01:02:03.123456"))
    );
    assert_eq!(
        parse_iso_us("2026-11-25T01:02:03"),
        Some(local_us("2026-11-25T01:02:03"))
    );
    assert_eq!(parse_iso_us("1969-12-31T23:59:59Z"), None);
    assert_eq!(parse_iso_us("yesterday"), None);
}

#[test]
fn padding_gives_exact_lengths_whenever_the_message_is_shorter() {
    let unpadded = encode(&carrier(TimeFormat::Micros), &STAMP).len();
    for pad_to in 0..unpadded + 300 {
        let c = JsonCarrier::new(JsonFields::default(), TimeFormat::Micros, None, pad_to);
        let out = encode(&c, &STAMP);
        assert_eq!(out.len(), pad_to.max(unpadded), "pad_to {pad_to}");
        assert_eq!(c.decode(&out), Ok(STAMP));
        let value: Value = serde_json::from_slice(&out).unwrap();
        let has_pad = value.get("pad").is_some();
        assert_eq!(
            has_pad,
            pad_to >= unpadded + PAD_OVERHEAD,
            "pad_to {pad_to}"
        );
    }
}

#[test]
fn body_fields_are_preserved_after_the_stamp_and_clashes_are_dropped() {
    let body = body();
    let c = JsonCarrier::new(JsonFields::default(), TimeFormat::Micros, Some(&body), 0);
    let out = encode(&c, &STAMP);
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["temp"], 21.5);
    assert_eq!(value["name"], "sensor \"a\"");
    assert_eq!(value["tags"], body["tags"]);
    assert_eq!(value["seq"], 7);
    assert_eq!(value["pad"], 1, "pad kept when padding is off");
    let text = std::str::from_utf8(&out).unwrap();
    assert_eq!(text.matches("\"seq\"").count(), 1);
    assert!(text.starts_with(r#"{"device":42,"seq":7,"#));
    assert_eq!(c.decode(&out), Ok(STAMP));

    let padded = JsonCarrier::new(JsonFields::default(), TimeFormat::Micros, Some(&body), 400);
    let out = encode(&padded, &STAMP);
    assert_eq!(out.len(), 400);
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert!(value["pad"].as_str().unwrap().bytes().all(|b| b == b'x'));
    assert_eq!(value["temp"], 21.5);
}

#[test]
fn parse_body_rejects_non_json_and_non_objects() {
    assert_eq!(JsonCarrier::parse_body("{"), Err(StampError::NotJson));
    assert_eq!(
        JsonCarrier::parse_body("[1]"),
        Err(StampError::BodyNotObject)
    );
    assert_eq!(JsonCarrier::parse_body("{}"), Ok(Map::new()));
}

#[test]
fn truncated_or_foreign_payloads_are_not_json() {
    let full = encode(&carrier(TimeFormat::Micros), &STAMP);
    for cut in 0..full.len() {
        assert_eq!(
            carrier(TimeFormat::Micros).decode(&full[..cut]),
            Err(StampError::NotJson),
            "cut at {cut}"
        );
    }
    for bad in [
        "",
        "[1,2]",
        "42",
        "\"x\"",
        "null",
        "{\"a\":1} x",
        "{\"a\":}",
    ] {
        assert_eq!(json_err(bad), StampError::NotJson, "{bad}");
    }
    assert_eq!(
        carrier(TimeFormat::Micros).decode(&[0xff, 0x00, 0x7b, 0x13]),
        Err(StampError::NotJson)
    );
}

#[test]
fn missing_device_seq_or_sent_is_reported_by_name() {
    let missing = |f: &str| StampError::Missing { field: f.into() };
    assert_eq!(json_err(r#"{"seq":1,"sent_us":2}"#), missing("device"));
    assert_eq!(json_err(r#"{"device":1,"sent_us":2}"#), missing("seq"));
    assert_eq!(
        json_err(r#"{"device":1,"seq":2,"intended_us":3}"#),
        missing("sent_us")
    );
    assert_eq!(json_err("{}"), missing("device"));
}

#[test]
fn values_of_the_wrong_type_or_range_are_wrong_type() {
    let wrong = |f: &str, e| StampError::WrongType {
        field: f.into(),
        expected: e,
    };
    let cases = [
        (
            r#"{"device":"1","seq":1,"sent_us":2}"#,
            wrong("device", EXPECT_U32),
        ),
        (
            r#"{"device":4294967296,"seq":1,"sent_us":2}"#,
            wrong("device", EXPECT_U32),
        ),
        (
            r#"{"device":-1,"seq":1,"sent_us":2}"#,
            wrong("device", EXPECT_U32),
        ),
        (
            r#"{"device":1,"seq":1.5,"sent_us":2}"#,
            wrong("seq", EXPECT_U64),
        ),
        (
            r#"{"device":1,"seq":-3,"sent_us":2}"#,
            wrong("seq", EXPECT_U64),
        ),
        (
            r#"{"device":1,"seq":[1],"sent_us":2}"#,
            wrong("seq", EXPECT_U64),
        ),
        (
            r#"{"device":1,"seq":1,"sent_us":{"a":[1]}}"#,
            wrong("sent_us", EXPECT_TIME),
        ),
        (
            r#"{"device":1,"seq":1,"intended_us":true,"sent_us":2}"#,
            wrong("intended_us", EXPECT_TIME),
        ),
        (
            r#"{"device":1,"seq":1,"sent_us":null}"#,
            wrong("sent_us", EXPECT_TIME),
        ),
        (
            r#"{"device":1,"seq":1,"sent_us":1e3}"#,
            wrong("sent_us", EXPECT_TIME),
        ),
    ];
    for (payload, expected) in cases {
        assert_eq!(json_err(payload), expected, "{payload}");
    }
    assert_eq!(
        json_err(r#"{"device":"x","seq":"y"}"#),
        wrong("device", EXPECT_U32),
        "the first problem wins"
    );
}

#[test]
fn unparseable_time_strings_are_bad_time() {
    assert_eq!(
        json_err(r#"{"device":1,"seq":1,"sent_us":"noon"}"#),
        StampError::BadTime {
            field: "sent_us".into(),
            value: "noon".into()
        }
    );
    let long = "9".repeat(500);
    let err = json_err(&format!(
        r#"{{"device":1,"seq":1,"intended_us":"{long}","sent_us":1}}"#
    ));
    assert_eq!(
        err,
        StampError::BadTime {
            field: "intended_us".into(),
            value: "9".repeat(64)
        }
    );
}

#[test]
fn unknown_fields_of_any_shape_are_skipped() {
    let payload =
        r#"{"x":{"a":[1,{"b":"c"}]},"device":1,"y":[[[]]],"seq":2,"z":"s","sent_us":3,"w":-1.5e9}"#;
    let stamp = carrier(TimeFormat::Micros)
        .decode(payload.as_bytes())
        .unwrap();
    assert_eq!((stamp.device, stamp.seq, stamp.sent_us), (1, 2, 3));
}

#[test]
fn binary_carrier_round_trips_and_keeps_the_body() {
    let mut out = vec![9; 3];
    BinaryCarrier::encode(&STAMP, b"hello", &mut out);
    assert_eq!(out.len(), BinaryCarrier::HEADER_LEN + 5);
    assert_eq!(&out[..4], b"IOTL");
    assert_eq!(BinaryCarrier::decode(&out), Ok(STAMP));
    assert_eq!(BinaryCarrier::body(&out), b"hello");
    assert_eq!(BinaryCarrier::body(b"short"), b"");
}

#[test]
fn binary_carrier_rejects_short_payloads_and_bad_magic() {
    let mut out = Vec::new();
    BinaryCarrier::encode(&STAMP, b"", &mut out);
    assert_eq!(
        BinaryCarrier::decode(&out[..31]),
        Err(StampError::TooShort { len: 31, need: 32 })
    );
    assert_eq!(
        BinaryCarrier::decode(b""),
        Err(StampError::TooShort { len: 0, need: 32 })
    );
    out[0] = b'X';
    assert_eq!(BinaryCarrier::decode(&out), Err(StampError::BadMagic));
}

#[test]
fn header_carrier_round_trips_and_ignores_unknown_headers() {
    let mut headers = HeaderCarrier::encode(&STAMP);
    headers.insert(1, ("content-type".into(), "application/json".into()));
    let pairs = headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    assert_eq!(HeaderCarrier::decode(pairs), Ok(STAMP));
}

#[test]
fn header_names_match_case_insensitively_and_intended_falls_back() {
    let headers = [
        ("IOTLOAD-DEVICE", "5"),
        ("Iotload-Seq", "6"),
        ("iotload-sent-us", "7"),
    ];
    assert_eq!(
        HeaderCarrier::decode(headers),
        Ok(Stamp {
            device: 5,
            seq: 6,
            intended_us: 7,
            sent_us: 7
        })
    );
}

#[test]
fn header_carrier_reports_missing_and_bad_headers() {
    assert_eq!(
        HeaderCarrier::decode([("iotload-seq", "1"), ("iotload-sent-us", "1")]),
        Err(StampError::MissingHeader {
            name: HeaderCarrier::DEVICE
        })
    );
    assert_eq!(
        HeaderCarrier::decode([("iotload-device", "1"), ("iotload-seq", "1")]),
        Err(StampError::MissingHeader {
            name: HeaderCarrier::SENT
        })
    );
    assert_eq!(
        HeaderCarrier::decode([
            ("iotload-device", "4294967296"),
            ("iotload-seq", "1"),
            ("iotload-sent-us", "1"),
        ]),
        Err(StampError::BadHeader {
            name: HeaderCarrier::DEVICE,
            value: "4294967296".into()
        })
    );
    assert_eq!(
        HeaderCarrier::decode([
            ("iotload-device", "1"),
            ("iotload-seq", "1"),
            ("iotload-intended-us", "-2"),
            ("iotload-sent-us", "1"),
        ]),
        Err(StampError::BadHeader {
            name: HeaderCarrier::INTENDED,
            value: "-2".into()
        })
    );
}

#[test]
fn every_error_has_a_distinct_kind_and_a_lowercase_message() {
    let errors = [
        StampError::NotJson,
        StampError::Missing { field: "f".into() },
        StampError::WrongType {
            field: "f".into(),
            expected: EXPECT_U32,
        },
        StampError::BadTime {
            field: "f".into(),
            value: "v".into(),
        },
        StampError::TooShort { len: 1, need: 32 },
        StampError::BadMagic,
        StampError::MissingHeader {
            name: HeaderCarrier::SEQ,
        },
        StampError::BadHeader {
            name: HeaderCarrier::SEQ,
            value: "v".into(),
        },
        StampError::BodyNotObject,
    ];
    let kinds: std::collections::HashSet<_> = errors.iter().map(StampError::kind).collect();
    assert_eq!(kinds.len(), errors.len());
    for e in &errors {
        assert!(
            e.kind()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        );
        let msg = e.to_string();
        assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
        assert!(!msg.ends_with('.'), "{msg}");
    }
}

#[test]
fn now_us_is_after_2024() {
    assert!(now_us() > 1_704_067_200_000_000);
}

fn any_stamp() -> impl Strategy<Value = Stamp> {
    let time = prop_oneof![0..=MAX_ISO_US, any::<u64>(), Just(u64::MAX), Just(0)];
    (any::<u32>(), any::<u64>(), time.clone(), time).prop_map(
        |(device, seq, intended_us, sent_us)| Stamp {
            device,
            seq,
            intended_us,
            sent_us,
        },
    )
}

proptest! {
    #[test]
    fn json_round_trips_any_stamp_with_body_and_padding(
        stamp in any_stamp(),
        iso in any::<bool>(),
        with_body in any::<bool>(),
        pad_to in 0usize..600,
    ) {
        let format = if iso { TimeFormat::Iso8601 } else { TimeFormat::Micros };
        let body = body();
        let c = JsonCarrier::new(
            JsonFields::default(), format, with_body.then_some(&body), pad_to,
        );
        let out = encode(&c, &stamp);
        prop_assert!(out.len() >= pad_to);
        prop_assert_eq!(c.decode(&out), Ok(stamp));
        prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
    }

    #[test]
    fn binary_round_trips_any_stamp(stamp in any_stamp(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut out = Vec::new();
        BinaryCarrier::encode(&stamp, &body, &mut out);
        prop_assert_eq!(BinaryCarrier::decode(&out), Ok(stamp));
        prop_assert_eq!(BinaryCarrier::body(&out), &body[..]);
    }

    #[test]
    fn headers_round_trip_any_stamp(stamp in any_stamp()) {
        let headers = HeaderCarrier::encode(&stamp);
        let pairs = headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        prop_assert_eq!(HeaderCarrier::decode(pairs), Ok(stamp));
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = carrier(TimeFormat::Micros).decode(&bytes);
        let _ = BinaryCarrier::decode(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = HeaderCarrier::decode([(HeaderCarrier::DEVICE, &*text), (HeaderCarrier::SENT, &*text)]);
    }

    #[test]
    fn json_decode_never_panics_on_json_like_text(text in r#"\{("(device|seq|sent_us|intended_us|x)":(-?[0-9]{1,25}|"[0-9T:. Z+-]{0,30}"|\[|\{|true|null|1\.5)[,}]?){0,6}"#) {
        let _ = carrier(TimeFormat::Micros).decode(text.as_bytes());
    }

    #[test]
    fn every_truncation_of_a_valid_payload_is_not_json(stamp in any_stamp(), cut in 0usize..100) {
        let c = carrier(TimeFormat::Iso8601);
        let out = encode(&c, &stamp);
        let cut = cut.min(out.len() - 1);
        prop_assert_eq!(c.decode(&out[..cut]), Err(StampError::NotJson));
    }
}
