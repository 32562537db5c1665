//! Waiting for descriptors: a wake-up descriptor and a reusable `poll(2)` set.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    time::Duration,
};

use nix::sys::eventfd::{EfdFlags, EventFd};

/// A descriptor another thread makes readable to wake a thread waiting in [`PollSet::wait`]
/// (an `eventfd`, non-blocking, close-on-exec).
#[derive(Debug)]
pub struct Wakeup(EventFd);

impl Wakeup {
    /// A new one, not woken.
    pub fn new() -> io::Result<Self> {
        Ok(Self(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?))
    }

    /// Makes it readable. Never blocks: a full counter (`EAGAIN`) is readable already.
    pub fn wake(&self) {
        let _ = self.0.write(1);
    }

    /// Makes it unreadable again (until the next [`Wakeup::wake`]).
    pub fn clear(&self) {
        // Non-blocking: an empty counter (EAGAIN) is what clearing wants.
        let _ = self.0.read();
    }
}

impl AsFd for Wakeup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Descriptors to wait on until one is readable (or reports an error or hang-up), refilled for
/// each wait without allocating once it has grown.
///
/// It keeps the kernel's `pollfd` entries itself, where nix's `PollFd` would borrow each
/// descriptor for as long as the set lives: a thread that refills the set every round from
/// descriptors it changes between rounds can then keep one set. A descriptor closed before
/// [`PollSet::wait`] is only reported as invalid (`POLLNVAL`, counted as ready).
#[derive(Debug, Default)]
pub struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the set (keeping its memory).
    pub fn clear(&mut self) {
        self.fds.clear();
    }

    /// Adds `fd`, waited on for readability; returns its index.
    pub fn push(&mut self, fd: BorrowedFd<'_>) -> usize {
        self.fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.fds.len() - 1
    }

    /// Waits until a descriptor is ready or `timeout` (whole milliseconds, at most
    /// `i32::MAX`; zero returns at once) has passed; returns how many are ready. A signal ends
    /// the wait early with `ErrorKind::Interrupted`.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        for f in &mut self.fds {
            f.revents = 0;
        }
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let n = libc::nfds_t::try_from(self.fds.len()).map_err(io::Error::other)?;
        // SAFETY: `fds` is a valid array of `n` pollfd entries that poll(2) may write
        // `revents` of; nothing else borrows it during the call.
        let rc = unsafe { libc::poll(self.fds.as_mut_ptr(), n, ms) };
        usize::try_from(rc).map_err(|_| io::Error::last_os_error())
    }

    /// Whether the entry at `index` was ready in the last [`PollSet::wait`].
    pub fn ready(&self, index: usize) -> bool {
        self.fds.get(index).is_some_and(|f| f.revents != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wakeup_ends_a_wait_until_cleared() {
        let w = Wakeup::new().expect("eventfd");
        let other = Wakeup::new().expect("eventfd");
        let mut set = PollSet::new();
        for round in 0..3 {
            set.clear();
            assert_eq!(set.push(w.as_fd()), 0);
            assert_eq!(set.push(other.as_fd()), 1);
            assert_eq!(
                set.wait(Duration::from_millis(10)).expect("poll"),
                0,
                "round {round}: nothing woken"
            );
            assert!(!set.ready(0));
            w.wake();
            w.wake();
            assert_eq!(set.wait(Duration::from_secs(10)).expect("poll"), 1);
            assert!(set.ready(0) && !set.ready(1) && !set.ready(2));
            w.clear();
        }
        let t = std::time::Instant::now();
        assert_eq!(set.wait(Duration::from_millis(50)).expect("poll"), 0);
        assert!(
            t.elapsed() >= Duration::from_millis(40),
            "the timeout is waited"
        );
    }

    #[test]
    fn another_thread_wakes_the_waiter() {
        let w = std::sync::Arc::new(Wakeup::new().expect("eventfd"));
        let waker = w.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
        });
        let mut set = PollSet::new();
        set.push(w.as_fd());
        assert_eq!(set.wait(Duration::from_secs(20)).expect("poll"), 1);
        t.join().expect("thread");
    }
}
