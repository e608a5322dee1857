//! What the background workers (the outbox dispatcher, the SMS worker) share:
//! a thread of their own with a current-thread runtime, a wake-up, and a
//! stop that lets them finish until a deadline and waits for their thread
//! only until then.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A worker's thread, seen from the application: wake it, stop it.
#[derive(Debug, Default)]
pub struct WorkerThread {
    signals: Signals,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What a worker's own thread sees: wake-ups, and the stop's deadline.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    wake: Arc<Notify>,
    stop_by: Arc<Mutex<Option<Instant>>>,
}

impl Signals {
    /// Set once a stop was asked for: until when the worker may finish
    /// what it started.
    pub fn stop_by(&self) -> Option<Instant> {
        *self.stop_by.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a stop was asked for and its deadline has passed.
    pub fn past_deadline(&self) -> bool {
        self.stop_by()
            .is_some_and(|deadline| Instant::now() > deadline)
    }

    /// Waits to be woken ([`WorkerThread::wake`], or a stop), at most `at_most`.
    pub async fn sleep(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.wake.notified()).await;
    }

    /// Resolves when the worker is woken.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

impl WorkerThread {
    /// A worker not started yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `work` on a thread named `name`, with a current-thread runtime
    /// of its own (a worker's slow calls never hold up the request workers)
    /// and the signals it must heed.
    pub fn spawn<F>(&self, name: &str, work: F) -> std::io::Result<()>
    where
        F: FnOnce(tokio::runtime::Runtime, Signals) + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let signals = self.signals.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || work(runtime, signals))?;
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(())
    }

    /// Wakes the worker (new work was committed).
    pub fn wake(&self) {
        self.signals.wake.notify_one();
    }

    /// Asks the worker to stop, finishing what it can for `timeout`, and
    /// waits for its thread `grace` longer (what is under way at the
    /// deadline ends within its own timeout). Answers whether the thread
    /// ended; one still running is left to run (and to be dropped with the
    /// process). A worker never started counts as stopped.
    pub fn stop(&self, timeout: Duration, grace: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        *self
            .signals
            .stop_by
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(deadline);
        self.wake();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        match thread {
            Some(thread) => join_by(thread, deadline + grace),
            None => true,
        }
    }
}

/// Waits for `thread` to end until `give_up`, then joins it. Answers whether
/// it ended; a thread still running is left to run (and to be dropped with
/// the process).
pub fn join_by(thread: JoinHandle<()>, give_up: Instant) -> bool {
    while !thread.is_finished() && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !thread.is_finished() {
        return false;
    }
    let _ = thread.join();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_woken_and_stopped_by_its_deadline() {
        let worker = WorkerThread::new();
        let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = rounds.clone();
        worker
            .spawn("test-worker", move |runtime, signals| {
                while signals.stop_by().is_none() {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    runtime.block_on(signals.sleep(Duration::from_secs(60)));
                }
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while rounds.load(std::sync::atomic::Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        worker.wake();
        while rounds.load(std::sync::atomic::Ordering::SeqCst) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            rounds.load(std::sync::atomic::Ordering::SeqCst) >= 2,
            "woken"
        );
        let started = Instant::now();
        assert!(worker.stop(Duration::from_secs(5), Duration::from_secs(1)));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no wait once it ended"
        );
        assert!(WorkerThread::new().stop(Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn a_worker_that_does_not_stop_is_left_running_after_the_grace() {
        let worker = WorkerThread::new();
        let (release, held) = std::sync::mpsc::channel::<()>();
        worker
            .spawn("test-stuck", move |_, _| {
                let _ = held.recv();
            })
            .unwrap();
        let started = Instant::now();
        assert!(!worker.stop(Duration::from_millis(50), Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(release);
    }
}
