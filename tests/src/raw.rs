//! Raw Ethernet frames on an interface (`AF_PACKET`): the namespace tests
//! send frames no socket of the kernel here can make (IPIP and IP6IP6
//! without tunnel modules, built with [`crate::packet`]) and watch for the
//! frames that come back.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// An `AF_PACKET` socket bound to one interface, seeing every protocol.
/// Open it on a thread inside the interface's namespace
/// ([`crate::netns::Netns::run`]); it stays bound there afterwards.
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

const ETH_P_ALL: u16 = 0x0003;

impl RawSocket {
    pub fn open(ifname: &str) -> io::Result<Self> {
        let name = std::ffi::CString::new(ifname)?;
        // SAFETY: a valid NUL-terminated string, only read.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = Self {
            fd,
            ifindex: i32::try_from(ifindex).expect("ifindex"),
        };
        let addr = sock.addr();
        // SAFETY: `addr` is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast(),
                u32::try_from(size_of::<libc::sockaddr_ll>()).expect("size"),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn addr(&self) -> libc::sockaddr_ll {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = u16::try_from(libc::AF_PACKET).expect("family");
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = self.ifindex;
        addr
    }

    /// Sends one frame as it is (Ethernet header included).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for its length, only read.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The first frame received (either direction) for which `wanted` holds,
    /// or `None` after `timeout`.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let tv = libc::timeval {
                tv_sec: libc::time_t::try_from(left.as_secs()).expect("secs"),
                tv_usec: libc::suseconds_t::from(left.subsec_micros().max(1)),
            };
            // SAFETY: `tv` is a valid timeval of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    std::ptr::from_ref(&tv).cast(),
                    u32::try_from(size_of::<libc::timeval>()).expect("size"),
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                return Err(e);
            }
            let frame = &buf[..usize::try_from(n).expect("length")];
            if wanted(frame) {
                return Ok(Some(frame.to_vec()));
            }
        }
    }
}
