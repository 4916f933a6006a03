//! Hot-plug for the `hid` slot provider (feature `hotplug`): nusb's USB watch on a thread of
//! the provider's own, debounced into re-enumerations.
//!
//! nusb reports USB devices (`usb_device` uevents, as udev re-broadcasts them on its netlink
//! group), not the hidraw nodes the provider opens, and a device's hidraw node appears a little
//! after its USB event. So an event does not enumerate at once: it schedules one
//! re-enumeration after [`Delays::first`] and one more after [`Delays::last`], and a burst of
//! events shares them ([`Debounce`]).
//!
//! nusb's watch is a `futures_core::Stream` woken from nusb's own epoll thread. It is polled
//! here by a small loop with a waker that sets a flag under a condition variable, the same
//! variable the guard's drop sets its stop flag under: no async runtime, and a thread that
//! sleeps until a USB event, a scheduled re-enumeration or the stop.
//!
//! What stays behind: nusb's epoll thread (`nusb-events`) is nusb's, one per process, started
//! with the first watch and idle once the watch is dropped. nusb reports its own failures
//! through the `log` crate, which tokenkit's `tracing` output does not show unless the program
//! forwards `log` records.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_core::Stream;
use token_core::ProviderGuard;

/// How many events one pass takes from the stream before it looks at the stop flag and the
/// schedule again, so a flood of events cannot hold the thread.
const DRAIN_LIMIT: usize = 64;

/// When re-enumerations follow a USB event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delays {
    /// The first re-enumeration, this long after the first event of a burst: most hidraw nodes
    /// exist by then.
    pub first: Duration,
    /// The last one, this long after the last event of a burst: for nodes that came late.
    pub last: Duration,
}

impl Delays {
    /// What the provider uses: 300 ms, then 2 s.
    pub const DEFAULT: Self = Self {
        first: Duration::from_millis(300),
        last: Duration::from_secs(2),
    };
}

