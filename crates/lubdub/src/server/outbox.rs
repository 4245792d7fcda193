//! A connection's outbound queue: the bytes its socket did not take yet,
//! held in fixed-size chunks lent by the event loop's [`ChunkPool`].
//!
//! Data flow: `Connection::send` writes what it can at once and pushes the
//! rest here; a writable event writes the queue out and hands emptied
//! chunks back to the pool, whose bounded free list the next queue to fill
//! takes them from. MSGs waiting for fan-out are held the same way.
//!
//! Hand-written rather than a `Vec<u8>` per queue: a growing `Vec` doubles
//! and is reallocated, so what a queue holds is not what it counts, and
//! buffers of many sizes freed in turn fragment the heap (with the waiting
//! MSGs as `Vec`s beside chunked queues, resident memory ran 9 MB past the
//! cap in one run of issue 12's attack 3b in four). Chunks of one size are
//! counted exactly, reused whole, and an empty queue holds none. The pool
//! belongs to the event loop and is lent to each call rather than kept in
//! a thread-local: each loop (issue 14 runs one per core) has its own, and
//! the tests below drive a queue with fake sockets.
//!
//! Written out with `write_vectored` over the first chunks rather than a
//! chunk per call: 40 to 60 times fewer calls and 5–27 % more throughput
//! (256 MiB of 60 KB messages over loopback, six pairs of runs of
//! `measure_vectored_against_chunkwise_writes`, release build).
//!
//! Size: one job (a queue of chunks and the pool that lends them); more
//! than half of the file is the unit tests that drive it with fake sockets.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Write};

/// Bytes per chunk. 16 KiB: a full 1 MiB queue (`--max-outbound`) is 64
/// chunks, written by one `writev` and listed in a 512-byte ring of
/// pointers; a TLS record (16 KiB of plaintext) spans at most two; and a
/// queue wastes less than two chunks (its partly sent first one and partly
/// filled last one), 3 % of that bound. Smaller chunks cost more calls and
/// pointers per byte, larger ones more waste per small queue (a queue
/// holding one PONG behind a full socket holds one chunk).
pub const CHUNK_LEN: usize = 16 * 1024;

/// Free chunks a pool keeps: one full 1 MiB queue's worth (1 MiB), so that
/// queues that drain and refill within a turn stay off the allocator, while
/// a flood's peak goes back to it once the flood ends.
pub const FREE_CHUNKS_KEPT: usize = 64;

/// Slices handed to one `write_vectored`: a whole 1 MiB queue.
const SLICES_PER_WRITE: usize = 64;

type Chunk = Box<[u8; CHUNK_LEN]>;

fn new_chunk() -> Chunk {
    vec![0; CHUNK_LEN]
        .into_boxed_slice()
        .try_into()
        .expect("a boxed slice of CHUNK_LEN bytes")
}

/// The chunks one event loop lends its connections' queues: a free list of
/// at most `max_free` chunks, beyond which returned chunks are freed. One
/// per event loop (it is not shared between threads).
pub struct ChunkPool {
    free: Vec<Chunk>,
    max_free: usize,
}

impl ChunkPool {
    /// A pool that keeps at most `max_free` free chunks.
    pub fn new(max_free: usize) -> Self {
        Self {
            free: Vec::with_capacity(max_free),
            max_free,
        }
    }

    /// Chunks kept free for the next queue to fill.
    #[cfg(test)]
    pub fn free_chunks(&self) -> usize {
        self.free.len()
    }

    fn take(&mut self) -> Chunk {
        self.free.pop().unwrap_or_else(new_chunk)
    }

    fn give(&mut self, chunk: Chunk) {
        if self.free.len() < self.max_free {
            self.free.push(chunk);
        }
    }
}

impl fmt::Debug for ChunkPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkPool")
            .field("free", &self.free.len())
            .field("max_free", &self.max_free)
            .finish()
    }
}

/// Unsent bytes in chunks: `head..` of the first chunk, whole chunks, and
/// `..tail` of the last. No chunk is held while it is empty.
#[derive(Default)]
pub struct Outbox {
    chunks: VecDeque<Chunk>,
    /// Where the unsent bytes begin in the first chunk.
    head: usize,
    /// Where they end in the last chunk (`CHUNK_LEN` when it is full).
    tail: usize,
}

