//! Memory the server gives back once it has started, and again when a busy spell ends.
//!
//! Most of an idle server's resident memory is not its heap but pages of its own
//! executable: starting (configuration, migrations, the route tables, the script engine,
//! the OpenAPI document) runs code and reads constants from all over the binary, and the
//! kernel maps whole runs of pages around each fault. They stay counted in the process's
//! RSS, and count as in use for the kernel, although most are never touched again.
//! `release` unmaps the executable's read-only segments (`MADV_DONTNEED`: the next touch
//! maps a page again from the page cache, a minor fault, so only what runs comes back),
//! returns the allocators' free pages (mimalloc's of this thread and its abandoned and
//! arena memory; the C heap's, where SQLite keeps its caches, with `malloc_trim`).
//! A mimalloc heap can be collected only by its own thread: each runtime worker collects
//! its own the next time it parks after a release (`on_park`), so an idle worker is never
//! woken for it.
//!
//! What must stay true: nothing that was written is ever dropped. Only `PT_LOAD`
//! segments without write permission are released, never one that overlaps the
//! relocated read-only data (`PT_GNU_RELRO`), and nothing when the executable has text
//! relocations; the content of what is released is the file's, so it comes back
//! unchanged.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Releases so far: a runtime worker that has not collected since the last one does when
/// it parks.
static RELEASES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The releases this thread's heap was collected after.
    static COLLECTED: Cell<u64> = const { Cell::new(0) };
}

/// Give memory back; returns the bytes of executable pages released (0 where this is
/// not supported).
pub(crate) fn release() -> usize {
    RELEASES.fetch_add(1, Ordering::Relaxed);
    let released = executable::release();
    // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any time.
    unsafe { mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free pages of glibc's heap to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    released
}

/// A runtime worker is about to park (`on_thread_park`): collect its own heap if a
/// release happened since it last did. One relaxed load per park otherwise.
pub(crate) fn on_park() {
    COLLECTED.with(collect_once_per_release);
}

/// Collect the calling thread's heap unless `collected` already says the latest release;
/// whether it did.
fn collect_once_per_release(collected: &Cell<u64>) -> bool {
    let releases = RELEASES.load(Ordering::Relaxed);
    if collected.get() == releases {
        return false;
    }
    collected.set(releases);
    // SAFETY: as in `release`.
    unsafe { mi_collect(true) };
    true
}

// The crate that links mimalloc's library, where `mi_collect` is (also when mimalloc is
// not the global allocator, as in tests: then its heap is empty and this does nothing).
use mimalloc as _;

unsafe extern "C" {
    /// mimalloc's collection of the calling thread's heap, abandoned segments and the
    /// arenas' pending purges (`force`: now, not after the purge delay).
    fn mi_collect(force: bool);
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod executable {
    use std::ffi::{c_int, c_void};

    const PF_W: u32 = 0x2;
    const DT_NULL: i64 = 0;
    const DT_TEXTREL: i64 = 22;
    const DT_FLAGS: i64 = 30;
    const DF_TEXTREL: u64 = 0x4;

    /// `Elf64_Dyn`: a tag and its value.
    #[repr(C)]
    struct Dyn {
        d_tag: i64,
        d_val: u64,
    }

    /// The read-only segments of the executable, page-aligned inwards.
    #[derive(Default)]
    struct Segments {
        ranges: Vec<(usize, usize)>,
        /// Text relocations or an overlap with RELRO: nothing may be released.
        unsafe_to_release: bool,
    }

    pub(super) fn release() -> usize {
        let mut segments = Segments::default();
        // SAFETY: the callback only reads the headers `dl_iterate_phdr` hands it and
        // writes to `segments`, which outlives the call.
        unsafe {
            libc::dl_iterate_phdr(Some(first_object), (&raw mut segments).cast());
        }
        if segments.unsafe_to_release {
            return 0;
        }
        let mut released = 0;
        for (start, len) in segments.ranges {
            // SAFETY: a page-aligned range inside a read-only, file-backed segment of this
            // executable that was never written (no text relocations, not RELRO): after
            // `MADV_DONTNEED` each page reads again as the file's content.
            if unsafe { libc::madvise(start as *mut c_void, len, libc::MADV_DONTNEED) } == 0 {
                released += len;
            }
        }
        released
    }

    /// Called for each loaded object, the executable first; stops after it.
    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `dl_iterate_phdr` passes a valid `info` for the duration of the call,
        // and `data` is the `Segments` that `release` passed.
        let (info, segments) = unsafe { (&*info, &mut *data.cast::<Segments>()) };
        // SAFETY: `sysconf` reads a constant of the system.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
        if page == 0 || info.dlpi_phdr.is_null() {
            segments.unsafe_to_release = true;
            return 1;
        }
        // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
        let headers =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let base = usize::try_from(info.dlpi_addr).unwrap_or(0);
        let at = |vaddr: u64| base + usize::try_from(vaddr).unwrap_or(usize::MAX - base);
        let relro: Vec<(usize, usize)> = headers
            .iter()
            .filter(|h| h.p_type == libc::PT_GNU_RELRO)
            .map(|h| (at(h.p_vaddr), at(h.p_vaddr) + h.p_memsz as usize))
            .collect();
        for h in headers {
            if h.p_type == libc::PT_DYNAMIC {
                // SAFETY: the dynamic section of a loaded object, mapped and terminated
                // by DT_NULL.
                if unsafe { has_text_relocations(at(h.p_vaddr) as *const Dyn) } {
                    segments.unsafe_to_release = true;
                }
            }
            if h.p_type != libc::PT_LOAD || h.p_flags & PF_W != 0 {
                continue;
            }
            let (start, end) = (at(h.p_vaddr), at(h.p_vaddr) + h.p_memsz as usize);
            if relro.iter().any(|&(s, e)| s < end && start < e) {
                segments.unsafe_to_release = true;
            }
            let (start, end) = (start.next_multiple_of(page), end / page * page);
            if end > start {
                segments.ranges.push((start, end - start));
            }
        }
        1
    }

    /// # Safety
    /// `dynamic` points to a mapped dynamic section terminated by `DT_NULL`.
    unsafe fn has_text_relocations(mut dynamic: *const Dyn) -> bool {
        loop {
            // SAFETY: the caller's promise; the loop stops at DT_NULL.
            let entry = unsafe { &*dynamic };
            match entry.d_tag {
                DT_NULL => return false,
                DT_TEXTREL => return true,
                DT_FLAGS if entry.d_val & DF_TEXTREL != 0 => return true,
                _ => {}
            }
            // SAFETY: not past DT_NULL yet.
            dynamic = unsafe { dynamic.add(1) };
        }
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
mod executable {
    pub(super) fn release() -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_executable_pages_come_back_unchanged() {
        fn answer(x: u64) -> u64 {
            x.wrapping_mul(2_654_435_761).rotate_left(7)
        }
        const TEXT: &str = "a constant in the executable's read-only data";
        let before = (answer(42), TEXT.to_owned());
        let released = release();
        if cfg!(all(target_os = "linux", target_pointer_width = "64")) {
            assert!(released > 0, "the test binary has read-only segments");
        }
        assert_eq!((answer(42), TEXT.to_owned()), before);
    }

    #[test]
    fn a_parking_worker_collects_its_heap_once_per_release() {
        let collected = Cell::new(RELEASES.load(Ordering::Relaxed));
        assert!(
            !collect_once_per_release(&collected),
            "nothing released yet"
        );
        release();
        assert!(collect_once_per_release(&collected));
        assert!(!collect_once_per_release(&collected), "once per release");
        release();
        assert!(collect_once_per_release(&collected));
    }
}
