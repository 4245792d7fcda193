//! Verifier threads: argon2 runs off the event loop. Jobs go in through a
//! bounded queue; each result comes back on a channel, and `notify` (the
//! loop's mio `Waker`) tells the loop to collect it.
//!
//! Generic over a tag `T` that the caller uses to find who asked (the
//! server uses slab index and generation, and discards results for
//! connections that closed meanwhile).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{Denial, PasswordCheck};

/// What became of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The hash was checked (one argon2 run).
    Verified(Result<(), Denial>),
    /// The job was not run: it waited past its deadline (whoever asked has
    /// given up: its handshake timed out), it was cancelled (its connection
    /// closed), or the pool is shutting down.
    Abandoned,
}

/// The queue is full: more verifications are waiting than the pool takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many credentials are waiting to be verified")]
pub struct QueueFull;

struct Job<T> {
    tag: T,
    check: PasswordCheck,
    give_up_at: Instant,
    cancelled: Arc<AtomicBool>,
}

/// Cancels a queued job: it is then skipped, not run, when its turn comes.
#[derive(Debug, Clone)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Whoever asked no longer wants the answer.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A fixed set of threads that run [`PasswordCheck`]s.
pub struct VerifierPool<T> {
    /// Set when the pool is dropped: queued jobs are skipped, so that a
    /// shutdown does not wait for a full queue of argon2 runs.
    stopping: Arc<AtomicBool>,
    jobs: Option<SyncSender<Job<T>>>,
    results: Receiver<(T, Outcome)>,
    threads: Vec<JoinHandle<()>>,
}

impl<T> std::fmt::Debug for VerifierPool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifierPool({} threads)", self.threads.len())
    }
}

impl<T: Send + 'static> VerifierPool<T> {
    /// Starts `threads` threads (at least one) sharing a queue of `queue_len` jobs.
    ///
    /// # Errors
    /// The OS error when a thread cannot be started.
    pub fn new(
        threads: usize,
        queue_len: usize,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Self> {
        let (jobs, job_receiver) = mpsc::sync_channel::<Job<T>>(queue_len.max(1));
        let (result_sender, results) = mpsc::channel();
        // One receiver for all threads: whichever is free takes the next job.
        let job_receiver = Arc::new(Mutex::new(job_receiver));
        let stopping = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for number in 0..threads.max(1) {
            let stopping = Arc::clone(&stopping);
            let job_receiver = Arc::clone(&job_receiver);
            let result_sender = result_sender.clone();
            let notify = Arc::clone(&notify);
            let handle = std::thread::Builder::new()
                .name(format!("lubdub-auth-{number}"))
                .spawn(move || loop {
                    // The lock is released before the job runs.
                    let next = match job_receiver.lock() {
                        Ok(receiver) => receiver.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = next else {
                        return; // the pool was dropped
                    };
                    let skip = stopping.load(Ordering::Relaxed)
                        || job.cancelled.load(Ordering::Relaxed)
                        || Instant::now() >= job.give_up_at;
                    let outcome = if skip {
                        Outcome::Abandoned
                    } else {
                        Outcome::Verified(job.check.run())
                    };
                    if result_sender.send((job.tag, outcome)).is_err() {
                        return;
                    }
                    notify();
                })?;
            handles.push(handle);
        }
        Ok(Self {
            stopping,
            jobs: Some(jobs),
            results,
            threads: handles,
        })
    }

    /// Queues a check; it is skipped if still queued at `give_up_at`, or
    /// once the returned [`Cancel`] is used.
    ///
    /// # Errors
    /// [`QueueFull`]; nothing was queued.
    pub fn submit(
        &self,
        tag: T,
        check: PasswordCheck,
        give_up_at: Instant,
    ) -> Result<Cancel, QueueFull> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let job = Job {
            tag,
            check,
            give_up_at,
            cancelled: Arc::clone(&cancelled),
        };
        match self.jobs.as_ref().map(|jobs| jobs.try_send(job)) {
            Some(Ok(())) => Ok(Cancel(cancelled)),
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => {
                Err(QueueFull)
            }
        }
    }

    /// The next finished job, if any; never blocks.
    pub fn try_result(&self) -> Option<(T, Outcome)> {
        self.results.try_recv().ok()
    }
}

impl<T> Drop for VerifierPool<T> {
    fn drop(&mut self) {
        // Closing the queue ends each thread once the queue is empty; the
        // jobs still in it are skipped, not run.
        self.stopping.store(true, Ordering::Relaxed);
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::auth::password::{self, tests::cheap};

    fn check(name: &str, stored: &str, secret: &str) -> PasswordCheck {
        PasswordCheck {
            name: name.into(),
            stored: stored.into(),
            secret: secret.as_bytes().to_vec(),
            known: true,
        }
    }

    fn wait_for<T: Send + 'static>(pool: &VerifierPool<T>) -> (T, Outcome) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(result) = pool.try_result() {
                return result;
            }
            assert!(Instant::now() < deadline, "no result");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn results_come_back_with_their_tags_and_a_notification() {
        let notified = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&notified);
        let pool = VerifierPool::new(
            2,
            8,
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .expect("threads start");
        let stored = password::hash(b"the right secret", cheap()).expect("hashes");
        let later = Instant::now() + Duration::from_secs(60);
        pool.submit(1, check("alice", &stored, "the right secret"), later)
            .expect("queued");
        pool.submit(2, check("alice", &stored, "the wrong secret"), later)
            .expect("queued");
        let mut results = [wait_for(&pool), wait_for(&pool)];
        results.sort_by_key(|(tag, _)| *tag);
        assert_eq!(results[0], (1, Outcome::Verified(Ok(()))));
        assert_eq!(
            results[1],
            (
                2,
                Outcome::Verified(Err(Denial::NotGranted {
                    name: "alice".into()
                }))
            )
        );
        assert_eq!(notified.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_job_past_its_deadline_is_not_run() {
        let pool = VerifierPool::new(1, 8, Arc::new(|| {})).expect("threads start");
        pool.submit((), check("alice", "x", "y"), Instant::now())
            .expect("queued");
        assert_eq!(wait_for(&pool), ((), Outcome::Abandoned));
    }

    #[test]
    fn a_cancelled_job_is_not_run() {
        // The first job's notification blocks the only thread until the
        // second job is queued and cancelled: no race with the cancel.
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let pool = VerifierPool::new(
            1,
            8,
            Arc::new(move || {
                let _ = released.lock().map(|receiver| receiver.recv());
            }),
        )
        .expect("threads start");
        let later = Instant::now() + Duration::from_secs(60);
        pool.submit(1, check("alice", "x", "y"), later)
            .expect("queued");
        let second = pool
            .submit(2, check("alice", "x", "y"), later)
            .expect("queued");
        second.cancel();
        release.send(()).expect("the thread waits");
        release.send(()).expect("the thread waits");
        let results = [wait_for(&pool), wait_for(&pool)];
        assert!(
            matches!(results[0], (1, Outcome::Verified(_))),
            "{results:?}"
        );
        assert_eq!(results[1], (2, Outcome::Abandoned));
    }
}
