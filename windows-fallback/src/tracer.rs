//! vt's side on Windows (NOT compiled on vt's Linux CI): an ETW session, the task in a job
//! object (closing it kills the tree), the replay when the job is empty.

use std::os::windows::io::AsRawHandle;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use access_log::{AccessLog, Traced, Tracer, TracerError};
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JobObjectBasicAccountingInformation, JobObjectExtendedLimitInformation,
    QueryInformationJobObject, SetInformationJobObject,
};

use crate::etw::Session;
use crate::events::EtwEvent;
use crate::nt_paths::VolumeMap;
use crate::replay::Replay;

pub struct WinTracer {
    /// From `QueryDosDeviceW` for each drive letter, taken once at startup.
    pub volumes: VolumeMap,
}

struct Job(HANDLE);

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: closing our job handle; KILL_ON_JOB_CLOSE ends whatever is left.
        unsafe { CloseHandle(self.0) };
    }
}

impl Tracer for WinTracer {
    fn name(&self) -> &'static str {
        "etw"
    }

    fn spawn(&self, mut command: Command) -> Result<Box<dyn Traced>, TracerError> {
        let (sender, events) = channel();
        let session = Session::start(&format!("vt-{}", std::process::id()), sender)?;
        // SAFETY: an anonymous job object with default security.
        let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if job.is_null() {
            return Err(std::io::Error::last_os_error().into());
        }
        let job = Job(job);
        let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: setting limits on our job from a live, correctly sized struct.
        unsafe {
            SetInformationJobObject(
                job.0,
                JobObjectExtendedLimitInformation,
                (&limits as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        let child = command.spawn()?;
        // A process the child starts before this line is outside the job (but still in
        // the ETW tree); everything after is inside.
        // SAFETY: assigning the child's process handle to our job.
        unsafe { AssignProcessToJobObject(job.0, child.as_raw_handle() as HANDLE) };
        Ok(Box::new(WinTraced {
            root: child.id(),
            child,
            job,
            session,
            events,
            volumes: self.volumes.clone(),
        }))
    }
}

struct WinTraced {
    root: u32,
    child: Child,
    job: Job,
    session: Session,
    events: Receiver<EtwEvent>,
    volumes: VolumeMap,
}

impl Traced for WinTraced {
    fn id(&self) -> u32 {
        self.root
    }

    fn wait(mut self: Box<Self>) -> Result<(ExitStatus, AccessLog), TracerError> {
        let status = self.child.wait()?;
        // Until no process is left in the job.
        loop {
            let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION = unsafe { std::mem::zeroed() };
            // SAFETY: querying our job into a live, correctly sized struct.
            let ok = unsafe {
                QueryInformationJobObject(
                    self.job.0,
                    JobObjectBasicAccountingInformation,
                    (&mut info as *mut JOBOBJECT_BASIC_ACCOUNTING_INFORMATION).cast(),
                    std::mem::size_of::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>() as u32,
                    std::ptr::null_mut(),
                )
            };
            if ok == 0 || info.ActiveProcesses == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Stopping flushes the session's buffers; then the channel holds every event.
        let stopped = self.session.stop();
        let mut replay = Replay::new(self.root, self.volumes.clone());
        for event in self.events.try_iter() {
            replay.event(event);
        }
        let mut log = replay.finish();
        if let Err(why) = stopped {
            log.gap(self.root, "etw", why);
        }
        Ok((status, log))
    }
}
