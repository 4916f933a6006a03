//! CTAPHID reports over UDP on loopback: one 64-byte report per datagram, the convention
//! software authenticator simulators use for their "HID" link. [`UdpHidDevice`] is the host
//! side, so our client can talk to authenticators we did not write; [`UdpBridge`] puts a
//! [`HidDevice`] (a [`crate::sim::SimHidDevice`], say) behind a UDP socket, so tools that
//! speak this convention can talk to ours.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use token_core::{Error, Result};

use crate::client::HidDevice;
use crate::codec::{Report, REPORT_LEN};

/// The shortest read timeout a socket accepts (a zero timeout means "block forever" to it).
const MIN_WAIT: Duration = Duration::from_millis(1);
/// How often the bridge's threads look at their stop flag.
const POLL: Duration = Duration::from_millis(50);

/// The host side of a UDP "HID" link: reports go to `remote`, answers come to `local`.
#[derive(Debug)]
pub struct UdpHidDevice {
    socket: UdpSocket,
}

impl UdpHidDevice {
    /// Binds `local` and talks to the authenticator at `remote` (datagrams from anyone else
    /// are dropped by the connected socket).
    ///
    /// # Errors
    /// `CommunicationError` when the socket cannot be bound or connected.
    pub fn connect(local: SocketAddr, remote: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind(local)?;
        socket.connect(remote)?;
        Ok(Self { socket })
    }

    /// The local address answers come to.
    ///
    /// # Errors
    /// `CommunicationError` if the socket cannot say.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

fn io_to_error(e: std::io::Error) -> Error {
    if e.kind() == ErrorKind::ConnectionRefused {
        // An ICMP "port unreachable": nothing listens where the authenticator was.
        Error::token_not_found("no authenticator listens on the UDP port")
    } else {
        Error::from(e)
    }
}

impl HidDevice for UdpHidDevice {
    fn write(&self, report: &Report) -> Result<()> {
        let n = self.socket.send(report).map_err(io_to_error)?;
        if n == REPORT_LEN {
            Ok(())
        } else {
            Err(Error::communication("short UDP datagram sent"))
        }
    }

    fn read(&self, timeout: Duration) -> Result<Option<Report>> {
        self.socket.set_read_timeout(Some(timeout.max(MIN_WAIT)))?;
        let mut buf = [0u8; REPORT_LEN];
        match self.socket.recv(&mut buf) {
            // A short datagram is zero-padded; a long one was cut to the report size.
            Ok(_) => Ok(Some(buf)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(io_to_error(e)),
        }
    }
}

/// Serves a [`HidDevice`] on a UDP socket: every datagram from the host is written to the
/// device as a report, every report the device sends goes to the host. Dropping the bridge
/// stops its threads.
pub struct UdpBridge {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpBridge {
    /// Binds `local` for the device and sends its reports to `host`.
    ///
    /// # Errors
    /// `CommunicationError` when the socket cannot be bound.
    pub fn start<D: HidDevice>(device: D, local: SocketAddr, host: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind(local)?;
        socket.set_read_timeout(Some(POLL))?;
        let addr = socket.local_addr()?;
        let inbound = socket.try_clone()?;
        let device = Arc::new(device);
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (device.clone(), stop.clone());
        let to_device = std::thread::spawn(move || {
            let mut buf = [0u8; REPORT_LEN];
            while !s.load(Ordering::SeqCst) {
                match inbound.recv_from(&mut buf) {
                    Ok((_, from)) if from == host => {
                        if d.write(&buf).is_err() {
                            return;
                        }
                        buf = [0; REPORT_LEN];
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        });
        let s = stop.clone();
        let to_host = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match device.read(POLL) {
                    Ok(Some(report)) => {
                        // The host may not listen yet; UDP loses the report then, as a real
                        // simulator's link would.
                        let _ = socket.send_to(&report, host);
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            threads: vec![to_device, to_host],
        })
    }

    /// The address the device listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UdpBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            // Each thread wakes within POLL; a panicked one has nothing left to clean up.
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{CtapHidChannel, HidOptions};
    use crate::sim::{EchoHandler, SimHidDevice};
    use token_core::{block_on, ErrorCode};

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn client_over_udp_to_the_simulator() {
        // The host socket first, so the bridge knows where to answer.
        let host = UdpSocket::bind(loopback()).unwrap();
        let host_addr = host.local_addr().unwrap();
        drop(host);
        let (sim, _control) = SimHidDevice::new(EchoHandler::default());
        let bridge = UdpBridge::start(sim, loopback(), host_addr).unwrap();
        let device = UdpHidDevice::connect(host_addr, bridge.addr()).unwrap();
        let channel = CtapHidChannel::open_with(
            device,
            HidOptions {
                response_timeout: Duration::from_secs(2),
                ..HidOptions::default()
            },
        )
        .unwrap();
        block_on(channel.ping(&[0x42; 300])).unwrap();
        assert_eq!(block_on(channel.cbor(&[4])).unwrap(), [4]);
    }

    #[test]
    fn nobody_listening_is_a_clean_error() {
        let free = UdpSocket::bind(loopback()).unwrap();
        let remote = free.local_addr().unwrap();
        drop(free);
        let device = UdpHidDevice::connect(loopback(), remote).unwrap();
        let e = CtapHidChannel::open_with(
            device,
            HidOptions {
                response_timeout: Duration::from_millis(300),
                ..HidOptions::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e.code(),
                ErrorCode::TokenNotFound | ErrorCode::CommunicationError
            ),
            "{e:?}"
        );
    }
}
