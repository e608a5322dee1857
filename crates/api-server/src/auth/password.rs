//! Password hashes: argon2id with a random salt, in the PHC string format;
//! and the [`Verifier`] that checks logins' passwords off the async workers,
//! a few at a time.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Hashes a password for storage.
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches a stored hash (constant time in the hash).
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a random password nobody knows, verified against when the
/// email is unknown so that a login takes as long either way.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash(&crate::auth::session::new_token()).unwrap_or_default())
}

/// Verifies passwords on threads of its own, one per core by default
/// (argon2 is all CPU, so more at a time would only slow each one down),
/// fed through a bounded queue of at most `max_waiting` verifications: one
/// that finds it full is refused at once ([`Refused::Busy`], 429), and one
/// that waits longer than `max_wait` for a thread gives up
/// ([`Refused::TimedOut`], 503), so a login flood queues only briefly. No
/// database connection is held meanwhile, and the threads run at the lowest
/// CPU priority: a flood of logins then takes only the CPU that requests
/// leave idle, instead of delaying every other request behind argon2.
#[derive(Debug)]
pub struct Verifier {
    jobs: std::sync::mpsc::SyncSender<Job>,
    threads: usize,
    counts: Arc<Counts>,
    max_wait: Duration,
}

/// What the verifier's state looks like from outside (for tests and the
/// flood benchmark).
#[derive(Debug, Default)]
struct Counts {
    /// Verifications queued, not yet taken by a thread.
    waiting: AtomicUsize,
    /// Threads verifying now.
    busy: AtomicUsize,
}

/// A queued verification's state: still waiting, taken by a thread, or
/// given up by its caller (then no thread spends argon2 on it).
const WAITING: u8 = 0;
const TAKEN: u8 = 1;
const GIVEN_UP: u8 = 2;

/// One verification for the verifier's threads: the work, where the answer
/// goes, and whether its caller still waits for it.
struct Job {
    password: String,
    stored: Option<String>,
    state: Arc<AtomicU8>,
    answer: tokio::sync::oneshot::Sender<bool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

/// A verifier thread: lowers its own priority, then checks passwords until
/// the [`Verifier`] is dropped. Each thread is one place: a verification
/// it has taken runs to its end whatever the caller does, so the number at
/// a time stays bounded.
fn verify_jobs(jobs: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<Job>>>, counts: Arc<Counts>) {
    lower_priority();
    loop {
        let job = {
            let receiver = jobs.lock().unwrap_or_else(|e| e.into_inner());
            receiver.recv()
        };
        let Ok(Job {
            password,
            stored,
            state,
            answer,
        }) = job
        else {
            return;
        };
        counts.waiting.fetch_sub(1, Ordering::SeqCst);
        if state
            .compare_exchange(WAITING, TAKEN, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // Its caller gave up waiting: nobody reads the answer.
            continue;
        }
        counts.busy.fetch_add(1, Ordering::SeqCst);
        let valid = match &stored {
            Some(stored) => verify(&password, stored),
            None => {
                std::hint::black_box(verify(&password, dummy_hash()));
                false
            }
        };
        // The work is done: its place goes back before the answer does, so
        // a caller that checks again at once finds it free.
        counts.busy.fetch_sub(1, Ordering::SeqCst);
        let _ = answer.send(valid);
    }
}

/// Sets the calling thread to the lowest CPU priority (nice 19), where the
/// system allows it; elsewhere the thread runs at the usual priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(thread), 19) {
            tracing::debug!(error = %e, "password checks run at the usual priority");
        }
    }
}

/// Why a verification was not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: the caller answers 429.
    Busy,
    /// No thread took it within the verifier's wait: the caller answers 503.
    TimedOut,
}

/// Waiting verifications allowed per thread, by default.
pub const WAITING_PER_THREAD: usize = 32;

/// How long a verification waits for a thread by default before it gives
/// up: as long as a request waits for a database connection (`db::POOL_WAIT`).
pub const MAX_WAIT: Duration = Duration::from_secs(5);

impl Default for Verifier {
    /// One thread per core but one (`std::thread::available_parallelism`;
    /// at least one), [`WAITING_PER_THREAD`] waiting per thread, each at
    /// most [`MAX_WAIT`]. A core is left without password checks: argon2
    /// fills a core's caches with its 19 MiB, and even at nice 19 a check
    /// beside every worker slows every other request on the machine.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.saturating_sub(1).max(1);
        Verifier::new(threads, threads * WAITING_PER_THREAD, MAX_WAIT)
    }
}

/// Gives a queued verification up when its caller stops waiting (a
/// timeout, or the client left), unless a thread has taken it.
struct GiveUpOnDrop(Arc<AtomicU8>);

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        let _ = self
            .0
            .compare_exchange(WAITING, GIVEN_UP, Ordering::SeqCst, Ordering::SeqCst);
    }
}

