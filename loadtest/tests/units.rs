//! Small pure pieces: value parsers, the verification pattern, error classification,
//! and the charts.
use std::{io, time::Duration};

use sluice_loadtest::{
    cli::{parse_duration, parse_size},
    pattern,
    report::{svg, PercentilePoint},
    ErrorClass, ErrorCounts,
};

#[test]
fn durations_and_sizes_parse() {
    assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("-1").is_err());
    assert!(parse_duration("soon").is_err());
    assert_eq!(parse_size("64").unwrap(), 64);
    assert_eq!(parse_size("4k").unwrap(), 4096);
    assert_eq!(parse_size("128KiB").unwrap(), 128 << 10);
    assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
    assert!(parse_size("1.5k").is_err());
    assert!(parse_size("").is_err());
}

#[test]
fn pattern_catches_shifted_and_corrupted_chunks() {
    let p = pattern::buffer(1000);
    let stream: Vec<u8> = (0..5000u64).map(|i| (i % 251) as u8).collect();
    for off in [0usize, 1, 250, 251, 1000, 3999] {
        assert!(pattern::matches(&p, off as u64, &stream[off..off + 1000]));
        assert!(!pattern::matches(
            &p,
            off as u64 + 1,
            &stream[off..off + 1000]
        ));
    }
    let mut bad = stream[..1000].to_vec();
    bad[500] ^= 1;
    assert!(!pattern::matches(&p, 0, &bad));
}

#[test]
fn io_errors_are_classified() {
    let class = |k: io::ErrorKind| ErrorClass::of(&io::Error::from(k));
    assert_eq!(class(io::ErrorKind::ConnectionRefused), ErrorClass::Refused);
    assert_eq!(class(io::ErrorKind::ConnectionReset), ErrorClass::Reset);
    assert_eq!(class(io::ErrorKind::BrokenPipe), ErrorClass::Reset);
    assert_eq!(class(io::ErrorKind::TimedOut), ErrorClass::Timeout);
    assert_eq!(class(io::ErrorKind::UnexpectedEof), ErrorClass::ShortRead);
    assert_eq!(class(io::ErrorKind::AddrNotAvailable), ErrorClass::Other);
    let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
    assert_eq!(ErrorClass::of(&tls), ErrorClass::Tls);
    let mut counts = ErrorCounts::default();
    for c in ErrorClass::ALL {
        counts.add(c);
    }
    assert_eq!(counts.total(), ErrorClass::ALL.len() as u64);
    assert!(ErrorClass::ALL.iter().all(|c| counts.get(*c) == 1));
}

#[test]
fn percentile_chart_is_svg() {
    assert!(svg::percentile_chart(&[]).is_none());
    let pts: Vec<PercentilePoint> = [0.0, 50.0, 99.0, 99.999, 100.0]
        .iter()
        .map(|&p| PercentilePoint {
            percentile: p,
            latency_us: p + 10.0,
        })
        .collect();
    let s = svg::percentile_chart(&pts).unwrap();
    assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
    assert_eq!(s.matches("<polyline").count(), 1);
    assert!(s.contains("99.9%"));
}
