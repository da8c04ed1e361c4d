//! The kernel events vt consumes, as plain data (what `etw.rs` parses them into).
//!
//! From `Microsoft-Windows-Kernel-Process` ({22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}):
//! ProcessStart (id 1) and ProcessStop (id 2). From `Microsoft-Windows-Kernel-File`
//! ({EDD08927-9CC4-4E65-B970-C2560FB5C289}): Create (12), Cleanup (13), Close (14), Read
//! (15), Write (16), DirEnum (10), SetDelete/DeletePath (26), RenamePath (27) and
//! OperationEnd (24), which carries the status of the request `irp` started. The ETW
//! session reports events it had to drop as a lost-event count.

/// Process and thread ids are the kernel's; `at` is the event timestamp in 100 ns units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtwEvent {
    ProcessStart {
        pid: u32,
        parent: u32,
        image: String,
        at: u64,
    },
    ProcessStop {
        pid: u32,
        at: u64,
    },
    /// `NtCreateFile`: `options` is CreateOptions, whose high byte is the disposition.
    Create {
        pid: u32,
        irp: u64,
        file_object: u64,
        options: u32,
        path: String,
        at: u64,
    },
    /// The end of request `irp`: `status` is the NTSTATUS, `info` the IoStatus
    /// information (for a create: FILE_CREATED, FILE_OPENED, …).
    OperationEnd {
        irp: u64,
        status: u32,
        info: u64,
    },
    Read {
        pid: u32,
        file_object: u64,
        at: u64,
    },
    Write {
        pid: u32,
        file_object: u64,
        at: u64,
    },
    /// A directory listing on an open directory handle.
    DirEnum {
        pid: u32,
        file_object: u64,
        at: u64,
    },
    /// Delete-on-close or `FileDispositionInformation` on an open file.
    Delete {
        pid: u32,
        file_object: u64,
        path: String,
        at: u64,
    },
    /// `FileRenameInformation`: `path` is the old name, `new_path` the target.
    Rename {
        pid: u32,
        file_object: u64,
        path: String,
        new_path: String,
        at: u64,
    },
    Close {
        file_object: u64,
    },
    /// The session dropped events (buffers full): whatever they said is unknown.
    Lost {
        count: u64,
    },
}

/// NTSTATUS values the replay tells apart.
pub mod status {
    pub const SUCCESS: u32 = 0;
    pub const OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;
    pub const OBJECT_NAME_COLLISION: u32 = 0xC000_0035;
    pub const OBJECT_PATH_NOT_FOUND: u32 = 0xC000_003A;
    pub const NO_SUCH_FILE: u32 = 0xC000_000F;

    pub fn is_success(status: u32) -> bool {
        status & 0xC000_0000 != 0xC000_0000
    }

    /// A failed lookup: the name (or a directory on the way) does not exist.
    pub fn is_not_found(status: u32) -> bool {
        matches!(
            status,
            OBJECT_NAME_NOT_FOUND | OBJECT_PATH_NOT_FOUND | NO_SUCH_FILE
        )
    }
}

/// CreateOptions and IoStatus information values.
pub mod create {
    /// `options >> 24`.
    pub const DISPOSITION_SHIFT: u32 = 24;
    pub const FILE_SUPERSEDE: u32 = 0;
    pub const FILE_OPEN: u32 = 1;
    pub const FILE_CREATE: u32 = 2;
    pub const FILE_OPEN_IF: u32 = 3;
    pub const FILE_OVERWRITE: u32 = 4;
    pub const FILE_OVERWRITE_IF: u32 = 5;
    /// Low 24 bits.
    pub const FILE_DIRECTORY_FILE: u32 = 0x0000_0001;
    pub const FILE_DELETE_ON_CLOSE: u32 = 0x0000_1000;
    /// IoStatus.Information after a successful create.
    pub const INFO_SUPERSEDED: u64 = 0;
    pub const INFO_OPENED: u64 = 1;
    pub const INFO_CREATED: u64 = 2;
    pub const INFO_OVERWRITTEN: u64 = 3;
}
