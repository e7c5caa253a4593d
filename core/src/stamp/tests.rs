use super::*;
use chrono::{Local, NaiveDateTime, TimeZone};
use serde_json::{Map, Value};

use super::json::{EXPECT_DEVICE, EXPECT_TIME, EXPECT_U64, PAD_OVERHEAD};
use super::time::MAX_ISO_US;

fn parse_iso_us(s: &str) -> Option<u64> {
    TimeReader::default().text(s)
}

fn path(s: &str) -> FieldPath {
    FieldPath::parse(s).unwrap()
}

/// Decoding into the sender's stamp, for messages that carry all four values.
trait DecodeStamp {
    fn decode_stamp(&self, payload: &[u8]) -> Result<Stamp, StampError>;
}

impl DecodeStamp for JsonCarrier {
    fn decode_stamp(&self, payload: &[u8]) -> Result<Stamp, StampError> {
        self.decode(payload).map(|r| Stamp {
            device: match r.device {
                Some(DeviceId::Number(n)) => n,
                other => panic!("not a numeric device: {other:?}"),
            },
            seq: r.seq.expect("a sequence number"),
            intended_us: r.intended_us,
            sent_us: r.sent_us,
        })
    }
}
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
        .decode_stamp(payload.as_bytes())
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
    assert_eq!(c.decode_stamp(text.as_bytes()), Ok(stamp));
    stamp.sent_us = MAX_ISO_US + 1;
    let text = String::from_utf8(encode(&c, &stamp)).unwrap();
    assert!(text.contains(r#""sent_us":253402300800000000}"#));
    assert_eq!(c.decode_stamp(text.as_bytes()), Ok(stamp));
}

#[test]
fn json_round_trips_in_both_time_formats() {
    for format in [TimeFormat::Micros, TimeFormat::Iso8601] {
        let c = carrier(format);
        assert_eq!(c.decode_stamp(&encode(&c, &STAMP)), Ok(STAMP));
    }
}

#[test]
fn encode_clears_what_was_in_the_buffer() {
    let c = carrier(TimeFormat::Micros);
    let mut out = b"garbage".to_vec();
    c.encode(&STAMP, &mut out);
    assert_eq!(c.decode_stamp(&out), Ok(STAMP));
}

#[test]
fn custom_field_names_round_trip_and_are_escaped() {
    let fields = JsonFields {
        device: Some(path("deviceId")),
        seq: Some(path("n\"o")),
        intended: Some(path("t0")),
        sent: path("lastUpdated"),
    };
    let c = JsonCarrier::new(fields, TimeFormat::Iso8601, None, 0);
    let out = encode(&c, &STAMP);
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["deviceId"], 42);
    assert_eq!(value["n\"o"], 7);
    assert_eq!(value["lastUpdated"], "2026-11-25T01:02:03.124000Z");
    assert_eq!(c.decode_stamp(&out), Ok(STAMP));
}

#[test]
fn escaped_keys_in_payload_match_configured_names() {
    let payload = r#"{"dev\u0069ce":1,"seq":2,"sent_us":3}"#;
    let stamp = carrier(TimeFormat::Micros)
        .decode_stamp(payload.as_bytes())
        .unwrap();
    assert_eq!(stamp.device, 1);
}

