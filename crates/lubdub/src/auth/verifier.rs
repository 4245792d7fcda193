//! Verifier threads: argon2 runs off the event loop. Jobs wait in a
//! bounded [`FairQueue`] (round robin across sources, [`Suspects`] last)
//! behind a mutex; a free thread takes the next one, and each result comes
//! back on a channel, `notify` (the loop's mio `Waker`) telling the loop to
//! collect it.
//!
//! Generic over a source key `K` (whose turn it is) and a tag `T` that the
//! caller uses to find who asked (the server uses slab index and
//! generation, and discards results for connections that closed meanwhile).

use std::hash::Hash;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::fair_queue::FairQueue;
pub use super::fair_queue::{Full, Ticket};
use super::suspects::Suspects;
use super::{Denial, PasswordCheck};

struct Job<K, T> {
    source: K,
    tag: T,
    check: PasswordCheck,
    /// Where its result goes: the pool handle that submitted it.
    reply: Reply<T>,
}

/// One handle's way back: its results channel and how to wake its reader.
struct Reply<T> {
    sender: mpsc::Sender<(T, Result<(), Denial>)>,
    notify: Arc<dyn Fn() + Send + Sync>,
}

impl<T> Clone for Reply<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            notify: Arc::clone(&self.notify),
        }
    }
}

/// The threads, stopped and joined when the last handle is dropped.
struct Workers<K, T> {
    shared: Arc<Shared<K, T>>,
    threads: Vec<JoinHandle<()>>,
}

impl<K, T> Drop for Workers<K, T> {
    fn drop(&mut self) {
        // Each thread ends after the job it runs; waiting jobs are dropped.
        self.shared.lock().stopping = true;
        self.shared.work.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What the loop and the threads share.
struct Queue<K, T> {
    jobs: FairQueue<K, Job<K, T>>,
    /// Sources whose secrets failed lately: served after the others.
    suspects: Suspects<K>,
    /// Set when the pool is dropped: waiting jobs are skipped, so that a
    /// shutdown does not wait for a full queue of argon2 runs.
    stopping: bool,
}

struct Shared<K, T> {
    queue: Mutex<Queue<K, T>>,
    /// Signalled when a job is queued or the pool stops.
    work: Condvar,
}

impl<K, T> Shared<K, T> {
    fn lock(&self) -> MutexGuard<'_, Queue<K, T>> {
        // A thread that panicked mid-argon2 held no lock; one that panicked
        // holding it left the queue consistent (no method panics half-way).
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A fixed set of threads that run [`PasswordCheck`]s, from one fair
/// queue; each handle ([`share`](VerifierPool::share): one per event loop)
/// gets the results of what it submitted.
pub struct VerifierPool<K, T> {
    shared: Arc<Shared<K, T>>,
    workers: Arc<Workers<K, T>>,
    reply: Reply<T>,
    results: Receiver<(T, Result<(), Denial>)>,
}

impl<K, T> std::fmt::Debug for VerifierPool<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifierPool({} threads)", self.workers.threads.len())
    }
}

impl<K: Hash + Eq + Clone + Send + 'static, T: Send + 'static> VerifierPool<K, T> {
    /// Starts `threads` threads (at least one) serving a queue of
    /// `queue_len` jobs in all and `per_source` of one source.
    ///
    /// # Errors
    /// The OS error when a thread cannot be started.
    pub fn new(
        threads: usize,
        queue_len: usize,
        per_source: usize,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: FairQueue::new(queue_len, per_source),
                suspects: Suspects::default(),
                stopping: false,
            }),
            work: Condvar::new(),
        });
        let count = threads.max(1);
        let mut threads = Vec::with_capacity(count);
        for number in 0..count {
            let for_thread = Arc::clone(&shared);
            // On an error the threads started are stopped as `workers` drops.
            let spawned = std::thread::Builder::new()
                .name(format!("lubdub-auth-{number}"))
                .spawn(move || {
                    while let Some(job) = next_job(&for_thread) {
                        // The lock is released while argon2 runs.
                        let result = job.check.run();
                        if result.is_err() {
                            for_thread
                                .lock()
                                .suspects
                                .failed(job.source, Instant::now());
                        }
                        // A handle that is gone has no one left to tell.
                        if job.reply.sender.send((job.tag, result)).is_ok() {
                            (job.reply.notify)();
                        }
                    }
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(error) => {
                    drop(Workers {
                        shared: Arc::clone(&shared),
                        threads,
                    });
                    return Err(error);
                }
            }
        }
        let workers = Arc::new(Workers {
            shared: Arc::clone(&shared),
            threads,
        });
        let (sender, results) = mpsc::channel();
        Ok(Self {
            shared,
            workers,
            reply: Reply { sender, notify },
            results,
        })
    }

    /// Another handle on the same threads and queue (the queue's bounds
    /// and per-source shares count every handle's jobs), whose results come
    /// back to it alone, with `notify` called for each.
    pub fn share(&self, notify: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (sender, results) = mpsc::channel();
        Self {
            shared: Arc::clone(&self.shared),
            workers: Arc::clone(&self.workers),
            reply: Reply { sender, notify },
            results,
        }
    }

    /// Queues a check of `source`; its result comes back through
    /// [`try_result`](Self::try_result) unless it is withdrawn first.
    ///
    /// # Errors
    /// [`Full`]; nothing was queued.
    pub fn submit(&self, source: K, tag: T, check: PasswordCheck) -> Result<Ticket, Full> {
        let mut queue = self.shared.lock();
        let suspect = queue.suspects.is_suspect(&source, Instant::now());
        let job = Job {
            source: source.clone(),
            tag,
            check,
            reply: self.reply.clone(),
        };
        let ticket = queue.jobs.push(source, job, suspect)?;
        drop(queue);
        self.shared.work.notify_one();
        Ok(ticket)
    }

    /// Takes job `ticket` of `source` out of the queue: true when it was
    /// still waiting (it will not run, and no result comes back); false
    /// when a thread took it already (its result comes back).
    pub fn withdraw(&self, source: &K, ticket: Ticket) -> bool {
        self.shared.lock().jobs.remove(source, ticket).is_some()
    }

    /// Jobs waiting for a thread (not those running).
    pub fn waiting(&self) -> usize {
        self.shared.lock().jobs.len()
    }

    /// The next finished job, if any; never blocks.
    pub fn try_result(&self) -> Option<(T, Result<(), Denial>)> {
        self.results.try_recv().ok()
    }
}

