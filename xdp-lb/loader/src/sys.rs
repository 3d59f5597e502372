//! The few bpf(2) commands aya 0.14 does not offer: batched map updates and lookups,
//! `BPF_LINK_UPDATE`, and opening or describing a pinned link.
//!
//! Each command fills the member of the kernel's `union bpf_attr` it uses
//! (`include/uapi/linux/bpf.h`) as its own `#[repr(C)]` struct, with every byte
//! written (the kernel refuses nonzero bytes after the command's last field),
//! and passes that struct's size: the kernel zero-extends a shorter `attr`.
//! Errors are the raw `errno`; callers add the map or link and the operation.

use std::{
    ffi::CString,
    io,
    mem::{MaybeUninit, size_of},
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
    sync::atomic::{AtomicU8, AtomicU32, Ordering},
};

use aya::Pod;

/// `enum bpf_cmd` values used here.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `BPF_LINK_TYPE_XDP` of `enum bpf_link_type`.
pub(crate) const BPF_LINK_TYPE_XDP: u32 = 6;
/// `BPF_LINK_TYPE_TCX` of `enum bpf_link_type` (kernel ≥ 6.6).
pub(crate) const BPF_LINK_TYPE_TCX: u32 = 11;

/// `attr.batch`, for `BPF_MAP_*_BATCH`.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
const _: () = assert!(size_of::<BatchAttr>() == 56);

/// `attr.link_update`, for `BPF_LINK_UPDATE`.
#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}
const _: () = assert!(size_of::<LinkUpdateAttr>() == 16);

/// The `BPF_OBJ_*` member of `attr`, for `BPF_OBJ_GET`.
#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    /// The union is 8-byte aligned: the tail is part of `attr` and must be 0.
    _pad: u32,
}
const _: () = assert!(size_of::<ObjAttr>() == 24);

/// `attr.info`, for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}
const _: () = assert!(size_of::<InfoAttr>() == 16);

/// The head of `struct bpf_link_info`: type, IDs, and the first word of the
/// per-type union (which starts at offset 16, the union being 8-byte aligned),
/// `xdp.ifindex` for an XDP link. The kernel fills only as much as we ask for.
#[repr(C)]
#[derive(Default)]
struct LinkInfoHead {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    _pad2: u32,
}
const _: () = assert!(size_of::<LinkInfoHead>() == 24);

/// What the kernel says about a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub(crate) link_type: u32,
    pub(crate) id: u32,
    pub(crate) prog_id: u32,
    /// For an XDP link: its interface, or 0 once the interface is gone (the
    /// link is then defunct, and `BPF_LINK_UPDATE` fails with `ENOLINK`).
    pub(crate) ifindex: u32,
}

/// Runs one bpf(2) command on `attr`.
///
/// # Safety
///
/// `attr` must be the member of `union bpf_attr` that `cmd` reads, and every
/// pointer in it must be valid for what the kernel does with it under `cmd`
/// (reads of the given lengths, or writes into buffers of the given lengths).
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: upheld by the caller; `attr` itself is valid for reads and writes
    // of `size_of::<T>()` bytes, the size we pass.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // A valid descriptor is never negative.
    fd.as_raw_fd().cast_unsigned()
}

fn count(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))
}

/// A failed batch: the error, and how many elements the kernel had processed
/// before it (the command stops at the first failing element).
#[derive(Debug)]
pub(crate) struct BatchError {
    pub(crate) done: usize,
    pub(crate) source: io::Error,
}

/// `BPF_MAP_UPDATE_BATCH`: writes `keys[i]` → `values[i]` in order, with
/// `elem_flags` (`BPF_ANY`, `BPF_EXIST`, …) for each. For a map-of-maps the
/// values are inner map file descriptors (`u32`).
///
/// The caller must pass the key and value types of the map behind `map`
/// (their sizes are what the kernel reads per element).
pub(crate) fn map_update_batch<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    elem_flags: u64,
) -> Result<(), BatchError> {
    if keys.len() != values.len() {
        return Err(BatchError {
            done: 0,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    if keys.is_empty() {
        return Ok(());
    }
    let n = count(keys.len()).map_err(|source| BatchError { done: 0, source })?;
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: n,
        map_fd: fd_u32(map),
        elem_flags,
        flags: 0,
    };
    // SAFETY: `keys` and `values` hold `n` elements each, of the map's key and
    // value sizes (the caller's part); the kernel only reads them, and writes
    // the processed count into `attr.count`.
    match unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) } {
        Ok(_) => Ok(()),
        Err(source) => Err(BatchError {
            done: attr.count as usize,
            source,
        }),
    }
}