/// The re-enumerations USB events have scheduled: at most two deadlines at any time.
#[derive(Debug)]
pub(crate) struct Debounce {
    delays: Delays,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debounce {
    pub(crate) fn new(delays: Delays) -> Self {
        Self {
            delays,
            first: None,
            last: None,
        }
    }

    /// A USB event at `now`. An early re-enumeration already scheduled stays where it is (a
    /// stream of events cannot postpone it forever); the late one moves to `now + last`.
    pub(crate) fn event(&mut self, now: Instant) {
        self.first.get_or_insert(now + self.delays.first);
        self.last = Some(now + self.delays.last);
    }

    /// Whether a re-enumeration is due at `now`; the deadlines passed are cleared (two passed
    /// at once make one re-enumeration).
    pub(crate) fn take_due(&mut self, now: Instant) -> bool {
        let mut due = false;
        for deadline in [&mut self.first, &mut self.last] {
            if deadline.is_some_and(|d| d <= now) {
                *deadline = None;
                due = true;
            }
        }
        due
    }

    /// The next deadline, if any.
    pub(crate) fn next(&self) -> Option<Instant> {
        match (self.first, self.last) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Debug, Default)]
struct Flags {
    woken: bool,
    stop: bool,
}

/// The waker of the watch stream and the stop flag, under one condition variable.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    flags: Mutex<Flags>,
    cv: Condvar,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }

    fn stopped(&self) -> bool {
        self.lock().stop
    }

    /// Sleeps until woken, stopped or `deadline`; true when stopped.
    fn wait(&self, deadline: Option<Instant>) -> bool {
        let mut flags = self.lock();
        loop {
            if flags.stop {
                return true;
            }
            if flags.woken {
                flags.woken = false;
                return false;
            }
            flags = match deadline {
                None => self.cv.wait(flags).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.cv
                        .wait_timeout(flags, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.lock().woken = true;
        self.cv.notify_all();
    }
}

/// The watch loop: takes events from `stream`, schedules re-enumerations, runs `rescan` when
/// one is due, and returns once `signal` is stopped. A stream that ends leaves the scheduled
/// re-enumerations to run and then only waits for the stop.
pub(crate) fn run<S>(mut stream: S, signal: &Arc<Signal>, delays: Delays, mut rescan: impl FnMut())
where
    S: Stream + Unpin,
    S::Item: Debug,
{
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut debounce = Debounce::new(delays);
    let mut open = true;
    loop {
        let mut taken = 0;
        while open && taken < DRAIN_LIMIT {
            match Pin::new(&mut stream).poll_next(&mut cx) {
                Poll::Ready(Some(event)) => {
                    tracing::trace!(target: "tokenkit::hid", ?event, "USB event");
                    debounce.event(Instant::now());
                    taken += 1;
                }
                Poll::Ready(None) => {
                    tracing::debug!(target: "tokenkit::hid", "the USB hot-plug watch ended");
                    open = false;
                }
                Poll::Pending => break,
            }
        }
        if debounce.take_due(Instant::now()) {
            rescan();
        }
        if signal.stopped() {
            return;
        }
        if open && taken == DRAIN_LIMIT {
            // More may be waiting: poll again without sleeping.
            continue;
        }
        if signal.wait(debounce.next()) {
            return;
        }
    }
}

/// Stops the watch thread when dropped, and waits for it to end.
#[derive(Debug)]
pub(crate) struct HotplugGuard {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl ProviderGuard for HotplugGuard {}

impl Drop for HotplugGuard {
    fn drop(&mut self) {
        self.signal.stop();
        if let Some(t) = self.thread.take() {
            // The thread never drops its own guard, but a join on itself would deadlock.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// Runs [`run`] on a thread of its own; `on_exit` runs on that thread as it ends.
///
/// # Errors
/// When the thread cannot be spawned.
pub(crate) fn spawn<S>(
    stream: S,
    delays: Delays,
    mut rescan: impl FnMut() + Send + 'static,
    on_exit: impl FnOnce() + Send + 'static,
) -> std::io::Result<HotplugGuard>
where
    S: Stream + Unpin + Send + 'static,
    S::Item: Debug,
{
    let signal = Arc::new(Signal::default());
    let thread_signal = signal.clone();
    let thread = std::thread::Builder::new()
        .name("tokenkit-hid-hotplug".into())
        .spawn(move || {
            run(stream, &thread_signal, delays, &mut rescan);
            // The stream (nusb's netlink socket) goes before `on_exit` says the thread ended.
            on_exit();
        })?;
    Ok(HotplugGuard {
        signal,
        thread: Some(thread),
    })
}

/// nusb's USB watch, or `None` (logged once, at debug level) where it cannot start: no netlink
/// socket for udev's events in a sandbox, say.
pub(crate) fn watch() -> Option<nusb::hotplug::HotplugWatch> {
    match nusb::watch_devices() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::debug!(
                target: "tokenkit::hid",
                error = %e,
                "no USB hot-plug; FIDO HID devices are found when the hub starts only"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_event_schedules_two_rescans() {
        let t0 = Instant::now();
        let mut d = Debounce::new(Delays {
            first: 10 * MS,
            last: 100 * MS,
        });
        assert_eq!(d.next(), None);
        assert!(!d.take_due(t0 + 1000 * MS));
        d.event(t0);
        assert_eq!(d.next(), Some(t0 + 10 * MS));
        assert!(!d.take_due(t0 + 9 * MS));
        assert!(d.take_due(t0 + 10 * MS));
        assert_eq!(d.next(), Some(t0 + 100 * MS));
        assert!(!d.take_due(t0 + 50 * MS));
        assert!(d.take_due(t0 + 100 * MS));
        assert_eq!(d.next(), None);
    }

    #[test]
    fn a_burst_shares_its_rescans_and_cannot_postpone_the_first() {
        let t0 = Instant::now();
        let mut d = Debounce::new(Delays {
            first: 10 * MS,
            last: 100 * MS,
        });
        for i in 0..9 {
            d.event(t0 + i * MS);
        }
        assert_eq!(d.next(), Some(t0 + 10 * MS));
        assert!(d.take_due(t0 + 10 * MS));
        assert_eq!(d.next(), Some(t0 + 108 * MS));
        // Both deadlines passed at once: one rescan.
        d.event(t0 + 200 * MS);
        assert!(d.take_due(t0 + 1000 * MS));
        assert!(!d.take_due(t0 + 1000 * MS));
        assert_eq!(d.next(), None);
    }

    #[derive(Default)]
    struct FeedState {
        queue: VecDeque<u32>,
        waker: Option<Waker>,
        closed: bool,
    }

    /// A stream fed by the test, woken as a real one is, from another thread.
    #[derive(Clone, Default)]
    struct Feed(Arc<Mutex<FeedState>>);

    impl Feed {
        fn with(&self, change: impl FnOnce(&mut FeedState)) {
            let waker = {
                let mut s = self.0.lock().unwrap();
                change(&mut s);
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }

        fn push(&self, event: u32) {
            self.with(|s| s.queue.push_back(event));
        }
    }

    impl Stream for Feed {
        type Item = u32;
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            let mut s = self.0.lock().unwrap();
            if let Some(e) = s.queue.pop_front() {
                Poll::Ready(Some(e))
            } else if s.closed {
                Poll::Ready(None)
            } else {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn wait_for(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(MS);
        }
    }

    struct Probe {
        rescans: Arc<AtomicUsize>,
        ended: Arc<AtomicBool>,
    }

    fn start(feed: &Feed, delays: Delays) -> (HotplugGuard, Probe) {
        let rescans = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicBool::new(false));
        let (r, e) = (rescans.clone(), ended.clone());
        let guard = spawn(
            feed.clone(),
            delays,
            move || {
                r.fetch_add(1, Ordering::SeqCst);
            },
            move || e.store(true, Ordering::SeqCst),
        )
        .unwrap();
        (guard, Probe { rescans, ended })
    }

    #[test]
    fn events_from_another_thread_make_two_rescans_and_the_guard_ends_the_thread() {
        let feed = Feed::default();
        let delays = Delays {
            first: 20 * MS,
            last: 300 * MS,
        };
        let (guard, probe) = start(&feed, delays);
        std::thread::sleep(50 * MS);
        assert_eq!(
            probe.rescans.load(Ordering::SeqCst),
            0,
            "no event, no rescan"
        );
        let t0 = Instant::now();
        // Two events at once (a hub with two devices, say).
        feed.with(|s| s.queue.extend([1, 2]));
        wait_for(|| probe.rescans.load(Ordering::SeqCst) == 2);
        assert!(t0.elapsed() >= delays.last, "{:?}", t0.elapsed());
        // Nothing more comes of that burst.
        std::thread::sleep(400 * MS);
        assert_eq!(probe.rescans.load(Ordering::SeqCst), 2);
        assert!(!probe.ended.load(Ordering::SeqCst));
        drop(guard);
        assert!(
            probe.ended.load(Ordering::SeqCst),
            "the drop waited for the thread"
        );
    }

    #[test]
    fn a_flood_of_events_is_bounded_and_the_stop_is_seen() {
        let feed = Feed::default();
        for i in 0..2_000 {
            feed.push(i);
        }
        let (guard, probe) = start(
            &feed,
            Delays {
                first: 200 * MS,
                last: 600 * MS,
            },
        );
        wait_for(|| feed.0.lock().unwrap().queue.is_empty());
        // The flood is one burst: its two rescans, no more.
        wait_for(|| probe.rescans.load(Ordering::SeqCst) == 2);
        std::thread::sleep(300 * MS);
        assert_eq!(probe.rescans.load(Ordering::SeqCst), 2);
        drop(guard);
        assert!(probe.ended.load(Ordering::SeqCst));
    }

    #[test]
    fn a_stream_that_ends_still_stops_cleanly() {
        let feed = Feed::default();
        let (guard, probe) = start(
            &feed,
            Delays {
                first: 10 * MS,
                last: 300 * MS,
            },
        );
        feed.with(|s| {
            s.queue.push_back(7);
            s.closed = true;
        });
        wait_for(|| probe.rescans.load(Ordering::SeqCst) == 2);
        std::thread::sleep(100 * MS);
        assert_eq!(probe.rescans.load(Ordering::SeqCst), 2);
        drop(guard);
        assert!(probe.ended.load(Ordering::SeqCst));
    }

    #[test]
    fn a_guard_dropped_at_once_stops_the_thread() {
        let (guard, probe) = start(&Feed::default(), Delays::DEFAULT);
        drop(guard);
        assert!(probe.ended.load(Ordering::SeqCst));
        assert_eq!(probe.rescans.load(Ordering::SeqCst), 0);
    }
}
