//! The addresses this peer tells the coordinator it can be reached at: the
//! bound address when it is specific, else every non-loopback interface
//! address with the bound port, plus an operator-given public address. The
//! coordinator puts the address it observes in front of these.

use std::net::SocketAddr;

/// Candidate addresses for an endpoint bound to `bound`.
pub fn local_candidates(bound: SocketAddr, advertise: Option<SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = advertise.into_iter().collect();
    if !bound.ip().is_unspecified() {
        out.push(bound);
        return out;
    }
    let v6_socket = bound.is_ipv6();
    if let Ok(ifaces) = if_addrs::get_if_addrs() {
        for iface in ifaces {
            let ip = iface.ip();
            if ip.is_loopback() || (ip.is_ipv6() && !v6_socket) {
                continue;
            }
            if let std::net::IpAddr::V6(v6) = ip {
                // Link-local addresses need a scope id the protocol does not carry.
                if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    continue;
                }
            }
            let addr = SocketAddr::new(ip, bound.port());
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    out.truncate(common::protocol::MAX_CANDIDATES);
    out
}
