//! A one-shot reply from a blocking I/O thread to an async caller: the thread fills it, the
//! caller's future wakes. Runtime-free, like token-core.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

struct Shared<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sender is gone; no value will come after `value`.
    closed: bool,
}

/// The I/O thread's half.
pub(crate) struct Sender<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

/// The caller's half: a future of the value, or `None` if the sender was dropped unused (the
/// I/O thread ended).
pub(crate) struct Receiver<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

/// A connected pair.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(Shared {
        value: None,
        waker: None,
        closed: false,
    }));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Delivers the value (dropping the sender after it).
    pub(crate) fn send(self, value: T) {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .value = Some(value);
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.closed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_core::block_on;

    #[test]
    fn a_value_sent_from_another_thread_arrives() {
        let (tx, rx) = channel();
        std::thread::spawn(move || tx.send(42));
        assert_eq!(block_on(rx), Some(42));
    }

    #[test]
    fn a_dropped_sender_ends_the_wait() {
        let (tx, rx) = channel::<u8>();
        std::thread::spawn(move || drop(tx));
        assert_eq!(block_on(rx), None);
    }
}
