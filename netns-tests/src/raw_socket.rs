//! Sending hand-built frames on an interface with an `AF_PACKET` socket.
//!
//! The frames go out exactly as given (no kernel-added headers), which is how the
//! tests put VLAN-tagged and truncated frames on a veth: this kernel has no 8021q
//! module, and a tag added by a VLAN device would travel outside the packet data.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// A raw `AF_PACKET` socket bound to one interface of the calling thread's
/// network namespace.
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    /// Opens a socket that sends on `iface`. Must run inside the namespace that
    /// owns `iface` (see `Netns::run`).
    pub fn open(iface: &str) -> io::Result<Self> {
        let name = CString::new(iface).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {iface:?}"),
            )
        })?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("interface {iface} does not exist in this namespace"),
            ));
        }
        // Protocol 0: this socket only sends, so it never queues received frames.
        // SAFETY: plain socket(2) call; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "ifindex out of range"))?;
        Ok(Self { fd, ifindex })
    }

    /// The link-layer address `frame` goes to: this socket's interface, and
    /// the frame's destination MAC.
    fn address(&self, frame: &[u8]) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        if let Some(dst) = frame.get(..6) {
            addr.sll_addr[..6].copy_from_slice(dst);
        }
        addr
    }

    /// Sends one frame, byte for byte.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let addr = self.address(frame);
        // SAFETY: `frame` and `addr` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        match usize::try_from(sent) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "sent {n} of {} bytes",
                frame.len()
            ))),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }

    /// Sends up to 1024 frames with one `sendmmsg(2)`; returns how many the
    /// kernel took: fewer when the device queue fills, none when it is full
    /// from the first frame (`ENOBUFS`, the queue's backpressure rather than
    /// a failure: the caller tries again). Frames go to the
    /// interface the socket was opened on, each to its own destination MAC.
    /// The traffic generators use this: one system call per frame would cap
    /// the rate well below what the paths under test forward.
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        const MAX_BATCH: usize = 1024;
        let frames = &frames[..frames.len().min(MAX_BATCH)];
        let mut addrs: Vec<libc::sockaddr_ll> =
            frames.iter().map(|frame| self.address(frame)).collect();
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|frame| libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(&mut addrs)
            .map(|(iov, addr)| {
                // SAFETY: msghdr is plain old data; all-zero is a valid value.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_name = std::ptr::from_mut(addr).cast();
                header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                header.msg_hdr.msg_iov = std::ptr::from_mut(iov);
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        // SAFETY: every header points at a live address and iovec above, and
        // every iovec at a frame borrowed for the call; `len` is the count.
        let sent = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as libc::c_uint,
                0,
            )
        };
        match usize::try_from(sent) {
            Ok(taken) => Ok(taken),
            Err(_) => match io::Error::last_os_error() {
                full if full.raw_os_error() == Some(libc::ENOBUFS) => Ok(0),
                e => Err(e),
            },
        }
    }
}