impl Outbox {
    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        match self.chunks.len() {
            0 => 0,
            chunks => chunks * CHUNK_LEN - self.head - (CHUNK_LEN - self.tail),
        }
    }

    /// Whether no byte waits.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Memory the queue holds: its chunks, counted whole.
    pub fn held_bytes(&self) -> usize {
        self.chunks.len() * CHUNK_LEN
    }

    /// How much [`held_bytes`](Self::held_bytes) would grow if `len` more
    /// bytes were pushed.
    pub fn growth_for(&self, len: usize) -> usize {
        let room = if self.chunks.is_empty() {
            0
        } else {
            CHUNK_LEN - self.tail
        };
        len.saturating_sub(room).div_ceil(CHUNK_LEN) * CHUNK_LEN
    }

    /// Appends `bytes`, taking chunks from `pool` as needed.
    pub fn push(&mut self, mut bytes: &[u8], pool: &mut ChunkPool) {
        while !bytes.is_empty() {
            if self.chunks.is_empty() || self.tail == CHUNK_LEN {
                self.chunks.push_back(pool.take());
                self.tail = 0;
            }
            let last = self.chunks.back_mut().expect("a chunk was just ensured");
            let n = bytes.len().min(CHUNK_LEN - self.tail);
            last[self.tail..self.tail + n].copy_from_slice(&bytes[..n]);
            self.tail += n;
            bytes = &bytes[n..];
        }
    }

    /// Writes queued bytes to `writer` until it would block or the queue is
    /// empty, giving emptied chunks back to `pool`. Returns the bytes written.
    ///
    /// # Errors
    /// The writer's errors other than `WouldBlock` and `Interrupted`
    /// (`WriteZero` when it takes nothing); bytes it took before stay taken.
    pub fn write_to(&mut self, writer: &mut impl Write, pool: &mut ChunkPool) -> io::Result<usize> {
        self.write_chunks(writer, pool, SLICES_PER_WRITE)
    }

    /// [`write_to`](Self::write_to), handing the writer at most `per_call`
    /// chunks a call (at most [`SLICES_PER_WRITE`]).
    fn write_chunks(
        &mut self,
        writer: &mut impl Write,
        pool: &mut ChunkPool,
        per_call: usize,
    ) -> io::Result<usize> {
        let mut written = 0;
        while !self.is_empty() {
            let result = {
                let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
                let count = self.slices(&mut slices[..per_call]);
                writer.write_vectored(&slices[..count])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.consume(n, pool);
                    written += n;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(written)
    }

    /// Replaces `out`'s contents with a copy of the queued bytes.
    pub fn copy_to(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.len());
        for part in self.parts() {
            out.extend_from_slice(part);
        }
    }

    /// Gives every chunk back to `pool`; the queue is empty after.
    pub fn release(&mut self, pool: &mut ChunkPool) {
        for chunk in self.chunks.drain(..) {
            pool.give(chunk);
        }
        self.head = 0;
        self.tail = 0;
    }

    /// The unsent bytes of each chunk, in order.
    fn parts(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let last = self.chunks.len().saturating_sub(1);
        self.chunks.iter().enumerate().map(move |(index, chunk)| {
            let start = if index == 0 { self.head } else { 0 };
            let end = if index == last { self.tail } else { CHUNK_LEN };
            &chunk[start..end]
        })
    }

    /// Fills `slices` with the unsent bytes of the first chunks, in order;
    /// returns how many it filled.
    fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut count = 0;
        for (part, slice) in self.parts().zip(slices.iter_mut()) {
            *slice = IoSlice::new(part);
            count += 1;
        }
        count
    }

    /// Drops the first `n` unsent bytes (written), giving emptied chunks
    /// back to `pool`.
    fn consume(&mut self, mut n: usize, pool: &mut ChunkPool) {
        debug_assert!(n <= self.len(), "consumed more than was queued");
        while n > 0 {
            let end = if self.chunks.len() == 1 {
                self.tail
            } else {
                CHUNK_LEN
            };
            let in_first = end - self.head;
            if n < in_first {
                self.head += n;
                return;
            }
            n -= in_first;
            if let Some(chunk) = self.chunks.pop_front() {
                pool.give(chunk);
            }
            self.head = 0;
        }
        if self.chunks.is_empty() {
            self.tail = 0;
        }
    }
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.len())
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `per_call` bytes a call and `room`
    /// bytes in all (then would block), recording what it took.
    struct Socket {
        taken: Vec<u8>,
        per_call: usize,
        room: usize,
        calls: usize,
    }

    impl Socket {
        fn new(per_call: usize, room: usize) -> Self {
            Self {
                taken: Vec::new(),
                per_call,
                room,
                calls: 0,
            }
        }
    }

    impl Write for Socket {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(bytes)])
        }

        fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let mut budget = self.per_call.min(self.room);
            if budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for slice in slices {
                let take = slice.len().min(budget);
                self.taken.extend_from_slice(&slice[..take]);
                budget -= take;
                n += take;
            }
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn an_empty_queue_holds_no_chunk() {
        let mut pool = ChunkPool::new(4);
        let mut outbox = Outbox::default();
        assert_eq!((outbox.len(), outbox.held_bytes()), (0, 0));
        outbox.push(&[], &mut pool);
        assert_eq!(outbox.held_bytes(), 0);

        outbox.push(b"pong", &mut pool);
        assert_eq!((outbox.len(), outbox.held_bytes()), (4, CHUNK_LEN));
        let mut socket = Socket::new(usize::MAX, usize::MAX);
        assert_eq!(
            outbox
                .write_to(&mut socket, &mut pool)
                .expect("the fake socket takes bytes"),
            4
        );
        assert_eq!(socket.taken, b"pong");
        assert!(outbox.is_empty());
        assert_eq!((outbox.len(), outbox.held_bytes()), (0, 0));
        assert_eq!(pool.free_chunks(), 1, "the chunk went back to the pool");
    }

    #[test]
    fn bytes_leave_in_order_across_chunks_and_partial_writes() {
        let mut pool = ChunkPool::new(FREE_CHUNKS_KEPT);
        let mut outbox = Outbox::default();
        let mut expected = Vec::new();
        let mut socket = Socket::new(7_001, 0);
        for (round, len) in [1, 60_000, CHUNK_LEN, CHUNK_LEN - 1, 3, 100_000]
            .into_iter()
            .enumerate()
        {
            let bytes = pattern(len, round as u8);
            outbox.push(&bytes, &mut pool);
            expected.extend_from_slice(&bytes);
            assert_eq!(outbox.len(), expected.len() - socket.taken.len());
            assert_eq!(
                outbox.held_bytes(),
                outbox_chunks_for(&outbox) * CHUNK_LEN,
                "held bytes are whole chunks"
            );
            // The socket takes some, in odd-sized writes, then blocks.
            socket.room = 25_000;
            let before = outbox.len();
            let written = outbox
                .write_to(&mut socket, &mut pool)
                .expect("the fake socket takes bytes");
            assert_eq!(written, before.min(25_000));
            assert_eq!(outbox.len(), before - written);
        }
        socket.room = usize::MAX;
        outbox
            .write_to(&mut socket, &mut pool)
            .expect("the fake socket takes bytes");
        assert_eq!(socket.taken, expected);
        assert_eq!(outbox.held_bytes(), 0);
    }

    fn outbox_chunks_for(outbox: &Outbox) -> usize {
        let spanned = outbox.head + outbox.len();
        spanned.div_ceil(CHUNK_LEN)
    }

    #[test]
    fn held_bytes_grow_by_whole_chunks_as_growth_for_says() {
        let mut pool = ChunkPool::new(0);
        let mut outbox = Outbox::default();
        for len in [0, 1, 5, CHUNK_LEN - 6, 1, CHUNK_LEN, 3 * CHUNK_LEN + 2] {
            let expected = outbox.held_bytes() + outbox.growth_for(len);
            outbox.push(&vec![1; len], &mut pool);
            assert_eq!(outbox.held_bytes(), expected, "after pushing {len}");
        }
        assert_eq!(outbox.growth_for(0), 0);
    }

    #[test]
    fn a_copy_holds_the_unsent_bytes() {
        let mut pool = ChunkPool::new(8);
        let mut outbox = Outbox::default();
        let bytes = pattern(3 * CHUNK_LEN + 5, 3);
        outbox.push(&bytes, &mut pool);
        let mut copy = vec![1, 2, 3];
        outbox.copy_to(&mut copy);
        assert_eq!(copy, bytes);
        let mut socket = Socket::new(CHUNK_LEN + 7, CHUNK_LEN + 7);
        outbox
            .write_to(&mut socket, &mut pool)
            .expect("the fake socket takes bytes");
        outbox.copy_to(&mut copy);
        assert_eq!(copy, bytes[CHUNK_LEN + 7..]);
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound() {
        let mut pool = ChunkPool::new(2);
        let mut outbox = Outbox::default();
        outbox.push(&vec![9; 5 * CHUNK_LEN], &mut pool);
        assert_eq!(outbox.held_bytes(), 5 * CHUNK_LEN);
        outbox.release(&mut pool);
        assert_eq!(outbox.held_bytes(), 0);
        assert_eq!(pool.free_chunks(), 2, "three chunks were freed");
        // Reused before any new one is made.
        outbox.push(&[1; 10], &mut pool);
        assert_eq!(pool.free_chunks(), 1);
    }

    #[test]
    fn a_reused_chunk_carries_nothing_old() {
        let mut pool = ChunkPool::new(1);
        let mut outbox = Outbox::default();
        outbox.push(&[7; 100], &mut pool);
        outbox.release(&mut pool);
        outbox.push(b"new", &mut pool);
        let mut socket = Socket::new(usize::MAX, usize::MAX);
        outbox
            .write_to(&mut socket, &mut pool)
            .expect("the fake socket takes bytes");
        assert_eq!(socket.taken, b"new");
    }

    #[test]
    fn a_full_queue_goes_out_in_one_call() {
        let mut pool = ChunkPool::new(0);
        let mut outbox = Outbox::default();
        let bytes = pattern(SLICES_PER_WRITE * CHUNK_LEN, 1);
        outbox.push(&bytes, &mut pool);
        let mut socket = Socket::new(usize::MAX, usize::MAX);
        outbox
            .write_to(&mut socket, &mut pool)
            .expect("the fake socket takes bytes");
        assert_eq!(socket.calls, 1);
        assert_eq!(socket.taken, bytes);
    }

    #[test]
    fn a_writer_that_takes_nothing_is_an_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut pool = ChunkPool::new(1);
        let mut outbox = Outbox::default();
        outbox.push(b"bye", &mut pool);
        let error = outbox
            .write_to(&mut Closed, &mut pool)
            .expect_err("a writer that takes nothing");
        assert_eq!(error.kind(), io::ErrorKind::WriteZero);
        assert_eq!(outbox.len(), 3, "nothing was taken");
    }

    /// Counts the calls a writer gets.
    struct Counted<W> {
        inner: W,
        calls: u64,
    }

    impl<W: Write> Write for Counted<W> {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.inner.write(bytes)
        }

        fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            self.inner.write_vectored(slices)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    /// 256 MiB of 60 KB messages through a loopback socket to a reader
    /// thread, the queue refilled to 1 MiB on every writable event, written
    /// out with `writev` over the first chunks, then a chunk per call.
    #[test]
    #[ignore = "a measurement: cargo test --release -p lubdub outbox -- --ignored --nocapture"]
    fn measure_vectored_against_chunkwise_writes() {
        use std::io::Read;
        use std::time::Instant;

        const TOTAL: usize = 256 << 20;
        for vectored in [true, false, true, false, true, false] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
            let addr = listener.local_addr().expect("its address");
            let reader = std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().expect("the connection");
                let mut buffer = vec![0; 64 * 1024];
                let mut read = 0;
                while read < TOTAL {
                    match stream.read(&mut buffer).expect("reads") {
                        0 => break,
                        n => read += n,
                    }
                }
                read
            });
            let stream = std::net::TcpStream::connect(addr).expect("connects");
            stream.set_nonblocking(true).expect("non-blocking");
            let mut stream = mio::net::TcpStream::from_std(stream);
            let mut poll = mio::Poll::new().expect("a poll");
            let mut events = mio::Events::with_capacity(4);
            poll.registry()
                .register(&mut stream, mio::Token(0), mio::Interest::WRITABLE)
                .expect("registers");
            let mut socket = Counted {
                inner: stream,
                calls: 0,
            };
            let mut pool = ChunkPool::new(FREE_CHUNKS_KEPT);
            let mut outbox = Outbox::default();
            let message = pattern(60_000, 0);
            let started = Instant::now();
            let mut sent = 0;
            let mut wakeups = 0u64;
            while sent < TOTAL {
                while outbox.len() + message.len() <= 1 << 20 && sent + outbox.len() < TOTAL {
                    outbox.push(&message, &mut pool);
                }
                let per_call = if vectored { SLICES_PER_WRITE } else { 1 };
                sent += outbox
                    .write_chunks(&mut socket, &mut pool, per_call)
                    .expect("the socket takes bytes");
                if !outbox.is_empty() {
                    poll.poll(&mut events, None).expect("polls");
                    wakeups += 1;
                }
            }
            let elapsed = started.elapsed();
            let calls = socket.calls;
            drop(socket);
            assert!(reader.join().expect("the reader") >= TOTAL);
            println!(
                "{}: {:.0} MB/s, {} write calls ({:.1} KiB each), {wakeups} wake-ups",
                if vectored { "vectored " } else { "chunkwise" },
                TOTAL as f64 / elapsed.as_secs_f64() / 1e6,
                calls,
                TOTAL as f64 / calls as f64 / 1024.0,
            );
        }
    }
}
