//! A cache of small blocks in front of the plugin's allocator.
//!
//! A dissector allocates and frees many small blocks per call: header
//! names and values, a record's strings, the postcard answer's pieces.
//! Talc's allocate and free were about a tenth of the HTTP and Redis
//! plugins' time in the sandbox, most of it for blocks under 256 bytes.
//! Here each such block size (16 sizes, 16 bytes apart) has a list of freed
//! blocks: allocating pops one, freeing pushes it, a few instructions each.
//! New blocks are cut from 32 KiB chunks taken from the allocator behind.
//!
//! What it costs: a freed small block is kept for its size and never goes
//! back to the allocator behind, so a plugin holds at most the most small
//! blocks it ever had live at once, per size. Linear memory never shrinks
//! anyway, and the host's memory limit on the instance still applies.
//! No crate offers such a front for another `GlobalAlloc` on wasm32
//! without threads, so it is written here; it is small.
//!
//! It is only sound without threads: the lists are plain memory, not
//! atomics (the sandbox's wasm32 has no threads; see [`Cached`]'s `Sync`).

#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// Block sizes step by this much; it is also every block's alignment.
const GRANULE: usize = 16;
/// Sizes cached: 16, 32, … 256 bytes.
const CLASSES: usize = 16;
/// Largest block cached.
pub(crate) const MOST_CACHED: usize = GRANULE * CLASSES;
/// New blocks are cut from chunks this big.
const CHUNK: usize = 32 * 1024;

/// `inner` with small blocks cached (see the module's documentation).
pub(crate) struct Cached<A> {
    inner: A,
    state: UnsafeCell<State>,
}

