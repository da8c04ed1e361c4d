//! The ETW session (Windows only; NOT compiled on vt's Linux CI): the kernel file and
//! process providers, parsed into [`EtwEvent`]s for the replay.
//!
//! Needs the right to start a real-time session (Administrators or "Performance Log Users").

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use ferrisetw::EventRecord;
use ferrisetw::parser::Parser;
use ferrisetw::provider::Provider;
use ferrisetw::schema_locator::SchemaLocator;
use ferrisetw::trace::{TraceTrait, UserTrace};

use crate::events::EtwEvent;

const KERNEL_FILE: &str = "EDD08927-9CC4-4E65-B970-C2560FB5C289";
const KERNEL_PROCESS: &str = "22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716";
/// FILENAME | FILEIO | OP_END | CREATE | READ | WRITE | DELETE_PATH | RENAME_SETLINK_PATH.
const FILE_KEYWORDS: u64 = 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800;
/// WINEVENT_KEYWORD_PROCESS.
const PROCESS_KEYWORDS: u64 = 0x10;

pub struct Session {
    trace: UserTrace,
}

impl Session {
    /// Starts a session named `name` that sends every parsed event to `events`.
    pub fn start(name: &str, events: Sender<EtwEvent>) -> Result<Session, String> {
        // The name a file object was created with, for renames (ETW gives the new one).
        let names: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
        let file_events = events.clone();
        let file = Provider::by_guid(KERNEL_FILE)
            .any(FILE_KEYWORDS)
            .add_callback(move |record: &EventRecord, locator: &SchemaLocator| {
                if let Some(event) = parse_file(record, locator, &names) {
                    let _ = file_events.send(event);
                }
            })
            .build();
        let process = Provider::by_guid(KERNEL_PROCESS)
            .any(PROCESS_KEYWORDS)
            .add_callback(move |record: &EventRecord, locator: &SchemaLocator| {
                if let Some(event) = parse_process(record, locator) {
                    let _ = events.send(event);
                }
            })
            .build();
        let (trace, _handle) = UserTrace::new()
            .named(name.to_owned())
            .enable(file)
            .enable(process)
            .start_and_process()
            .map_err(|e| format!("cannot start the ETW session: {e:?}"))?;
        Ok(Session { trace })
    }

    /// Flushes and stops the session (events still in buffers are delivered first).
    pub fn stop(self) -> Result<(), String> {
        self.trace
            .stop()
            .map_err(|e| format!("cannot stop the ETW session: {e:?}"))
    }
}

fn parse_process(record: &EventRecord, locator: &SchemaLocator) -> Option<EtwEvent> {
    let schema = locator.event_schema(record).ok()?;
    let parser = Parser::create(record, &schema);
    let at = record.raw_timestamp() as u64;
    match record.event_id() {
        1 => Some(EtwEvent::ProcessStart {
            pid: parser.try_parse::<u32>("ProcessID").ok()?,
            parent: parser.try_parse::<u32>("ParentProcessID").ok()?,
            image: parser.try_parse::<String>("ImageName").ok()?,
            at,
        }),
        2 => Some(EtwEvent::ProcessStop {
            pid: parser.try_parse::<u32>("ProcessID").ok()?,
            at,
        }),
        _ => None,
    }
}

fn parse_file(
    record: &EventRecord,
    locator: &SchemaLocator,
    names: &Mutex<HashMap<u64, String>>,
) -> Option<EtwEvent> {
    let schema = locator.event_schema(record).ok()?;
    let parser = Parser::create(record, &schema);
    let pid = record.process_id();
    let at = record.raw_timestamp() as u64;
    let file_object = || parser.try_parse::<u64>("FileObject").ok();
    Some(match record.event_id() {
        12 => {
            let file_object = file_object()?;
            let path = parser.try_parse::<String>("FileName").ok()?;
            if let Ok(mut names) = names.lock() {
                names.insert(file_object, path.clone());
            }
            EtwEvent::Create {
                pid,
                irp: parser.try_parse::<u64>("Irp").ok()?,
                file_object,
                options: parser.try_parse::<u32>("CreateOptions").ok()?,
                path,
                at,
            }
        }
        24 => EtwEvent::OperationEnd {
            irp: parser.try_parse::<u64>("Irp").ok()?,
            status: parser.try_parse::<u32>("Status").ok()?,
            info: parser.try_parse::<u64>("ExtraInformation").ok()?,
        },
        15 => EtwEvent::Read {
            pid,
            file_object: file_object()?,
            at,
        },
        16 => EtwEvent::Write {
            pid,
            file_object: file_object()?,
            at,
        },
        10 => EtwEvent::DirEnum {
            pid,
            file_object: file_object()?,
            at,
        },
        26 => EtwEvent::Delete {
            pid,
            file_object: file_object()?,
            path: parser.try_parse::<String>("FilePath").ok()?,
            at,
        },
        27 => {
            let file_object = file_object()?;
            let old = names.lock().ok()?.get(&file_object).cloned()?;
            EtwEvent::Rename {
                pid,
                file_object,
                path: old,
                new_path: parser.try_parse::<String>("FilePath").ok()?,
                at,
            }
        }
        14 => {
            let file_object = file_object()?;
            if let Ok(mut names) = names.lock() {
                names.remove(&file_object);
            }
            EtwEvent::Close { file_object }
        }
        _ => return None,
    })
}
