//! What counts as one source of traffic for limits and throttling.
//!
//! An IPv4 address is one source. An IPv6 address is grouped by its /64:
//! one host (or one customer's network) gets a whole /64 and can pick any of
//! its 2^64 addresses, so counting addresses one by one would make every
//! per-source limit meaningless. IPv4-mapped IPv6 addresses (a dual-stack
//! socket's view of an IPv4 client) are the IPv4 address.

use std::net::{IpAddr, Ipv6Addr};

/// The source `ip` is counted as: itself for IPv4, its /64 prefix for IPv6.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::source_of;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_addresses_of_one_64_are_one_source() {
        assert_eq!(
            source_of(ip("2001:db8:1:2:aaaa::1")),
            source_of(ip("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_eq!(source_of(ip("2001:db8:1:2::5")), ip("2001:db8:1:2::"));
        assert_ne!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn ipv4_is_itself_even_when_mapped() {
        assert_eq!(source_of(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(source_of(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
        assert_ne!(source_of(ip("198.51.100.7")), source_of(ip("198.51.100.8")));
    }
}
