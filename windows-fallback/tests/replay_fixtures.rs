//! The replay fed with events in the parsed ETW format (fixtures/), checked against the
//! access log and gaps vt must produce: the task's tree only, pid reuse, pipes ignored,
//! names vt cannot give and lost events as gaps.

use std::path::PathBuf;

use access_log::AccessKind;
use serde_json::Value;
use windows_fallback::events::EtwEvent;
use windows_fallback::nt_paths::VolumeMap;
use windows_fallback::replay::Replay;

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_default()
}

fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

fn event(v: &Value) -> EtwEvent {
    let pid = u(v, "pid") as u32;
    let fo = u(v, "fo");
    let at = u(v, "at");
    match v["e"].as_str().unwrap_or_default() {
        "start" => EtwEvent::ProcessStart {
            pid,
            parent: u(v, "parent") as u32,
            image: s(v, "image"),
            at,
        },
        "stop" => EtwEvent::ProcessStop { pid, at },
        "create" => EtwEvent::Create {
            pid,
            irp: u(v, "irp"),
            file_object: fo,
            options: u(v, "options") as u32,
            path: s(v, "path"),
            at,
        },
        "end" => EtwEvent::OperationEnd {
            irp: u(v, "irp"),
            status: u(v, "status") as u32,
            info: u(v, "info"),
        },
        "read" => EtwEvent::Read {
            pid,
            file_object: fo,
            at,
        },
        "write" => EtwEvent::Write {
            pid,
            file_object: fo,
            at,
        },
        "dirs" => EtwEvent::DirEnum {
            pid,
            file_object: fo,
            at,
        },
        "rename" => EtwEvent::Rename {
            pid,
            file_object: fo,
            path: s(v, "path"),
            new_path: s(v, "new"),
            at,
        },
        "close" => EtwEvent::Close { file_object: fo },
        "lost" => EtwEvent::Lost {
            count: u(v, "count"),
        },
        other => panic!("unknown event {other}"),
    }
}

fn kind(name: &str) -> AccessKind {
    AccessKind::parse(name).unwrap_or_else(|| panic!("unknown kind {name}"))
}

#[test]
fn node_build_fixture() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/node_build.json")).expect("fixture");
    let volumes = VolumeMap::new(fixture["volumes"].as_array().expect("volumes").iter().map(
        |pair| {
            (
                pair[0].as_str().unwrap_or_default().to_owned(),
                pair[1].as_str().unwrap_or_default().to_owned(),
            )
        },
    ));
    let mut replay = Replay::new(u(&fixture, "root") as u32, volumes);
    for e in fixture["events"].as_array().expect("events") {
        replay.event(event(e));
    }
    let log = replay.finish();
    let got = log.sequence();
    let expected: Vec<(AccessKind, PathBuf)> = fixture["expected"]
        .as_array()
        .expect("expected")
        .iter()
        .map(|p| {
            (
                kind(p[0].as_str().unwrap_or_default()),
                PathBuf::from(p[1].as_str().unwrap_or_default()),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let gaps: Vec<&str> = log.gaps.iter().map(|g| g.reason.as_str()).collect();
    let expected_gaps = fixture["expected_gaps"].as_array().expect("gaps");
    assert_eq!(gaps.len(), expected_gaps.len(), "{gaps:?}");
    for (gap, want) in gaps.iter().zip(expected_gaps) {
        assert!(
            gap.contains(want.as_str().unwrap_or_default()),
            "{gap:?} vs {want}"
        );
    }
    assert_eq!(log.tracer, "etw");
}