impl Verifier {
    /// `threads` verifications at a time (at least one), at most
    /// `max_waiting` (at least one) queued for a thread, each for at most
    /// `max_wait`.
    pub fn new(threads: usize, max_waiting: usize, max_wait: Duration) -> Self {
        let threads = threads.max(1);
        let (jobs, receiver) = std::sync::mpsc::sync_channel(max_waiting.max(1));
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        let counts = Arc::new(Counts::default());
        for n in 0..threads {
            let receiver = receiver.clone();
            let counts = counts.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{n}"))
                .spawn(move || verify_jobs(receiver, counts));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password-check thread");
            }
        }
        Verifier {
            jobs,
            threads,
            counts,
            max_wait,
        }
    }

    /// How many verifications wait for a thread now.
    pub fn waiting(&self) -> usize {
        self.counts.waiting.load(Ordering::SeqCst)
    }

    /// How many verifications could start now.
    pub fn available(&self) -> usize {
        self.threads
            .saturating_sub(self.counts.busy.load(Ordering::SeqCst))
    }

    /// Whether `password` matches `stored`; with `None`, it is verified
    /// against [`dummy_hash`] (and does not match), so that an unknown email
    /// takes as long as a wrong password. Refused when the queue is full,
    /// or when no thread took it within the verifier's wait.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, Refused> {
        let state = Arc::new(AtomicU8::new(WAITING));
        let (answer, verified) = tokio::sync::oneshot::channel();
        let job = Job {
            password,
            stored,
            state: state.clone(),
            answer,
        };
        self.counts.waiting.fetch_add(1, Ordering::SeqCst);
        if self.jobs.try_send(job).is_err() {
            // Full (or no thread left to take it).
            self.counts.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::Busy);
        }
        // Dropped, the caller gives the job up, unless it has started.
        let _give_up = GiveUpOnDrop(state.clone());
        let mut verified = verified;
        match tokio::time::timeout(self.max_wait, &mut verified).await {
            // A thread that died leaves no answer: refused.
            Ok(answer) => return Ok(answer.unwrap_or(false)),
            Err(_) => {
                let given_up = state
                    .compare_exchange(WAITING, GIVEN_UP, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                if given_up {
                    return Err(Refused::TimedOut);
                }
            }
        }
        // Taken just as the wait ended: its answer comes within argon2's time.
        Ok(verified.await.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let stored = hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse", &stored));
        assert!(!verify("wrong horse", &stored));
        assert!(!verify("correct horse", "not a hash"));
        assert!(!verify("anything", dummy_hash()));
    }

    /// A hash that keeps a thread busy for a while (about a second in a
    /// debug build).
    fn slow_hash() -> String {
        let params = argon2::Params::new(32 * 1024, 3, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"slow", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn the_verifier_verifies_and_refuses_past_its_queue() {
        let verifier = Arc::new(Verifier::new(1, 1, MAX_WAIT));
        let stored = hash("correct horse").unwrap();
        assert_eq!(
            verifier
                .verify("correct horse".into(), Some(stored.clone()))
                .await,
            Ok(true)
        );
        assert_eq!(
            verifier.verify("wrong".into(), Some(stored.clone())).await,
            Ok(false)
        );
        assert_eq!(verifier.verify("wrong".into(), None).await, Ok(false));
        // A slow hash keeps the one thread busy: one waits, the next is refused.
        let slow = slow_hash();
        let running = {
            let verifier = verifier.clone();
            let slow = slow.clone();
            tokio::spawn(async move { verifier.verify("slow".into(), Some(slow)).await })
        };
        while verifier.available() == 1 {
            tokio::task::yield_now().await;
        }
        let queued = {
            let verifier = verifier.clone();
            let stored = stored.clone();
            tokio::spawn(async move { verifier.verify("correct horse".into(), Some(stored)).await })
        };
        while verifier.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            verifier.verify("x".into(), Some(stored)).await,
            Err(Refused::Busy)
        );
        assert_eq!(running.await.unwrap(), Ok(true));
        assert_eq!(queued.await.unwrap(), Ok(true));
        assert_eq!(verifier.waiting(), 0);
        assert_eq!(verifier.available(), 1);
    }

    #[tokio::test]
    async fn a_verification_that_waits_too_long_for_a_thread_gives_up() {
        let verifier = Arc::new(Verifier::new(1, 4, Duration::from_millis(200)));
        let slow = slow_hash();
        let running = {
            let verifier = verifier.clone();
            tokio::spawn(async move { verifier.verify("slow".into(), Some(slow)).await })
        };
        while verifier.available() == 1 {
            tokio::task::yield_now().await;
        }
        let started = std::time::Instant::now();
        assert_eq!(
            verifier.verify("x".into(), None).await,
            Err(Refused::TimedOut)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // The slow one still ends with its answer; the given-up one is
        // skipped, not verified for nobody.
        assert_eq!(running.await.unwrap(), Ok(true));
        assert_eq!(verifier.verify("x".into(), None).await, Ok(false));
        assert_eq!(verifier.waiting(), 0);
    }

    /// The niceness of this process's threads named `password-check-*`.
    #[cfg(target_os = "linux")]
    fn password_check_niceness() -> Vec<i64> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("password-check") {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the command's closing parenthesis; nice is the 19th field.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            found.push(after.split(' ').nth(16).unwrap().parse().unwrap());
        }
        found
    }

    #[test]
    fn the_default_leaves_one_core_without_password_checks() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let verifier = Verifier::default();
        assert_eq!(verifier.available(), cores.saturating_sub(1).max(1));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn password_checks_run_at_the_lowest_priority() {
        let verifier = Verifier::new(2, 1, MAX_WAIT);
        assert_eq!(verifier.verify("x".into(), None).await, Ok(false));
        // Each thread lowers itself as it starts: wait for both to have.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut niceness = password_check_niceness();
        while !(niceness.len() >= 2 && niceness.iter().all(|n| *n == 19))
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            niceness = password_check_niceness();
        }
        assert!(niceness.len() >= 2, "{niceness:?}");
        assert!(niceness.iter().all(|n| *n == 19), "{niceness:?}");
    }
}