/// Where a `BPF_MAP_LOOKUP_BATCH` walk stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cursor {
    Start,
    /// The kernel's opaque position: a bucket index for hash maps, the last
    /// key for arrays (both `u32` for the maps read here).
    At(u32),
    Done,
}

/// `BPF_MAP_LOOKUP_BATCH`: appends up to `chunk` entries after `cursor` to
/// `keys` and `values` and returns the next cursor.
///
/// Only for maps whose batch position fits a `u32`: hash maps (a bucket index)
/// and arrays (the last index). A hash map's bucket is returned whole, so
/// `chunk` must exceed the longest bucket (`ENOSPC` otherwise); a few hundred
/// is plenty.
pub(crate) fn map_lookup_batch<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    cursor: Cursor,
    chunk: u32,
    keys: &mut Vec<K>,
    values: &mut Vec<V>,
) -> io::Result<Cursor> {
    let in_batch = match cursor {
        Cursor::Start => None,
        Cursor::At(at) => Some(at),
        Cursor::Done => return Ok(Cursor::Done),
    };
    keys.reserve(chunk as usize);
    values.reserve(chunk as usize);
    let mut out_batch = 0u32;
    let mut attr = BatchAttr {
        in_batch: in_batch
            .as_ref()
            .map_or(0, |at| std::ptr::from_ref(at) as u64),
        out_batch: std::ptr::from_mut(&mut out_batch) as u64,
        keys: keys.spare_capacity_mut().as_mut_ptr() as u64,
        values: values.spare_capacity_mut().as_mut_ptr() as u64,
        count: chunk,
        map_fd: fd_u32(map),
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: the spare capacity of `keys` and `values` holds at least `chunk`
    // elements of the map's key and value sizes (the caller's part), which the
    // kernel writes; `in_batch` and `out_batch` point to live `u32`s.
    let result = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
    // `ENOENT` is the end of the map, with the last entries in this chunk.
    let done = match result {
        Ok(_) => false,
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => true,
        Err(err) => return Err(err),
    };
    let got = attr.count.min(chunk) as usize;
    // SAFETY: the kernel wrote `got` whole keys and values into the spare
    // capacity; `K` and `V` are `Pod`, so any bytes are valid values.
    unsafe {
        keys.set_len(keys.len() + got);
        values.set_len(values.len() + got);
    }
    Ok(if done {
        Cursor::Done
    } else {
        Cursor::At(out_batch)
    })
}

/// Every entry of a map through `BPF_MAP_LOOKUP_BATCH`, `chunk` at a time.
pub(crate) fn map_lookup_all<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    chunk: u32,
) -> io::Result<(Vec<K>, Vec<V>)> {
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    let mut cursor = Cursor::Start;
    while cursor != Cursor::Done {
        cursor = map_lookup_batch(map, cursor, chunk, &mut keys, &mut values)?;
    }
    Ok((keys, values))
}

/// `BPF_OBJ_GET`: opens the object pinned at `path` (read-write).
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: `pathname` is a NUL-terminated string that outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr) }?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a link.
pub(crate) fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut head = MaybeUninit::new(LinkInfoHead::default());
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(link),
        info_len: size_of::<LinkInfoHead>() as u32,
        info: head.as_mut_ptr() as u64,
    };
    // SAFETY: `info` points to a zeroed buffer of `info_len` bytes; the kernel
    // reads and writes at most that many.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    // SAFETY: initialised above; the kernel wrote only plain integers.
    let head = unsafe { head.assume_init() };
    Ok(LinkInfo {
        link_type: head.link_type,
        id: head.id,
        prog_id: head.prog_id,
        ifindex: head.ifindex,
    })
}

/// `BPF_LINK_UPDATE`: makes `link` run `program` instead of its current
/// program, atomically (no packet sees no program). The program must have the
/// link's type; for XDP the kernel also keeps the link's mode.
pub(crate) fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: fd_u32(link),
        new_prog_fd: fd_u32(program),
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: an attr of plain descriptors, no pointers.
    unsafe { bpf(BPF_LINK_UPDATE, &mut attr) }?;
    Ok(())
}

/// A shared, writable mapping of the value area of a `BPF_F_MMAPABLE`
/// array, unmapped on drop.
struct ArrayMapping {
    base: std::ptr::NonNull<u8>,
    bytes: usize,
}

impl ArrayMapping {
    /// Maps the first `bytes` of the value area of the array behind `map`
    /// (rounded up to pages, as the kernel rounds what it allocates).
    fn new(map: BorrowedFd<'_>, bytes: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("no page size"))?;
        let bytes = bytes.div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's value area (offset 0)
        // of at most the size the kernel allocated for it; nothing else
        // aliases it in Rust.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, bytes })
    }
}

impl Drop for ArrayMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length and is
        // unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.bytes);
        }
    }
}

