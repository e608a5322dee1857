//! Password hashes: argon2id with a random salt, in the PHC string format;
//! and the [`Verifier`] that checks logins' passwords off the async workers,
//! a few at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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

/// Verifies passwords on threads of its own, at most `permits` at a time
/// (one per core by default: argon2 is all CPU, so more would only slow each
/// one down), with at most `max_waiting` more waiting for their turn. No
/// database connection is held meanwhile, and the threads run at the lowest
/// CPU priority: a flood of logins then takes only the CPU that requests
/// leave idle, instead of delaying every other request behind argon2.
#[derive(Debug)]
pub struct Verifier {
    permits: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    jobs: std::sync::mpsc::Sender<Job>,
}

/// One verification for the verifier's threads: its permit (held until the
/// work ends, whatever the caller does), the work, and where the answer goes.
struct Job {
    permit: tokio::sync::OwnedSemaphorePermit,
    password: String,
    stored: Option<String>,
    answer: tokio::sync::oneshot::Sender<bool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

/// A verifier thread: lowers its own priority, then checks passwords until
/// the [`Verifier`] is dropped.
fn verify_jobs(jobs: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<Job>>>) {
    lower_priority();
    loop {
        let job = {
            let receiver = jobs.lock().unwrap_or_else(|e| e.into_inner());
            receiver.recv()
        };
        let Ok(Job {
            permit,
            password,
            stored,
            answer,
        }) = job
        else {
            return;
        };
        let valid = match &stored {
            Some(stored) => verify(&password, stored),
            None => {
                std::hint::black_box(verify(&password, dummy_hash()));
                false
            }
        };
        // The work is done: its place goes back before the answer does, so
        // a caller that checks again at once finds it free.
        drop(permit);
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

/// Too many verifications are waiting: the caller answers 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Waiting verifications allowed per permit, by default.
pub const WAITING_PER_PERMIT: usize = 32;

impl Default for Verifier {
    /// One permit per core (`std::thread::available_parallelism`), and
    /// [`WAITING_PER_PERMIT`] waiting per permit.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier::new(cores, cores * WAITING_PER_PERMIT)
    }
}

/// Counts a verification waiting for its permit, until it has it or gives up.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Verifier {
    /// At most `permits` verifications at a time, `max_waiting` waiting.
    pub fn new(permits: usize, max_waiting: usize) -> Self {
        let permits = permits.max(1);
        let (jobs, receiver) = std::sync::mpsc::channel();
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        // One thread per permit: a job that holds a permit always finds a
        // thread free.
        for n in 0..permits {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{n}"))
                .spawn(move || verify_jobs(receiver));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password-check thread");
            }
        }
        Verifier {
            permits: Arc::new(tokio::sync::Semaphore::new(permits)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            jobs,
        }
    }

    /// How many verifications wait for a permit now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// How many verifications could start now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Whether `password` matches `stored`; with `None`, it is verified
    /// against [`dummy_hash`] (and does not match), so that an unknown email
    /// takes as long as a wrong password. `Err(Busy)` when `max_waiting`
    /// verifications already wait.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, Busy> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(Busy);
                }
                let _waiting = Waiting(&self.waiting);
                // The semaphore is never closed.
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Busy)?
            }
        };
        // The permit goes with the work: if this future is dropped (the
        // client left), the verification still holds it until it ends, so
        // the cap on concurrent verifications holds whatever clients do.
        let (answer, verified) = tokio::sync::oneshot::channel();
        let job = Job {
            permit,
            password,
            stored,
            answer,
        };
        if self.jobs.send(job).is_err() {
            return Err(Busy);
        }
        // A thread that could not start, or died, leaves no answer: refused.
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

    #[tokio::test]
    async fn the_verifier_verifies_and_refuses_past_its_queue() {
        let verifier = Verifier::new(1, 0);
        let stored = hash("correct horse").unwrap();
        // With no queue, one at a time goes, none waits.
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
        let held = verifier.permits.clone().acquire_owned().await.unwrap();
        assert_eq!(
            verifier
                .verify("correct horse".into(), Some(stored.clone()))
                .await,
            Err(Busy)
        );
        drop(held);
        let verifier = std::sync::Arc::new(Verifier::new(1, 1));
        let held = verifier.permits.clone().acquire_owned().await.unwrap();
        let queued = {
            let verifier = verifier.clone();
            let stored = stored.clone();
            tokio::spawn(async move { verifier.verify("correct horse".into(), Some(stored)).await })
        };
        while verifier.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(verifier.verify("x".into(), Some(stored)).await, Err(Busy));
        drop(held);
        assert_eq!(queued.await.unwrap(), Ok(true));
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn password_checks_run_at_the_lowest_priority() {
        let verifier = Verifier::new(2, 0);
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
