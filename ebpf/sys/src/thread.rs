//! The calling thread's CPU and disk priorities.
//!
//! Linux keeps both per thread: each call changes or reads the calling thread only.

use std::io;

use nix::{errno::Errno, unistd::gettid};

/// `ioprio_set`/`ioprio_get` "who" selector for one thread (`IOPRIO_WHO_PROCESS` with a tid).
const IOPRIO_WHO_PROCESS: libc::c_long = 1;
/// The class sits above the 13 bits of class data.
const IOPRIO_CLASS_SHIFT: libc::c_long = 13;

/// An I/O scheduling class (`ioprio_set(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// No class set: best effort, derived from the nice value.
    None,
    /// Real time.
    RealTime,
    /// Best effort.
    BestEffort,
    /// Served only when no other I/O is queued (schedulers with I/O priorities, such as
    /// mq-deadline and BFQ).
    Idle,
}

/// Sets the calling thread's nice value. Going below the current value needs
/// `CAP_SYS_NICE`; the kernel's refusal is returned.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    let tid = thread_id()?;
    // SAFETY: setpriority with integer arguments; it touches no memory of ours. (nix has no
    // wrapper for it.)
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's nice value.
pub fn thread_nice() -> io::Result<i32> {
    let tid = thread_id()?;
    // -1 is a valid nice value: errno tells an error apart.
    Errno::clear();
    // SAFETY: getpriority with integer arguments; it touches no memory of ours.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    match Errno::last() {
        Errno::UnknownErrno => Ok(nice),
        e if nice == -1 => Err(e.into()),
        _ => Ok(nice),
    }
}

/// Puts the calling thread's disk I/O in the [`IoClass::Idle`] class: its requests wait
/// while other requests are queued (mq-deadline still serves one waiting longer than its
/// `prio_aging_expire`, 10 s by default).
pub fn set_thread_io_idle() -> io::Result<()> {
    let prio = 3 << IOPRIO_CLASS_SHIFT;
    // SAFETY: ioprio_set on the calling thread (who = 0), integer arguments. (Neither nix nor
    // libc wraps it.)
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's I/O scheduling class.
pub fn thread_io_class() -> io::Result<IoClass> {
    // SAFETY: ioprio_get on the calling thread (who = 0), integer arguments.
    let prio =
        unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0 as libc::c_long) };
    if prio < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match prio >> IOPRIO_CLASS_SHIFT {
        1 => IoClass::RealTime,
        2 => IoClass::BestEffort,
        3 => IoClass::Idle,
        _ => IoClass::None,
    })
}

fn thread_id() -> io::Result<libc::id_t> {
    libc::id_t::try_from(gettid().as_raw()).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_change_for_the_calling_thread_only() {
        let main_nice = thread_nice().expect("nice");
        let main_class = thread_io_class().expect("class");
        let (nice, class) = std::thread::spawn(|| {
            set_thread_nice(7).expect("raising the nice value needs no privilege");
            set_thread_io_idle().expect("the idle class needs no privilege");
            (
                thread_nice().expect("nice"),
                thread_io_class().expect("class"),
            )
        })
        .join()
        .expect("thread");
        assert_eq!((nice, class), (7, IoClass::Idle));
        assert_eq!(thread_nice().expect("nice"), main_nice);
        assert_eq!(thread_io_class().expect("class"), main_class);
        assert_ne!(main_class, IoClass::Idle);
    }
}