struct State {
    /// Per size, the last freed block; each free block's first word points
    /// at the one freed before it.
    free: [*mut u8; CLASSES],
    /// The unused rest of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

// SAFETY: without threads (wasm32 without `atomics`) there is one thread,
// so the state is never reached from two at once. Other builds do not get
// this `Sync`, so they cannot put a `Cached` in a `static`.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for Cached<A> {}

impl<A> Cached<A> {
    pub(crate) const fn new(inner: A) -> Self {
        Cached {
            inner,
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }
}

/// The cached size a block of `layout` is served from, if any.
fn class(size: usize, align: usize) -> Option<usize> {
    (size <= MOST_CACHED && align <= GRANULE).then(|| size.saturating_sub(1) / GRANULE)
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for Cached<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout.size(), layout.align()) else {
            // SAFETY: the caller's contract for `alloc`, passed on.
            return unsafe { self.inner.alloc(layout) };
        };
        // SAFETY: one thread (see `Sync`), and no other borrow of the state
        // is alive: the allocator behind never calls back into this one.
        let s = unsafe { &mut *self.state.get() };
        let head = s.free[c];
        if !head.is_null() {
            // SAFETY: `head` is a free block of this size, at least a word
            // long and 16-aligned, whose first word `dealloc` wrote.
            s.free[c] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = (c + 1) * GRANULE;
        let left = (s.end as usize) - (s.next as usize);
        if left < size {
            // SAFETY: CHUNK is non-zero and GRANULE a power of two.
            let chunk = unsafe { self.inner.alloc(Layout::from_size_align_unchecked(CHUNK, GRANULE)) };
            if chunk.is_null() {
                return chunk;
            }
            if left > 0 {
                // The old chunk's tail (a multiple of 16 bytes, under 256)
                // becomes a free block of its size rather than lost.
                let tail = (left / GRANULE) - 1;
                // SAFETY: `next` starts `left` unused bytes of the old
                // chunk, 16-aligned; they become one free block of that size.
                unsafe { s.next.cast::<*mut u8>().write(s.free[tail]) };
                s.free[tail] = s.next;
            }
            s.next = chunk;
            // SAFETY: within (one past the end of) the chunk just taken.
            s.end = unsafe { chunk.add(CHUNK) };
        }
        let block = s.next;
        // SAFETY: `size` bytes are left in the chunk (checked above).
        s.next = unsafe { block.add(size) };
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class(layout.size(), layout.align()).is_none() {
            // SAFETY: the caller's contract for `alloc_zeroed`, passed on:
            // the allocator behind may know its fresh memory is zero.
            return unsafe { self.inner.alloc_zeroed(layout) };
        }
        // SAFETY: the caller's contract for `alloc`.
        let block = unsafe { self.alloc(layout) };
        if !block.is_null() {
            // SAFETY: `block` holds `layout.size()` bytes.
            unsafe { ptr::write_bytes(block, 0, layout.size()) };
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(c) = class(layout.size(), layout.align()) else {
            // SAFETY: the caller's contract for `dealloc`; blocks of this
            // layout came from `inner`.
            return unsafe { self.inner.dealloc(block, layout) };
        };
        // SAFETY: as in `alloc`.
        let s = unsafe { &mut *self.state.get() };
        // SAFETY: `block` came from `alloc` with this layout, so it is a
        // block of this size (at least 16 bytes, 16-aligned) and now free.
        unsafe { block.cast::<*mut u8>().write(s.free[c]) };
        s.free[c] = block;
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (class(layout.size(), layout.align()), class(new_size, layout.align()));
        match (old, new) {
            // SAFETY: the caller's contract for `realloc`, passed on.
            (None, None) => unsafe { self.inner.realloc(block, layout, new_size) },
            // The block already has room for the new size.
            (Some(a), Some(b)) if a == b => block,
            _ => {
                // SAFETY: the caller guarantees `new_size` with this
                // alignment is a valid layout.
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: a valid, non-zero layout (as the caller's).
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    // SAFETY: both blocks hold at least the smaller size and
                    // do not overlap; `block` was allocated with `layout`.
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    /// Blocks of every size around the cached ones, written, grown,
    /// shrunk and freed in an interleaved order, keep their bytes and
    /// alignment, and freed small blocks are served again.
    #[test]
    fn blocks_keep_their_bytes_and_are_reused() {
        let a = Cached::new(System);
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        for round in 0..3u8 {
            for size in (1..=MOST_CACHED + 64).step_by(7) {
                for align in [1, 8, 16, 32] {
                    let layout = Layout::from_size_align(size, align).unwrap();
                    // SAFETY: a valid non-zero layout; the block is freed below.
                    let p = unsafe { a.alloc(layout) };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0);
                    let fill = (size as u8) ^ round;
                    // SAFETY: `p` holds `size` bytes.
                    unsafe { ptr::write_bytes(p, fill, size) };
                    live.push((p, layout, fill));
                }
            }
            // Grow and shrink every other block across the cached sizes.
            for (i, (p, layout, fill)) in live.iter_mut().enumerate().filter(|(i, _)| i % 2 == 0) {
                let new_size = if i % 4 == 0 { layout.size() * 3 + 1 } else { (layout.size() / 2).max(1) };
                // SAFETY: `p` came from `a` with `layout`; the new size is
                // non-zero and, with this alignment, valid.
                let q = unsafe { a.realloc(*p, *layout, new_size) };
                assert!(!q.is_null());
                let kept = layout.size().min(new_size);
                // SAFETY: `q` holds at least `kept` bytes.
                assert!(unsafe { std::slice::from_raw_parts(q, kept) }.iter().all(|b| b == fill));
                // SAFETY: `q` holds `new_size` bytes.
                unsafe { ptr::write_bytes(q, *fill, new_size) };
                *p = q;
                *layout = Layout::from_size_align(new_size, layout.align()).unwrap();
            }
            for (p, layout, fill) in live.drain(..).rev() {
                // SAFETY: `p` holds `layout.size()` bytes.
                assert!(unsafe { std::slice::from_raw_parts(p, layout.size()) }.iter().all(|&b| b == fill));
                // SAFETY: `p` came from `a` with `layout` and is freed once.
                unsafe { a.dealloc(p, layout) };
            }
        }
        // A freed small block is the next one of its size handed out.
        let layout = Layout::from_size_align(40, 8).unwrap();
        // SAFETY: valid layouts; each block is freed once.
        unsafe {
            let p = a.alloc(layout);
            a.dealloc(p, layout);
            assert_eq!(a.alloc(Layout::from_size_align(48, 8).unwrap()), p);
        }
    }
}
