//! Runtime-free helpers: drive a future to completion on this thread, and run blocking work
//! off the executor.
//!
//! token-core's traits name no runtime. Transports that must block (`SCardTransmit`, a hidapi
//! read) wrap the call once with [`unblock`], which works under any executor; programs without
//! one (a command-line tool, a test) call [`block_on`].

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

struct ThreadWaker {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        *self.woken.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_one();
    }
}

/// Runs `fut` to completion on the current thread, sleeping while it waits.
///
/// Use it from synchronous code (command-line tools, tests, the hub's own worker thread). Do not
/// call it from inside an async task: that blocks the executor thread.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let signal = Arc::new(ThreadWaker {
        woken: Mutex::new(false),
        cv: Condvar::new(),
    });
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let mut woken = signal.woken.lock().unwrap_or_else(PoisonError::into_inner);
        while !*woken {
            woken = signal
                .cv
                .wait(woken)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *woken = false;
    }
}

struct Shared<T> {
    value: Option<T>,
    waker: Option<Waker>,
    done: bool,
}

/// The future returned by [`unblock`].
pub struct Unblock<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

impl<T> Future for Unblock<T> {
    type Output = T;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = s.value.take() {
            return Poll::Ready(v);
        }
        if s.done {
            // The worker panicked before producing a value; the panic already printed.
            // Propagate it here rather than hang the caller.
            panic!("blocking task panicked");
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

struct DoneGuard<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

impl<T> Drop for DoneGuard<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.done = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

/// Runs the blocking closure `f` on a separate thread and returns a future of its result, so
/// async code can wait for a blocking call without stalling its executor. Works under any
/// executor (or [`block_on`]).
///
/// # Panics
/// The returned future panics if `f` panicked.
pub fn unblock<T, F>(f: F) -> Unblock<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let shared = Arc::new(Mutex::new(Shared {
        value: None,
        waker: None,
        done: false,
    }));
    let guard = DoneGuard {
        shared: shared.clone(),
    };
    std::thread::spawn(move || {
        let v = f();
        let mut s = guard.shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.value = Some(v);
        drop(s);
        drop(guard);
    });
    Unblock { shared }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_drives_unblocked_work() {
        let v = block_on(async {
            let a = unblock(|| 20).await;
            let b = unblock(|| 22).await;
            a + b
        });
        assert_eq!(v, 42);
    }
}