/// The kernel stores array elements `round_up(value_size, 8)` bytes apart.
const ARRAY_ELEM_ALIGN: usize = 8;

/// A mapping of the values of a `BPF_F_MMAPABLE` array of `u32`. Writes
/// through it are plain aligned 4-byte atomic stores into the map's memory:
/// no syscall, and a program reading a slot meanwhile sees its old or its new
/// value, never a mix.
pub(crate) struct U32ArrayMapping {
    mapping: ArrayMapping,
    entries: usize,
}

impl U32ArrayMapping {
    /// Maps the `entries` values of the array behind `map`, which must have
    /// been created with `BPF_F_MMAPABLE` and a 4-byte value.
    pub(crate) fn new(map: BorrowedFd<'_>, entries: u32) -> io::Result<Self> {
        let entries = entries as usize;
        Ok(Self {
            mapping: ArrayMapping::new(map, entries * ARRAY_ELEM_ALIGN)?,
            entries,
        })
    }

    /// Element `index` (which must be below the entries), read with one
    /// aligned 4-byte atomic load, as [`Self::store`] writes it.
    pub(crate) fn load(&self, index: u32) -> u32 {
        self.slot(index).load(Ordering::Relaxed)
    }

    /// Stores `value` in element `index` (which must be below the entries).
    pub(crate) fn store(&self, index: u32, value: u32) {
        self.slot(index).store(value, Ordering::Relaxed);
    }

    /// Element `index` as an atomic, in the mapping.
    fn slot(&self, index: u32) -> &AtomicU32 {
        let index = index as usize;
        assert!(index < self.entries, "array index {index} out of range");
        // SAFETY: `index` is in range, so the element lies inside the
        // mapping; elements are 8-byte aligned (page-aligned base, 8-byte
        // stride), and the kernel reads the same bytes only atomically or
        // through the program's 4-byte loads.
        unsafe {
            &*self
                .mapping
                .base
                .as_ptr()
                .add(index * ARRAY_ELEM_ALIGN)
                .cast::<AtomicU32>()
        }
    }
}

/// A mapping of the values of a `BPF_F_MMAPABLE` array of `V`, read and
/// written a byte at a time: the datapath writes the same memory meanwhile,
/// so nothing is read as a whole `V` (which could be torn).
pub(crate) struct ByteArrayMapping<V> {
    mapping: ArrayMapping,
    entries: usize,
    _value: std::marker::PhantomData<V>,
}

impl<V> ByteArrayMapping<V> {
    /// The kernel's distance between two elements.
    const STRIDE: usize = size_of::<V>().next_multiple_of(ARRAY_ELEM_ALIGN);

    /// Maps the `entries` values of the array behind `map`, which must have
    /// been created with `BPF_F_MMAPABLE` and values of `V`'s size.
    pub(crate) fn new(map: BorrowedFd<'_>, entries: u32) -> io::Result<Self> {
        let entries = entries as usize;
        Ok(Self {
            mapping: ArrayMapping::new(map, entries * Self::STRIDE)?,
            entries,
            _value: std::marker::PhantomData,
        })
    }

    /// The byte at `offset` in element `index`.
    fn byte(&self, index: u32, offset: usize) -> &AtomicU8 {
        let index = index as usize;
        assert!(
            index < self.entries && offset < size_of::<V>(),
            "element {index}, byte {offset}: out of range"
        );
        // SAFETY: in range, so inside the mapping; a byte has no alignment,
        // and the kernel's side is plain loads and stores of the same memory.
        unsafe {
            &*self
                .mapping
                .base
                .as_ptr()
                .add(index * Self::STRIDE + offset)
                .cast::<AtomicU8>()
        }
    }

    /// The `T` at `offset` in element `index`, read a byte at a time (the
    /// datapath may be writing it: the bytes may come from two writes, as a
    /// batched lookup's may).
    pub(crate) fn read_pod<T: Pod>(&self, index: u32, offset: usize) -> T {
        let mut value = std::mem::MaybeUninit::<T>::uninit();
        let bytes = value.as_mut_ptr().cast::<u8>();
        for i in 0..size_of::<T>() {
            let byte = self.byte(index, offset + i).load(Ordering::Relaxed);
            // SAFETY: `i` is inside `value`'s bytes.
            unsafe { bytes.add(i).write(byte) };
        }
        // SAFETY: every byte was written, and any bytes are a valid `Pod`.
        unsafe { value.assume_init() }
    }

    /// The 4-byte word at byte `offset` of element `index`, which must be a
    /// multiple of 4: one 4-byte load, as the datapath writes it.
    pub(crate) fn load_u32(&self, index: u32, offset: usize) -> u32 {
        self.word(index, offset).load(Ordering::Relaxed)
    }

