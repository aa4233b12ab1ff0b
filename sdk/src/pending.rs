//! Requests waiting for their answers, capped: a client that never reads
//! its replies (or a capture that lost them) cannot grow a plugin's memory
//! without bound. What falls out is the oldest request, for the plugin to
//! report unanswered.

use std::collections::VecDeque;

/// A FIFO of pending transactions holding at most `cap` of them.
///
/// ```
/// use trawl_sdk::Pending;
/// let mut p = Pending::new(2);
/// assert_eq!(p.push(1), None);
/// assert_eq!(p.push(2), None);
/// assert_eq!(p.push(3), Some(1), "the oldest goes, to be reported unanswered");
/// assert_eq!(p.pop(), Some(2));
/// ```
#[derive(Clone, Debug)]
pub struct Pending<T> {
    queue: VecDeque<T>,
    cap: usize,
}

impl<T> Default for Pending<T> {
    /// Up to [`Pending::DEFAULT_CAP`] transactions.
    fn default() -> Self {
        Pending::new(Self::DEFAULT_CAP)
    }
}

impl<T> Pending<T> {
    /// What `Pending::default()` holds: enough for deep pipelining.
    pub const DEFAULT_CAP: usize = 4096;

    /// At most `cap` transactions (at least one).
    pub fn new(cap: usize) -> Self {
        Pending { queue: VecDeque::new(), cap: cap.max(1) }
    }

    /// Queues a transaction; when full, the oldest comes back out.
    #[must_use = "the transaction pushed out was never answered: report it"]
    pub fn push(&mut self, t: T) -> Option<T> {
        let evicted = if self.queue.len() >= self.cap { self.queue.pop_front() } else { None };
        self.queue.push_back(t);
        evicted
    }

    /// The oldest transaction, which the next answer belongs to.
    pub fn pop(&mut self) -> Option<T> {
        self.queue.pop_front()
    }

    pub fn front(&self) -> Option<&T> {
        self.queue.front()
    }

    pub fn front_mut(&mut self) -> Option<&mut T> {
        self.queue.front_mut()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.queue.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.queue.iter_mut()
    }

    /// Takes every transaction, oldest first (the connection closed).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.queue.drain(..)
    }
}

impl<T> IntoIterator for Pending<T> {
    type Item = T;
    type IntoIter = std::collections::vec_deque::IntoIter<T>;

    /// Every transaction still waiting, oldest first.
    fn into_iter(self) -> Self::IntoIter {
        self.queue.into_iter()
    }
}