/// Waits for the next job; `None` once the pool stops.
fn next_job<K: Hash + Eq + Clone, T>(shared: &Shared<K, T>) -> Option<Job<K, T>> {
    let mut queue = shared.lock();
    loop {
        if queue.stopping {
            return None;
        }
        let Queue { jobs, suspects, .. } = &mut *queue;
        let now = Instant::now();
        if let Some(job) = jobs.pop(|source| suspects.is_suspect(source, now)) {
            return Some(job);
        }
        queue = shared
            .work
            .wait(queue)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

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

    fn wait_for<T: Send + 'static>(pool: &VerifierPool<u8, T>) -> (T, Result<(), Denial>) {
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
            8,
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .expect("threads start");
        let stored = password::hash(b"the right secret", cheap()).expect("hashes");
        pool.submit(0, 1, check("alice", &stored, "the right secret"))
            .expect("queued");
        pool.submit(0, 2, check("alice", &stored, "the wrong secret"))
            .expect("queued");
        let mut results = [wait_for(&pool), wait_for(&pool)];
        results.sort_by_key(|(tag, _)| *tag);
        assert_eq!(results[0], (1, Ok(())));
        assert_eq!(
            results[1],
            (
                2,
                Err(Denial::NotGranted {
                    name: "alice".into()
                })
            )
        );
        assert_eq!(notified.load(Ordering::SeqCst), 2);
        assert_eq!(pool.waiting(), 0);
    }

    #[test]
    fn the_bounds_refuse_at_once() {
        // One thread, held in its first notification: nothing more is taken.
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let pool = VerifierPool::new(
            1,
            3,
            2,
            Arc::new(move || {
                let _ = released.lock().map(|receiver| receiver.recv());
            }),
        )
        .expect("threads start");
        pool.submit(0, 0, check("alice", "x", "y")).expect("queued");
        let _ = wait_for(&pool);
        pool.submit(1, 1, check("alice", "x", "y")).expect("queued");
        pool.submit(1, 2, check("alice", "x", "y")).expect("queued");
        assert_eq!(
            pool.submit(1, 3, check("alice", "x", "y")),
            Err(Full::Source { max: 2 })
        );
        pool.submit(2, 4, check("alice", "x", "y")).expect("queued");
        assert_eq!(
            pool.submit(3, 5, check("alice", "x", "y")),
            Err(Full::Everyone { max: 3 })
        );
        assert_eq!(pool.waiting(), 3);
        drop(release);
    }

    #[test]
    fn a_withdrawn_job_is_not_run_and_a_started_one_cannot_be_withdrawn() {
        // The first job's notification blocks the only thread until it is
        // released: the second job stays queued meanwhile, with no race.
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let pool = VerifierPool::new(
            1,
            8,
            8,
            Arc::new(move || {
                let _ = released.lock().map(|receiver| receiver.recv());
            }),
        )
        .expect("threads start");
        let first = pool.submit(0, 1, check("alice", "x", "y")).expect("queued");
        let second = pool.submit(0, 2, check("alice", "x", "y")).expect("queued");
        // The result is sent before the notification that blocks.
        assert!(matches!(wait_for(&pool), (1, Err(_))));
        assert!(!pool.withdraw(&0, first), "the first job ran");
        assert!(pool.withdraw(&0, second), "the second job was waiting");
        assert_eq!(pool.waiting(), 0);
        release.send(()).expect("the thread waits");
        pool.submit(0, 3, check("alice", "x", "y")).expect("queued");
        release.send(()).expect("the thread waits");
        assert!(matches!(wait_for(&pool), (3, Err(_))), "job 2 never ran");
    }
}
