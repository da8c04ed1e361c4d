//! The replay fed with event streams in the injected library's format (fixtures/), checked
//! against the access log and gaps vt must produce from them.

use std::path::PathBuf;

use access_log::AccessKind;
use macos_fallback::event::{Call, Event, FrameDecoder, encode};
use macos_fallback::replay::{Replay, SeenProcess};
use serde_json::Value;

fn text(v: &Value, key: &str) -> Vec<u8> {
    v[key].as_str().unwrap_or_default().as_bytes().to_vec()
}

fn int(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_default()
}

fn event(v: &Value) -> Event {
    let call = match v["call"].as_str().unwrap_or_default() {
        "hello" => Call::Hello {
            ppid: int(v, "ppid") as u32,
            exe: text(v, "exe"),
            cwd: text(v, "cwd"),
        },
        "open" => Call::Open {
            dir: text(v, "dir"),
            path: text(v, "path"),
            flags: int(v, "flags") as i32,
            result: int(v, "result") as i32,
        },
        "probe" => Call::Probe {
            path: text(v, "path"),
            follow: v["follow"].as_bool().unwrap_or(true),
            result: int(v, "result") as i32,
        },
        "list" => Call::ListDir {
            path: text(v, "path"),
            result: int(v, "result") as i32,
        },
        "exec" => Call::Exec {
            path: text(v, "path"),
            result: int(v, "result") as i32,
        },
        "mkdir" => Call::Mkdir {
            path: text(v, "path"),
            result: int(v, "result") as i32,
        },
        "unlink" => Call::Unlink {
            path: text(v, "path"),
            result: int(v, "result") as i32,
        },
        "rename" => Call::Rename {
            from: text(v, "from"),
            to: text(v, "to"),
            result: int(v, "result") as i32,
        },
        "forked" => Call::Forked {
            child: int(v, "child") as u32,
        },
        other => panic!("unknown call {other} in the fixture"),
    };
    Event {
        pid: int(v, "pid") as u32,
        at_ns: int(v, "t") as u64,
        call,
    }
}

fn kind(name: &str) -> AccessKind {
    AccessKind::parse(name).unwrap_or_else(|| panic!("unknown kind {name}"))
}

#[test]
fn sh_node_build_fixture() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/sh_node_build.json")).expect("fixture");
    let events: Vec<Event> = fixture["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(event)
        .collect();
    // Through the wire framing first, in awkward pieces, as the socket delivers them.
    let stream: Vec<u8> = events
        .iter()
        .flat_map(|e| encode(e).expect("encode"))
        .collect();
    let mut decoder = FrameDecoder::default();
    let mut decoded = Vec::new();
    for piece in stream.chunks(5) {
        decoded.extend(decoder.push(piece).expect("frames"));
    }
    decoder.finish().expect("whole stream");
    assert_eq!(decoded, events);

    let seen: Vec<SeenProcess> = fixture["seen"]
        .as_array()
        .expect("seen")
        .iter()
        .map(|s| SeenProcess {
            pid: int(s, "pid") as u32,
            exe: PathBuf::from(s["exe"].as_str().unwrap_or_default()),
        })
        .collect();
    let mut replay = Replay::new();
    replay.events(decoded.into_iter().rev()); // arrival order does not matter, time does
    let log = replay.finish(&seen);

    let got = log.sequence();
    let expected: Vec<(AccessKind, PathBuf)> = fixture["expected"]
        .as_array()
        .expect("expected")
        .iter()
        .map(|pair| {
            (
                kind(pair[0].as_str().unwrap_or_default()),
                PathBuf::from(pair[1].as_str().unwrap_or_default()),
            )
        })
        .collect();
    assert_eq!(got, expected);

    let gaps: Vec<(u32, String)> = log.gaps.iter().map(|g| (g.pid, g.reason.clone())).collect();
    let expected_gaps = fixture["expected_gaps"].as_array().expect("gaps");
    assert_eq!(gaps.len(), expected_gaps.len(), "{gaps:?}");
    for ((pid, reason), want) in gaps.iter().zip(expected_gaps) {
        assert_eq!(*pid as i64, want[0].as_i64().unwrap_or_default());
        assert!(
            reason.contains(want[1].as_str().unwrap_or_default()),
            "{reason:?} lacks {:?}",
            want[1]
        );
    }
    assert!(
        !log.is_complete(),
        "SIP-protected work must leave the log incomplete"
    );
    assert_eq!(log.tracer, "interpose");
}