#[test]
fn foreign_payload_with_naive_last_updated_decodes_as_local_time() {
    let fields = JsonFields {
        device: Some(path("deviceId")),
        sent: path("lastUpdated"),
        ..JsonFields::default()
    };
    let c = JsonCarrier::new(fields, TimeFormat::Micros, None, 0);
    let payload =
        br#"{"temp":21.5,"deviceId":3,"seq":9,"lastUpdated":"2026-11-25T01:02:03.123456"}"#;
    let expected = local_us("2026-11-25T01:02:03.123456");
    assert_eq!(
        c.decode_stamp(payload),
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
        .decode_stamp(br#"{"device":1,"seq":2,"sent_us":3}"#)
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
        assert_eq!(c.decode_stamp(&out), Ok(STAMP));
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
    assert_eq!(c.decode_stamp(&out), Ok(STAMP));

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
            carrier(TimeFormat::Micros).decode_stamp(&full[..cut]),
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
        carrier(TimeFormat::Micros).decode_stamp(&[0xff, 0x00, 0x7b, 0x13]),
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
            r#"{"device":false,"seq":1,"sent_us":2}"#,
            wrong("device", EXPECT_DEVICE),
        ),
        (
            r#"{"device":4294967296,"seq":1,"sent_us":2}"#,
            wrong("device", EXPECT_DEVICE),
        ),
        (
            r#"{"device":-1,"seq":1,"sent_us":2}"#,
            wrong("device", EXPECT_DEVICE),
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
            r#"{"device":1,"seq":1,"sent_us":-1e3}"#,
            wrong("sent_us", EXPECT_TIME),
        ),
    ];
    for (payload, expected) in cases {
        assert_eq!(json_err(payload), expected, "{payload}");
    }
    assert_eq!(
        json_err(r#"{"device":true,"seq":"y"}"#),
        wrong("device", EXPECT_DEVICE),
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
        .decode_stamp(payload.as_bytes())
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
            expected: EXPECT_DEVICE,
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
        prop_assert_eq!(c.decode_stamp(&out), Ok(stamp));
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
        let _ = carrier(TimeFormat::Micros).decode_stamp(&bytes);
        let _ = BinaryCarrier::decode(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = HeaderCarrier::decode([(HeaderCarrier::DEVICE, &*text), (HeaderCarrier::SENT, &*text)]);
    }

    #[test]
    fn json_decode_never_panics_on_json_like_text(text in r#"\{("(device|seq|sent_us|intended_us|x)":(-?[0-9]{1,25}|"[0-9T:. Z+-]{0,30}"|\[|\{|true|null|1\.5)[,}]?){0,6}"#) {
        let _ = carrier(TimeFormat::Micros).decode_stamp(text.as_bytes());
    }

    #[test]
    fn every_truncation_of_a_valid_payload_is_not_json(stamp in any_stamp(), cut in 0usize..100) {
        let c = carrier(TimeFormat::Iso8601);
        let out = encode(&c, &stamp);
        let cut = cut.min(out.len() - 1);
        prop_assert_eq!(c.decode_stamp(&out[..cut]), Err(StampError::NotJson));
    }
}

fn fields(spec: &str) -> JsonFields {
    JsonFields::parse(spec).unwrap()
}

fn berlin() -> Zone {
    "Europe/Berlin".parse().unwrap()
}

#[test]
fn the_prototype_asset_tracker_body_is_measured_from_its_naive_local_timestamp() {
    // The team's earlier prototype: a string device id and datetime.now().isoformat().
    let c = JsonCarrier::new(
        fields("sent=lastUpdated,device=unitMacId"),
        TimeFormat::Auto,
        None,
        0,
    )
    .with_zone(berlin());
    let payload = br#"{"unitMacId":"VZW_LH_UNIT_007","location":{"lat":52.5,"lon":13.4},
        "battery":87,"lastUpdated":"2026-07-01T12:00:00.250000"}"#;
    let got = c.decode(payload).unwrap();
    assert_eq!(got.device, Some(DeviceId::Name("VZW_LH_UNIT_007".into())));
    assert_eq!(got.seq, None);
    // Berlin is UTC+2 in July.
    assert_eq!(
        got.sent_us,
        parse_iso_us("2026-07-01T10:00:00.25Z").unwrap()
    );
    assert_eq!(got.intended_us, got.sent_us);
}

#[test]
fn a_timestamp_alone_is_a_stamp() {
    let c = JsonCarrier::new(fields("-,-,-,ts"), TimeFormat::Auto, None, 0);
    let got = c.decode(br#"{"ts":1733412345123,"v":1}"#).unwrap();
    assert_eq!((got.device, got.seq), (None, None));
    assert_eq!(got.sent_us, 1_733_412_345_123_000);
    let mut out = Vec::new();
    c.encode(&STAMP, &mut out);
    assert_eq!(out, br#"{"ts":1795568523124000}"#);
}

#[test]
fn nested_paths_are_written_as_objects_merged_with_the_body_and_read_back() {
    let body = JsonCarrier::parse_body(r#"{"meta":{"source":"x","sentAt":0},"v":1}"#).unwrap();
    let c = JsonCarrier::new(
        fields("/meta/device~1id,meta.seq,-,/meta/sentAt"),
        TimeFormat::Auto,
        Some(&body),
        0,
    );
    let out = encode(&c, &STAMP);
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["meta"]["device/id"], 42);
    assert_eq!(value["meta"]["seq"], 7);
    assert_eq!(
        value["meta"]["sentAt"], STAMP.sent_us,
        "the stamp wins a clash"
    );
    assert_eq!(
        value["meta"]["source"], "x",
        "the body's fields are merged in"
    );
    assert_eq!(value["v"], 1);
    let got = c.decode(&out).unwrap();
    assert_eq!(got.device, Some(DeviceId::Number(42)));
    assert_eq!((got.seq, got.sent_us), (Some(7), STAMP.sent_us));
    // A differently shaped action: the same paths inside other fields are not taken.
    let other = br#"{"x":{"meta":{"sentAt":1}},"meta":{"device/id":1,"seq":2,"sentAt":3}}"#;
    assert_eq!(c.decode(other).unwrap().sent_us, 3);
    assert_eq!(
        c.decode(br#"{"meta":5,"x":1}"#),
        Err(StampError::Missing {
            field: "/meta/device~1id".into()
        })
    );
}

#[test]
fn string_device_ids_are_rendered_from_a_template() {
    let template = crate::plan::Template::parse("VZW_LH_UNIT_{device:03}\"").unwrap();
    let c = JsonCarrier::new(JsonFields::default(), TimeFormat::Auto, None, 0)
        .with_device_id(DeviceIdFormat::from_template(&template));
    let out = encode(&c, &Stamp { device: 7, ..STAMP });
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["device"], "VZW_LH_UNIT_007\"");
    let out = encode(
        &c,
        &Stamp {
            device: 12_345,
            ..STAMP
        },
    );
    let got = c.decode(&out).unwrap();
    assert_eq!(
        got.device,
        Some(DeviceId::Name("VZW_LH_UNIT_12345\"".into()))
    );
}

#[test]
fn bare_numbers_are_read_by_magnitude_unless_a_unit_is_forced() {
    let auto = TimeReader::default();
    let t = 1_733_412_345_123_456_u64;
    assert_eq!(auto.integer(1_733_412_345), Some(1_733_412_345_000_000));
    assert_eq!(auto.integer(1_733_412_345_123), Some(1_733_412_345_123_000));
    assert_eq!(auto.integer(t), Some(t));
    assert_eq!(auto.integer(t * 1_000 + 789), Some(t));
    assert_eq!(auto.integer(5), Some(5), "outside every window: µs");
    assert_eq!(auto.float(1_733_412_345.123_456), Some(t));
    assert_eq!(auto.text("1733412345123"), Some(1_733_412_345_123_000));
    assert_eq!(auto.text("1733412345.123456"), Some(t));
    let forced = |f: &str| TimeReader {
        format: f.parse().unwrap(),
        zone: Zone::Local,
    };
    assert_eq!(forced("ms").integer(5), Some(5_000));
    assert_eq!(forced("s").integer(5), Some(5_000_000));
    assert_eq!(forced("ns").integer(5_000), Some(5));
    assert_eq!(forced("us").integer(1_733_412_345), Some(1_733_412_345));
    assert_eq!(auto.float(-1.0), None);
    assert_eq!(auto.float(f64::NAN), None);
}

#[test]
fn bad_stamp_fields_time_formats_and_zones_name_what_was_expected() {
    let err = |spec: &str| JsonFields::parse(spec).unwrap_err();
    assert!(
        err("a,b,c").contains("four comma-separated"),
        "{}",
        err("a,b,c")
    );
    assert!(err("device,seq,intended,-").contains("send-time"));
    assert!(err("device=x").contains("send-time"));
    assert!(err("sent=a,when=b").contains("`when` is not a stamp value"));
    assert!(err("sent=a,sent=b").contains("twice"));
    assert!(err("sent=a..b").contains("not a field path"));
    assert!(err("sent=/").contains("not a field path"));
    assert_eq!(
        fields("unitMacId,-,-,lastUpdated"),
        fields("sent=lastUpdated, device=unitMacId")
    );
    let e = "epoch".parse::<TimeFormat>().unwrap_err();
    assert!(e.contains("auto, s, ms"), "{e}");
    let e = "Mars/Olympus".parse::<Zone>().unwrap_err();
    assert!(e.contains("IANA"), "{e}");
}

fn realistic_time() -> impl Strategy<Value = u64> {
    // 2001-09-09 .. 2286-11-20: where every numeric unit can be told by magnitude.
    1_000_000_000_000_000u64..10_000_000_000_000_000
}

proptest! {
    #[test]
    fn every_time_format_round_trips_through_an_auto_reader(
        us in realistic_time(),
        format in prop_oneof![
            Just("auto"), Just("s"), Just("ms"), Just("us"), Just("ns"),
            Just("iso8601"), Just("iso8601-local"),
        ],
        zone in prop_oneof![Just("UTC"), Just("Europe/Berlin"), Just("America/New_York"), Just("Asia/Kolkata")],
    ) {
        let format: TimeFormat = format.parse().unwrap();
        let zone: Zone = zone.parse().unwrap();
        let writer = JsonCarrier::new(fields("-,-,-,t"), format, None, 0).with_zone(zone);
        let reader = JsonCarrier::new(fields("-,-,-,t"), TimeFormat::Auto, None, 0).with_zone(zone);
        let out = encode(&writer, &Stamp { sent_us: us, ..STAMP });
        let got = reader.decode(&out).unwrap().sent_us;
        let expected = if format == TimeFormat::Millis { us / 1_000 * 1_000 } else { us };
        if format == TimeFormat::Iso8601Local {
            // A wall-clock time in a DST overlap reads back as the earlier instant.
            prop_assert!(got == expected || got + 3_600_000_000 == expected, "{}", String::from_utf8_lossy(&out));
        } else if format == TimeFormat::Seconds {
            prop_assert!(got.abs_diff(expected) <= 2, "{} -> {got}", String::from_utf8_lossy(&out));
        } else {
            prop_assert_eq!(got, expected, "{}", String::from_utf8_lossy(&out));
        }
    }
}

/// The prototype's asset-tracker body as a template: ten per-message values.
pub(super) const TRACKER_TEMPLATE: &str = r#"{
    "unitMacId": "VZW_LH_UNIT_{device:03}",
    "msgNo": "{seq}",
    "batch": "{counter}",
    "reported": "{now:iso8601}",
    "battery": "{int:0..100}",
    "temp": "{float:15..30:1}",
    "location": {"lat": "{walk:40.5..40.9:0.001}", "lon": "{walk:-74.2..-73.7:0.001}"},
    "status": "{choice:moving|parked|charging}",
    "note": "unit {device} says {{hi}} at {now:ms}",
    "filler": "{pad:16}"
}"#;

fn tracker() -> JsonCarrier {
    let body = JsonCarrier::parse_body(TRACKER_TEMPLATE).unwrap();
    JsonCarrier::templated(JsonFields::default(), TimeFormat::Auto, Some(&body), 0).unwrap()
}

#[test]
fn a_template_fills_typed_values_per_message_and_walks_stay_in_range() {
    let c = tracker();
    let mut state = c.device_values(7);
    let mut out = Vec::new();
    let mut last_lat = None;
    for seq in 0..500 {
        c.encode_for(
            &Stamp {
                device: 7,
                seq,
                ..STAMP
            },
            &mut state,
            &mut out,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["unitMacId"], "VZW_LH_UNIT_007");
        assert_eq!(v["msgNo"], seq);
        assert_eq!(v["batch"], seq, "one counter per carrier");
        assert_eq!(v["reported"], "2026-11-25T01:02:03.124000Z");
        assert!((0..=100).contains(&v["battery"].as_i64().unwrap()));
        let temp = v["temp"].as_f64().unwrap();
        assert!((15.0..=30.0).contains(&temp), "{temp}");
        let lat = v["location"]["lat"].as_f64().unwrap();
        assert!((40.5..=40.9).contains(&lat), "{lat}");
        if let Some(last) = last_lat {
            assert!(
                f64::abs(lat - last) <= 0.001 + 0.005,
                "a walk step: {last} → {lat}"
            );
        }
        last_lat = Some(lat);
        assert!(["moving", "parked", "charging"].contains(&v["status"].as_str().unwrap()));
        assert_eq!(v["note"], "unit 7 says {hi} at 1795568523124");
        assert_eq!(v["filler"], "x".repeat(16));
        assert_eq!(c.decode_stamp(&out).unwrap().seq, seq);
    }
    // The same device gives the same values on every run; another device its own.
    let first = |device: u32| {
        let mut out = Vec::new();
        c.encode_for(
            &Stamp { device, ..STAMP },
            &mut c.device_values(device),
            &mut out,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        (v["battery"].clone(), v["temp"].clone())
    };
    assert_eq!(first(3), first(3));
    assert_ne!((first(3), first(4)), (first(4), first(4)));
}

#[test]
fn bad_templates_name_the_placeholder_and_what_was_expected() {
    let err = |body: &str| {
        let body = JsonCarrier::parse_body(body).unwrap();
        JsonCarrier::templated(JsonFields::default(), TimeFormat::Auto, Some(&body), 0)
            .unwrap_err()
            .to_string()
    };
    let e = err(r#"{"a":"{temperature}"}"#);
    assert!(
        e.contains("`{temperature}`") && e.contains("{int:A..B}"),
        "{e}"
    );
    assert!(err(r#"{"a":"{int:9..1}"}"#).contains("A ≤ B"));
    assert!(err(r#"{"a":"{float:x..1}"}"#).contains("{float:A..B}"));
    assert!(err(r#"{"a":"{walk:0..1}"}"#).contains("STEP"));
    assert!(err(r#"{"a":"{now:fortnights}"}"#).contains("not a time format"));
    assert!(err(r#"{"a":["{seq:1}"]}"#).contains("takes no arguments"));
    assert!(err(r#"{"a":"{choice:}"}"#).contains("at least one option"));
    assert!(err(r#"{"a":"open {brace"}"#).contains("not closed"));
    // Without placeholders a body is written as it was.
    let body = JsonCarrier::parse_body(r#"{"a":"plain } text","b":[1,{"c":null}]}"#).unwrap();
    let c =
        JsonCarrier::templated(JsonFields::default(), TimeFormat::Auto, Some(&body), 0).unwrap();
    let v: Value = serde_json::from_slice(&encode(&c, &STAMP)).unwrap();
    assert_eq!(v["a"], "plain } text");
    assert_eq!(v["b"], serde_json::json!([1, {"c": null}]));
}

/// Run with `cargo test --release -p iotload-core -- --ignored --nocapture template_cost`.
#[test]
#[ignore = "a benchmark: prints figures"]
fn template_cost_per_message_against_a_static_body() {
    let static_body = JsonCarrier::parse_body(
        r#"{"unitMacId":"VZW_LH_UNIT_007","msgNo":1,"batch":1,"reported":"2026-11-25T01:02:03.124000Z",
            "battery":87,"temp":21.5,"location":{"lat":40.7,"lon":-73.9},"status":"parked",
            "note":"unit 7 says {hi} at 1795568523124","filler":"xxxxxxxxxxxxxxxx"}"#,
    )
    .unwrap();
    let fixed = JsonCarrier::new(
        JsonFields::default(),
        TimeFormat::Auto,
        Some(&static_body),
        0,
    );
    let templated = tracker();
    let messages = 2_000_000u64;
    let cost = |c: &JsonCarrier| {
        let mut state = c.device_values(7);
        let mut out = Vec::with_capacity(512);
        let start = std::time::Instant::now();
        let mut bytes = 0;
        for seq in 0..messages {
            c.encode_for(&Stamp { seq, ..STAMP }, &mut state, &mut out);
            bytes += out.len();
        }
        (
            start.elapsed().as_nanos() as f64 / messages as f64,
            bytes / messages as usize,
        )
    };
    // Interleaved, three rounds each: the machine is shared.
    for round in 1..=3 {
        let (s_ns, s_len) = cost(&fixed);
        let (t_ns, t_len) = cost(&templated);
        println!(
            "round {round}: static body {s_ns:.0} ns/msg ({s_len} B), 10-value template \
             {t_ns:.0} ns/msg ({t_len} B), ratio {:.2}",
            t_ns / s_ns
        );
    }
}

#[test]
fn the_record_timestamp_can_be_the_send_time() {
    let c = JsonCarrier::new(
        fields("sent=@timestamp,device=deviceId"),
        TimeFormat::Auto,
        None,
        0,
    );
    let got = c
        .decode_with_record_time(br#"{"deviceId":"A"}"#, Some(1_733_412_345_123_000))
        .unwrap();
    assert_eq!(got.sent_us, 1_733_412_345_123_000);
    assert_eq!(got.device, Some(DeviceId::Name("A".into())));
    // The loadgen writes no send-time field: the transport carries it.
    assert_eq!(encode(&c, &STAMP), br#"{"deviceId":42}"#);
    // With only the record timestamp, the payload need not be JSON at all.
    let only = JsonCarrier::new(fields("-,-,-,@timestamp"), TimeFormat::Auto, None, 0);
    assert_eq!(
        only.decode_with_record_time(b"\x00 not json", Some(5))
            .unwrap()
            .sent_us,
        5
    );
    assert_eq!(
        only.decode_with_record_time(b"{}", None),
        Err(StampError::Missing {
            field: "@timestamp".into()
        })
    );
    assert!(
        JsonFields::parse("device=@timestamp,sent=t")
            .unwrap_err()
            .contains("only be the send time")
    );
}