    /// Stores `value` at byte `offset` of element `index`.
    pub(crate) fn store(&self, index: u32, offset: usize, value: u8) {
        self.byte(index, offset).store(value, Ordering::Relaxed);
    }

    /// Stores `value` at byte `offset` of element `index`, which must be a
    /// multiple of 4: one 4-byte store, as the datapath reads it.
    pub(crate) fn store_u32(&self, index: u32, offset: usize, value: u32) {
        self.word(index, offset).store(value, Ordering::Relaxed);
    }

    /// Replaces the 4-byte word at byte `offset` of element `index` (a
    /// multiple of 4) by `new` if it still is `current`, in one atomic
    /// instruction; whether it did.
    pub(crate) fn compare_exchange_u32(
        &self,
        index: u32,
        offset: usize,
        current: u32,
        new: u32,
    ) -> bool {
        self.word(index, offset)
            .compare_exchange(current, new, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// The 4-byte word at byte `offset` of element `index`.
    fn word(&self, index: u32, offset: usize) -> &AtomicU32 {
        assert!(
            offset.is_multiple_of(4),
            "offset {offset} is not 4-byte aligned"
        );
        // The element starts 8-byte aligned, so the word is 4-byte aligned.
        let word = std::ptr::from_ref(self.byte(index, offset)).cast::<AtomicU32>();
        assert!(
            offset + 4 <= size_of::<V>(),
            "word at {offset}: out of range"
        );
        // SAFETY: in range (checked above), aligned, inside the mapping.
        unsafe { &*word }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use aya::maps::{Array, HashMap, IterableMap, MapData};

    use super::*;

    fn fd<M: IterableMap<K, V>, K: Pod, V>(map: &M) -> BorrowedFd<'_> {
        map.map().fd().as_fd()
    }

    #[test]
    fn update_batch_writes_every_slot_in_one_call() {
        let array = Array::<MapData, u32>::create(8, 0).expect("create an array");
        let keys = [0u32, 3, 7];
        let values = [10u32, 13, 17];
        map_update_batch(fd(&array), &keys, &values, 0).expect("batch update");
        let read: Vec<u32> = (0..8).map(|i| array.get(&i, 0).unwrap()).collect();
        assert_eq!(read, [10, 0, 0, 13, 0, 0, 0, 17]);
    }

    #[test]
    fn update_batch_reports_how_far_it_got() {
        let array = Array::<MapData, u32>::create(4, 0).expect("create an array");
        // Index 9 is beyond the array: the first two are written, then E2BIG.
        let err = map_update_batch(fd(&array), &[1u32, 2, 9, 3], &[1u32, 2, 3, 4], 0)
            .expect_err("an index beyond the array");
        assert_eq!(err.done, 2);
        assert_eq!(err.source.raw_os_error(), Some(libc::E2BIG));
        let read: Vec<u32> = (0..4).map(|i| array.get(&i, 0).unwrap()).collect();
        assert_eq!(read, [0, 1, 2, 0]);
        let err = map_update_batch(fd(&array), &[1u32], &[1u32, 2], 0).expect_err("lengths");
        assert_eq!(err.source.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn lookup_batch_walks_a_hash_map_in_chunks() {
        let mut map = HashMap::<MapData, u64, u32>::create(1024, 0).expect("create a hash map");
        let (keys, _) = map_lookup_all::<u64, u32>(fd(&map), 64).expect("walk an empty map");
        assert!(keys.is_empty());
        for k in 0..700u64 {
            map.insert(k * 3, (k as u32) * 7, 0).unwrap();
        }
        // Several chunks: every entry exactly once.
        let (keys, values) = map_lookup_all::<u64, u32>(fd(&map), 64).expect("walk");
        let mut pairs: Vec<(u64, u32)> = keys.into_iter().zip(values).collect();
        pairs.sort_unstable();
        let expected: Vec<(u64, u32)> = (0..700u64).map(|k| (k * 3, (k as u32) * 7)).collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn lookup_batch_walks_an_array() {
        let array = Array::<MapData, u32>::create(300, 0).expect("create an array");
        map_update_batch(fd(&array), &[5u32, 299], &[55u32, 2990], 0).unwrap();
        let (keys, values) = map_lookup_all::<u32, u32>(fd(&array), 128).expect("walk");
        assert_eq!(keys, (0..300).collect::<Vec<u32>>());
        assert_eq!((values[5], values[299], values[6]), (55, 2990, 0));
    }

    #[test]
    fn a_missing_pin_is_enoent() {
        let err = obj_get(Path::new("/nonexistent-xlb-pin")).expect_err("no such pin");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        // A descriptor that is not a link is refused by link update.
        let array = Array::<MapData, u32>::create(1, 0).expect("create an array");
        let err = link_update(fd(&array), fd(&array)).expect_err("not a link");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }
}
